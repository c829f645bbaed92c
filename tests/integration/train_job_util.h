// Helpers of the training-job integration tests (train_job_test.cc, chaos_test.cc): the short
// pretraining job they run, run-directory readers, and the check that a cluster job ended exactly
// as an uninterrupted `mariana train` run of the same spec.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <future>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include "core/safetensors.h"
#include "model/config.h"
#include "rl/grpo.h"
#include "sft/reward_model.h"
#include "tests/integration/cluster_fixture.h"
#include "tests/train/checkpoint_files.h"

namespace mariana::integration {

inline std::string pretrain_job_file() { return std::string(MARIANA_SOURCE_DIR) + "/configs/jobs/pretrain-tiny.toml"; }

// The tiny pretraining job made short: `steps` steps, a checkpoint every `every`, the last two kept,
// a small corpus, one thread; `extra` adds --set flags.
inline std::string pretrain_sets(int steps, int every, const std::string& extra = "") {
  return "--set train.steps=" + std::to_string(steps) + " --set train.checkpoint_every=" + std::to_string(every) +
         " --set train.keep_last=2 --set data.documents=300 --set batch.rows=16 --set batch.rows_start=8"
         " --set batch.ramp_steps=4 --set train.threads=1 --set model.config=" +
         std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json" + (extra.empty() ? "" : " " + extra);
}

// The uninterrupted reference run of the same spec (`mariana train` into c.dir()/ref), started
// beside the cluster's job; returns its directory and sets *done to its outcome.
inline std::string start_reference_run(Cluster& c, const std::string& sets, std::future<CommandResult>* done,
                                       int timeout_s = 120) {
  const std::string ref_dir = c.dir() + "/ref";
  *done = std::async(std::launch::async, [=] {
    return run_mariana("train " + pretrain_job_file() + " " + sets + " --run-dir " + ref_dir + " --quiet", timeout_s);
  });
  return ref_dir;
}

inline std::string step_dir(int step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08d", step);
  return buf;
}

// step -> loss from a run directory's metrics.jsonl.
inline std::map<int, double> losses_of(const std::string& run_dir) {
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

// The newest published checkpoint (with its manifest) in a run directory; 0 when none.
inline int newest_checkpoint_on_disk(const std::string& run_dir) {
  int newest = 0;
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(run_dir + "/checkpoints", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("step-", 0) == 0 && std::filesystem::exists(e.path() / "manifest.json"))
      newest = std::max(newest, std::atoi(name.c_str() + 5));
  }
  return newest;
}

// The metrics lines of an rl run directory without their wall-clock timings.
inline std::vector<std::string> rl_metrics(const std::string& run_dir) {
  std::vector<std::string> out;
  auto text = read_file(run_dir + "/metrics.jsonl");
  if (!text.ok()) return out;
  std::istringstream in(text.value());
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    for (const char* timing : rl::kRlTimingFields) j.erase(timing);
    out.push_back(j.dump());
  }
  return out;
}

// configs/jobs/rl-tiny.toml made short for a test: `iterations` iterations of 4 prompts x 4 samples
// (raw prompts) from the policy and a different reference (the KL term then moves the weights), two
// checkpoints of a 150-step pretraining run it makes in c.dir()/pre (enough that some responses
// end in a "#### N" line: the format reward varies within groups); a checkpoint every 3
// iterations, one thread. Empty on failure (reported).
inline std::string rl_tiny_sets(Cluster& c, int iterations) {
  const std::string pre = c.dir() + "/pre";
  auto made = run_mariana("train " + pretrain_job_file() + " " + pretrain_sets(150, 75) + " --run-dir " + pre +
                              " --quiet",
                          120);
  EXPECT_EQ(made.exit_code, 0) << made.out;
  if (made.exit_code != 0) return "";
  return "--set model.init_from=" + pre + "/checkpoints/" + step_dir(150) + " --set model.reference=" + pre +
         "/checkpoints/" + step_dir(75) +
         " --set task.prompt_format=raw --set rollout.prompts=4 --set rollout.group_size=4"
         " --set rollout.max_new_tokens=48 --set grpo.iterations=" + std::to_string(iterations) +
         " --set grpo.kl_beta=0.5 --set grpo.lr=1e-3 --set train.checkpoint_every=3"
         " --set train.keep_last=2 --set eval.problems=2 --set eval.max_new_tokens=4 --set train.threads=1";
}

// A reward model for a test: the checkpoint `from` with a fixed scalar head (reward_head.safetensors,
// a cosine over the hidden units) in c.dir()/rm, without the manifest (which would not list the
// head); "" on failure (reported).
inline std::string make_reward_model(Cluster& c, const std::string& from) {
  const std::string dir = c.dir() + "/rm";
  std::error_code ec;
  std::filesystem::copy(from, dir, std::filesystem::copy_options::recursive, ec);
  EXPECT_FALSE(ec) << ec.message();
  std::filesystem::remove(dir + "/manifest.json", ec);  // a hand-made directory, not a published checkpoint
  auto cfg = model_config_load(dir + "/config.json");
  EXPECT_TRUE(cfg.ok()) << cfg.status().to_string();
  if (ec || !cfg.ok()) return "";
  const int64_t C = cfg.value().hidden_size;
  std::vector<float> w(static_cast<size_t>(C));
  for (int64_t i = 0; i < C; ++i) w[i] = static_cast<float>(std::cos(0.7 * static_cast<double>(i)));
  const Status st = safetensors_write(dir + "/" + kRewardHeadFile,
                                      {{kRewardHeadTensor, Tensor::view(w.data(), DType::kF32, {1, C})}});
  EXPECT_TRUE(st.ok()) << st.to_string();
  return st.ok() ? dir : "";
}

// The iterations of an rl run directory whose mean reward is above 0.
inline int rewarded_iterations(const std::string& run_dir) {
  int n = 0;
  auto text = read_file(run_dir + "/metrics.jsonl");
  if (!text.ok()) return 0;
  std::istringstream in(text.value());
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    n += j.is_object() && j.value("reward", 0.0) > 0;
  }
  return n;
}

inline std::string rl_tiny_job_file() { return std::string(MARIANA_SOURCE_DIR) + "/configs/jobs/rl-tiny.toml"; }

// The finished rl job equals the one-process run in ref_dir bit for bit: kind rl, one metric point
// per iteration, its final checkpoint iter-N (weights and moments) and every iteration's metrics.
inline void expect_rl_job_equals_reference(Cluster& c, const std::string& job, const std::string& ref_dir,
                                           int iterations) {
  auto j = c.job(job);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("kind", ""), "rl");
  EXPECT_EQ(j.value("metric_points", 0), iterations) << j.dump();
  EXPECT_EQ(j["last_metrics"].value("step", 0), iterations) << j.dump();
  char name[32];
  std::snprintf(name, sizeof name, "iter-%06d", iterations);
  const std::string final_ckpt = j["checkpoint_paths"].back().get<std::string>();
  EXPECT_EQ(std::filesystem::path(final_ckpt).filename().string(), name);
  EXPECT_EQ(testing_util::checkpoint_difference(final_ckpt, ref_dir + "/checkpoints/" + name), "")
      << "the final checkpoint differs from the one-process run's";
  const auto mine = rl_metrics(c.state_dir() + "/runs/" + job), theirs = rl_metrics(ref_dir);
  EXPECT_EQ(mine.size(), static_cast<size_t>(iterations));
  EXPECT_EQ(mine, theirs);
}

// A job's ALIVE actor found once the job is RUNNING at step `min_step` or later: its pid and id,
// the job's step then and its last registered checkpoint step; pid 0 if not seen within `seconds`.
struct RunningActor {
  int pid = 0;
  std::string id;
  int step = -1, registered = 0;
};
inline RunningActor wait_for_running_actor(Cluster& c, const std::string& job, int min_step, double seconds = 90) {
  RunningActor out;
  Cluster::wait_for(
      [&] {
        auto j = c.job(job);
        if (!j.is_object() || j.value("state", "") != "RUNNING" || j.value("step", 0) < min_step) return false;
        for (auto& a : c.query("actors list"))
          if (a.value("job_id", "") == job && a.value("state", "") == "ALIVE") {
            out.pid = a.value("pid", 0);
            out.id = a.value("id", "");
            out.step = j.value("step", 0);
            out.registered = j.value("last_checkpoint_step", 0);
          }
        return out.pid > 0;
      },
      seconds);
  return out;
}

// Kills the job's running actor with kill -9 once the job has reached a random step in [1, last]:
// that actor as wait_for_running_actor found it (pid 0 when the job never got there), and whether
// the signal was sent.
struct KilledActor {
  RunningActor actor;
  int kill_at = 0;
  bool killed = false;
};
inline KilledActor kill9_at_random_step(Cluster& c, const std::string& job, int last) {
  KilledActor k;
  std::mt19937 rng(std::random_device{}());
  k.kill_at = std::uniform_int_distribution<int>(1, last)(rng);
  std::fprintf(stderr, "killing the job's worker at step >= %d\n", k.kill_at);
  k.actor = wait_for_running_actor(c, job, k.kill_at);
  k.killed = k.actor.pid > 0 && ::kill(k.actor.pid, SIGKILL) == 0;
  if (k.killed)
    std::fprintf(stderr, "killed pid %d at step %d (last registered checkpoint: step %d)\n", k.actor.pid, k.actor.step,
                 k.actor.registered);
  return k;
}

// The finished cluster job equals the reference run: its step, exactly one metric point per step
// with the reference's loss, and byte-identical final weights.
inline void expect_job_equals_reference(Cluster& c, const std::string& job, const std::string& ref_dir, int steps) {
  auto j = c.job(job);
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.value("step", 0), steps);
  EXPECT_EQ(j.value("metric_points", 0), steps) << j.dump();
  auto m = c.query("jobs metrics " + job);
  ASSERT_TRUE(m.is_object());
  std::map<int, double> got;
  for (auto& p : m["metrics"]) got[p.value("step", -1)] = p.value("loss", 0.0);
  EXPECT_EQ(m["metrics"].size(), static_cast<size_t>(steps));
  const auto want = losses_of(ref_dir);
  EXPECT_EQ(want.size(), static_cast<size_t>(steps));
  EXPECT_EQ(got, want);
  const std::string run_dir = c.state_dir() + "/runs/" + job;
  // Every file of the final checkpoint: the model (one file, or a parallel job's per-rank files),
  // the moments and the trainer's state.
  EXPECT_EQ(testing_util::checkpoint_difference(run_dir + "/checkpoints/" + step_dir(steps),
                                                ref_dir + "/checkpoints/" + step_dir(steps)),
            "")
      << "the final checkpoint differs from the uninterrupted run's";
}

}  // namespace mariana::integration
