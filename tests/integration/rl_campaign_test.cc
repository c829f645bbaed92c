// An RL campaign on a real loopback cluster: configs/jobs/rl-tiny.toml made short with --set and
// given [campaign] roles (2 generators, 2 scorers, a reference beside the learner), each its own
// worker process, the weights broadcast over a comm/ group (formed again after the generator's
// restart). It is kill -9ed role by role (a generator, a scorer, the reference, the learner)
// and then the controller, and still ends bit for bit where the single-process `mariana train` run
// of the same spec ends: every iteration's metrics (rewards, KL, lengths, ...; timings aside) and
// the final weights and moments. The rewards include a reward model's (a scorer part of real
// values), so the rewards compared are never all zero.
#include <gtest/gtest.h>

#include <signal.h>

#include <future>
#include <sstream>

#include "tests/integration/train_job_util.h"
#include "tests/train/checkpoint_files.h"

namespace mariana::integration {
namespace {

constexpr int kIterations = 60;

// The job's actor whose name ends in `suffix` ("/generator/0", ...): id, pid, incarnation.
struct Member {
  std::string id;
  int pid = 0;
  int64_t incarnation = -1;
  bool alive = false;
};
Member member(Cluster& c, const std::string& job, const std::string& suffix) {
  Member m;
  for (auto& a : c.query("actors list")) {
    const std::string name = a.value("name", "");
    if (a.value("job_id", "") != job || name.size() < suffix.size() ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      continue;
    m.id = a.value("id", "");
    m.pid = a.value("pid", 0);
    m.incarnation = a.value("incarnation", int64_t{0});
    m.alive = a.value("state", "") == "ALIVE";
  }
  return m;
}

TEST(RlCampaign, KillingEveryRoleAndTheControllerEndsAsTheOneProcessRun) {
  Cluster c;
  std::string sets = rl_tiny_sets(c, kIterations);
  ASSERT_FALSE(sets.empty());
  // Rewards from the math, format and reward-model scorers: the model's part is a real number for
  // every response, so every reward compared is one no two runs share by chance.
  const std::string rm = make_reward_model(c, c.dir() + "/pre/checkpoints/" + step_dir(150));
  ASSERT_FALSE(rm.empty());
  sets += " --set campaign.generators=2 --set campaign.scorers=2 --set 'reward.scorers=[\"math\", \"format\", \"model\"]'"
          " --set 'reward.weights=[1.0, 0.1, 0.5]' --set reward.model=" + rm;
  const std::string job_file = rl_tiny_job_file();
  const std::string ref_dir = c.dir() + "/ref";
  // `mariana train` runs the same file in one process ([campaign] is for the cluster).
  auto ref = std::async(std::launch::async,
                        [&] { return run_mariana("train " + job_file + " " + sets + " --run-dir " + ref_dir + " --quiet", 120); });
  c.start_controller();
  c.start_agent("n1", 6);  // the learner, 2 generators, 2 scorers, the reference: { CPU = 1 } each
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(job_file, sets);
  ASSERT_EQ(job, "job-1");

  // One role at a time: wait for progress, kill it, wait for its next incarnation and more progress.
  int64_t at = 2;
  std::vector<std::string> killed;
  // The learner is the job's trainer actor, "rl-tiny/0".
  for (const std::string suffix : {"/generator/0", "/scorer/1", "/reference/0", "rl-tiny/0"}) {
    ASSERT_TRUE(c.wait_step(job, at, 60)) << "no iteration " << at << ": " << c.job(job).dump();
    const Member m = member(c, job, suffix);
    ASSERT_TRUE(m.alive && m.pid > 0) << suffix << " is not running";
    ASSERT_LT(c.job(job).value("step", 0), kIterations) << "the job ended before " << suffix << " was killed";
    ASSERT_EQ(::kill(m.pid, SIGKILL), 0);
    std::fprintf(stderr, "killed %s (%s, pid %d) at iteration >= %lld\n", suffix.c_str(), m.id.c_str(), m.pid,
                 (long long)at);
    killed.push_back(m.id);
    ASSERT_TRUE(Cluster::wait_for(
        [&] {
          const Member n = member(c, job, suffix);
          return n.alive && n.incarnation > m.incarnation;
        },
        30))
        << suffix << " was not restarted";
    at = c.job(job).value("step", 0) + 3;
  }
  ASSERT_TRUE(c.wait_step(job, at, 60));
  ASSERT_LT(c.job(job).value("step", 0), kIterations) << "the job ended before the controller was killed";
  c.kill9_controller();
  c.start_controller();

  EXPECT_EQ(c.wait_end(job, 180), "SUCCEEDED") << c.job(job).dump();
  auto r = ref.get();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const std::string& id : killed) {
    auto a = c.query("actors show " + id);
    ASSERT_TRUE(a.is_object());
    EXPECT_GE(a.value("num_restarts", 0), 1) << a.dump();
  }
  expect_rl_job_equals_reference(c, job, ref_dir, kIterations);
  // Not a trivial equality: rewards came in (the reward model's in every iteration), and the KL term
  // moved the weights.
  EXPECT_GE(rewarded_iterations(ref_dir), 5);
  auto first = read_file(ref_dir + "/metrics.jsonl");
  ASSERT_TRUE(first.ok());
  const auto line = nlohmann::json::parse(first.value().substr(0, first.value().find('\n')));
  EXPECT_NE(line["reward_parts"].value("model", 0.0), 0.0) << line.dump();
  // The learner's first incarnation formed the weights group, and formed it again after generator
  // 0's restart (killed[3] is the learner, killed after the generator).
  auto log = read_file(c.dir() + "/logs-n1/" + killed[3] + "-0.out");
  ASSERT_TRUE(log.ok()) << log.status().to_string();
  size_t formed = 0;
  for (size_t at_pos = 0; (at_pos = log.value().find("campaign: weights group", at_pos)) != std::string::npos; ++at_pos)
    ++formed;
  EXPECT_GE(formed, 2u) << log.value();
  // `jobs show` lists the job's actors by role, with their restarts.
  auto shown = run_mariana("jobs show " + job + " " + c.client());
  ASSERT_EQ(shown.exit_code, 0) << shown.out;
  for (const char* name : {"rl-tiny/0", "rl-tiny/generator/0", "rl-tiny/generator/1", "rl-tiny/scorer/0",
                           "rl-tiny/scorer/1", "rl-tiny/reference/0"})
    EXPECT_NE(shown.out.find(name), std::string::npos) << name << " not in:\n" << shown.out;
  EXPECT_NE(shown.out.find("RESTARTS"), std::string::npos) << shown.out;
}

}  // namespace
}  // namespace mariana::integration

namespace mariana::integration {
namespace {

// rl.max_staleness = 1 on a campaign of one generator and one scorer: the next iteration's rollout
// runs on the generator while the learner updates. Every batch is one version behind the policy it
// updates (after the first), no batch mixes versions (each generator call is answered from the one
// version asked for), and the job still equals the one-process run of the same file bit for bit.
TEST(RlCampaign, AsynchronousCampaignEqualsTheOneProcessRun) {
  constexpr int kIters = 20;
  Cluster c;
  std::string sets = rl_tiny_sets(c, kIters);
  ASSERT_FALSE(sets.empty());
  // 16 prompts x 8 samples of up to 24 tokens: replies of 128 samples, as the main job's.
  // Weights by actor calls here (the other test broadcasts them over a comm/ group).
  sets += " --set campaign.generators=1 --set campaign.scorers=1 --set rl.max_staleness=1"
          " --set campaign.weight_sync=calls"
          " --set rollout.prompts=16 --set rollout.group_size=8 --set rollout.max_new_tokens=24";
  const std::string ref_dir = c.dir() + "/ref";
  auto ref = run_mariana("train " + rl_tiny_job_file() + " " + sets + " --run-dir " + ref_dir + " --quiet", 120);
  ASSERT_EQ(ref.exit_code, 0) << ref.out;
  c.start_controller();
  c.start_agent("n1", 4);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(rl_tiny_job_file(), sets);
  EXPECT_EQ(c.wait_end(job, 120), "SUCCEEDED") << c.job(job).dump();
  expect_rl_job_equals_reference(c, job, ref_dir, kIters);
  EXPECT_GE(rewarded_iterations(ref_dir), 2);
  auto m = c.query("jobs metrics " + job);
  ASSERT_TRUE(m.is_object());
  ASSERT_EQ(m["metrics"].size(), static_cast<size_t>(kIters));
  for (auto& p : m["metrics"]) {
    const int64_t it = p.value("iteration", int64_t{0}), stale = p.value("staleness", int64_t{-1});
    EXPECT_EQ(stale, it == 1 ? 0 : 1) << p.dump();
    EXPECT_EQ(p.value("sample_version", int64_t{-1}), it - 1 - stale) << p.dump();
  }
}

}  // namespace
}  // namespace mariana::integration

namespace mariana::integration {
namespace {

// [parallel] dp = 2 on the cluster: the learner is a gang of two trainer actors (rank 0 drives the
// campaign's generator, scorer and reference) learning with ZeRO-1. Rank 1 is killed with
// kill -9; the gang restarts together from the last registered checkpoint (every rank's moment
// slices in it), the campaign's roles untouched, and the job ends bit for bit as `mariana train
// --nproc 2` of the same file (the same layout sums the same way).
TEST(RlCampaign, ADataParallelLearnerGangEqualsTheLocalRanksRun) {
  constexpr int kIters = 24;
  Cluster c;
  std::string sets = rl_tiny_sets(c, kIters);
  ASSERT_FALSE(sets.empty());
  sets += " --set parallel.dp=2 --set campaign.generators=1 --set campaign.scorers=1";
  const std::string ref_dir = c.dir() + "/ref";
  auto ref = std::async(std::launch::async, [&] {
    return run_mariana("train " + rl_tiny_job_file() + " " + sets + " --nproc 2 --run-dir " + ref_dir + " --quiet", 180);
  });
  c.start_controller();
  c.start_agent("n1", 5);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(rl_tiny_job_file(), sets);
  ASSERT_TRUE(c.wait_step(job, 4, 90)) << c.job(job).dump();
  const Member rank1 = member(c, job, "rl-tiny/1");
  ASSERT_TRUE(rank1.alive && rank1.pid > 0);
  ASSERT_LT(c.job(job).value("step", 0), kIters) << "the job ended before the kill";
  ASSERT_EQ(::kill(rank1.pid, SIGKILL), 0);
  EXPECT_EQ(c.wait_end(job, 180), "SUCCEEDED") << c.job(job).dump();
  auto r = ref.get();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto a = c.query("actors show " + rank1.id);
  ASSERT_TRUE(a.is_object());
  EXPECT_GE(a.value("num_restarts", 0), 1) << a.dump();
  expect_rl_job_equals_reference(c, job, ref_dir, kIters);
  EXPECT_GE(rewarded_iterations(ref_dir), 2);
  char name[32];
  std::snprintf(name, sizeof name, "iter-%06d", kIters);
  for (const char* f : {"optimizer-00001-of-00002.safetensors", "optimizer-00002-of-00002.safetensors"})
    EXPECT_TRUE(std::filesystem::exists(c.state_dir() + "/runs/" + job + "/checkpoints/" + name + "/" + f)) << f;
}

}  // namespace
}  // namespace mariana::integration
