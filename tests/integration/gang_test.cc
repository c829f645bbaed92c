// A parallel training job on a real loopback cluster: configs/jobs/pretrain-tiny-parallel.toml
// (dp2 × ep2, node-limited routing) runs as a gang of four trainer actors over two agents, the
// ranks joined by Gloo through the controller's key-value table. One rank's worker is kill -9ed
// mid-job: the controller restarts the whole gang from the last registered checkpoint, and the job
// ends byte-identical to an uninterrupted `mariana train --nproc 4` run of the same spec.
#include <gtest/gtest.h>

#include <signal.h>

#include <future>
#include <random>

#include "tests/integration/train_job_util.h"
#include "workers/controller_kv_store.h"

namespace mariana::integration {
namespace {

constexpr int kSteps = 16;
constexpr int kCheckpointEvery = 4;

std::string parallel_job_file() { return std::string(MARIANA_SOURCE_DIR) + "/configs/jobs/pretrain-tiny-parallel.toml"; }

std::string parallel_sets() {
  return "--set train.steps=" + std::to_string(kSteps) + " --set train.checkpoint_every=" +
         std::to_string(kCheckpointEvery) + " --set train.keep_last=2 --set data.documents=300 --set batch.rows=16" +
         " --set parallel.timeout_s=20 --set model.config=" + std::string(MARIANA_SOURCE_DIR) +
         "/configs/models/tiny.json";
}

// Every worker log of the two agents, concatenated.
std::string worker_logs(Cluster& c) {
  std::string logs;
  for (const char* n : {"/logs-n1", "/logs-n2"})
    for (auto& e : std::filesystem::directory_iterator(c.dir() + n))
      if (auto t = read_file(e.path().string()); t.ok()) logs += t.value();
  return logs;
}

TEST(GangJob, Kill9OfOneRankRestartsTheGangAndEndsBitForBit) {
  Cluster c;
  const std::string ref_dir = c.dir() + "/ref";
  std::future<CommandResult> ref = std::async(std::launch::async, [&] {
    return run_mariana("train " + parallel_job_file() + " " + parallel_sets() + " --nproc 4 --run-dir " + ref_dir +
                           " --quiet",
                       180);
  });
  c.start_controller();
  c.start_agent("n1", 2);
  c.start_agent("n2", 2);
  ASSERT_TRUE(c.wait_nodes_alive(2));
  const std::string job = c.submit(parallel_job_file(), parallel_sets());
  ASSERT_FALSE(job.empty());

  // Four ALIVE ranks, one per bundle, two per node.
  std::map<std::string, std::string> node_of;  // actor id -> node
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        node_of.clear();
        for (auto& a : c.query("actors list"))
          if (a.value("job_id", "") == job && a.value("state", "") == "ALIVE") node_of[a.value("id", "")] = a.value("node_id", "");
        return node_of.size() == 4;
      },
      90))
      << c.job(job).dump();
  std::map<std::string, int> per_node;
  for (auto& [a, n] : node_of) ++per_node[n];
  EXPECT_EQ(per_node.size(), 2u);

  // Kill one rank's worker (not rank 0: the one that reports) at a random step before the end.
  std::mt19937 rng(std::random_device{}());
  const int kill_at = std::uniform_int_distribution<int>(2, kSteps - 6)(rng);
  int victim = 0, killed_at = -1;
  std::string victim_actor;
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        auto j = c.job(job);
        if (!j.is_object() || j.value("state", "") != "RUNNING" || j.value("step", 0) < kill_at) return false;
        for (auto& a : c.query("actors list"))
          if (a.value("job_id", "") == job && a.value("state", "") == "ALIVE" &&
              a.value("name", "").ends_with("/2")) {
            victim = a.value("pid", 0);
            victim_actor = a.value("id", "");
            killed_at = j.value("step", 0);
          }
        return victim > 0;
      },
      120))
      << "the job did not reach step " << kill_at << ": " << c.job(job).dump();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  ASSERT_LT(killed_at, kSteps) << "the job ended before the kill";
  std::fprintf(stderr, "killed rank 2 (pid %d) at step %d\n", victim, killed_at);

  EXPECT_EQ(c.wait_end(job, 240), "SUCCEEDED") << c.job(job).dump();
  // The gangs' rendezvous keys are gone from the controller's key-value table: the first gang's
  // (generation 0) and the restarted one's (every rank's incarnation 1: generation 4).
  {
    workers::ControllerKvStore kv(trim(read_file(c.state_dir() + "/controller.addr").value()),
                                  trim(read_file(c.state_dir() + "/cluster.token").value()));
    for (const char* key : {"/0/node/0", "/4/node/0", "/4/node/3"}) {
      auto v = kv.try_get("gang/" + job + key);
      ASSERT_TRUE(v.ok()) << v.status().to_string();
      EXPECT_FALSE(v.value().has_value()) << "gang/" << job << key << " is still stored";
    }
  }
  auto r = ref.get();
  ASSERT_EQ(r.exit_code, 0) << r.out;

  // The killed rank spent one restart; every other rank restarted once without spending any.
  int restarted = 0;
  for (auto& a : c.query("actors list")) {
    if (a.value("job_id", "") != job) continue;
    EXPECT_GE(a.value("num_restarts", 0), 1) << a.dump();
    restarted += a.value("num_restarts", 0) >= 1;
    if (a.value("id", "") == victim_actor)
      EXPECT_NE(a.value("last_failure", "").find("signal 9"), std::string::npos) << a.dump();
    else
      EXPECT_EQ(a.value("last_failure", ""), "") << a.dump();
  }
  EXPECT_EQ(restarted, 4);
  expect_job_equals_reference(c, job, ref_dir, kSteps);

  // Rank 0 printed where the ranks ran: spread over the two nodes, each replica's ep ranks 0 and 1
  // on different nodes, as the job's nodes = 2 declares (so no warning).
  const std::string logs = worker_logs(c);
  EXPECT_NE(logs.find("gang layout (rank@node): 0@n1, 1@n2, 2@n1, 3@n2"), std::string::npos) << logs;
  EXPECT_EQ(logs.find("warning: parallel.nodes"), std::string::npos) << logs;
}

// A node failure and a controller failure in one gang run: kill -9 of an agent hosting two ranks
// (the node's ranks move to the other nodes, the rest of the gang restarts with them), then kill -9
// of the controller, restarted on the same state dir (the running gang goes on; the driver
// recomputes the same generation). The job ends byte-identical to the uninterrupted run.
TEST(GangJob, Kill9OfAnAgentAndOfTheControllerStillEndBitForBit) {
  Cluster c;
  const int steps = 120, every = 10;
  const std::string sets = parallel_sets() + " --set train.steps=" + std::to_string(steps) +
                           " --set train.checkpoint_every=" + std::to_string(every);
  const std::string ref_dir = c.dir() + "/ref";
  std::future<CommandResult> ref = std::async(std::launch::async, [&] {
    return run_mariana("train " + parallel_job_file() + " " + sets + " --nproc 4 --run-dir " + ref_dir + " --quiet", 300);
  });
  c.start_controller();
  for (const char* n : {"n1", "n2", "n3"}) c.start_agent(n, 2);
  ASSERT_TRUE(c.wait_nodes_alive(3));
  const std::string job = c.submit(parallel_job_file(), sets);
  ASSERT_FALSE(job.empty());
  std::string victim_node;
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        auto j = c.job(job);
        if (!j.is_object() || j.value("last_checkpoint_step", 0) < every) return false;
        for (auto& a : c.query("actors list"))
          if (a.value("job_id", "") == job && a.value("state", "") == "ALIVE" && a.value("name", "").ends_with("/1"))
            victim_node = a.value("node_id", "");
        return !victim_node.empty();
      },
      120))
      << c.job(job).dump();
  const int killed_at = c.job(job).value("step", 0);
  c.kill9_agent(victim_node);
  // The gang restarts without the dead node and makes progress past a later checkpoint.
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        auto j = c.job(job);
        if (!j.is_object()) return false;
        if (j.value("state", "") != "RUNNING") return true;
        bool off_victim = true;
        for (auto& a : c.query("actors list"))
          if (a.value("job_id", "") == job && a.value("node_id", "") == victim_node) off_victim = false;
        return off_victim && j.value("step", 0) >= killed_at + 3;
      },
      120))
      << c.job(job).dump();
  auto before = c.job(job);
  ASSERT_EQ(before.value("state", ""), "RUNNING") << "the job ended before the controller was killed";
  std::fprintf(stderr, "agent %s killed at step %d; controller killed at step %d\n", victim_node.c_str(), killed_at,
               before.value("step", 0));
  c.kill9_controller();
  c.start_controller();
  EXPECT_EQ(c.wait_end(job, 240), "SUCCEEDED") << c.job(job).dump();
  auto r = ref.get();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  expect_job_equals_reference(c, job, ref_dir, steps);
}

// A failure every rank hits on its own (here the loss diverges: lr 1e9) is the job's end, as in a
// one-process job, not a reason to restart the gang until the budgets run out.
TEST(GangJob, ARankFailureThatIsNotCommunicationFailsTheJob) {
  Cluster c;
  c.start_controller();
  c.start_agent("n1", 4);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(parallel_job_file(), parallel_sets() + " --set optimizer.lr=1e9 --set optimizer.warmup_steps=0");
  ASSERT_FALSE(job.empty());
  EXPECT_EQ(c.wait_end(job, 120), "FAILED") << c.job(job).dump();
  const auto j = c.job(job);
  EXPECT_NE(j.value("message", "").find("OutOfRange"), std::string::npos) << j.dump();
  for (auto& a : c.query("actors list"))
    if (a.value("job_id", "") == job) EXPECT_EQ(a.value("num_restarts", 0), 0) << a.dump();
}

// Packed two per node, each replica's ep ranks share a node against the declared nodes = 2: the job
// runs (the routing follows the declared layout) and rank 0 warns, naming the ranks and nodes.
TEST(GangJob, APlacementThatDoesNotMatchTheDeclaredNodesIsReported) {
  Cluster c;
  c.start_controller();
  c.start_agent("n1", 2);
  c.start_agent("n2", 2);
  ASSERT_TRUE(c.wait_nodes_alive(2));
  const std::string job = c.submit(parallel_job_file(), parallel_sets() + " --set parallel.placement=pack --set train.steps=2");
  ASSERT_FALSE(job.empty());
  EXPECT_EQ(c.wait_end(job, 120), "SUCCEEDED") << c.job(job).dump();
  const std::string logs = worker_logs(c);
  EXPECT_NE(logs.find("gang layout (rank@node): 0@n1, 1@n1, 2@n2, 3@n2"), std::string::npos) << logs;
  EXPECT_NE(logs.find("warning: parallel.nodes = 2 declares ep ranks 0 and 1 on different nodes, but they run on n1 and n1"),
            std::string::npos)
      << logs;
}

TEST(GangJob, ABadParallelSpecIsRefusedAtSubmit) {
  Cluster c;
  c.start_controller();
  c.start_agent("n1", 2);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  auto r = run_mariana("submit " + parallel_job_file() + " " + parallel_sets() + " --set parallel.placement=ring " +
                       c.client());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("parallel.placement"), std::string::npos) << r.out;
  // Four ranks of one CPU each cannot fit a cluster of two CPUs.
  auto big = run_mariana("submit " + parallel_job_file() + " " + parallel_sets() + " " + c.client());
  EXPECT_NE(big.exit_code, 0) << big.out;
}

}  // namespace
}  // namespace mariana::integration
