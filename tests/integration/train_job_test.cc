// Training jobs on a real loopback cluster: configs/jobs/pretrain-tiny.toml (made short with --set)
// runs inside a trainer actor; its worker is kill -9ed at a random step; the actor restarts,
// resumes from the last registered checkpoint, and the final model.safetensors is byte-identical
// to an uninterrupted `mariana train` run of the same spec. Every step's metrics are on the
// controller, equal to the uninterrupted run's, and every checkpoint is registered.
#include <gtest/gtest.h>

#include <signal.h>

#include <future>
#include <sstream>

#include "tests/integration/train_job_util.h"

namespace mariana::integration {
namespace {

constexpr int kSteps = 24;
constexpr int kCheckpointEvery = 4;

std::string job_file() { return pretrain_job_file(); }
std::string short_sets() { return pretrain_sets(kSteps, kCheckpointEvery); }

TEST(TrainJob, Kill9OfTheTrainerResumesFromTheRegisteredCheckpointBitForBit) {
  Cluster c;
  // The uninterrupted reference run, side by side with the cluster's.
  std::future<CommandResult> ref;
  const std::string ref_dir = start_reference_run(c, short_sets(), &ref);
  c.start_controller();
  c.start_agent("n1", 2);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(job_file(), short_sets());
  ASSERT_EQ(job, "job-1");

  // Kill the trainer's worker once the job has reached a random step before the end.
  const KilledActor k = kill9_at_random_step(c, job, kSteps - 6);
  ASSERT_GT(k.actor.pid, 0) << "the job did not reach step " << k.kill_at << ": " << c.job(job).dump();
  ASSERT_TRUE(k.killed);
  const int killed_at = k.actor.step, registered_at_kill = k.actor.registered;
  const std::string actor_id = k.actor.id;
  ASSERT_LT(killed_at, kSteps) << "the job ended before the kill";

  EXPECT_EQ(c.wait_end(job, 120), "SUCCEEDED") << c.job(job).dump();
  auto r = ref.get();
  ASSERT_EQ(r.exit_code, 0) << r.out;

  auto a = c.query("actors show " + actor_id);
  ASSERT_TRUE(a.is_object());
  EXPECT_GE(a.value("num_restarts", 0), 1) << a.dump();
  EXPECT_NE(a.value("last_failure", "").find("signal 9"), std::string::npos) << a.dump();

  // The new incarnation resumed from a registered checkpoint (not from scratch: same weights too).
  auto log = read_file(c.dir() + "/logs-n1/" + actor_id + "-1.out");
  ASSERT_TRUE(log.ok()) << log.status().to_string();
  if (registered_at_kill > 0) {
    const std::string from = "resuming from " + c.state_dir() + "/runs/" + job + "/checkpoints/step-";
    const size_t at = log.value().find(from);
    ASSERT_NE(at, std::string::npos) << log.value();
    const int resumed = std::atoi(log.value().c_str() + at + from.size());
    EXPECT_GE(resumed, registered_at_kill);
    EXPECT_LE(resumed, killed_at + kCheckpointEvery);
    EXPECT_NE(log.value().find("step " + std::to_string(resumed + 1) + "/"), std::string::npos) << log.value();
    EXPECT_EQ(log.value().find("step 1/"), std::string::npos) << "restarted from scratch:\n" << log.value();
  }

  // The controller's view: the last step's metrics, every checkpoint registered, one point per step.
  auto j = c.job(job);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("kind", ""), "pretrain");
  EXPECT_EQ(j["last_metrics"].value("step", 0), kSteps) << j.dump();
  ASSERT_EQ(j["checkpoint_paths"].size(), static_cast<size_t>(kSteps / kCheckpointEvery)) << j.dump();
  const std::string final_ckpt = j["checkpoint_paths"].back().get<std::string>();
  EXPECT_EQ(std::filesystem::path(final_ckpt).filename().string(), step_dir(kSteps));
  EXPECT_NE(j.value("message", "").find(final_ckpt), std::string::npos) << j.dump();

  // Bit for bit: the final weights, and the loss of every step.
  expect_job_equals_reference(c, job, ref_dir, kSteps);
  // The human table too.
  auto table = run_mariana("jobs metrics " + job + " " + c.client());
  EXPECT_EQ(table.exit_code, 0) << table.out;
  EXPECT_NE(table.out.find("TOKENS/S"), std::string::npos) << table.out;
}

// A node failure and a controller failure in one run: kill -9 of the agent that hosts the trainer
// (its worker dies with it) reschedules the trainer on the other node, which resumes from the
// registered checkpoint; then kill -9 of the controller, restarted on the same state dir: the
// trainer carries on (its worker re-registers and resends its unacknowledged report). The final
// weights still equal the uninterrupted run's.
TEST(TrainJob, Kill9OfTheTrainersAgentAndOfTheControllerStillEndBitForBit) {
  Cluster c;
  std::future<CommandResult> ref;
  const std::string ref_dir = start_reference_run(c, short_sets(), &ref);
  c.start_controller();
  c.start_agent("n1", 2);
  c.start_agent("n2", 2);
  ASSERT_TRUE(c.wait_nodes_alive(2));
  const std::string job = c.submit(job_file(), short_sets());
  auto trainer_node = [&]() -> std::string {
    for (auto& a : c.query("actors list"))
      if (a.value("job_id", "") == job && a.value("state", "") == "ALIVE") return a.value("node_id", "");
    return "";
  };
  std::string first;
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        auto j = c.job(job);
        if (!j.is_object() || j.value("last_checkpoint_step", 0) < kCheckpointEvery) return false;
        first = trainer_node();
        return !first.empty();
      },
      90));
  c.kill9_agent(first);
  const std::string other = first == "n1" ? "n2" : "n1";
  ASSERT_TRUE(Cluster::wait_for([&] { return trainer_node() == other; }, 30)) << "the trainer was not rescheduled";
  const int resumed_at = c.job(job).value("step", 0);
  EXPECT_GE(resumed_at, kCheckpointEvery) << "the rescheduled trainer did not resume from the registered checkpoint";
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        auto j = c.job(job);
        return j.is_object() && (j.value("step", 0) >= resumed_at + 2 || j.value("state", "") != "RUNNING");
      },
      60));
  auto before = c.job(job);
  EXPECT_EQ(before.value("state", ""), "RUNNING") << "the job ended before the controller was killed";
  std::fprintf(stderr, "trainer moved %s -> %s at step %d; controller killed at step %d\n", first.c_str(),
               other.c_str(), resumed_at, before.value("step", 0));
  c.kill9_controller();
  c.start_controller();
  EXPECT_EQ(c.wait_end(job, 120), "SUCCEEDED") << c.job(job).dump();
  auto r = ref.get();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(c.job(job)["checkpoint_paths"].size(), static_cast<size_t>(kSteps / kCheckpointEvery)) << c.job(job).dump();
  expect_job_equals_reference(c, job, ref_dir, kSteps);
}

// "Controller down, then the worker killed": while the controller is down the trainer goes on and
// keep_last prunes the checkpoint the controller registered; its worker then dies with the reports
// it had queued. The restarted trainer resumes from the newest checkpoint on disk and re-reports
// the steps the controller never saw: every step's metrics are on the controller exactly once.
TEST(TrainJob, ControllerDownThenTrainerKilledLosesNoStepMetrics) {
  Cluster c;
  std::future<CommandResult> ref;
  const std::string ref_dir = start_reference_run(c, short_sets(), &ref);
  c.start_controller();
  c.start_agent("n1", 2);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(job_file(), short_sets());
  int victim = 0, registered = 0;
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        auto j = c.job(job);
        if (!j.is_object() || j.value("last_checkpoint_step", 0) < kCheckpointEvery) return false;
        registered = j.value("last_checkpoint_step", 0);
        for (auto& a : c.query("actors list"))
          if (a.value("job_id", "") == job && a.value("state", "") == "ALIVE") victim = a.value("pid", 0);
        return victim > 0;
      },
      90));
  c.kill9_controller();
  // keep_last = 2: once two newer checkpoints are published the registered one is pruned.
  const std::string run_dir = c.state_dir() + "/runs/" + job;
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        return newest_checkpoint_on_disk(run_dir) >= registered + 2 * kCheckpointEvery &&
               !std::filesystem::exists(run_dir + "/checkpoints/" + step_dir(registered));
      },
      60));
  const int newest = newest_checkpoint_on_disk(run_dir);
  ASSERT_LT(newest, kSteps) << "the job ended before the worker was killed";
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  std::fprintf(stderr, "controller down at registered checkpoint %d; worker killed with step-%d on disk\n", registered,
               newest);
  c.start_controller();
  EXPECT_EQ(c.wait_end(job, 120), "SUCCEEDED") << c.job(job).dump();
  auto r = ref.get();
  ASSERT_EQ(r.exit_code, 0) << r.out;
  expect_job_equals_reference(c, job, ref_dir, kSteps);
}

TEST(TrainJob, BadTrainingSpecsAreRefusedAtSubmitNamingTheField) {
  Cluster c;  // no controller needed: submit validates before it connects
  auto unknown = run_mariana("submit " + job_file() + " --set train.stepz=3 " + c.client());
  EXPECT_EQ(unknown.exit_code, 2) << unknown.out;
  EXPECT_NE(unknown.out.find("train.stepz"), std::string::npos) << unknown.out;
  auto missing = run_mariana("submit " + job_file() + " --set model.config=/nonexistent/tiny.json " + c.client());
  EXPECT_EQ(missing.exit_code, 2) << missing.out;
  EXPECT_NE(missing.out.find("model.config"), std::string::npos) << missing.out;
  EXPECT_NE(missing.out.find("pretrain-tiny.toml"), std::string::npos) << missing.out;
  auto phase = run_mariana("submit " + c.write_job("p", "[job]\nphase = \"pretrian\"\n") + " " + c.client());
  EXPECT_EQ(phase.exit_code, 2) << phase.out;
  EXPECT_NE(phase.out.find("job.phase"), std::string::npos) << phase.out;
  auto rl = run_mariana("submit " + std::string(MARIANA_SOURCE_DIR) + "/configs/jobs/rl-tiny.toml " +
                        "--set model.init_from=/nonexistent/run --set rl.max_sample_rounds=0 " + c.client());
  EXPECT_EQ(rl.exit_code, 2) << rl.out;
  EXPECT_NE(rl.out.find("rl.max_sample_rounds"), std::string::npos) << rl.out;
  auto rl_path = run_mariana("submit " + std::string(MARIANA_SOURCE_DIR) + "/configs/jobs/rl-tiny.toml " +
                             "--set model.init_from=/nonexistent/run " + c.client());
  EXPECT_EQ(rl_path.exit_code, 2) << rl_path.out;
  EXPECT_NE(rl_path.out.find("model.init_from"), std::string::npos) << rl_path.out;
}

}  // namespace
}  // namespace mariana::integration
