// Checkpoints and job values through the real `mariana` binary: a corrupted weight in a trained
// checkpoint is refused by every loader (logits, eval, generate, SFT and RL init_from) with exit 2
// naming the file or tensor; resume with every checkpoint corrupt fails naming each; out-of-range,
// non-finite and too-large values are refused naming the field; a diverging run stops with no
// checkpoint of the bad state.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "core/file_util.h"
#include "tests/cli/cli_test_util.h"
#include "tests/model/checkpoint_poke.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

using testing::CmdResult;
CmdResult run(const std::string& args) { return testing::run_mariana(args); }

constexpr const char* kTensor = "model.layers.1.self_attn.o_proj.weight";

class CheckpointCli : public testing::CliTest {
 protected:
  // A two-step pretraining run of the tiny model, a checkpoint per step (run/checkpoints/step-*).
  void train_base() {
    write("job.toml", job_text());
    const CmdResult r = run("train " + p("job.toml") + " --run-dir " + p("run") + " --quiet");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  std::string job_text() const {
    return "[job]\nname = \"t\"\nphase = \"pretrain\"\n[model]\nconfig = \"" + src("configs/models/tiny.json") +
           "\"\n[data]\nbuiltin = \"arithmetic\"\ndocuments = 60\n[train]\nsteps = 2\nseq_len = 32\n"
           "checkpoint_every = 1\nkeep_last = 2\nthreads = 1\n[batch]\nrows = 2\n";
  }
  std::string ck(int step) const {
    char name[32];
    std::snprintf(name, sizeof name, "run/checkpoints/step-%08d", step);
    return p(name);
  }
  // Exit 2 and every `needles` in the output.
  static void expect_refused(const CmdResult& r, const std::vector<std::string>& needles) {
    EXPECT_EQ(r.code, 2) << r.out;
    for (const std::string& n : needles) EXPECT_NE(r.out.find(n), std::string::npos) << n << "\n" << r.out;
  }
  // Every loader of a checkpoint directory, each expected to refuse `dir` naming `needles`.
  void expect_every_loader_refuses(const std::string& dir, const std::vector<std::string>& needles) {
    expect_refused(run("model logits --checkpoint " + dir + " --tokens \"1 2 3\" --out " + p("l.npy")), needles);
    EXPECT_FALSE(fs::exists(p("l.npy")));
    expect_refused(run("eval --task arithmetic --checkpoint " + dir + " --problems 2"), needles);
    expect_refused(run("generate --checkpoint " + dir + " --prompt \"1+1=\" --max-new-tokens 2"), needles);
    write("sft.toml", "[job]\nname = \"s\"\nphase = \"sft\"\n[model]\ninit_from = \"" + dir +
                          "\"\n[data]\nbuiltin = \"arithmetic-chat\"\ndocuments = 8\n[train]\nsteps = 1\nseq_len = 64\n");
    expect_refused(run("train " + p("sft.toml") + " --run-dir " + p("run-sft") + " --quiet"), needles);
    write("rl.toml", "[job]\nname = \"r\"\nphase = \"rl\"\n[model]\ninit_from = \"" + dir +
                         "\"\n[rollout]\nprompts = 1\ngroup_size = 2\nmax_new_tokens = 4\n[grpo]\niterations = 1\n");
    expect_refused(run("train " + p("rl.toml") + " --run-dir " + p("run-rl") + " --quiet"), needles);
    EXPECT_FALSE(fs::exists(p("run-sft/checkpoints")));
    EXPECT_FALSE(fs::exists(p("run-rl/checkpoints")));
  }
};

// NaN written into a weight of a trained checkpoint: the manifest names the changed file; with
// --no-verify the finiteness check still names the tensor.
TEST_F(CheckpointCli, NanWeightIsRefusedByEveryLoader) {
  train_base();
  ASSERT_TRUE(testing::poke_f32(ck(2) + "/model.safetensors", kTensor, 5, std::nanf("")).ok());
  expect_every_loader_refuses(ck(2), {ck(2) + "/model.safetensors", "checksum differs from the manifest"});
  const std::string nan_named = "tensor '" + std::string(kTensor) + "': element 5 is nan";
  expect_refused(run("model logits --no-verify --checkpoint " + ck(2) + " --tokens \"1 2\" --out " + p("l.npy")),
                 {ck(2) + "/model.safetensors", nan_named});
  expect_refused(run("generate --no-verify --checkpoint " + ck(2) + " --prompt \"1\" --max-new-tokens 1"), {nan_named});
  // Without the manifest (as an HF download has none) the NaN is still refused.
  fs::remove(ck(2) + "/manifest.json");
  expect_every_loader_refuses(ck(2), {ck(2) + "/model.safetensors", nan_named});
}

// 1e30 is finite but absurd: refused like NaN (by the manifest, and by the magnitude bound).
TEST_F(CheckpointCli, HugeWeightIsRefused) {
  train_base();
  ASSERT_TRUE(testing::poke_f32(ck(2) + "/model.safetensors", kTensor, 0, 1e30f).ok());
  expect_refused(run("model logits --checkpoint " + ck(2) + " --tokens \"1 2\" --out " + p("l.npy")),
                 {"checksum differs from the manifest"});
  expect_refused(run("model logits --no-verify --checkpoint " + ck(2) + " --tokens \"1 2\" --out " + p("l.npy")),
                 {"tensor '" + std::string(kTensor) + "': element 0 is 1e+30"});
}

// A changed byte that leaves every value plausible is caught by the manifest alone; --no-verify
// skips the checksums; a checkpoint directory without a manifest loads.
TEST_F(CheckpointCli, FlippedByteIsRefusedUnlessUnverified) {
  train_base();
  ASSERT_TRUE(testing::poke_f32(ck(2) + "/model.safetensors", kTensor, 3, 0.0123f).ok());
  expect_every_loader_refuses(ck(2), {ck(2) + "/model.safetensors", "checksum differs from the manifest"});
  CmdResult r = run("model logits --no-verify --checkpoint " + ck(2) + " --tokens \"1 2\" --out " + p("l.npy"));
  EXPECT_EQ(r.code, 0) << r.out;
  fs::remove(ck(1) + "/manifest.json");
  r = run("model logits --checkpoint " + ck(1) + " --tokens \"1 2\" --out " + p("l1.npy"));
  EXPECT_EQ(r.code, 0) << r.out;
  r = run("generate --checkpoint " + ck(1) + " --prompt \"1+1=\" --max-new-tokens 2");
  EXPECT_EQ(r.code, 0) << r.out;
}

// --resume with every checkpoint corrupt fails naming each and why, and writes no checkpoint;
// with none at all it starts fresh (start-or-continue), as it always has.
TEST_F(CheckpointCli, ResumeWithEveryCheckpointCorruptExits2NamingEach) {
  train_base();
  ASSERT_TRUE(testing::poke_f32(ck(1) + "/model.safetensors", kTensor, 3, 0.0123f).ok());
  fs::remove(ck(2) + "/optimizer.safetensors");
  const CmdResult r = run("train " + p("job.toml") + " --run-dir " + p("run") + " --quiet --resume --set train.steps=4");
  expect_refused(r, {ck(1) + "/model.safetensors: size or checksum differs",
                     ck(2) + "/optimizer.safetensors: listed in the manifest but missing", "every checkpoint"});
  EXPECT_EQ(r.out.find("starting fresh"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("run/checkpoints/step-00000003")));
  EXPECT_FALSE(fs::exists(p("run/checkpoints/step-00000004")));

  const CmdResult fresh = run("train " + p("job.toml") + " --run-dir " + p("new") + " --quiet --resume");
  EXPECT_EQ(fresh.code, 0) << fresh.out;
  EXPECT_NE(fresh.out.find("starting fresh"), std::string::npos) << fresh.out;
  EXPECT_TRUE(fs::exists(p("new/checkpoints/step-00000002")));
}

// The trial's values: 2^40 rows (was std::bad_alloc, exit 134), rows that fit the token bound but
// not the machine's memory, lr = inf (trained NaN to the end), NaN in the file; each refused with
// exit 2 naming the field, before anything is written.
TEST_F(CheckpointCli, BadValuesExit2NamingTheField) {
  write("job.toml", job_text());
  const std::string train = "train " + p("job.toml") + " --run-dir " + p("run") + " --quiet ";
  expect_refused(run(train + "--set batch.rows=1099511627776"), {"field 'batch.rows'", "tokens per step"});
  expect_refused(run(train + "--set batch.rows=16000000"), {"field 'batch.rows'", "GiB", "this machine has"});
  expect_refused(run(train + "--set optimizer.lr=inf"), {"field 'optimizer.lr'", "finite"});
  expect_refused(run(train + "--set optimizer.beta2=1.0"), {"field 'optimizer.beta2'"});
  expect_refused(run(train + "--set train.threads=100000"), {"field 'train.threads'"});
  write("nan.toml", job_text() + "[optimizer]\nlr = nan\n");
  expect_refused(run("train " + p("nan.toml") + " --run-dir " + p("run") + " --quiet"),
                 {p("nan.toml") + ":18:", "field 'optimizer.lr'", "finite"});
  write("rl.toml", "[job]\nphase = \"rl\"\n[model]\ninit_from = \"x\"\n[rollout]\ntemperature = nan\n");
  expect_refused(run("train " + p("rl.toml") + " --run-dir " + p("run") + " --quiet"), {"field 'rollout.temperature'"});
  write("rl2.toml", "[job]\nphase = \"rl\"\n[model]\ninit_from = \"x\"\n[reward]\nweights = [1.0, inf]\n");
  expect_refused(run("train " + p("rl2.toml") + " --run-dir " + p("run") + " --quiet"), {"field 'reward.weights'"});
  EXPECT_FALSE(fs::exists(p("run")));
}

// lr = 1e30 is finite: the first update blows the weights up and the next step's loss or gradient
// is not finite. The run stops there, exit 2 naming the step, and publishes no checkpoint.
TEST_F(CheckpointCli, DivergingRunStopsWithoutACheckpoint) {
  write("job.toml", job_text());
  const CmdResult r = run("train " + p("job.toml") + " --run-dir " + p("run") +
                          " --quiet --set optimizer.lr=1e30 --set optimizer.warmup_steps=0 --set train.steps=4"
                          " --set train.checkpoint_every=4");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("job.toml: step "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("no checkpoint of it is written"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("done:"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("run/checkpoints"))) << r.out;
}

}  // namespace
}  // namespace mariana
