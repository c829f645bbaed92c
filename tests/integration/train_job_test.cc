// Training jobs on a real loopback cluster: configs/jobs/pretrain-tiny.toml (made short with --set)
// runs inside a trainer actor; its worker is kill -9ed at a random step; the actor restarts,
// resumes from the last registered checkpoint, and the final model.safetensors is byte-identical
// to an uninterrupted `mariana train` run of the same spec. Every step's metrics are on the
// controller, equal to the uninterrupted run's, and every checkpoint is registered.
#include <gtest/gtest.h>

#include <signal.h>

#include <future>
#include <random>
#include <sstream>

#include "tests/integration/cluster_fixture.h"

namespace mariana::integration {
namespace {

constexpr int kSteps = 24;
constexpr int kCheckpointEvery = 4;

std::string job_file() { return std::string(MARIANA_SOURCE_DIR) + "/configs/jobs/pretrain-tiny.toml"; }

// Short (about 3 s of training): 24 steps, a checkpoint every 4, a small corpus, one thread (same numbers either way,
// but the machine is shared).
std::string short_sets() {
  return "--set train.steps=" + std::to_string(kSteps) + " --set train.checkpoint_every=" +
         std::to_string(kCheckpointEvery) +
         " --set train.keep_last=2 --set data.documents=300 --set batch.rows=16 --set batch.rows_start=8"
         " --set batch.ramp_steps=4 --set train.threads=1 --set model.config=" +
         std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json";
}

std::string step_dir(int step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08d", step);
  return buf;
}

// step -> loss from a run directory's metrics.jsonl.
std::map<int, double> losses_of(const std::string& run_dir) {
  std::map<int, double> out;
  auto text = read_file(run_dir + "/metrics.jsonl");
  if (!text.ok()) return out;
  std::istringstream in(text.value());
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object()) out[j.value("step", -1)] = j.value("loss", 0.0);
  }
  return out;
}

TEST(TrainJob, Kill9OfTheTrainerResumesFromTheRegisteredCheckpointBitForBit) {
  Cluster c;
  // The uninterrupted reference run, side by side with the cluster's.
  const std::string ref_dir = c.dir() + "/ref";
  auto ref = std::async(std::launch::async, [&] {
    return run_mariana("train " + job_file() + " " + short_sets() + " --run-dir " + ref_dir + " --quiet", 120);
  });
  c.start_controller();
  c.start_agent("n1", 2);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(job_file(), short_sets());
  ASSERT_EQ(job, "job-1");

  // Kill the trainer's worker once the job has reached a random step before the end.
  std::mt19937 rng(std::random_device{}());
  const int kill_at = std::uniform_int_distribution<int>(1, kSteps - 6)(rng);
  std::fprintf(stderr, "killing the trainer's worker at step >= %d\n", kill_at);
  int victim = 0, killed_at = -1, registered_at_kill = 0;
  std::string actor_id;
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        auto j = c.job(job);
        if (!j.is_object() || j.value("state", "") != "RUNNING" || j.value("step", 0) < kill_at) return false;
        auto actors = c.query("actors list");
        for (auto& a : actors)
          if (a.value("job_id", "") == job && a.value("state", "") == "ALIVE") {
            victim = a.value("pid", 0);
            actor_id = a.value("id", "");
            killed_at = j.value("step", 0);
            registered_at_kill = j.value("last_checkpoint_step", 0);
          }
        return victim > 0;
      },
      90))
      << "the job did not reach step " << kill_at << ": " << c.job(job).dump();
  ASSERT_EQ(::kill(victim, SIGKILL), 0);
  ASSERT_LT(killed_at, kSteps) << "the job ended before the kill";
  std::fprintf(stderr, "killed pid %d at step %d (last registered checkpoint: step %d)\n", victim, killed_at,
               registered_at_kill);

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
  EXPECT_EQ(j.value("step", 0), kSteps);
  EXPECT_EQ(j["last_metrics"].value("step", 0), kSteps) << j.dump();
  EXPECT_EQ(j.value("metric_points", 0), kSteps);
  ASSERT_EQ(j["checkpoint_paths"].size(), static_cast<size_t>(kSteps / kCheckpointEvery)) << j.dump();
  const std::string final_ckpt = j["checkpoint_paths"].back().get<std::string>();
  EXPECT_EQ(std::filesystem::path(final_ckpt).filename().string(), step_dir(kSteps));
  EXPECT_NE(j.value("message", "").find(final_ckpt), std::string::npos) << j.dump();

  // Bit for bit: the final weights, and the loss of every step.
  auto mine = read_file(final_ckpt + "/model.safetensors");
  auto theirs = read_file(ref_dir + "/checkpoints/" + step_dir(kSteps) + "/model.safetensors");
  ASSERT_TRUE(mine.ok()) << mine.status().to_string();
  ASSERT_TRUE(theirs.ok()) << theirs.status().to_string();
  EXPECT_GT(mine.value().size(), 1000u);
  EXPECT_TRUE(mine.value() == theirs.value()) << "final weights differ from the uninterrupted run";
  const auto ref_losses = losses_of(ref_dir);
  ASSERT_EQ(ref_losses.size(), static_cast<size_t>(kSteps));
  auto m = c.query("jobs metrics " + job);
  ASSERT_TRUE(m.is_object());
  std::map<int, double> got;
  for (auto& p : m["metrics"]) got[p.value("step", -1)] = p.value("loss", 0.0);
  EXPECT_EQ(got, ref_losses);
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
  const std::string ref_dir = c.dir() + "/ref";
  auto ref = std::async(std::launch::async, [&] {
    return run_mariana("train " + job_file() + " " + short_sets() + " --run-dir " + ref_dir + " --quiet", 120);
  });
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
  auto j = c.job(job);
  EXPECT_EQ(j.value("step", 0), kSteps);
  EXPECT_EQ(j.value("metric_points", 0), kSteps);
  EXPECT_EQ(j["checkpoint_paths"].size(), static_cast<size_t>(kSteps / kCheckpointEvery)) << j.dump();
  auto mine = read_file(c.state_dir() + "/runs/" + job + "/checkpoints/" + step_dir(kSteps) + "/model.safetensors");
  auto theirs = read_file(ref_dir + "/checkpoints/" + step_dir(kSteps) + "/model.safetensors");
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_TRUE(mine.value() == theirs.value()) << "final weights differ from the uninterrupted run";
  auto m = c.query("jobs metrics " + job);
  std::map<int, double> got;
  for (auto& p : m["metrics"]) got[p.value("step", -1)] = p.value("loss", 0.0);
  EXPECT_EQ(got, losses_of(ref_dir));
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
  auto rl = run_mariana("submit " + std::string(MARIANA_SOURCE_DIR) + "/configs/jobs/rl-tiny.toml " + c.client());
  EXPECT_NE(rl.exit_code, 0) << rl.out;
  EXPECT_NE(rl.out.find("do not run on the cluster yet"), std::string::npos) << rl.out;
}

}  // namespace
}  // namespace mariana::integration
