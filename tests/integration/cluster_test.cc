// Integration tests on a real loopback cluster: a controller and two agents run a
// placement-grouped actor job; kill -9 of a worker, of an agent and of the controller mid-job;
// the job still finishes with no job, actor, metric point or checkpoint record lost. Also a
// worker's two call endpoints (tcp and its Unix-domain socket).
#include <gtest/gtest.h>

#include <signal.h>

#include <set>

#include "proto/client.h"
#include "proto/host.h"
#include "tests/integration/train_job_util.h"
#include "workers/actor_handle.h"
#include "workers/actor_mesh.h"

namespace mariana::integration {
namespace {

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    c_.start_controller();
    c_.start_agent("n1", 2);
    c_.start_agent("n2", 2);
    ASSERT_TRUE(c_.wait_nodes_alive(2)) << "agents did not register";
  }

  // The ALIVE actors of a job: id -> {node, pid}.
  std::map<std::string, std::pair<std::string, int>> alive_actors(const std::string& job) {
    std::map<std::string, std::pair<std::string, int>> out;
    auto actors = c_.query("actors list");
    if (!actors.is_array()) return out;
    for (auto& a : actors)
      if (a.value("job_id", "") == job && a.value("state", "") == "ALIVE")
        out[a["id"]] = {a.value("node_id", ""), a.value("pid", 0)};
    return out;
  }

  // Nothing lost: one metric point per step, one checkpoint record per 5 steps.
  void expect_complete(const std::string& job, int steps) {
    auto j = c_.job(job);
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j.value("state", ""), "SUCCEEDED") << j.dump();
    EXPECT_EQ(j.value("step", 0), steps);
    EXPECT_EQ(j.value("metric_points", 0), steps);
    EXPECT_EQ(j["checkpoint_paths"].size(), static_cast<size_t>(steps / 5));
    auto m = c_.query("jobs metrics " + job);
    ASSERT_TRUE(m.is_object());
    std::set<int> seen;
    for (auto& p : m["metrics"]) seen.insert(p.value("step", -1));
    EXPECT_EQ(seen.size(), static_cast<size_t>(steps));
    EXPECT_EQ(*seen.begin(), 0);
    EXPECT_EQ(*seen.rbegin(), steps - 1);
  }

  Cluster c_;
};

TEST_F(ClusterTest, PlacementGroupedActorJobSucceeds) {
  const std::string job = c_.submit(c_.write_job("ok", actor_job(20, 5)));
  ASSERT_EQ(job, "job-1");
  EXPECT_EQ(c_.wait_end(job), "SUCCEEDED");
  // STRICT_SPREAD: the group's two bundles, hence its two actors, were on different nodes.
  auto pg = c_.job(job)["placement_group"];
  ASSERT_TRUE(pg.is_object());
  EXPECT_EQ(pg.value("strategy", ""), "STRICT_SPREAD");
  ASSERT_EQ(pg["bundle_nodes"].size(), 2u);
  EXPECT_NE(pg["bundle_nodes"][0], pg["bundle_nodes"][1]);
  expect_complete(job, 20);
  // The CLI's human tables work too.
  auto st = run_mariana("status " + c_.client());
  EXPECT_EQ(st.exit_code, 0) << st.out;
  EXPECT_NE(st.out.find("Nodes: 2 ALIVE"), std::string::npos) << st.out;
  EXPECT_EQ(run_mariana("nodes " + c_.client()).exit_code, 0);
  EXPECT_EQ(run_mariana("actors list " + c_.client()).exit_code, 0);
  EXPECT_EQ(run_mariana("jobs list " + c_.client()).exit_code, 0);
}

TEST_F(ClusterTest, Kill9OfAWorkerRestartsItsActorAndTheJobFinishes) {
  const std::string job = c_.submit(c_.write_job("w", actor_job(60, 30)));
  ASSERT_TRUE(c_.wait_step(job, 5));
  auto actors = alive_actors(job);
  ASSERT_FALSE(actors.empty());
  const auto [victim, where] = *actors.begin();
  ASSERT_GT(where.second, 0);
  ASSERT_EQ(::kill(where.second, SIGKILL), 0);
  EXPECT_EQ(c_.wait_end(job), "SUCCEEDED");
  expect_complete(job, 60);
  auto a = c_.query("actors show " + victim);
  ASSERT_TRUE(a.is_object());
  EXPECT_GE(a.value("num_restarts", 0), 1);
  EXPECT_NE(a.value("last_failure", "").find("signal 9"), std::string::npos) << a.dump();
}

TEST_F(ClusterTest, Kill9OfAnAgentReschedulesItsActorsOnTheOtherNode) {
  const std::string job = c_.submit(c_.write_job("a", actor_job(80, 30, "SPREAD")));
  ASSERT_TRUE(c_.wait_step(job, 5));
  std::string moved;
  for (auto& [id, where] : alive_actors(job))
    if (where.first == "n1") moved = id;
  ASSERT_FALSE(moved.empty()) << "SPREAD put no actor on n1";
  c_.kill9_agent("n1");
  // Its actor comes back ALIVE on n2 (the node is declared DEAD after the 1.5 s timeout).
  EXPECT_TRUE(Cluster::wait_for(
      [&] {
        auto now = alive_actors(job);
        return now.count(moved) && now[moved].first == "n2";
      },
      20));
  EXPECT_EQ(c_.wait_end(job), "SUCCEEDED");
  expect_complete(job, 80);
  auto nodes = c_.query("nodes");
  ASSERT_TRUE(nodes.is_array());
  for (auto& n : nodes)
    if (n["id"] == "n1") {
      EXPECT_EQ(n.value("state", ""), "DEAD");
    }
}

TEST_F(ClusterTest, Kill9OfTheControllerLosesNothing) {
  const std::string job = c_.submit(c_.write_job("c", actor_job(60, 30)));
  ASSERT_TRUE(c_.wait_step(job, 10));
  const auto before = alive_actors(job);
  c_.kill9_controller();
  c_.start_controller();  // same state dir, same address
  EXPECT_EQ(c_.wait_end(job), "SUCCEEDED");
  expect_complete(job, 60);
  // The same actors carried on: the workers re-registered, nothing restarted.
  auto actors = c_.query("actors list");
  ASSERT_TRUE(actors.is_array());
  int of_job = 0;
  for (auto& a : actors)
    if (a.value("job_id", "") == job) {
      ++of_job;
      EXPECT_TRUE(before.count(a["id"])) << a.dump();
    }
  EXPECT_EQ(of_job, 2);
}

TEST_F(ClusterTest, BadSpecsAreRefusedAtSubmitWithAClearError) {
  auto unknown = run_mariana("submit " + c_.write_job("k", "kind = \"nope\"\n") + " " + c_.client());
  EXPECT_EQ(unknown.exit_code, 2) << unknown.out;
  EXPECT_NE(unknown.out.find("unknown job kind"), std::string::npos) << unknown.out;
  auto missing = run_mariana("submit " + c_.write_job("m", "kind = \"actors\"\n[run]\nsteps = 2\n") + " " + c_.client());
  EXPECT_EQ(missing.exit_code, 2) << missing.out;
  EXPECT_NE(missing.out.find("m.toml"), std::string::npos) << missing.out;
  auto huge = run_mariana("submit " + c_.write_job("h", actor_job(2, 0)) + " --set actors.resources.CPU=64 " + c_.client());
  EXPECT_NE(huge.exit_code, 0) << huge.out;
  EXPECT_NE(huge.out.find("infeasible"), std::string::npos) << huge.out;
  auto jobs = c_.query("jobs list");
  ASSERT_TRUE(jobs.is_array());
  EXPECT_TRUE(jobs.empty());
}

TEST_F(ClusterTest, SubmitWaitAndStop) {
  auto ok = run_mariana("submit " + c_.write_job("s", actor_job(5, 0)) + " --wait " + c_.client(), 60);
  EXPECT_EQ(ok.exit_code, 0) << ok.out;
  const std::string job = c_.submit(c_.write_job("long", actor_job(100000, 10)));
  ASSERT_TRUE(c_.wait_step(job, 2));
  auto stop = run_mariana("jobs stop " + job + " " + c_.client());
  EXPECT_EQ(stop.exit_code, 0) << stop.out;
  EXPECT_EQ(c_.wait_end(job), "STOPPED");
  EXPECT_TRUE(Cluster::wait_for([&] { return alive_actors(job).empty(); }, 10));
}

// Creates a "counter" actor of half a CPU, outside any group, with constructor `args` ("" none).
Result<proto::Frame> create_counter(proto::RpcClient& ctl, const std::string& args, int32_t max_restarts) {
  return ctl.call(
      [&](proto::Envelope::Payload::Builder p) {
        auto s = p.initCreateActor();
        s.setClassName("counter");
        auto r = s.initResources(1);
        r[0].setName("CPU");
        r[0].setAmount(0.5);
        s.setBundleIndex(-1);
        s.setMaxRestarts(max_restarts);
        s.setArgs(args);
      },
      5000);
}

// A counter.add call on `endpoint`; returns the counter's total, or -1 (with a test failure).
int64_t counter_add(zmq::context_t& ctx, const std::string& endpoint, const std::string& token,
                    const std::string& actor_id, int64_t value) {
  proto::RpcClient direct(ctx, endpoint, token);
  auto reply = direct.call(
      [&](proto::Envelope::Payload::Builder p) {
        auto call = p.initActorCall();
        call.setActorId(actor_id);
        call.setMethod("add");
        const std::string args =
            proto::encode_struct<proto::Int64Value>([&](proto::Int64Value::Builder b) { b.setValue(value); });
        call.setArgs(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(args.data()), args.size()));
      },
      5000);
  EXPECT_TRUE(reply.ok()) << endpoint << ": " << reply.status().to_string();
  if (!reply.ok()) return -1;
  auto ret = reply.value().payload().getActorReturn();
  EXPECT_EQ(ret.getCode(), 0) << endpoint << ": " << ret.getError().cStr();
  auto total = proto::StructValue<proto::Int64Value>::decode(
      std::string_view(reinterpret_cast<const char*>(ret.getResult().begin()), ret.getResult().size()), "add result");
  EXPECT_TRUE(total.ok()) << total.status().to_string();
  return total.ok() ? total.value().get().getValue() : -1;
}

// A worker serves calls on tcp and on a Unix-domain socket; the controller hands out both, with
// the worker's host id, so that a caller on this host picks the socket (proto::actor_endpoint).
TEST_F(ClusterTest, AnAliveActorServesCallsOnItsLocalSocketAndOnTcp) {
  const std::string token = trim(read_file(c_.state_dir() + "/cluster.token").value());
  zmq::context_t ctx(1);
  proto::RpcClient ctl(ctx, c_.address(), token);
  auto created = create_counter(ctl, "", 0);
  ASSERT_TRUE(created.ok()) << created.status().to_string();
  const std::string id = created.value().payload().getCreateActorReply().getActorId().cStr();
  auto waited = ctl.call(
      [&](proto::Envelope::Payload::Builder p) {
        auto w = p.initWaitActor();
        w.setActorId(id);
        w.setTimeoutMs(20000);
      },
      25000);
  ASSERT_TRUE(waited.ok()) << waited.status().to_string();
  auto info = waited.value().payload().getActorInfo();
  ASSERT_EQ(std::string(info.getState().cStr()), "ALIVE");
  const std::string address = info.getAddress().cStr(), local = info.getLocalAddress().cStr(),
                    host = info.getHostId().cStr();
  EXPECT_EQ(address.rfind("tcp://127.0.0.1:", 0), 0u) << address;
  ASSERT_EQ(local.rfind("ipc://", 0), 0u) << local;
  EXPECT_TRUE(std::filesystem::exists(local.substr(6))) << local;
  ASSERT_FALSE(proto::host_id().empty());
  EXPECT_EQ(host, proto::host_id());
  EXPECT_EQ(proto::actor_endpoint(address, local, host), local);
  // `actors show --json` has them too.
  auto shown = c_.query("actors show " + id);
  ASSERT_TRUE(shown.is_object());
  EXPECT_EQ(shown.value("local_address", ""), local) << shown.dump();
  EXPECT_EQ(shown.value("host_id", ""), host) << shown.dump();
  // Both endpoints reach the same actor: the second call sees the first one's effect.
  EXPECT_EQ(counter_add(ctx, local, token, id, 5), 5);
  EXPECT_EQ(counter_add(ctx, address, token, id, 7), 12);
  EXPECT_EQ(counter_add(ctx, local, token, id, 1), 13);
  // A stream of calls longer than the worker timeout (1.5 s) does not starve the worker's
  // heartbeats: the actor stays ALIVE in its first incarnation.
  {
    proto::RpcClient direct(ctx, local, token);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
    int calls = 0;
    while (std::chrono::steady_clock::now() < until) {
      auto r = direct.call(
          [&](proto::Envelope::Payload::Builder p) {
            auto call = p.initActorCall();
            call.setActorId(id);
            call.setMethod("get");
          },
          5000);
      ASSERT_TRUE(r.ok()) << "call " << calls << ": " << r.status().to_string();
      ASSERT_EQ(r.value().payload().getActorReturn().getCode(), 0);
      ++calls;
    }
    auto still = c_.query("actors show " + id);
    ASSERT_TRUE(still.is_object());
    EXPECT_EQ(still.value("state", ""), "ALIVE") << still.dump();
    EXPECT_EQ(still.value("incarnation", -1), 0) << still.dump();
  }
  // Killed (the agent stops the worker with SIGKILL): the socket file goes, and so do the
  // addresses in the actor's record.
  auto killed = ctl.call(
      [&](proto::Envelope::Payload::Builder p) {
        auto k = p.initKillActor();
        k.setActorId(id);
        k.setNoRestart(true);
      },
      5000);
  ASSERT_TRUE(killed.ok()) << killed.status().to_string();
  EXPECT_TRUE(Cluster::wait_for([&] { return !std::filesystem::exists(local.substr(6)); }, 10)) << local;
  auto dead = c_.query("actors show " + id);
  ASSERT_TRUE(dead.is_object());
  EXPECT_EQ(dead.value("state", ""), "DEAD");
  EXPECT_EQ(dead.value("local_address", "?"), "");
  EXPECT_EQ(dead.value("host_id", "?"), "");
}

}  // namespace
}  // namespace mariana::integration

namespace mariana::integration {
namespace {

// Without --log-dir an agent writes worker logs under its cluster's state dir, so two clusters
// whose nodes share an id (and whose jobs are both job-1) never mix their logs in `jobs logs`.
TEST(ClusterLogs, AgentsDefaultToTheStateDirSoTwoClustersNeverMix) {
  std::string first_state;
  for (int round = 0; round < 2; ++round) {
    Cluster c;
    c.start_controller();
    c.start_agent("n1", 2, /*default_log_dir=*/true);
    ASSERT_TRUE(c.wait_nodes_alive(1));
    const std::string job = c.submit(pretrain_job_file(), pretrain_sets(2, 2));  // a trainer logs its steps
    ASSERT_EQ(job, "job-1");
    ASSERT_EQ(c.wait_end(job), "SUCCEEDED");
    auto logs = run_mariana("jobs logs " + job + " " + c.client());
    ASSERT_EQ(logs.exit_code, 0) << logs.out;
    // Every file shown is this cluster's.
    size_t shown = 0;
    for (size_t at = logs.out.find("==> "); at != std::string::npos; at = logs.out.find("==> ", at + 4)) {
      const std::string path = logs.out.substr(at + 4, logs.out.find(" <==", at) - at - 4);
      EXPECT_EQ(path.rfind(c.state_dir() + "/logs/n1/", 0), 0u) << path;
      ++shown;
    }
    EXPECT_GT(shown, 0u) << logs.out;
    EXPECT_NE(logs.out.find("trainer: job job-1"), std::string::npos) << logs.out;
    if (round == 0) first_state = c.state_dir();
    else EXPECT_EQ(logs.out.find(first_state), std::string::npos) << "the first cluster's job-1 appears:\n" << logs.out;
  }
}

// Constructor arguments: an actor created with {"initial": 40} starts its counter at 40, and so does
// every incarnation after a kill -9 of its worker (the controller keeps the arguments with the
// actor); what is not a JSON object is refused at creation; an actor job's [actors] args reach
// each of its actors.
TEST_F(ClusterTest, ActorsTakeConstructorArgumentsInEveryIncarnation) {
  const std::string token = trim(read_file(c_.state_dir() + "/cluster.token").value());
  zmq::context_t ctx(1);
  proto::RpcClient ctl(ctx, c_.address(), token);
  auto bad = create_counter(ctl, "[40]", 3);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("field 'args': expected a JSON object"), std::string::npos)
      << bad.status().to_string();
  auto created = create_counter(ctl, R"({"initial": 40})", 3);
  ASSERT_TRUE(created.ok()) << created.status().to_string();
  const std::string id = created.value().payload().getCreateActorReply().getActorId().cStr();
  auto alive = [&](uint32_t incarnation) {
    return Cluster::wait_for(
        [&] {
          auto a = c_.query("actors show " + id);
          return a.value("state", "") == "ALIVE" && a.value("incarnation", 0u) == incarnation;
        },
        20);
  };
  ASSERT_TRUE(alive(0));
  auto endpoint = [&] { return c_.query("actors show " + id).value("address", ""); };
  EXPECT_EQ(counter_add(ctx, endpoint(), token, id, 2), 42);
  ASSERT_EQ(::kill(c_.query("actors show " + id).value("pid", 0), SIGKILL), 0);
  ASSERT_TRUE(alive(1)) << c_.query("actors show " + id).dump();
  EXPECT_EQ(counter_add(ctx, endpoint(), token, id, 1), 41) << "the new incarnation lost its arguments";
  EXPECT_EQ(c_.query("actors show " + id).value("args", ""), R"({"initial": 40})");

  const std::string job = c_.submit(c_.write_job("args", "kind = \"actors\"\n[actors]\nclass = \"counter\"\ncount = 2\n"
                                                         "args = { initial = 7 }\n[run]\nsteps = 3\n"));
  EXPECT_EQ(c_.wait_end(job), "SUCCEEDED");
  int with_args = 0;
  for (auto& a : c_.query("actors list"))
    if (a.value("job_id", "") == job) {
      EXPECT_EQ(nlohmann::json::parse(a.value("args", "{}")), nlohmann::json::parse(R"({"initial": 7})")) << a.dump();
      ++with_args;
    }
  EXPECT_EQ(with_args, 2);
}

// A [[roles]] job serves until stopped; an ActorMesh calls one method on every actor of a role at
// once; ActorHandle reaches an actor by (job, role, index), calls it
// directly, follows it to its next incarnation after a kill -9 of its worker (the new incarnation
// built with the role's args), returns a method's own error as it is, and names what it cannot find.
TEST_F(ClusterTest, RolesJobActorsAreReachedByHandleAcrossRestarts) {
  const std::string job = c_.submit(c_.write_job(
      "roles", "kind = \"actors\"\n"
               "[[roles]]\nname = \"counter\"\nclass = \"counter\"\ncount = 2\nargs = { initial = 5 }\n"
               "resources = { CPU = 0.5 }\n"
               "[[roles]]\nname = \"echo\"\nclass = \"echo\"\ncount = 1\nresources = { CPU = 0.5 }\n"));
  ASSERT_TRUE(Cluster::wait_for([&] { return alive_actors(job).size() == 3; }, 30)) << c_.job(job).dump();
  EXPECT_EQ(c_.job(job).value("state", ""), "RUNNING");
  const std::string token = trim(read_file(c_.state_dir() + "/cluster.token").value());
  auto add = [](int64_t v) {
    return proto::encode_struct<proto::Int64Value>([&](proto::Int64Value::Builder b) { b.setValue(v); });
  };
  auto value = [](const Result<std::string>& r) -> int64_t {
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    if (!r.ok()) return -1;
    return proto::StructValue<proto::Int64Value>::decode(r.value(), "result").value().get().getValue();
  };
  // A mesh call: "add" on both counters at once, each its own argument, results in index order.
  auto mesh = workers::ActorMesh::resolve(c_.address(), token, job, "counter");
  ASSERT_TRUE(mesh.ok()) << mesh.status().to_string();
  EXPECT_EQ(mesh.value().size(), 2);
  auto both = mesh.value().call("add", {add(10), add(20)}, 10000);
  ASSERT_TRUE(both.ok()) << both.status().to_string();
  EXPECT_EQ(value(both.value()[0]), 15);
  EXPECT_EQ(value(both.value()[1]), 25);
  EXPECT_EQ(mesh.value().call("add", {add(1), add(1), add(1)}, 1000).status().code(), StatusCode::kInvalidArgument);
  auto failing = mesh.value().call("fail", {""}, 10000);
  EXPECT_NE(failing.status().message().find("actor 0 of the mesh"), std::string::npos) << failing.status().to_string();
  EXPECT_EQ(workers::ActorMesh::resolve(c_.address(), token, job, "nosuch").status().code(), StatusCode::kNotFound);
  workers::ActorHandle counter(c_.address(), token, job, "counter", 1);
  EXPECT_EQ(value(counter.call("add", add(3), 10000)), 28);
  EXPECT_EQ(counter.incarnation(), 0u);
  const std::string id = counter.actor_id();
  EXPECT_NE(c_.query("actors show " + id).value("name", "").find("/counter/1"), std::string::npos);
  ASSERT_EQ(::kill(c_.query("actors show " + id).value("pid", 0), SIGKILL), 0);
  EXPECT_EQ(value(counter.call("add", add(1), 20000)), 6) << "not the new incarnation, built with initial = 5";
  EXPECT_EQ(counter.incarnation(), 1u);
  EXPECT_EQ(counter.actor_id(), id);
  workers::ActorHandle echo(c_.address(), token, job, "echo", 0);
  auto echoed = echo.call("echo", "hello", 10000);
  ASSERT_TRUE(echoed.ok()) << echoed.status().to_string();
  EXPECT_EQ(echoed.value(), "hello");
  auto failed = counter.call("fail", "", 10000);
  EXPECT_EQ(failed.status().code(), StatusCode::kFailedPrecondition) << failed.status().to_string();
  workers::ActorHandle nosuch(c_.address(), token, job, "counter", 2);
  EXPECT_EQ(nosuch.call("get", "", 5000).status().code(), StatusCode::kNotFound);
  // Stopped: the job ends and its actors with it; a handle then says the actor is dead.
  ASSERT_EQ(run_mariana("jobs stop " + job + " " + c_.client()).exit_code, 0);
  EXPECT_EQ(c_.wait_end(job), "STOPPED");
  auto after = echo.call("echo", "x", 5000);
  EXPECT_FALSE(after.ok());
}

}  // namespace
}  // namespace mariana::integration
