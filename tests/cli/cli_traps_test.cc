// Traps of the command line, through the real `mariana` binary: a second run into a run directory
// is refused unless --resume or --overwrite says which; --set values keep their commas (arrays,
// strings) for train, submit and run alike; a job file's relative paths resolve against its own
// directory and a missing one is named by its field with no run directory left behind.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/cli/cli_test_util.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

using testing::CmdResult;
CmdResult run(const std::string& args) { return testing::run_mariana(args); }

bool has(const CmdResult& r, const std::string& needle) { return r.out.find(needle) != std::string::npos; }

class CliTraps : public testing::CliTest {
 protected:
  // A pretraining job of the tiny model, `steps` steps, a checkpoint per step.
  std::string job_text(const std::string& config) const {
    return "[job]\nname = \"t\"\nphase = \"pretrain\"\n[model]\nconfig = \"" + config +
           "\"\n[data]\nbuiltin = \"arithmetic\"\ndocuments = 60\n[train]\nsteps = 2\nseq_len = 32\n"
           "checkpoint_every = 1\nkeep_last = 5\nthreads = 1\n[batch]\nrows = 2\n";
  }
  std::vector<std::string> checkpoints(const std::string& run_dir) const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(p(run_dir + "/checkpoints")))
      if (e.path().filename().string().rfind("step-", 0) == 0) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

// Item 1: a fresh run into a run directory that holds one is refused (exit 2, naming both flags,
// nothing touched); --overwrite replaces it, so no checkpoint of the older, longer run survives.
TEST_F(CliTraps, RerunIntoRunDirNeedsResumeOrOverwrite) {
  write("job.toml", job_text(src("configs/models/tiny.json")));
  const std::string train = "train " + p("job.toml") + " --run-dir " + p("run") + " --quiet";
  ASSERT_EQ(run(train).code, 0);
  ASSERT_EQ(checkpoints("run"), (std::vector<std::string>{"step-00000001", "step-00000002"}));

  const CmdResult again = run(train + " --set train.steps=1");
  EXPECT_EQ(again.code, 2) << again.out;
  EXPECT_TRUE(has(again, "--resume") && has(again, "--overwrite")) << again.out;
  EXPECT_EQ(checkpoints("run").size(), 2u);

  const CmdResult over = run(train + " --set train.steps=1 --overwrite");
  ASSERT_EQ(over.code, 0) << over.out;
  EXPECT_EQ(checkpoints("run"), (std::vector<std::string>{"step-00000001"}));
  EXPECT_FALSE(fs::exists(p("run.overwritten-" + std::to_string(::getpid()))));

  EXPECT_EQ(run(train + " --resume --overwrite").code, 2);
}

// Item 6: --resume of a finished run says so, with the step and the checkpoint.
TEST_F(CliTraps, ResumeOfAFinishedRunSaysSo) {
  write("job.toml", job_text(src("configs/models/tiny.json")));
  const std::string train = "train " + p("job.toml") + " --run-dir " + p("run") + " --quiet";
  ASSERT_EQ(run(train).code, 0);
  const CmdResult again = run(train + " --resume");
  EXPECT_EQ(again.code, 0) << again.out;
  EXPECT_TRUE(has(again, "run already finished at step 2, checkpoint " + p("run/checkpoints/step-00000002")))
      << again.out;
  EXPECT_FALSE(has(again, "loss 0.0000")) << again.out;
}

// Item 6: SIGTERM (as Ctrl-C's SIGINT) mid-run: the step finishes, a checkpoint of it is written and
// named, exit 130; --resume continues from it. (SIGTERM because a shell's background job ignores
// SIGINT until the program installs its handler, so without one the test would run to the end.)
TEST_F(CliTraps, InterruptCheckpointsAndSaysWhere) {
  write("job.toml", job_text(src("configs/models/tiny.json")));
  const CmdResult r = testing::interrupt_mariana("train " + p("job.toml") + " --run-dir " + p("run") +
                                                     " --quiet --set train.steps=100000 --set train.checkpoint_every=100000",
                                                 p("out"), p("run/metrics.jsonl"));
  const std::string& out = r.out;
  EXPECT_EQ(r.code, 130) << out;
  EXPECT_TRUE(out.find("interrupted at step") != std::string::npos && out.find("--resume") != std::string::npos) << out;
  ASSERT_TRUE(fs::exists(p("run/checkpoints"))) << out;
  const auto cks = checkpoints("run");
  ASSERT_EQ(cks.size(), 1u) << out;
  EXPECT_NE(out.find(p("run/checkpoints/" + cks[0])), std::string::npos) << out;
}

// Item 2: --set values reach the job whole, commas included, in every command that takes --set:
// an array (data.inputs, its second element named) and a string ("+,-", refused by the operator
// check naming it rather than cut into "+" and "-").
TEST_F(CliTraps, SetKeepsArraysAndCommaStringsInTrainSubmitAndRun) {
  write("job.toml", job_text(src("configs/models/tiny.json")));
  write("a.txt", "some text\n");
  const std::string client = " --controller tcp://127.0.0.1:9 --token-file " + p("none.token");
  for (const std::string verb : {"train", "submit", "run"}) {
    const std::string base = verb + " " + p("job.toml") + (verb == "submit" ? client : "") +
                             (verb == "run" ? " --state-dir " + p("state") : "") +
                             (verb == "train" ? " --run-dir " + p("run") : "");
    const CmdResult arr = run(base + " --set 'data.builtin=\"\"' --set 'data.inputs=[\"" + p("a.txt") +
                              "\", \"" + p("missing.txt") + "\"]'");
    EXPECT_EQ(arr.code, 2) << verb << ": " << arr.out;
    EXPECT_TRUE(has(arr, "field 'data.inputs[1]'") && has(arr, p("missing.txt") + " does not exist"))
        << verb << ": " << arr.out;
    const CmdResult ops = run(base + " --set 'data.arithmetic_ops=+,-'");
    EXPECT_EQ(ops.code, 2) << verb << ": " << ops.out;
    EXPECT_TRUE(has(ops, "field 'data.arithmetic_ops'") && has(ops, "got \"+,-\"")) << verb << ": " << ops.out;
  }
  EXPECT_FALSE(fs::exists(p("run")));
  EXPECT_FALSE(fs::exists(p("state")));
}

// Item 2, end to end: a run whose only data is an array given by --set (--set=k=v form too) and
// whose name holds a comma trains.
TEST_F(CliTraps, SetArrayTrains) {
  write("job.toml", job_text(src("configs/models/tiny.json")));
  std::string text;
  for (int i = 0; i < 200; ++i) text += "the quick brown fox " + std::to_string(i) + " jumps over the lazy dog\n";
  write("a.txt", text);
  write("b.txt", text);
  const CmdResult r = run("train " + p("job.toml") + " --run-dir " + p("run") + " --quiet --set train.steps=1" +
                          " --set 'data.builtin=\"\"' --set='data.inputs=[\"" + p("a.txt") + "\",\"" + p("b.txt") +
                          "\"]' --set 'job.name=a,b'");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(has(r, "train a,b: phase pretrain")) << r.out;
}

// Item 3: a relative path in a job file resolves against the job file's directory, whatever the
// current directory; a missing one is refused naming the field and the directory, with no run
// directory created.
TEST_F(CliTraps, JobFilePathsResolveAgainstTheJobFile) {
  fs::create_directories(p("jobs/models"));
  fs::copy_file(src("configs/models/tiny.json"), p("jobs/models/tiny.json"));
  write("jobs/good.toml", job_text("models/tiny.json"));
  write("jobs/bad.toml", job_text("models/absent.json"));
  const CmdResult bad = testing::run_mariana("train " + p("jobs/bad.toml") + " --run-dir " + p("run-bad") + " --quiet");
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_TRUE(has(bad, "field 'model.config'") && has(bad, p("jobs/models/absent.json") + " does not exist") &&
              has(bad, "resolves against its directory"))
      << bad.out;
  EXPECT_FALSE(fs::exists(p("run-bad")));
  const CmdResult good = testing::run_mariana("train " + p("jobs/good.toml") + " --run-dir " + p("run") +
                                              " --quiet --set train.steps=1");
  EXPECT_EQ(good.code, 0) << good.out;
}

// Item 6: `model init` and `model info` count the same parameters (the model's, MTP apart, plus
// the checkpoint's total with MTP), and init refuses an existing checkpoint without --overwrite.
TEST_F(CliTraps, ModelInitAndInfoAgreeAndInitRefusesToOverwrite) {
  const std::string init = "model init --config " + src("configs/models/tiny.json") + " --seed 1 --out " + p("ck");
  const CmdResult made = run(init);
  ASSERT_EQ(made.code, 0) << made.out;
  const CmdResult info = run("model info --json " + p("ck"));
  ASSERT_EQ(info.code, 0) << info.out;
  auto number_after = [](const std::string& text, const std::string& key) {
    const size_t at = text.find(key);
    return at == std::string::npos ? int64_t{-1} : std::stoll(text.substr(at + key.size()));
  };
  const int64_t total = number_after(info.out, "\"total_params\":"), mtp = number_after(info.out, "\"mtp_params\":");
  ASSERT_GT(total, 0) << info.out;
  EXPECT_TRUE(has(made, "parameters (" + std::to_string(total) + ")")) << made.out << info.out;
  EXPECT_TRUE(has(made, "MTP") && has(made, "(" + std::to_string(mtp) + ")")) << made.out;
  EXPECT_TRUE(has(made, "in the checkpoint (" + std::to_string(total + mtp) + ")")) << made.out;

  const CmdResult again = run(init);
  EXPECT_EQ(again.code, 2) << again.out;
  EXPECT_TRUE(has(again, "--overwrite")) << again.out;
  EXPECT_EQ(run(init + " --overwrite").code, 0);
}

}  // namespace
}  // namespace mariana
