// `mariana train --nproc N`: a parallel job's ranks as local processes, through the real binary.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/cli/cli_test_util.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

using testing::CmdResult;

class ParallelCli : public testing::CliTest {
 protected:
  std::string job_text(const std::string& parallel) const {
    return "[job]\nname = \"t\"\nphase = \"pretrain\"\n[model]\nconfig = \"" + src("configs/models/tiny.json") +
           "\"\n[data]\nbuiltin = \"arithmetic\"\ndocuments = 60\n[train]\nsteps = 4\nseq_len = 32\n"
           "checkpoint_every = 2\nthreads = 1\n[batch]\nrows = 4\n[parallel]\n" + parallel;
  }
  std::vector<double> losses(const std::string& run_dir) const {
    std::vector<double> v;
    std::ifstream in(p(run_dir + "/metrics.jsonl"));
    for (std::string line; std::getline(in, line);) v.push_back(nlohmann::json::parse(line).at("loss").get<double>());
    return v;
  }
};

TEST_F(ParallelCli, NprocRunsTheRanksAndRank0WritesTheRun) {
  write("dp2.toml", job_text("dp = 2\n"));
  write("one.toml", job_text(""));
  const CmdResult one = testing::run_mariana("train " + p("one.toml") + " --run-dir " + p("one") + " --quiet");
  ASSERT_EQ(one.code, 0) << one.out;
  const CmdResult r = testing::run_mariana("train " + p("dp2.toml") + " --nproc 2 --run-dir " + p("dp2") + " --quiet");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("done: step 4"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("done: step 4"), r.out.rfind("done: step 4")) << "only rank 0 reports: " << r.out;
  EXPECT_TRUE(fs::exists(p("dp2/checkpoints/step-00000004/manifest.json")));
  for (const auto& e : fs::directory_iterator(p("dp2")))
    EXPECT_NE(e.path().filename().string().rfind(".rendezvous-", 0), 0u) << "left behind: " << e.path();
  const auto a = losses("one"), b = losses("dp2");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-6 * a[i]) << "step " << i + 1;
}

TEST_F(ParallelCli, AParallelJobNeedsAMatchingNproc) {
  write("dp2.toml", job_text("dp = 2\n"));
  const CmdResult none = testing::run_mariana("train " + p("dp2.toml") + " --run-dir " + p("a"));
  EXPECT_EQ(none.code, 2) << none.out;
  EXPECT_NE(none.out.find("run it with --nproc 2"), std::string::npos) << none.out;
  const CmdResult wrong = testing::run_mariana("train " + p("dp2.toml") + " --nproc 3 --run-dir " + p("b"));
  EXPECT_EQ(wrong.code, 2) << wrong.out;
  EXPECT_NE(wrong.out.find("--nproc 3 does not match"), std::string::npos) << wrong.out;
  write("bad.toml", job_text("dp = 3\n"));  // 4 rows do not split over 3 ranks
  const CmdResult bad = testing::run_mariana("train " + p("bad.toml") + " --nproc 3 --run-dir " + p("c"));
  EXPECT_EQ(bad.code, 2) << bad.out;
  EXPECT_NE(bad.out.find("field 'batch.rows'"), std::string::npos) << bad.out;
}

}  // namespace
}  // namespace mariana

namespace mariana {
namespace {

// `mariana checkpoint export`: a parallel run's newest checkpoint as a plain HF directory (shards +
// index, tokenizer, no trainer files) whose logits equal the checkpoint's own.
TEST_F(ParallelCli, CheckpointExportWritesAPlainHfDirectory) {
  write("dp2.toml", job_text("dp = 2\n"));
  ASSERT_EQ(testing::run_mariana("train " + p("dp2.toml") + " --nproc 2 --run-dir " + p("dp2") + " --quiet").code, 0);
  const CmdResult ex = testing::run_mariana("checkpoint export " + p("dp2") + " --out " + p("hf") +
                                            " --max-shard-bytes 300000");
  ASSERT_EQ(ex.code, 0) << ex.out;
  EXPECT_TRUE(fs::exists(p("hf/config.json")));
  EXPECT_TRUE(fs::exists(p("hf/model.safetensors.index.json")));
  EXPECT_TRUE(fs::exists(p("hf/tokenizer.json")));
  EXPECT_FALSE(fs::exists(p("hf/optimizer.safetensors")));
  EXPECT_FALSE(fs::exists(p("hf/manifest.json")));
  const std::string tokens = " --tokens \"3 17 42 7\" --out ";
  ASSERT_EQ(testing::run_mariana("model logits --checkpoint " + p("dp2/checkpoints/step-00000004") + tokens + p("a.npy")).code, 0);
  ASSERT_EQ(testing::run_mariana("model logits --checkpoint " + p("hf") + tokens + p("b.npy")).code, 0);
  std::ifstream a(p("a.npy"), std::ios::binary), b(p("b.npy"), std::ios::binary);
  const std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
  EXPECT_GT(sa.size(), 1000u);
  EXPECT_EQ(sa, sb);
  const CmdResult again = testing::run_mariana("checkpoint export " + p("dp2") + " --out " + p("hf"));
  EXPECT_EQ(again.code, 2) << again.out;
  EXPECT_NE(again.out.find("--overwrite"), std::string::npos) << again.out;
  const CmdResult missing = testing::run_mariana("checkpoint export " + p("nowhere") + " --out " + p("x"));
  EXPECT_EQ(missing.code, 2) << missing.out;
  EXPECT_FALSE(fs::exists(p("x")));
}

}  // namespace
}  // namespace mariana

namespace mariana {
namespace {

// Ctrl-C (here SIGTERM to the process group, as a terminal sends SIGINT to it) reaches every rank;
// they agree on it at the next step, write one checkpoint together and exit 130; --resume goes on
// from it with the same ranks.
TEST_F(ParallelCli, AnInterruptCheckpointsEveryRankTogetherAndResumes) {
  write("dp2.toml", job_text("dp = 2\n"));
  // 3000 steps: the run ends by itself should the signal miss.
  const CmdResult r = testing::interrupt_mariana("train " + p("dp2.toml") + " --nproc 2 --run-dir " + p("run") +
                                                     " --quiet --set train.steps=3000 --set train.checkpoint_every=100000",
                                                 p("out"), p("run/metrics.jsonl"), /*group=*/true);
  const std::string& out = r.out;
  EXPECT_EQ(r.code, 130) << out;
  EXPECT_NE(out.find("interrupted at step"), std::string::npos) << out;
  EXPECT_EQ(out.find("stopping the other ranks"), std::string::npos) << out;  // not a failure
  std::vector<std::string> cks;
  for (const auto& e : fs::directory_iterator(p("run/checkpoints"))) cks.push_back(e.path().filename().string());
  ASSERT_EQ(cks.size(), 1u) << out;
  const int step = std::atoi(cks[0].c_str() + 5);
  EXPECT_GT(step, 0);
  EXPECT_EQ(losses("run").size(), static_cast<size_t>(step));
  const CmdResult again = testing::run_mariana("train " + p("dp2.toml") + " --nproc 2 --run-dir " + p("run") +
                                               " --quiet --resume --set train.steps=" + std::to_string(step + 2) +
                                               " --set train.checkpoint_every=100000");
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("done: step " + std::to_string(step + 2)), std::string::npos) << again.out;
}

}  // namespace
}  // namespace mariana
