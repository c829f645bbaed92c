// The embedded mode and the monitoring verbs through the real binary: `mariana run` trains a
// short pretraining job with its own controller and agent (state in ./.mariana), shows progress
// and exits with the job's status; `controller start --detach`; `jobs logs [-f]`; `top --once`.
#include <gtest/gtest.h>

#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <iterator>

#include "tests/integration/train_job_util.h"

namespace mariana::integration {
namespace {

std::string job_file() { return pretrain_job_file(); }

std::string short_sets(int steps) {
  return "--set train.steps=" + std::to_string(steps) +
         " --set train.checkpoint_every=4 --set train.keep_last=2 --set data.documents=300 --set batch.rows=8"
         " --set batch.rows_start=0 --set train.threads=1 --set model.config=" +
         std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json";
}

TEST(Run, EmbeddedRunTrainsShowsProgressAndExitsWithTheJobStatus) {
  Cluster c;  // only for its temp dir
  const std::string cwd = c.dir() + "/work";
  std::filesystem::create_directories(cwd);
  auto r = run_mariana("run " + job_file() + " " + short_sets(8), 120, cwd);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("job-1 submitted"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 8/8"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tokens/s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("job-1 SUCCEEDED"), std::string::npos) << r.out;
  // State under ./.mariana: RocksDB, the token, the run directory with the final checkpoint.
  EXPECT_TRUE(std::filesystem::exists(cwd + "/.mariana/db"));
  EXPECT_TRUE(std::filesystem::exists(cwd + "/.mariana/cluster.token"));
  EXPECT_TRUE(std::filesystem::exists(cwd + "/.mariana/runs/job-1/checkpoints/step-00000008/model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(cwd + "/.mariana/logs/actor-1-0.out"));

  // A job that fails in the trainer (its data is not JSON Lines): exit 1, the failure shown.
  const std::string bad = c.dir() + "/bad.jsonl";
  ASSERT_TRUE(write_file_atomic(bad, "this is not json\n").ok());
  auto failed = run_mariana("run " + job_file() + " " + short_sets(4) + " --set data.builtin= --set data.inputs=[\\\"" +
                                bad + "\\\"] --state-dir " + c.dir() + "/state2",
                            120, cwd);
  EXPECT_EQ(failed.exit_code, 1) << failed.out;
  EXPECT_NE(failed.out.find("FAILED"), std::string::npos) << failed.out;
  EXPECT_NE(failed.out.find("bad.jsonl"), std::string::npos) << failed.out;

  // A bad job file: exit 2 naming the field, nothing started.
  auto invalid = run_mariana("run " + job_file() + " --set train.stepz=1 --state-dir " + c.dir() + "/state3", 30, cwd);
  EXPECT_EQ(invalid.exit_code, 2) << invalid.out;
  EXPECT_NE(invalid.out.find("train.stepz"), std::string::npos) << invalid.out;
  EXPECT_FALSE(std::filesystem::exists(c.dir() + "/state3"));
}

// A `run` killed (-9) mid-job leaves its job unfinished in the state dir. Running again says so:
// without --resume or --fresh it exits 2 naming the job and both flags; --fresh stops the earlier
// job and runs the new one.
TEST(Run, UnfinishedEarlierJobNeedsResumeOrFresh) {
  Cluster c;
  const std::string state = " --state-dir " + c.dir() + "/state";
  const std::string killed = "cd '" + c.dir() + "' && timeout -s KILL 10 " + std::string(MARIANA_BIN) + " run " +
                             job_file() + " " + short_sets(100000) + state + " > killed.out 2>&1";
  (void)std::system(killed.c_str());
  std::ifstream in(c.dir() + "/killed.out");
  const std::string first((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_NE(first.find("job-1 submitted"), std::string::npos) << first;

  auto again = run_mariana("run " + job_file() + " " + short_sets(4) + state, 60, c.dir());
  EXPECT_EQ(again.exit_code, 2) << again.out;
  for (const char* needle : {"unfinished", "job-1", "--resume", "--fresh"})
    EXPECT_NE(again.out.find(needle), std::string::npos) << needle << "\n" << again.out;

  auto fresh = run_mariana("run " + job_file() + " " + short_sets(4) + state + " --fresh", 120, c.dir());
  EXPECT_EQ(fresh.exit_code, 0) << fresh.out;
  EXPECT_NE(fresh.out.find("stopping job-1"), std::string::npos) << fresh.out;
  EXPECT_NE(fresh.out.find("job-2 SUCCEEDED"), std::string::npos) << fresh.out;
}

// An sft job (steps derived from its data) on the embedded cluster, from a short pretraining run:
// the same final weights as `mariana train` of the same spec; relative paths resolved by submit.
TEST(Run, SftJobEndsWhereMarianaTrainEnds) {
  Cluster c;
  const std::string cwd = c.dir();
  auto pre = run_mariana("train " + job_file() + " " + short_sets(4) + " --run-dir pre --quiet", 120, cwd);
  ASSERT_EQ(pre.exit_code, 0) << pre.out;
  const std::string sft = std::string(MARIANA_SOURCE_DIR) + "/configs/jobs/sft-tiny.toml";
  const std::string sets = " --set model.init_from=pre --set data.documents=40 --set train.epochs=1"
                           " --set train.seq_len=64 --set train.threads=1 --set train.checkpoint_every=2";
  auto ref = run_mariana("train " + sft + sets + " --run-dir sft-ref --quiet", 120, cwd);
  ASSERT_EQ(ref.exit_code, 0) << ref.out;
  auto run = run_mariana("run " + sft + sets, 120, cwd);
  ASSERT_EQ(run.exit_code, 0) << run.out;
  // The final step: the newest checkpoint of the reference run.
  std::string last;
  for (auto& e : std::filesystem::directory_iterator(cwd + "/sft-ref/checkpoints"))
    if (e.path().filename().string() > last) last = e.path().filename().string();
  ASSERT_FALSE(last.empty());
  EXPECT_NE(run.out.find("SUCCEEDED"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find(last), std::string::npos) << run.out;
  auto mine = read_file(cwd + "/.mariana/runs/job-1/checkpoints/" + last + "/model.safetensors");
  auto theirs = read_file(cwd + "/sft-ref/checkpoints/" + last + "/model.safetensors");
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_TRUE(mine.value() == theirs.value()) << "sft weights differ from mariana train's";
  // The job's record outlives the embedded run: a controller started on its state dir shows the
  // sft job's metrics as a training table (loss, LR, tokens/s), like a pretraining job's.
  auto ctl = run_mariana("controller start --detach --listen tcp://127.0.0.1:* --state-dir .mariana --metrics-port 0",
                         30, cwd);
  ASSERT_EQ(ctl.exit_code, 0) << ctl.out;
  auto table = run_mariana("jobs metrics job-1 --state-dir .mariana", 30, cwd);
  EXPECT_EQ(table.exit_code, 0) << table.out;
  EXPECT_NE(table.out.find("LOSS_MAIN"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("TOKENS/S"), std::string::npos) << table.out;
  EXPECT_EQ(run_mariana("controller stop --state-dir .mariana", 30, cwd).exit_code, 0);
}

// Running and not a zombie (a detached process is reparented; its new parent may reap it late).
bool process_alive(int pid) {
  if (::kill(pid, 0) != 0) return false;
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return false;
  const size_t paren = stat.value().rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.value().size() || stat.value()[paren + 2] != 'Z';
}

TEST(Run, DetachedControllerJobsLogsFollowAndTopOnce) {
  Cluster c;
  auto detach = run_mariana("controller start --detach --listen tcp://127.0.0.1:* --state-dir " + c.state_dir() +
                                " --heartbeat-ms 100 --metrics-port 0",
                            30);
  ASSERT_EQ(detach.exit_code, 0) << detach.out;
  EXPECT_NE(detach.out.find("listening on tcp://127.0.0.1:"), std::string::npos) << detach.out;
  auto pid_text = read_file(c.state_dir() + "/controller.pid");
  ASSERT_TRUE(pid_text.ok());
  const int pid = std::atoi(pid_text.value().c_str());
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(process_alive(pid)) << "the detached controller is not running";
  c.start_agent("n1", 2);
  ASSERT_TRUE(c.wait_nodes_alive(1));

  const std::string job = c.submit(job_file(), short_sets(8));
  // Follow the worker's log from the start; it ends by itself when the job does.
  auto follow = run_mariana("jobs logs " + job + " -f " + c.client(), 120);
  EXPECT_EQ(follow.exit_code, 0) << follow.out;
  EXPECT_NE(follow.out.find("step 1/8"), std::string::npos) << follow.out;
  EXPECT_NE(follow.out.find("trainer: job " + job + " done at step 8"), std::string::npos) << follow.out;
  EXPECT_EQ(c.wait_end(job, 30), "SUCCEEDED");
  auto logs = run_mariana("jobs logs " + job + " " + c.client());
  EXPECT_EQ(logs.exit_code, 0) << logs.out;
  EXPECT_NE(logs.out.find("==> "), std::string::npos) << logs.out;
  EXPECT_NE(logs.out.find("step 8/8"), std::string::npos) << logs.out;

  auto top = run_mariana("top --once " + c.client());
  EXPECT_EQ(top.exit_code, 0) << top.out;
  for (const char* want : {"NODE_ID", "n1", "JOB_ID", job.c_str(), "SUCCEEDED", "pretrain", "ACTOR_ID"})
    EXPECT_NE(top.out.find(want), std::string::npos) << want << "\n" << top.out;

  ::kill(pid, SIGTERM);
  EXPECT_TRUE(Cluster::wait_for([&] { return !process_alive(pid); }, 10)) << "the detached controller did not stop";
}

}  // namespace
}  // namespace mariana::integration
