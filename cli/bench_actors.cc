// `mariana bench actors`: Ray's actor microbenchmarks (the workloads of Ray's `ray_perf.py`) on a
// real loopback cluster that this command starts and stops: a controller and one agent as child
// processes of this binary, workers started by the agent and called directly on their
// Unix-domain sockets (same host; tcp when a worker has none). Workloads, in operations per second:
// 1:1 sync calls (one at a time), 1:1 async calls (1000 in flight), n:n async calls (n client
// threads × n actors, round robin), actor creations (create, wait until ALIVE), placement group
// create + remove (100 one-bundle groups, pipelined like Ray's). Timings are reported, never asserted.
// The same-run yardstick: bare ZeroMQ round trips (DEALER -> ROUTER echo in a forked process, over
// ipc://, blocking receives, call-sized frames), what a sync call costs without Mariana's work.
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/cluster_client.h"
#include "proto/host.h"
#include "workers/process_launcher.h"

namespace mariana::cli {

namespace {

using proto::Envelope;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The controller and agent of the benchmark; stopped (SIGTERM, then SIGKILL) and cleaned up at scope exit.
class BenchCluster {
 public:
  ~BenchCluster() {
    for (int pid : {agent_pid_, controller_pid_}) {
      if (pid <= 0) continue;
      ::kill(pid, SIGTERM);
      for (int i = 0; i < 300; ++i) {
        if (::waitpid(pid, nullptr, WNOHANG) == pid) {
          pid = 0;
          break;
        }
        ::usleep(10000);
      }
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
    if (!dir_.empty() && !keep_) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  Status start(bool keep) {
    keep_ = keep;
    std::string tmpl = (std::filesystem::temp_directory_path() / "mariana-bench-actors.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) return Unavailable("bench actors: mkdtemp failed");
    dir_ = tmpl;
    std::error_code ec;
    const std::string exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    MARIANA_ASSIGN_OR_RETURN(controller_pid_, launcher_.spawn({exe, "controller", "start", "--listen", "tcp://127.0.0.1:*",
                                                               "--state-dir", dir_, "--metrics-port", "-1"},
                                                              dir_ + "/controller.out", dir_ + "/controller.err"));
    for (int i = 0; i < 1000 && !std::filesystem::exists(dir_ + "/controller.addr"); ++i) ::usleep(10000);
    MARIANA_ASSIGN_OR_RETURN(target_, client_target_from_state_dir(dir_));
    MARIANA_ASSIGN_OR_RETURN(agent_pid_, launcher_.spawn({exe, "agent", "start", "--state-dir", dir_, "--cpus", "64",
                                                          "--node-id", "bench-node", "--log-dir", dir_ + "/logs"},
                                                         dir_ + "/agent.out", dir_ + "/agent.err"));
    ClusterClient c(target_);
    for (int i = 0; i < 100; ++i) {
      auto nodes = c.query("nodes", "", 2000);
      if (nodes.ok() && !nodes.value().empty()) return Status::Ok();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Unavailable("bench actors: the agent did not register within 10 s (logs in " + dir_ + ")");
  }

  const ClientTarget& target() const { return target_; }

 private:
  workers::PosixLauncher launcher_;
  std::string dir_;
  bool keep_ = false;
  ClientTarget target_;
  int controller_pid_ = 0, agent_pid_ = 0;
};

void fill_create(Envelope::Payload::Builder p, const char* cls) {
  auto s = p.initCreateActor();
  s.setClassName(cls);
  auto r = s.initResources(1);
  r[0].setName("CPU");
  r[0].setAmount(0.001);
  s.setBundleIndex(-1);
}

// Creates `n` actors (pipelined), waits until all are ALIVE; returns their call endpoints (the
// Unix-domain socket of each, as this benchmark runs on the actors' host; proto::actor_endpoint).
Result<std::vector<std::pair<std::string, std::string>>> create_actors(proto::RpcClient& rpc, int n, const char* cls) {
  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) rpc.send([&](Envelope::Payload::Builder p) { fill_create(p, cls); });
  for (int i = 0; i < n; ++i) {
    MARIANA_ASSIGN_OR_RETURN(auto f, rpc.recv(30000));
    if (f.payload().which() == Envelope::Payload::ERROR) return proto::error_status(f.payload().getError());
    ids.push_back(f.payload().getCreateActorReply().getActorId().cStr());
  }
  for (auto& id : ids)
    rpc.send([&](Envelope::Payload::Builder p) {
      auto w = p.initWaitActor();
      w.setActorId(id);
      w.setTimeoutMs(60000);
    });
  std::vector<std::pair<std::string, std::string>> out;
  for (int i = 0; i < n; ++i) {
    MARIANA_ASSIGN_OR_RETURN(auto f, rpc.recv(65000));
    if (f.payload().which() == Envelope::Payload::ERROR) return proto::error_status(f.payload().getError());
    auto info = f.payload().getActorInfo();
    if (std::string(info.getState().cStr()) != "ALIVE")
      return Unavailable(std::string("bench actors: actor ") + info.getActorId().cStr() + " is " + info.getState().cStr());
    out.emplace_back(info.getActorId().cStr(),
                     proto::actor_endpoint(info.getAddress().cStr(), info.getLocalAddress().cStr(), info.getHostId().cStr()));
  }
  return out;
}

Status kill_actors(proto::RpcClient& rpc, const std::vector<std::pair<std::string, std::string>>& actors) {
  for (auto& [id, _] : actors)
    rpc.send([&](Envelope::Payload::Builder p) {
      auto k = p.initKillActor();
      k.setActorId(id);
      k.setNoRestart(true);
    });
  for (size_t i = 0; i < actors.size(); ++i) MARIANA_RETURN_IF_ERROR(rpc.recv(30000).status());
  return Status::Ok();
}

std::string noop_call(proto::RpcClient& c, const std::string& actor_id) {
  proto::Outgoing m(c.next_id(), c.identity(), c.token());
  auto call = m.payload().initActorCall();
  call.setActorId(actor_id);
  call.setMethod("noop");
  return m.bytes();
}

Status check_return(const proto::Frame& f) {
  if (f.payload().which() != Envelope::Payload::ACTOR_RETURN)
    return Internal("bench actors: unexpected reply " + proto::payload_name(f.payload().which()));
  if (f.payload().getActorReturn().getCode() != 0) return Internal(f.payload().getActorReturn().getError().cStr());
  return Status::Ok();
}

// `total` calls from one client over `actors` round robin, at most `window` in flight.
Status pipelined_calls(proto::RpcClient& c, const std::vector<std::string>& actor_ids, int64_t total, int window) {
  int64_t sent = 0, got = 0;
  while (got < total) {
    while (sent < total && sent - got < window) c.send_raw(noop_call(c, actor_ids[sent++ % actor_ids.size()]));
    MARIANA_ASSIGN_OR_RETURN(auto f, c.recv(10000));
    MARIANA_RETURN_IF_ERROR(check_return(f));
    ++got;
  }
  return Status::Ok();
}

// Round trips per second of bare libzmq: this process's DEALER against a ROUTER echo loop in a
// forked child, over a Unix-domain socket in `dir`, 128-byte frames, blocking receives. Run before
// this process makes any ZeroMQ context, so the child starts from a clean one.
Result<double> zmq_ipc_roundtrips(const std::string& dir, int n) {
  const std::string endpoint = "ipc://" + dir + "/yardstick.sock";
  int ready[2];
  if (::pipe(ready) != 0) return Unavailable("bench actors: pipe failed");
  const pid_t pid = ::fork();
  if (pid < 0) return Unavailable("bench actors: fork failed");
  if (pid == 0) {
    ::close(ready[0]);
    int code = 0;
    try {
      zmq::context_t ctx(1);
      zmq::socket_t router(ctx, zmq::socket_type::router);
      router.set(zmq::sockopt::linger, 2000);  // the last reply leaves before the context closes
      router.bind(endpoint);
      (void)!::write(ready[1], "x", 1);
      for (int i = 0; i < n + 1 && code == 0; ++i) {
        zmq::message_t id, body;
        if (!router.recv(id) || !router.recv(body)) code = 2;
        router.send(id, zmq::send_flags::sndmore);
        router.send(body, zmq::send_flags::none);
      }
    } catch (const zmq::error_t& e) {
      std::fprintf(stderr, "bench actors: yardstick echo: %s\n", e.what());
      code = 3;
    }
    ::_exit(code);
  }
  ::close(ready[1]);
  char c;
  const bool up = ::read(ready[0], &c, 1) == 1;
  ::close(ready[0]);
  double rate = 0;
  if (up) {
    zmq::context_t ctx(1);
    zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::rcvtimeo, 5000);
    dealer.connect(endpoint);
    const std::string frame(128, 'y');
    zmq::message_t reply;
    int got = 0;
    auto t0 = Clock::now();
    for (int i = 0; i < n + 1; ++i) {
      if (i == 1) t0 = Clock::now();  // the first round trip connects
      dealer.send(zmq::buffer(frame));
      if (!dealer.recv(reply)) break;
      ++got;
    }
    if (got == n + 1) rate = n / seconds_since(t0);
  }
  if (rate == 0) ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (rate == 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return Unavailable("bench actors: the ZeroMQ yardstick's echo process failed (" +
                       (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                          : "signal " + std::to_string(WTERMSIG(status))) + ")");
  return rate;
}

}  // namespace

int bench_actors_main(int argc, char** argv) {
  cxxopts::Options o("mariana bench actors", "Actor-call, actor-creation and placement-group throughput on loopback");
  o.add_options()("sync-calls", "1:1 sync calls", cxxopts::value<int64_t>()->default_value("5000"))(
      "async-calls", "1:1 async calls", cxxopts::value<int64_t>()->default_value("100000"))(
      "nn-calls", "calls per client in n:n", cxxopts::value<int64_t>()->default_value("50000"))(
      "n", "clients and actors in n:n (default: the core count)", cxxopts::value<int>()->default_value("0"))(
      "creations", "actors to create", cxxopts::value<int>()->default_value("20"))(
      "pgs", "placement groups to create and remove", cxxopts::value<int>()->default_value("100"))(
      "keep", "keep the cluster's temp dir")("json", "print one JSON object")("h,help", "help");
  cxxopts::ParseResult r;
  try {
    r = o.parse(argc, argv);
  } catch (const std::exception& e) {
    return report(InvalidArgument(std::string("bench actors: ") + e.what()));
  }
  if (r.count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  const int n = r["n"].as<int>() > 0 ? r["n"].as<int>() : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  nlohmann::json out;
  {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mariana-yardstick.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) return report(Unavailable("bench actors: mkdtemp failed"));
    auto rt = zmq_ipc_roundtrips(tmpl, static_cast<int>(std::max<int64_t>(1000, r["sync-calls"].as<int64_t>())));
    std::error_code ec;
    std::filesystem::remove_all(tmpl, ec);
    if (!rt.ok()) return report(rt.status());
    out["yardstick_zmq_ipc_roundtrips"] = rt.value();
  }
  BenchCluster cluster;
  Status st = cluster.start(r.count("keep") > 0);
  if (!st.ok()) return report(st);
  ClusterClient ctl(cluster.target());
  auto run = [&]() -> Status {
    // 1:1 sync and async.
    MARIANA_ASSIGN_OR_RETURN(auto one, create_actors(ctl.rpc(), 1, "echo"));
    proto::RpcClient direct(ctl.context(), one[0].second, cluster.target().token);
    MARIANA_RETURN_IF_ERROR(pipelined_calls(direct, {one[0].first}, 200, 1));  // warm-up
    const int64_t sync_calls = r["sync-calls"].as<int64_t>();
    auto t0 = Clock::now();
    MARIANA_RETURN_IF_ERROR(pipelined_calls(direct, {one[0].first}, sync_calls, 1));
    out["1_1_actor_calls_sync"] = sync_calls / seconds_since(t0);
    const int64_t async_calls = r["async-calls"].as<int64_t>();
    t0 = Clock::now();
    MARIANA_RETURN_IF_ERROR(pipelined_calls(direct, {one[0].first}, async_calls, 1000));
    out["1_1_actor_calls_async"] = async_calls / seconds_since(t0);
    MARIANA_RETURN_IF_ERROR(kill_actors(ctl.rpc(), one));

    // n:n: n client threads, each round robin over n actors, 1000 in flight per client.
    MARIANA_ASSIGN_OR_RETURN(auto many, create_actors(ctl.rpc(), n, "echo"));
    const int64_t per_client = r["nn-calls"].as<int64_t>();
    std::vector<Status> results(static_cast<size_t>(n));
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    t0 = Clock::now();
    for (int t = 0; t < n; ++t) {
      threads.emplace_back([&, t] {
        zmq::context_t ctx(1);
        // One DEALER per actor would break round-robin ordering guarantees for nothing; a DEALER
        // connected to all actors' ROUTERs sends round robin by itself, so use one per actor and
        // poll them through separate clients.
        std::vector<std::unique_ptr<proto::RpcClient>> clients;
        for (auto& [id, addr] : many) clients.push_back(std::make_unique<proto::RpcClient>(ctx, addr, cluster.target().token));
        ++ready;
        while (!go.load()) std::this_thread::yield();
        Status s;
        const int64_t per_actor = per_client / static_cast<int64_t>(many.size());
        // Interleave: keep a window on every actor, drain round robin.
        std::vector<int64_t> sent(many.size(), 0), got(many.size(), 0);
        const int window = std::max(1, 1000 / static_cast<int>(many.size()));
        bool busy = true;
        while (busy && s.ok()) {
          busy = false;
          for (size_t k = 0; k < many.size() && s.ok(); ++k) {
            auto& c = *clients[k];
            while (sent[k] < per_actor && sent[k] - got[k] < window) {
              c.send_raw(noop_call(c, many[k].first));
              ++sent[k];
            }
            if (got[k] < per_actor) {
              busy = true;
              auto f = c.recv(10000);
              if (!f.ok()) s = f.status();
              else s = check_return(f.value());
              ++got[k];
            }
          }
        }
        results[static_cast<size_t>(t)] = s;
      });
    }
    while (ready.load() < n) std::this_thread::yield();
    t0 = Clock::now();
    go = true;
    for (auto& th : threads) th.join();
    const double nn_s = seconds_since(t0);
    for (auto& s : results) MARIANA_RETURN_IF_ERROR(s);
    out["n_n_actor_calls_async"] = static_cast<double>((per_client / many.size()) * many.size() * n) / nn_s;
    MARIANA_RETURN_IF_ERROR(kill_actors(ctl.rpc(), many));

    // Actor creations per second (create → ALIVE, each a new worker process).
    const int creations = r["creations"].as<int>();
    t0 = Clock::now();
    MARIANA_ASSIGN_OR_RETURN(auto created, create_actors(ctl.rpc(), creations, "echo"));
    out["actor_creations_per_s"] = creations / seconds_since(t0);
    MARIANA_RETURN_IF_ERROR(kill_actors(ctl.rpc(), created));

    // Placement groups: create `pgs` one-bundle groups (pipelined), then remove them.
    const int pgs = r["pgs"].as<int>();
    t0 = Clock::now();
    for (int i = 0; i < pgs; ++i)
      ctl.rpc().send([&](Envelope::Payload::Builder p) {
        auto c = p.initCreatePlacementGroup();
        c.setStrategy("PACK");
        auto b = c.initBundles(1)[0].initResources(1);
        b[0].setName("CPU");
        b[0].setAmount(0.001);
      });
    std::vector<std::string> pg_ids;
    for (int i = 0; i < pgs; ++i) {
      MARIANA_ASSIGN_OR_RETURN(auto f, ctl.rpc().recv(30000));
      if (f.payload().which() == Envelope::Payload::ERROR) return proto::error_status(f.payload().getError());
      pg_ids.push_back(f.payload().getPlacementGroupReply().getPgId().cStr());
    }
    for (auto& id : pg_ids)
      ctl.rpc().send([&](Envelope::Payload::Builder p) { p.initRemovePlacementGroup().setPgId(id); });
    for (int i = 0; i < pgs; ++i) MARIANA_RETURN_IF_ERROR(ctl.rpc().recv(30000).status());
    out["placement_group_create_removal"] = pgs / seconds_since(t0);
    return Status::Ok();
  };
  st = run();
  if (!st.ok()) return report(st);
  out["n"] = n;
  out["cores"] = std::thread::hardware_concurrency();
  if (r.count("json")) {
    std::printf("%s\n", out.dump().c_str());
  } else {
    for (auto& [k, v] : out.items()) std::printf("%-32s %s\n", k.c_str(), v.dump().c_str());
  }
  return kExitOk;
}

}  // namespace mariana::cli
