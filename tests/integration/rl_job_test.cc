// A GRPO (rl) job on a real loopback cluster: configs/jobs/rl-tiny.toml, made short with --set,
// runs inside a trainer actor whose worker is kill -9ed at a random iteration; the actor restarts,
// resumes from the last registered iter-N checkpoint (policy, AdamW moments, prompt position,
// version), and the job ends bit for bit where an uninterrupted `mariana train` run of the same
// spec ends: final weights, moments and every iteration's metrics (timings aside), each iteration
// on the controller once.
#include <gtest/gtest.h>

#include <signal.h>

#include <future>
#include <sstream>

#include "tests/integration/train_job_util.h"
#include "tests/train/checkpoint_files.h"

namespace mariana::integration {
namespace {

constexpr int kIterations = 40;

TEST(RlJob, Kill9OfTheLearnerResumesBitForBit) {
  Cluster c;
  std::string sets = rl_tiny_sets(c, kIterations);
  ASSERT_FALSE(sets.empty());
  const std::string job_file = rl_tiny_job_file();
  const std::string ref_dir = c.dir() + "/ref";
  auto ref = std::async(std::launch::async,
                        [&] { return run_mariana("train " + job_file + " " + sets + " --run-dir " + ref_dir + " --quiet", 120); });
  c.start_controller();
  c.start_agent("n1", 2);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(job_file, sets);
  ASSERT_EQ(job, "job-1");

  const KilledActor k = kill9_at_random_step(c, job, kIterations / 2);
  ASSERT_GT(k.actor.pid, 0) << "the job did not reach iteration " << k.kill_at << ": " << c.job(job).dump();
  ASSERT_TRUE(k.killed);
  const int killed_at = k.actor.step, registered_at_kill = k.actor.registered;
  const std::string actor_id = k.actor.id;
  ASSERT_LT(killed_at, kIterations) << "the job ended before the kill";

  EXPECT_EQ(c.wait_end(job, 120), "SUCCEEDED") << c.job(job).dump();
  auto r = ref.get();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto a = c.query("actors show " + actor_id);
  ASSERT_TRUE(a.is_object());
  EXPECT_GE(a.value("num_restarts", 0), 1) << a.dump();

  // The controller: one metric point per iteration; bit for bit the uninterrupted run.
  expect_rl_job_equals_reference(c, job, ref_dir, kIterations);
  const std::string run_dir = c.state_dir() + "/runs/" + job;
  // The new incarnation resumed from a registered checkpoint when there was one (else from scratch).
  auto log = read_file(c.dir() + "/logs-n1/" + actor_id + "-1.out");
  ASSERT_TRUE(log.ok()) << log.status().to_string();
  if (registered_at_kill > 0)
    EXPECT_NE(log.value().find("resuming from " + run_dir + "/checkpoints/iter-"), std::string::npos) << log.value();
}

}  // namespace
}  // namespace mariana::integration
