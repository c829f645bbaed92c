// A pipeline job on a real loopback cluster: pretrain -> extend -> GRPO (tiny, short), each stage
// a training job the controller starts once the stage it comes `from` has succeeded, with
// model.init_from set to that stage's run directory. The extend stage, given no restart budget,
// is killed with kill -9 mid-way: it fails, the pipeline fails and the GRPO stage never starts;
// `mariana jobs resume` continues the extend stage from its last registered checkpoint (the
// controller is killed and restarted meanwhile), then the GRPO stage runs from it, and the pipeline
// succeeds. `jobs show` draws the stages.
#include <gtest/gtest.h>

#include <signal.h>

#include "tests/integration/train_job_util.h"

namespace mariana::integration {
namespace {

std::string pipeline_file(Cluster& c) {
  const std::string src = MARIANA_SOURCE_DIR;
  return c.write_job("pipeline",
                     "kind = \"pipeline\"\nname = \"tiny\"\n"
                     "[[stages]]\nname = \"pretrain\"\njob = \"" + src + "/configs/jobs/pretrain-tiny.toml\"\n"
                     "sets = [\"train.steps=4\", \"train.checkpoint_every=2\", \"data.documents=300\", "
                     "\"batch.rows=8\", \"model.config=" + src + "/configs/models/tiny.json\"]\n"
                     "[[stages]]\nname = \"extend\"\njob = \"" + src + "/configs/jobs/extend-tiny.toml\"\n"
                     "from = \"pretrain\"\n"
                     "sets = [\"train.steps=150\", \"train.checkpoint_every=10\", \"job.max_restarts=0\"]\n"
                     "[[stages]]\nname = \"rl\"\njob = \"" + src + "/configs/jobs/rl-tiny.toml\"\nfrom = \"extend\"\n"
                     "sets = [\"rollout.prompts=2\", \"rollout.group_size=2\", \"rollout.max_new_tokens=8\", "
                     "\"grpo.iterations=3\", \"eval.problems=2\", \"eval.max_new_tokens=4\"]\n");
}

// The stage named `name` of a pipeline's `jobs show` document.
nlohmann::json stage(const nlohmann::json& pipeline, const std::string& name) {
  for (const auto& s : pipeline.value("stages", nlohmann::json::array()))
    if (s.value("name", "") == name) return s;
  return nlohmann::json::object();
}

TEST(Pipeline, AFailedStageStopsItsDependentsAndResumeContinuesIt) {
  Cluster c;
  c.start_controller();
  c.start_agent("n1", 2);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string id = c.submit(pipeline_file(c), "--set train.threads=1");
  ASSERT_EQ(id, "job-1");

  // Kill the extend stage's trainer once it has a registered checkpoint and is still running.
  std::string extend_job;
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        extend_job = stage(c.job(id), "extend").value("job_id", "");
        if (extend_job.empty()) return false;
        auto j = c.job(extend_job);
        return j.value("state", "") == "RUNNING" && j.value("last_checkpoint_step", 0) >= 10;
      },
      90))
      << c.job(id).dump();
  const RunningActor victim = wait_for_running_actor(c, extend_job, 10);
  ASSERT_GT(victim.pid, 0);
  ASSERT_EQ(::kill(victim.pid, SIGKILL), 0);
  std::fprintf(stderr, "killed the extend stage (%s) at step %d\n", extend_job.c_str(), victim.step);

  EXPECT_EQ(c.wait_end(id, 60), "FAILED") << c.job(id).dump();
  auto p = c.job(id);
  EXPECT_NE(p.value("message", "").find("stage extend"), std::string::npos) << p.dump();
  EXPECT_EQ(stage(p, "pretrain").value("state", ""), "SUCCEEDED");
  EXPECT_EQ(stage(p, "extend").value("state", ""), "FAILED");
  EXPECT_EQ(stage(p, "rl").value("state", ""), "WAITING") << "a stage after a failed one started";
  EXPECT_EQ(stage(p, "rl").value("job_id", "x"), "");
  const int registered = c.job(extend_job).value("last_checkpoint_step", 0);
  ASSERT_GE(registered, 10);

  auto resumed = run_mariana("jobs resume " + id + " " + c.client());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out;
  // The controller killed and restarted while the resumed stage runs: the pipeline carries on from
  // its durable state (the stages' jobs, their parent, the registered checkpoints).
  ASSERT_TRUE(Cluster::wait_for([&] { return c.job(extend_job).value("state", "") == "RUNNING"; }, 30))
      << c.job(extend_job).dump();
  c.kill9_controller();
  c.start_controller();
  EXPECT_EQ(c.wait_end(id, 120), "SUCCEEDED") << c.job(id).dump();
  p = c.job(id);
  for (const char* s : {"pretrain", "extend", "rl"}) EXPECT_EQ(stage(p, s).value("state", ""), "SUCCEEDED") << s;
  EXPECT_EQ(stage(p, "extend").value("job_id", ""), extend_job);  // the same job, continued
  EXPECT_EQ(stage(p, "extend").value("step", 0), 150);
  // The extend stage resumed from its registered checkpoint, not from scratch, in its run directory.
  auto log = read_file(c.dir() + "/logs-n1/" + c.job(extend_job)["actor_ids"].back().get<std::string>() + "-0.out");
  ASSERT_TRUE(log.ok()) << log.status().to_string();
  EXPECT_NE(log.value().find("resuming from " + c.state_dir() + "/runs/" + extend_job + "/checkpoints/step-"),
            std::string::npos)
      << log.value();
  // Each stage started from the one before: the GRPO run's policy is the extend run's.
  const std::string rl_dir = stage(p, "rl").value("run_dir", "");
  auto rl_state = read_file(rl_dir + "/checkpoints/iter-000003/rl_state.json");
  ASSERT_TRUE(rl_state.ok()) << rl_state.status().to_string();
  EXPECT_NE(rl_state.value().find(c.state_dir() + "/runs/" + extend_job + "/checkpoints/step-00000150"),
            std::string::npos)
      << rl_state.value();

  // The human view: one line per stage with what it comes after.
  auto shown = run_mariana("jobs show " + id + " " + c.client());
  EXPECT_EQ(shown.exit_code, 0) << shown.out;
  for (const char* want : {"STAGE", "extend", "<- pretrain", "<- extend", "SUCCEEDED"})
    EXPECT_NE(shown.out.find(want), std::string::npos) << want << "\n" << shown.out;
  // Resuming a pipeline that succeeded is refused.
  auto again = run_mariana("jobs resume " + id + " " + c.client());
  EXPECT_NE(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find("only a FAILED or STOPPED job resumes"), std::string::npos) << again.out;
}

TEST(Pipeline, BadPipelinesAreRefusedAtSubmitNamingTheField) {
  Cluster c;  // submit validates before it connects
  const std::string src = MARIANA_SOURCE_DIR;
  auto cycle = run_mariana("submit " +
                           c.write_job("p1", "kind = \"pipeline\"\n[[stages]]\nname = \"a\"\njob = \"" + src +
                                                 "/configs/jobs/pretrain-tiny.toml\"\nfrom = \"b\"\n") +
                           " " + c.client());
  EXPECT_EQ(cycle.exit_code, 2) << cycle.out;
  EXPECT_NE(cycle.out.find("not an earlier stage"), std::string::npos) << cycle.out;
  auto missing = run_mariana("submit " + c.write_job("p2", "kind = \"pipeline\"\n[[stages]]\nname = \"a\"\njob = \"nope.toml\"\n") +
                             " " + c.client());
  EXPECT_EQ(missing.exit_code, 2) << missing.out;
  EXPECT_NE(missing.out.find("stages[0].job"), std::string::npos) << missing.out;
  auto bad_stage = run_mariana("submit " +
                               c.write_job("p3", "kind = \"pipeline\"\n[[stages]]\nname = \"a\"\njob = \"" + src +
                                                     "/configs/jobs/pretrain-tiny.toml\"\nsets = [\"train.stepz=3\"]\n") +
                               " " + c.client());
  EXPECT_EQ(bad_stage.exit_code, 2) << bad_stage.out;
  EXPECT_NE(bad_stage.out.find("stage a"), std::string::npos) << bad_stage.out;
  EXPECT_NE(bad_stage.out.find("train.stepz"), std::string::npos) << bad_stage.out;
}

}  // namespace
}  // namespace mariana::integration
