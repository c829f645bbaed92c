// The trainer end to end on the tiny model: exact resume, corrupt checkpoints skipped, the loss
// falling, context extension composing YaRN factors (from either RoPE layout), and starting from a
// checkpoint without MTP weights (as HF transformers saves one) only with model.init_mtp.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "model/checkpoint.h"
#include "tests/model/checkpoint_test_util.h"
#include "tests/train/trainer_test_util.h"
#include "train/run_checkpoints.h"
#include "train/trainer.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public testing::TrainRunTest {};

TEST_F(TrainerTest, ResumeIsExact) {
  const JobSpec spec = job({"train.steps=6", "train.checkpoint_every=3"});
  std::vector<double> straight, resumed;
  TrainOptions a;
  a.spec = spec;
  a.run_dir = p("a");
  a.quiet = true;
  a.on_step = [&](const StepMetrics& m) { straight.push_back(m.loss); };
  auto ra = train_run(a);
  ASSERT_TRUE(ra.ok()) << ra.status().to_string();

  TrainOptions b = a;
  b.run_dir = p("b");
  b.stop_after = 3;  // as if killed right after the step-3 checkpoint
  b.on_step = [&](const StepMetrics& m) { resumed.push_back(m.loss); };
  ASSERT_TRUE(train_run(b).ok());
  ASSERT_EQ(resumed.size(), 3u);
  b.stop_after = -1;
  b.resume = true;
  auto rb = train_run(b);
  ASSERT_TRUE(rb.ok()) << rb.status().to_string();
  EXPECT_EQ(rb.value().resumed_from, 3);
  ASSERT_EQ(straight.size(), 6u);
  ASSERT_EQ(resumed.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(straight[i], resumed[i]) << "step " << i + 1;  // bitwise
  for (const char* f : {"model.safetensors", "optimizer.safetensors"}) {
    EXPECT_EQ(read_file(ra.value().final_checkpoint + "/" + f).value(),
              read_file(rb.value().final_checkpoint + "/" + f).value())
        << f;
  }
}

// The weights and optimizer state do not depend on the thread count: 4 steps on 1, 2 and 3
// threads agree bitwise, and so does a run killed after 2 steps on 2 threads and resumed on 3
// (a trainer restarted on a node with another core count). Rows of 200 tokens make every kernel
// take its OpenMP path and OpenBLAS thread its products.
TEST_F(TrainerTest, WeightsAreBitwiseOnAnyThreadCountAndAcrossAResume) {
  auto spec_at = [&](int threads) {
    return job({"train.steps=4", "train.checkpoint_every=2", "train.seq_len=200", "batch.rows=5",
                "train.threads=" + std::to_string(threads)});
  };
  auto final_files = [](const TrainSummary& s) {
    std::vector<std::string> f;
    for (const char* name : {"model.safetensors", "optimizer.safetensors"})
      f.push_back(read_file(s.final_checkpoint + "/" + name).value());
    return f;
  };
  auto run = [&](int threads, const std::string& dir, int64_t stop_after, bool resume) {
    TrainOptions o;
    o.spec = spec_at(threads);
    o.run_dir = p(dir);
    o.quiet = true;
    o.stop_after = stop_after;
    o.resume = resume;
    return train_run(o);
  };
  auto one = run(1, "t1", -1, false);
  ASSERT_TRUE(one.ok()) << one.status().to_string();
  const auto want = final_files(one.value());
  for (int threads : {2, 3}) {
    auto r = run(threads, "t" + std::to_string(threads), -1, false);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    const auto got = final_files(r.value());
    EXPECT_TRUE(got[0] == want[0]) << "weights after 4 steps on " << threads << " threads";
    EXPECT_TRUE(got[1] == want[1]) << "optimizer state after 4 steps on " << threads << " threads";
  }
  ASSERT_TRUE(run(2, "resumed", 2, false).ok());
  auto resumed = run(3, "resumed", -1, true);
  ASSERT_TRUE(resumed.ok()) << resumed.status().to_string();
  EXPECT_EQ(resumed.value().resumed_from, 2);
  const auto got = final_files(resumed.value());
  EXPECT_TRUE(got[0] == want[0]) << "weights: 2 steps on 2 threads + 2 resumed on 3 vs 4 on 1";
  EXPECT_TRUE(got[1] == want[1]) << "optimizer state: 2 steps on 2 threads + 2 resumed on 3 vs 4 on 1";
}

TEST_F(TrainerTest, CorruptNewestCheckpointIsSkipped) {
  TrainOptions o;
  o.spec = job({"train.steps=4", "train.checkpoint_every=2"});
  o.run_dir = p("r");
  o.quiet = true;
  ASSERT_TRUE(train_run(o).ok());
  const std::string newest = p("r/checkpoints/step-00000004/model.safetensors");
  std::string bytes = read_file(newest).value();
  bytes[bytes.size() / 2] ^= 0x40;
  ASSERT_TRUE(write_file_atomic(newest, bytes).ok());
  auto latest = latest_valid_checkpoint(p("r"));
  ASSERT_TRUE(latest.ok());
  EXPECT_NE(latest.value().find("step-00000002"), std::string::npos) << latest.value();
}

TEST_F(TrainerTest, KeepsTheLastK) {
  TrainOptions o;
  o.spec = job({"train.steps=5", "train.checkpoint_every=1", "train.keep_last=2"});
  o.run_dir = p("r");
  o.quiet = true;
  ASSERT_TRUE(train_run(o).ok());
  int n = 0;
  for (const auto& e : fs::directory_iterator(p("r/checkpoints"))) {
    (void)e;
    ++n;
  }
  EXPECT_EQ(n, 2);
  EXPECT_TRUE(fs::exists(p("r/checkpoints/step-00000005/manifest.json")));
}

TEST_F(TrainerTest, LossFallsOnArithmetic) {
  TrainOptions o;
  o.spec = job({"data.builtin=arithmetic", "data.documents=400", "train.steps=60", "train.checkpoint_every=60",
                "batch.rows=8", "train.seq_len=64", "optimizer.lr=5e-3", "optimizer.final_lr=1e-3"});
  o.run_dir = p("r");
  o.quiet = true;
  double first = 0;
  o.on_step = [&](const StepMetrics& m) {
    if (m.step == 1) first = m.loss_main;
  };
  auto r = train_run(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  // From ln(1024) ≈ 6.93 at initialisation; arithmetic text is highly predictable (digits,
  // fixed templates), so 60 steps of 512 tokens get well under 3.5 nats.
  EXPECT_GT(first, 6.5);
  EXPECT_LT(r.value().last.loss_main, 3.5);
}

TEST_F(TrainerTest, ExtensionComposesYarnFactors) {
  TrainOptions pre;
  pre.spec = job({"train.steps=2", "train.checkpoint_every=2"});
  pre.run_dir = p("pre");
  pre.quiet = true;
  ASSERT_TRUE(train_run(pre).ok());
  auto ext_spec = [&](const std::string& from, int64_t seq) {
    JobSpec s = job({"train.steps=2", "train.checkpoint_every=2", "job.phase=extend", "model.init_from=" + from,
                     "extend.factor=2.0", "train.seq_len=" + std::to_string(seq)});
    return s;
  };
  TrainOptions e1;
  e1.spec = ext_spec(p("pre"), 64);
  e1.spec.yarn_original = 32;
  e1.run_dir = p("e1");
  e1.quiet = true;
  auto r1 = train_run(e1);
  ASSERT_TRUE(r1.ok()) << r1.status().to_string();
  auto c1 = checkpoint_load<float>(r1.value().final_checkpoint);
  ASSERT_TRUE(c1.ok()) << c1.status().to_string();
  EXPECT_TRUE(c1.value().model.config().yarn.enabled);
  EXPECT_DOUBLE_EQ(c1.value().model.config().yarn.factor, 2.0);
  EXPECT_EQ(c1.value().model.config().yarn.original_max_position, 32);
  EXPECT_EQ(c1.value().model.config().max_position_embeddings, 64);
  TrainOptions e2;
  e2.spec = ext_spec(p("e1"), 128);
  e2.run_dir = p("e2");
  e2.quiet = true;
  auto r2 = train_run(e2);
  ASSERT_TRUE(r2.ok()) << r2.status().to_string();
  auto c2 = checkpoint_load<float>(r2.value().final_checkpoint);
  ASSERT_TRUE(c2.ok());
  EXPECT_DOUBLE_EQ(c2.value().model.config().yarn.factor, 4.0);
  EXPECT_EQ(c2.value().model.config().max_position_embeddings, 128);
}

TEST_F(TrainerTest, SeqLenBeyondTheModelIsAnError) {
  TrainOptions o;
  o.spec = job({"train.seq_len=512"});
  o.run_dir = p("r");
  auto r = train_run(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("train.seq_len"), std::string::npos);
}

TEST_F(TrainerTest, ExtensionOfATransformers5Config) {
  // tiny.json as transformers 5 writes it: RoPE only in rope_parameters.
  const std::string tiny = std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json";
  auto j = nlohmann::ordered_json::parse(read_file(tiny).value());
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  ASSERT_TRUE(write_file_atomic(p("tiny_v5.json"), j.dump(2)).ok());
  TrainOptions pre;
  pre.spec = job({"train.steps=1", "train.checkpoint_every=1", "model.config=" + p("tiny_v5.json")});
  pre.run_dir = p("pre");
  pre.quiet = true;
  ASSERT_TRUE(train_run(pre).ok());
  TrainOptions e;
  e.spec = job({"train.steps=1", "train.checkpoint_every=1", "job.phase=extend", "model.init_from=" + p("pre"),
                "extend.factor=2.0", "extend.original_max_position_embeddings=32", "train.seq_len=64"});
  e.run_dir = p("e");
  e.quiet = true;
  auto r = train_run(e);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  auto ck = checkpoint_load<float>(r.value().final_checkpoint);
  ASSERT_TRUE(ck.ok()) << ck.status().to_string();
  const ModelConfig& c = ck.value().model.config();
  EXPECT_TRUE(c.yarn.enabled);
  EXPECT_DOUBLE_EQ(c.yarn.factor, 2.0);
  EXPECT_EQ(c.max_position_embeddings, 64);
  const auto written = nlohmann::json::parse(read_file(r.value().final_checkpoint + "/config.json").value());
  EXPECT_EQ(written["rope_parameters"]["rope_type"], "yarn");
  EXPECT_FALSE(written.contains("rope_scaling"));
}

TEST_F(TrainerTest, InitFromACheckpointWithoutMtpNeedsInitMtp) {
  TrainOptions pre;
  pre.spec = job({"train.steps=2", "train.checkpoint_every=2"});
  pre.run_dir = p("pre");
  pre.quiet = true;
  auto rp = train_run(pre);
  ASSERT_TRUE(rp.ok()) << rp.status().to_string();
  fs::copy(rp.value().final_checkpoint, p("hf"), fs::copy_options::recursive);
  testing::checkpoint_drop_tensors(p("hf"), "model.layers.3.");
  fs::remove(p("hf/manifest.json"));  // an HF save has no manifest (and this one no longer matches)
  auto ext = [&](const std::string& from, const std::string& run, bool init_mtp, double* first_loss) {
    TrainOptions o;
    o.spec = job({"train.steps=1", "train.checkpoint_every=1", "job.phase=extend", "model.init_from=" + from,
                  "extend.factor=2.0", "model.init_seed=5",
                  std::string("model.init_mtp=") + (init_mtp ? "true" : "false")});
    o.run_dir = p(run);
    o.quiet = true;
    o.on_step = [first_loss](const StepMetrics& m) { *first_loss = m.loss_main; };
    return train_run(o);
  };
  double loss_full = 0, loss_hf = -1;
  auto refused = ext(p("hf"), "e0", false, &loss_hf);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("model.init_mtp"), std::string::npos) << refused.status().to_string();
  EXPECT_NE(refused.status().message().find("model.layers.3."), std::string::npos) << refused.status().to_string();

  auto full = ext(p("pre"), "e1", false, &loss_full);
  ASSERT_TRUE(full.ok()) << full.status().to_string();
  auto r = ext(p("hf"), "e2", true, &loss_hf);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  // The main model came across unchanged: its first-step loss equals the run from the full checkpoint.
  EXPECT_EQ(loss_hf, loss_full);
  auto ck = checkpoint_load<float>(r.value().final_checkpoint);
  ASSERT_TRUE(ck.ok()) << ck.status().to_string();
  EXPECT_EQ(ck.value().model.config().num_nextn_predict_layers, 1);
  EXPECT_EQ(ck.value().model.config().mtp_missing, 0);
}

}  // namespace
}  // namespace mariana
