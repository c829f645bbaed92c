// The agent's event loop (see agent.h).
#include "workers/agent.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include <zmq.hpp>

#include "proto/client.h"
#include "proto/curve.h"
#include "proto/clock.h"
#include "proto/wire.h"
#include "workers/worker.h"

namespace mariana::workers {

namespace {

using proto::Envelope;

struct RunningWorker {
  std::string actor_id;
  uint32_t incarnation;
  int pid;
};

// A worker killed by a signal leaves its Unix-domain socket file behind.
void remove_ipc_socket(const RunningWorker& w) {
  const std::string path = worker_ipc_path(w.actor_id, w.incarnation, w.pid);
  if (!path.empty()) ::unlink(path.c_str());
}

}  // namespace

Status agent_run(const AgentOptions& in, ProcessLauncher* launcher, const std::atomic<bool>* stop) {
  AgentOptions o = in;
  if (o.node_id.empty()) o.node_id = "node-" + proto::random_hex(8);
  if (o.worker_binary.empty()) o.worker_binary = "/proc/self/exe";
  if (o.log_dir.empty()) o.log_dir = std::filesystem::temp_directory_path().string() + "/mariana-" + o.node_id;
  std::error_code ec;
  std::filesystem::create_directories(o.log_dir, ec);
  if (ec) return Unavailable("agent: cannot create log dir " + o.log_dir + ": " + ec.message());
  // Resolve /proc/self/exe now: a worker execs the same binary even if the path changes later.
  if (o.worker_binary == "/proc/self/exe") {
    auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) o.worker_binary = p.string();
  }
  const std::string identity = proto::agent_peer(o.node_id);
  zmq::context_t ctx(1);
  zmq::socket_t sock(ctx, zmq::socket_type::dealer);
  sock.set(zmq::sockopt::routing_id, identity);
  sock.set(zmq::sockopt::linger, 0);
  if (!o.curve_file.empty()) {
    MARIANA_ASSIGN_OR_RETURN(auto keys, proto::curve_client_load(o.curve_file));
    MARIANA_RETURN_IF_ERROR(proto::curve_client_apply(sock, keys));
  }
  sock.connect(o.controller);

  proto::WireCounters counters;
  proto::DecodeOptions dopts;
  dopts.token = o.token;
  dopts.accept_tokenless_errors = true;
  SteadyClock clock;
  std::map<int, RunningWorker> workers;  // by pid
  uint64_t epoch = 0, next_id = 1;
  bool registered = false;
  int64_t last_register = -1000000, last_heartbeat = 0, last_reply = clock.now_ms();
  bool warned_silent = false;

  auto send = [&](proto::Outgoing& m) { (void)sock.send(zmq::buffer(m.bytes()), zmq::send_flags::dontwait); };
  const char* node = o.node_id.c_str();
  auto resources_text = [&] {
    std::string out;
    for (auto& [name, amount] : o.resources) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%s%s=%g", out.empty() ? "" : " ", name.c_str(), amount);
      out += buf;
    }
    return out;
  };
  auto send_register = [&] {
    proto::Outgoing m(next_id++, identity, o.token);
    auto r = m.payload().initRegisterNode();
    r.setNodeId(o.node_id);
    auto res = r.initResources(static_cast<unsigned>(o.resources.size()));
    unsigned i = 0;
    for (auto& [name, amount] : o.resources) {
      res[i].setName(name);
      res[i].setAmount(amount);
      ++i;
    }
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    r.setHostname(host);
    r.setPid(static_cast<uint32_t>(::getpid()));
    r.setLogDir(o.log_dir);
    auto ws = r.initWorkers(static_cast<unsigned>(workers.size()));
    i = 0;
    for (auto& [pid, w] : workers) {
      ws[i].setActorId(w.actor_id);
      ws[i].setIncarnation(w.incarnation);
      ws[i].setPid(static_cast<uint32_t>(pid));
      ++i;
    }
    auto cls = r.initActorClasses(static_cast<unsigned>(o.actor_classes.size()));
    for (unsigned k = 0; k < o.actor_classes.size(); ++k) cls.set(k, o.actor_classes[k]);
    send(m);
    last_register = clock.now_ms();
  };
  auto report_exit = [&](const RunningWorker& w, int code, int sig) {
    if (sig != 0)
      std::fprintf(stderr, "agent %s: worker for actor %s incarnation %u (pid %d) killed by signal %d\n", node,
                   w.actor_id.c_str(), w.incarnation, w.pid, sig);
    else
      std::fprintf(stderr, "agent %s: worker for actor %s incarnation %u (pid %d) exited with code %d\n", node,
                   w.actor_id.c_str(), w.incarnation, w.pid, code);
    proto::Outgoing m(next_id++, identity, o.token);
    auto e = m.payload().initWorkerExited();
    e.setNodeId(o.node_id);
    e.setActorId(w.actor_id);
    e.setIncarnation(w.incarnation);
    e.setExitCode(code);
    e.setSignal(sig);
    send(m);
  };
  auto start_worker = [&](proto::StartWorker::Reader s) {
    const std::string actor(s.getActorId().cStr());
    for (auto& [pid, w] : workers)
      if (w.actor_id == actor && w.incarnation == s.getIncarnation()) return;  // already running
    const std::string inc = std::to_string(s.getIncarnation());
    std::vector<std::string> argv = {o.worker_binary, "worker", "--controller", o.controller, "--token-file",
                                     o.token_file,   "--actor-id", actor, "--incarnation", inc,
                                     "--class",      s.getClassName().cStr(), "--node-id", o.node_id,
                                     "--heartbeat-ms", std::to_string(o.heartbeat_ms), "--bind-host", o.bind_host};
    if (!o.curve_file.empty()) {
      argv.push_back("--curve-file");
      argv.push_back(o.curve_file);
    }
    if (s.getArgs().size() > 0) {  // the constructor arguments, JSON
      argv.push_back("--args");
      argv.push_back(s.getArgs().cStr());
    }
    const std::string base = o.log_dir + "/" + actor + "-" + inc;
    auto pid = launcher->spawn(argv, base + ".out", base + ".err");
    RunningWorker w{actor, s.getIncarnation(), 0};
    if (!pid.ok()) {
      std::fprintf(stderr, "agent %s: cannot start a worker for %s: %s\n", o.node_id.c_str(), actor.c_str(),
                   pid.status().to_string().c_str());
      report_exit(w, 127, 0);
      return;
    }
    w.pid = pid.value();
    workers[w.pid] = w;
    std::fprintf(stderr, "agent %s: starting worker for actor %s incarnation %s (class %s, job %s): pid %d, output %s.{out,err}\n",
                 node, actor.c_str(), inc.c_str(), s.getClassName().cStr(),
                 s.getJobId().size() ? s.getJobId().cStr() : "-", w.pid, base.c_str());
  };

  bool shutdown = false;
  send_register();
  while (!stop->load()) {
    zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;  // a signal (SIGTERM sets *stop)
    }
    for (int i = 0; i < 256; ++i) {
      zmq::message_t body;
      if (!sock.recv(body, zmq::recv_flags::dontwait)) break;
      auto f = proto::decode_envelope(body.data(), body.size(), dopts, &counters);
      if (!f.ok()) {
        std::fprintf(stderr, "agent %s: bad frame from the controller: %s\n", o.node_id.c_str(),
                     f.status().to_string().c_str());
        continue;
      }
      if (warned_silent)
        std::fprintf(stderr, "agent %s: the controller answers again after %lld ms\n", node,
                     static_cast<long long>(clock.now_ms() - last_reply));
      last_reply = clock.now_ms();
      warned_silent = false;
      auto p = f.value().payload();
      switch (p.which()) {
        case Envelope::Payload::REGISTER_NODE_REPLY:
          if (!registered)
            std::fprintf(stderr, "agent %s: registered with controller %s as node %s with resources %s (%zu workers running)\n",
                         node, o.controller.c_str(), node, resources_text().c_str(), workers.size());
          registered = true;
          epoch = p.getRegisterNodeReply().getEpoch();
          break;
        case Envelope::Payload::HEARTBEAT_REPLY:
          if (!p.getHeartbeatReply().getKnown() || p.getHeartbeatReply().getEpoch() != epoch) {
            std::fprintf(stderr, "agent %s: the controller %s; registering again\n", node,
                         p.getHeartbeatReply().getEpoch() != epoch ? "restarted" : "no longer knows this node");
            registered = false;
            send_register();
          }
          break;
        case Envelope::Payload::START_WORKER: start_worker(p.getStartWorker()); break;
        case Envelope::Payload::STOP_WORKER: {
          auto s = p.getStopWorker();
          for (auto& [pid, w] : workers)
            if (w.actor_id == s.getActorId().cStr() && w.incarnation == s.getIncarnation()) launcher->signal(pid, SIGKILL);
          break;
        }
        case Envelope::Payload::ERROR:
          std::fprintf(stderr, "agent %s: controller error: %s\n", o.node_id.c_str(),
                       proto::error_status(p.getError()).to_string().c_str());
          break;
        case Envelope::Payload::SHUTDOWN:
          std::fprintf(stderr, "agent %s: the controller asked it to shut down\n", node);
          shutdown = true;
          break;
        default: break;
      }
      if (shutdown) break;
    }
    if (shutdown) break;
    for (auto& e : launcher->reap()) {
      auto it = workers.find(e.pid);
      if (it == workers.end()) continue;
      report_exit(it->second, e.exit_code, e.signal);
      remove_ipc_socket(it->second);
      workers.erase(it);
    }
    const int64_t now = clock.now_ms();
    if (!registered && now - last_register > 1000) send_register();
    if (now - last_heartbeat >= o.heartbeat_ms) {
      last_heartbeat = now;
      proto::Outgoing m(next_id++, identity, o.token);
      m.payload().initHeartbeat().setNodeId(o.node_id);
      send(m);
    }
    if (!warned_silent && now - last_reply > 10 * o.heartbeat_ms) {
      warned_silent = true;
      std::fprintf(stderr, "agent %s: heartbeat lost: no reply from the controller for %lld ms; still trying\n", node,
                   static_cast<long long>(now - last_reply));
    }
  }
  // Stopping: SIGTERM to the workers (they stop at their next poll), SIGKILL to those still running
  // after kStopGraceMs. Their exits are not reported: the node's deregistration below makes the
  // controller restart its actors elsewhere.
  std::fprintf(stderr, "agent %s: stopping; %zu workers to end\n", node, workers.size());
  auto reap_quietly = [&] {
    for (auto& e : launcher->reap()) {
      auto it = workers.find(e.pid);
      if (it == workers.end()) continue;
      remove_ipc_socket(it->second);
      workers.erase(it);
    }
  };
  constexpr int64_t kStopGraceMs = 2000;
  for (auto& [pid, w] : workers) launcher->signal(pid, SIGTERM);
  const int64_t term_sent = clock.now_ms();
  while (!workers.empty() && clock.now_ms() - term_sent < kStopGraceMs) {
    reap_quietly();
    if (!workers.empty()) ::usleep(10000);
  }
  for (auto& [pid, w] : workers) {
    std::fprintf(stderr, "agent %s: worker for actor %s (pid %d) still running after %lld ms; killing it\n", node,
                 w.actor_id.c_str(), pid, static_cast<long long>(kStopGraceMs));
    launcher->signal(pid, SIGKILL);
  }
  for (int i = 0; i < 100 && !workers.empty(); ++i) {
    reap_quietly();
    if (!workers.empty()) ::usleep(10000);
  }
  // Deregister, so the controller marks the node DEAD now rather than after its node timeout; wait
  // a little for its answer (a controller that is gone just times the wait out).
  if (registered && !shutdown) {
    const uint64_t rid = next_id;
    proto::Outgoing m(next_id++, identity, o.token);
    auto d = m.payload().initDeregisterNode();
    d.setNodeId(o.node_id);
    d.setReason("agent stop");
    send(m);
    bool acknowledged = false;
    const int64_t sent = clock.now_ms();
    while (!acknowledged && clock.now_ms() - sent < 2000) {
      zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
      try {
        zmq::poll(&item, 1, std::chrono::milliseconds(20));
      } catch (const zmq::error_t&) {
        continue;
      }
      zmq::message_t body;
      while (!acknowledged && sock.recv(body, zmq::recv_flags::dontwait)) {
        auto f = proto::decode_envelope(body.data(), body.size(), dopts, &counters);
        acknowledged = f.ok() && f.value().request_id() == rid;
      }
    }
    std::fprintf(stderr, acknowledged ? "agent %s: deregistered from the controller\n"
                                      : "agent %s: the controller did not acknowledge the deregistration\n", node);
  }
  return Status::Ok();
}

}  // namespace mariana::workers
