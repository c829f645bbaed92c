// The validation loss (eval.every) and the end-of-run summary on the tiny model: val_loss on the
// eval steps equal to the checkpoint's loss on the held-out batches computed here, held-out
// documents never trained on, training bit-identical with evaluation on or off, summary.json,
// and the best validation loss kept across a resume.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "model/checkpoint.h"
#include "tests/train/trainer_test_util.h"
#include "tests/train/validation_test_util.h"
#include "train/data.h"
#include "train/trainer.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

class ValidationTest : public testing::TrainRunTest {
 protected:
  // Held-out fraction 0.1 whether evaluation is on or off: the same training data either way.
  JobSpec job(std::vector<std::string> sets) const {
    sets.insert(sets.begin(), "eval.held_out=0.1");
    return TrainRunTest::job(sets);
  }
  TrainOptions options(const JobSpec& spec, const std::string& run) const {
    TrainOptions o;
    o.spec = spec;
    o.run_dir = p(run);
    o.quiet = true;
    return o;
  }
};

std::vector<nlohmann::json> metrics_of(const std::string& run_dir) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_file(run_dir + "/metrics.jsonl").value());
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// A pretraining run's held-out loader as the test builds it: the held-out shards in stored order, no FIM.
DataLoader held_out_loader(const std::string& run_dir, const JobSpec& spec) {
  LoaderOptions lo;
  lo.data_dir = run_dir + "/data/shards-held-out-0.1";
  lo.seq_len = spec.seq_len;
  lo.seed = spec.seed;
  lo.fim_rate = 0;
  lo.shuffle = false;
  loader_options_set_special_tokens(Tokenizer::load(run_dir + "/tokenizer.json").value(), &lo);
  auto dl = DataLoader::open(lo);
  EXPECT_TRUE(dl.ok()) << dl.status().to_string();
  return std::move(dl).value();
}

TEST_F(ValidationTest, JobFields) {
  const JobSpec off = job({"eval.held_out=-1"});
  EXPECT_EQ(off.eval_every, 0);
  EXPECT_EQ(off.eval_batches, 4);
  EXPECT_EQ(off.eval_held_out, 0);  // -1 without eval.every: nothing held out, the data as before
  const JobSpec on = job({"eval.held_out=-1", "eval.every=10"});
  EXPECT_EQ(on.eval_held_out, kDefaultHeldOut);
  const std::string text = "[model]\nconfig = \"m.json\"\n";
  for (const auto& [set, field] : std::vector<std::pair<std::string, std::string>>{
           {"eval.every=-1", "eval.every"}, {"eval.batches=0", "eval.batches"}, {"eval.held_out=0.7", "eval.held_out"}}) {
    auto r = job_spec_parse(text, "j.toml", {set});
    ASSERT_FALSE(r.ok()) << set;
    EXPECT_NE(r.status().message().find("j.toml: field '" + field + "'"), std::string::npos) << r.status().message();
  }
  auto none = job_spec_parse(text, "j.toml", {"eval.every=5", "eval.held_out=0"});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("field 'eval.held_out': eval.every needs held-out data"), std::string::npos);
  auto rm = job_spec_parse("[job]\nphase = \"rm\"\n[model]\ninit_from = \"x\"\n[data]\nbuiltin = \"arithmetic-preference\"\n",
                           "r.toml", {"eval.every=5"});
  ASSERT_FALSE(rm.ok());
  EXPECT_NE(rm.status().message().find("field 'eval.every': the rm phase"), std::string::npos) << rm.status().message();
}

TEST_F(ValidationTest, HeldOutSplitIsAFixedFractionByHash) {
  int held = 0;
  for (int i = 0; i < 4000; ++i) {
    const std::string t = "document " + std::to_string(i);
    EXPECT_EQ(data_held_out(t, 0.1), data_held_out(t, 0.1));
    if (data_held_out(t, 0.1)) ++held;
    EXPECT_FALSE(data_held_out(t, 0));
    if (data_held_out(t, 0.05)) {
      EXPECT_TRUE(data_held_out(t, 0.1));  // nested: a larger fraction keeps them
    }
  }
  EXPECT_GT(held, 340);
  EXPECT_LT(held, 460);
}

TEST_F(ValidationTest, ValLossEveryNStepsIsTheCheckpointsLossOnTheHeldOutBatches) {
  const JobSpec spec = job({"train.steps=6", "train.checkpoint_every=3", "eval.every=3", "eval.batches=2"});
  TrainOptions o = options(spec, "r");
  std::vector<double> seen;  // on_step's val_loss, NaN off the eval steps
  o.on_step = [&](const StepMetrics& m) { seen.push_back(m.val_loss); };
  auto r = train_run(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const auto lines = metrics_of(p("r"));
  ASSERT_EQ(lines.size(), 6u);
  for (const auto& l : lines) {
    const int64_t step = l["step"].get<int64_t>();
    ASSERT_EQ(l.contains("val_loss"), step % 3 == 0) << l.dump();
    if (step % 3 != 0) {
      EXPECT_TRUE(std::isnan(seen[step - 1]));
      continue;
    }
    const double val = l["val_loss"].get<double>();
    EXPECT_EQ(seen[step - 1], val);
    char name[32];
    std::snprintf(name, sizeof(name), "/checkpoints/step-%08lld", (long long)step);
    DataLoader dl = held_out_loader(p("r"), spec);
    const double expect = testing::checkpoint_loss(p("r") + name, 2, [&](Batch* b) { return dl.next(spec.rows, b); });
    EXPECT_NEAR(val, expect, 1e-9 * expect) << "step " << step;
    EXPECT_GT(val, 0);
  }
  EXPECT_LT(lines[5]["val_loss"].get<double>(), lines[2]["val_loss"].get<double>());  // it learns
}

TEST_F(ValidationTest, HeldOutDocumentsAreNeverTrainedOn) {
  const JobSpec spec = job({"train.steps=2", "eval.every=2"});
  ASSERT_TRUE(train_run(options(spec, "r")).ok());
  // Every document of the corpus, tokenized, and which side of the split its text is on.
  const Tokenizer tok = Tokenizer::load(p("r/tokenizer.json")).value();
  std::map<std::vector<int32_t>, bool> side;
  std::istringstream in(read_file(p("r/data/mix.jsonl")).value());
  for (std::string line; std::getline(in, line);) {
    const std::string text = nlohmann::json::parse(line)["text"].get<std::string>();
    side[tok.encode(text)] = data_held_out(text, 0.1);
  }
  auto docs_of = [&](const std::string& dir) {
    std::set<std::vector<int32_t>> out;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() != ".bin") continue;
      TokenShard sh = TokenShard::open(e.path().string()).value();
      for (int64_t d = 0; d < sh.num_documents(); ++d) {
        std::vector<int32_t> ids;
        sh.doc_tokens(d, &ids);
        out.insert(ids);
      }
    }
    return out;
  };
  const auto train = docs_of(p("r/data/shards-train-0.1")), held = docs_of(p("r/data/shards-held-out-0.1"));
  EXPECT_GE(held.size(), 5u);
  EXPECT_EQ(train.size() + held.size(), side.size());
  for (const auto& d : held) {
    EXPECT_EQ(train.count(d), 0u);
    ASSERT_TRUE(side.count(d));
    EXPECT_TRUE(side[d]);
  }
  for (const auto& d : train) EXPECT_FALSE(side[d]);
}

TEST_F(ValidationTest, TrainingIsBitIdenticalWithEvaluationOnOrOff) {
  std::vector<double> off, on;
  TrainOptions a = options(job({"train.steps=6", "train.checkpoint_every=6", "eval.every=0"}), "off");
  a.on_step = [&](const StepMetrics& m) { off.push_back(m.loss); };
  auto ra = train_run(a);
  ASSERT_TRUE(ra.ok()) << ra.status().to_string();
  TrainOptions b = options(job({"train.steps=6", "train.checkpoint_every=6", "eval.every=1", "eval.batches=3"}), "on");
  b.on_step = [&](const StepMetrics& m) { on.push_back(m.loss); };
  auto rb = train_run(b);
  ASSERT_TRUE(rb.ok()) << rb.status().to_string();
  ASSERT_EQ(off.size(), 6u);
  EXPECT_EQ(off, on);  // bitwise
  EXPECT_EQ(metrics_of(p("on"))[0].count("val_loss"), 1u);
  EXPECT_EQ(metrics_of(p("off"))[0].count("val_loss"), 0u);
  EXPECT_EQ(read_file(ra->final_checkpoint + "/model.safetensors").value(),
            read_file(rb->final_checkpoint + "/model.safetensors").value());
}

TEST_F(ValidationTest, SummaryJson) {
  const JobSpec spec = job({"train.steps=5", "train.checkpoint_every=2", "eval.every=2"});
  auto r = train_run(options(spec, "r"));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const auto lines = metrics_of(p("r"));
  double best = INFINITY;
  int64_t best_step = 0;
  std::vector<int64_t> val_steps;
  for (const auto& l : lines) {
    if (!l.contains("val_loss")) continue;
    val_steps.push_back(l["step"]);
    if (l["val_loss"].get<double>() < best) best = l["val_loss"], best_step = l["step"];
  }
  EXPECT_EQ(val_steps, (std::vector<int64_t>{2, 4, 5}));  // and the last step
  const auto s = nlohmann::json::parse(read_file(p("r/summary.json")).value());
  EXPECT_EQ(s["steps"], 5);
  EXPECT_EQ(s["total_steps"], 5);
  EXPECT_EQ(s["resumed_from"], 0);
  EXPECT_EQ(s["tokens"], 5 * 4 * 32);
  EXPECT_GT(s["wall_s"].get<double>(), 0);
  EXPECT_EQ(s["train_loss"].get<double>(), lines.back()["loss"].get<double>());
  EXPECT_EQ(s["val_loss"].get<double>(), lines.back()["val_loss"].get<double>());
  EXPECT_EQ(s["val_step"], 5);
  EXPECT_EQ(s["best_val_loss"].get<double>(), best);
  EXPECT_EQ(s["best_val_step"], best_step);
  EXPECT_EQ(s["checkpoint"], p("r/checkpoints/step-00000005"));
  const std::string text = train_summary_text(r.value());
  EXPECT_NE(text.find("summary: 5/5 steps, 640 tokens"), std::string::npos) << text;
  EXPECT_NE(text.find("best "), std::string::npos) << text;
  EXPECT_NE(text.find("checkpoint " + p("r/checkpoints/step-00000005")), std::string::npos) << text;

  // Without evaluation the validation fields are null.
  ASSERT_TRUE(train_run(options(job({"train.steps=1", "eval.held_out=0"}), "plain")).ok());
  const auto plain = nlohmann::json::parse(read_file(p("plain/summary.json")).value());
  EXPECT_TRUE(plain["val_loss"].is_null());
  EXPECT_TRUE(plain["best_val_loss"].is_null());
  EXPECT_EQ(plain["best_val_step"], 0);
}

TEST_F(ValidationTest, ResumeKeepsTheBestValidationLoss) {
  // A learning rate that jumps after step 4 makes the later validation losses worse, so the best
  // one is in the part before the resume and only the checkpoint's trainer state knows it.
  const JobSpec spec = job({"train.steps=8", "train.checkpoint_every=4", "eval.every=2", "optimizer.constant_steps=2",
                            "optimizer.decay_steps=0", "optimizer.tail_lr=0.3"});
  auto straight = train_run(options(spec, "a"));
  ASSERT_TRUE(straight.ok()) << straight.status().to_string();
  ASSERT_LE(straight->best_val_step, 4) << "the setup should put the best validation loss before the resume";
  TrainOptions b = options(spec, "b");
  b.stop_after = 4;
  ASSERT_TRUE(train_run(b).ok());
  b.stop_after = -1;
  b.resume = true;
  auto resumed = train_run(b);
  ASSERT_TRUE(resumed.ok()) << resumed.status().to_string();
  EXPECT_EQ(resumed->resumed_from, 4);
  EXPECT_EQ(resumed->best_val_step, straight->best_val_step);
  EXPECT_EQ(resumed->best_val_loss, straight->best_val_loss);
  EXPECT_EQ(resumed->val_loss, straight->val_loss);
  const auto s = nlohmann::json::parse(read_file(p("b/summary.json")).value());
  EXPECT_EQ(s["best_val_step"], straight->best_val_step);
  EXPECT_EQ(s["tokens"], 8 * 4 * 32);
}

}  // namespace
}  // namespace mariana
