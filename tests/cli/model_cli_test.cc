// The `mariana model` command line as a user runs it: a real subprocess, its exit code, its
// messages and what it leaves on disk.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/file_util.h"
#include "tests/cli/cli_test_util.h"
#include "core/safetensors.h"
#include "model/checkpoint.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

using testing::CmdResult;
CmdResult run(const std::string& args) { return testing::run_mariana(args); }

using ModelCli = testing::CliTest;

TEST_F(ModelCli, InfoOnTheRealConfigPrints671BAnd37B) {
  const CmdResult r = run("model info " + src("configs/models/deepseek-v3-671b.json"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("671.03B"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("37.55B"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0.1352338"), std::string::npos) << r.out;
}

TEST_F(ModelCli, InitThenLogitsWritesNpyMatchingTheModel) {
  ASSERT_EQ(run("model init --config " + src("configs/models/tiny.json") + " --seed 5 --out " + p("ck")).code, 0);
  const CmdResult r = run("model logits --checkpoint " + p("ck") + " --tokens \"3 17 42 5\" --out " + p("l.npy"));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string npy = read_file(p("l.npy")).value();
  ASSERT_EQ(npy.substr(1, 5), "NUMPY");
  EXPECT_NE(npy.find("'shape': (4, 1024)"), std::string::npos);
  // The same logits in process.
  auto ck = checkpoint_load<float>(p("ck"));
  ASSERT_TRUE(ck.ok());
  Model<float>& m = ck.value().model;
  ASSERT_TRUE(m.forward(Batch::from_rows(1, 4, {3, 17, 42, 5}), LossWeights{}, nullptr).ok());
  const size_t off = npy.size() - 4 * 1024 * sizeof(float);
  const float* f = reinterpret_cast<const float*>(npy.data() + off);
  for (int i = 0; i < 4 * 1024; ++i) ASSERT_EQ(f[i], m.logits()[i]) << i;
}

TEST_F(ModelCli, ConfigMissingFieldExits2AndWritesNothing) {
  std::string text = read_file(src("configs/models/tiny.json")).value();
  const size_t at = text.find("\"hidden_size\": 64,");
  text.erase(at, std::string("\"hidden_size\": 64,").size());
  write("bad.json", text);
  const CmdResult r = run("model init --config " + p("bad.json") + " --out " + p("ck"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("bad.json"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hidden_size"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("ck")));
}

TEST_F(ModelCli, InconsistentGroupsExit2) {
  std::string text = read_file(src("configs/models/tiny.json")).value();
  text.replace(text.find("\"topk_group\": 2"), 15, "\"topk_group\": 5");
  write("bad.json", text);
  const CmdResult r = run("model info " + p("bad.json"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("topk_group"), std::string::npos) << r.out;
}

TEST_F(ModelCli, TruncatedCheckpointExits2AndWritesNothing) {
  ASSERT_EQ(run("model init --config " + src("configs/models/tiny.json") + " --out " + p("ck")).code, 0);
  const std::string b = read_file(p("ck/model.safetensors")).value();
  ASSERT_TRUE(write_file_atomic(p("ck/model.safetensors"), b.substr(0, b.size() / 2)).ok());
  const CmdResult r = run("model logits --checkpoint " + p("ck") + " --tokens \"1 2\" --out " + p("l.npy"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("DataLoss"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.safetensors"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("l.npy")));
}

TEST_F(ModelCli, WrongShapeTensorExits2NamingIt) {
  ASSERT_EQ(run("model init --config " + src("configs/models/tiny.json") + " --out " + p("ck")).code, 0);
  auto sf = SafetensorsFile::open(p("ck/model.safetensors"));
  ASSERT_TRUE(sf.ok());
  std::vector<std::pair<std::string, Tensor>> items;
  for (const auto& e : sf.value().entries())
    items.emplace_back(e.name, e.name == "model.norm.weight" ? Tensor::zeros(DType::kF32, {63}) : sf.value().view(e));
  ASSERT_TRUE(safetensors_write(p("ck/model.safetensors"), items).ok());
  const CmdResult r = run("model logits --checkpoint " + p("ck") + " --tokens \"1 2\" --out " + p("l.npy"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("model.norm.weight"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("l.npy")));
}

TEST_F(ModelCli, TokenOutsideVocabularyExits2) {
  ASSERT_EQ(run("model init --config " + src("configs/models/tiny.json") + " --out " + p("ck")).code, 0);
  const CmdResult r = run("model logits --checkpoint " + p("ck") + " --tokens \"1 5000\" --out " + p("l.npy"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("5000"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("l.npy")));
}

TEST_F(ModelCli, UnknownFlagExits2) {
  const CmdResult r = run("model info --bogus x");
  EXPECT_EQ(r.code, 2) << r.out;
}

TEST_F(ModelCli, BenchJsonHasTheFields) {
  const CmdResult r = run("bench model --config " + src("configs/models/tiny.json") +
                    " --batch 1 --seq 16 --steps 1 --warmup 0 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* k : {"\"tokens_per_s\"", "\"model_gflops\"", "\"sgemm_gflops\"", "\"ratio\""})
    EXPECT_NE(r.out.find(k), std::string::npos) << k << " in " << r.out;
  const CmdResult t = run("bench model --config " + src("configs/models/tiny.json") +
                          " --batch 1 --seq 16 --steps 1 --warmup 0 --train-step --json");
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_NE(t.out.find("\"train_step\":true"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("optimizer (clip, AdamW, bias)"), std::string::npos) << t.out;
}

}  // namespace
}  // namespace mariana
