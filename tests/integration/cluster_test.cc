// Integration tests on a real loopback cluster: a controller and two agents run a
// placement-grouped actor job; kill -9 of a worker, of an agent and of the controller mid-job;
// the job still finishes with no job, actor, metric point or checkpoint record lost.
#include <gtest/gtest.h>

#include <signal.h>

#include <set>

#include "tests/integration/cluster_fixture.h"

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

}  // namespace
}  // namespace mariana::integration
