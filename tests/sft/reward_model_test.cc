// The reward model: preference data, the Bradley–Terry gradient against finite differences on the
// tiny model in double, training (loss falls, exact resume, the head in the checkpoint), scoring.
#include "sft/reward_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/file_util.h"
#include "model/checkpoint.h"
#include "tests/sft/sft_test_util.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

TEST(RewardData, ArithmeticPreferenceDiffersOnlyInTheFinalAnswer) {
  for (int64_t i = 0; i < 40; ++i) {
    const PreferencePair p = arithmetic_preference(5, i, {});
    const ArithmeticProblem prob = arithmetic_chat_problem(5, i, {});
    EXPECT_EQ(p.prompt, arithmetic_chat_question(prob));
    EXPECT_EQ(p.chosen, arithmetic_chat_messages(prob)[1].content);
    const size_t c = p.chosen.rfind("#### "), r = p.rejected.rfind("#### ");
    ASSERT_NE(r, std::string::npos);
    EXPECT_EQ(p.chosen.substr(c + 5), std::to_string(prob.answer));
    const int64_t wrong = std::stoll(p.rejected.substr(r + 5));
    EXPECT_NE(wrong, prob.answer);
    // Same work up to the final "a op b = N" line.
    const size_t line = p.chosen.rfind('\n', c - 2);
    EXPECT_EQ(p.chosen.substr(0, line), p.rejected.substr(0, line));
    EXPECT_NE(p.rejected.find(" = " + std::to_string(wrong) + "\n#### "), std::string::npos) << p.rejected;
  }
}

TEST(RewardData, BadLinesNameFileLineAndField) {
  const std::string path = (fs::temp_directory_path() / ("mariana_rm_" + std::to_string(::getpid()) + ".jsonl")).string();
  const std::string good = rm_preference_json_line({"q", "a", "b"});
  struct Case {
    std::string line, needle;
  };
  for (const Case& c : std::vector<Case>{{"{", ":2: invalid JSON"},
                                         {"{\"prompt\": \"q\", \"chosen\": \"a\"}", ":2: missing field 'rejected'"},
                                         {"{\"prompt\": 1, \"chosen\": \"a\", \"rejected\": \"b\"}",
                                          ":2: field 'prompt': expected a string, got number 1"},
                                         {"{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"a\"}",
                                          ":2: field 'rejected': identical to 'chosen'"}}) {
    ASSERT_TRUE(write_file_atomic(path, good + "\n" + c.line + "\n").ok());
    auto r = rm_read_preferences_jsonl(path);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find(path + c.needle), std::string::npos) << r.status().message();
  }
  ASSERT_TRUE(write_file_atomic(path, good + "\n\n" + good + "\n").ok());
  auto ok = rm_read_preferences_jsonl(path);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[1].rejected, "b");
  fs::remove(path);
}

TEST(RewardLoss, BradleyTerryGradientMatchesFiniteDifferencesInDouble) {
  auto cfg = model_config_load(std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json");
  ASSERT_TRUE(cfg.ok());
  Model<double> m(cfg.value());
  m.init_weights(1);
  const int64_t C = cfg->hidden_size;
  // Two pairs packed into one row of 40 tokens (ids below the vocabulary, any values do).
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> pairs;
  for (int k = 0; k < 2; ++k) {
    std::vector<int32_t> a, b;
    for (int i = 0; i < 9 + k; ++i) a.push_back((37 * i + 11 * k + 5) % 1000);
    for (int i = 0; i < 8; ++i) b.push_back((53 * i + 7 * k + 3) % 1000);
    pairs.emplace_back(a, b);
  }
  auto loader = SftLoader::create_pairs(pairs, SftLoaderOptions{40, 0, 0, 1, false});
  ASSERT_TRUE(loader.ok());
  Batch batch;
  ASSERT_TRUE(loader->next(1, &batch).ok());
  const auto ends = loader->last_pairs();
  ASSERT_EQ(ends.size(), 2u);
  EXPECT_EQ(ends[0].first, 8);
  EXPECT_EQ(ends[0].second, 16);
  std::vector<double> w(C);
  for (int64_t i = 0; i < C; ++i) w[i] = 0.5 * std::sin(0.7 * static_cast<double>(i) + 0.3);
  LossWeights lw;
  lw.mtp_weight = 0;
  lw.balance_alpha = 0;
  auto loss_at = [&](bool reuse) {
    ForwardResult r;
    EXPECT_TRUE(m.forward(batch, lw, &r, reuse).ok());
    return rm_bt_loss<double>(m.final_hidden(), C, w.data(), ends, nullptr, nullptr, nullptr);
  };
  m.zero_grads();
  const double loss = loss_at(false);
  EXPECT_GT(loss, 0);
  std::vector<double> dhidden(static_cast<size_t>(m.tokens() * C), 0.0), dw(C, 0.0);
  rm_bt_loss<double>(m.final_hidden(), C, w.data(), ends, dhidden.data(), dw.data(), nullptr);
  m.backward_custom(nullptr, dhidden.data());
  const double eps = 1e-6;
  // The head.
  for (int64_t i : {0, 7, 31, 63}) {
    const double keep = w[i];
    w[i] = keep + eps;
    const double up = loss_at(true);
    w[i] = keep - eps;
    const double down = loss_at(true);
    w[i] = keep;
    const double fd = (up - down) / (2 * eps);
    // Central differences in double: truncation ~eps² and rounding ~1e-16/eps, so 1e-7 relative.
    EXPECT_NEAR(dw[i], fd, 1e-7 * std::max(1.0, std::fabs(fd))) << "w[" << i << "]";
  }
  // The backbone, through backward_custom: one entry of several tensors along the path.
  const std::vector<std::string> names = {"model.embed_tokens.weight", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
                                          "model.layers.2.mlp.shared_experts.down_proj.weight", "model.norm.weight"};
  int checked = 0;
  for (const std::string& name : names) {
    const ParamSpec& s = m.table().at(name);
    for (int64_t j : {int64_t{5} * C + 3, s.numel() / 2 + 1}) {  // row 5 of the embedding is token 5, which is used
      if (j >= s.numel()) continue;
      double* p = m.params() + s.offset + j;
      const double keep = *p;
      *p = keep + eps;
      const double up = loss_at(true);
      *p = keep - eps;
      const double down = loss_at(true);
      *p = keep;
      const double fd = (up - down) / (2 * eps);
      const double an = m.grads()[s.offset + j];
      EXPECT_NEAR(an, fd, 1e-6 * std::max(1e-2, std::fabs(fd))) << name << "[" << j << "]";
      checked += std::fabs(fd) > 1e-8;
    }
  }
  EXPECT_GE(checked, 4) << "enough entries with a gradient to mean something";
}

class RewardTrainTest : public testing::SftRunTest {
 protected:
  JobSpec job(std::vector<std::string> sets) const {
    sets.insert(sets.begin(), {"data.documents=16", "train.seq_len=128"});
    return SftRunTest::job("rm", "arithmetic-preference", sets);
  }
};

TEST_F(RewardTrainTest, ShortRunLowersTheBradleyTerryLoss) {
  TrainOptions o;
  o.spec = job({"train.epochs=24", "train.checkpoint_every=1000", "optimizer.lr=1e-2", "optimizer.final_lr=1e-3"});
  o.run_dir = p("r");
  o.quiet = true;
  std::vector<double> loss, acc;
  o.on_step = [&](const StepMetrics& m) { loss.push_back(m.loss_main); };
  auto r = rm_train_run(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_GE(loss.size(), 8u);
  EXPECT_NEAR(loss[0], std::log(2.0), 1e-6) << "w = 0 at the start: every margin is 0";
  double tail = 0;
  for (size_t i = loss.size() - 4; i < loss.size(); ++i) tail += loss[i] / 4;
  EXPECT_LT(tail, 0.6) << "first " << loss[0];
  std::printf("BT loss %.4f -> %.4f (mean of the last 4 of %zu steps)\n", loss[0], tail, loss.size());
  // The head is in the checkpoint; the scorer reads it and prefers the training pairs' chosen side.
  ASSERT_TRUE(fs::exists(r->final_checkpoint + "/" + kRewardHeadFile));
  auto rm = RewardModel::load(p("r"));
  ASSERT_TRUE(rm.ok()) << rm.status().to_string();
  int right = 0;
  std::vector<std::pair<std::string, std::string>> batch;
  for (int64_t i = 0; i < 16; ++i) {
    const PreferencePair pp = arithmetic_preference(o.spec.data_seed, i, ArithmeticOptions{1, 2, "+-*"});
    auto c = rm->score(pp.prompt, pp.chosen), j = rm->score(pp.prompt, pp.rejected);
    ASSERT_TRUE(c.ok() && j.ok());
    right += *c > *j;
    batch.emplace_back(pp.prompt, pp.chosen);
    if (i == 0) batch.emplace_back(pp.prompt, pp.rejected);
  }
  EXPECT_GE(right, 11) << "of 16 training pairs";
  // Batched scoring (rows of different lengths, padded) equals one at a time.
  auto all = rm->score_batch(batch);
  ASSERT_TRUE(all.ok());
  EXPECT_NEAR((*all)[0], *rm->score(batch[0].first, batch[0].second), 1e-4);
  EXPECT_NEAR((*all)[1], *rm->score(batch[1].first, batch[1].second), 1e-4);
  EXPECT_EQ(RewardModel::load(p("base")).status().code(), StatusCode::kNotFound);
}

TEST_F(RewardTrainTest, ResumeIsExact) {
  const JobSpec spec = job({"train.steps=6", "train.checkpoint_every=3"});
  std::vector<double> straight, resumed;
  TrainOptions a;
  a.spec = spec;
  a.run_dir = p("a");
  a.quiet = true;
  a.on_step = [&](const StepMetrics& m) { straight.push_back(m.loss); };
  auto ra = rm_train_run(a);
  ASSERT_TRUE(ra.ok()) << ra.status().to_string();
  TrainOptions b = a;
  b.run_dir = p("b");
  b.stop_after = 3;
  b.on_step = [&](const StepMetrics& m) { resumed.push_back(m.loss); };
  ASSERT_TRUE(rm_train_run(b).ok());
  b.stop_after = -1;
  b.resume = true;
  auto rb = rm_train_run(b);
  ASSERT_TRUE(rb.ok()) << rb.status().to_string();
  EXPECT_EQ(rb->resumed_from, 3);
  ASSERT_EQ(straight.size(), 6u);
  ASSERT_EQ(resumed.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(straight[i], resumed[i]) << "step " << i + 1;
  for (const char* f : {"model.safetensors", "optimizer.safetensors", kRewardHeadFile}) {
    EXPECT_EQ(read_file(ra->final_checkpoint + "/" + f).value(), read_file(rb->final_checkpoint + "/" + f).value()) << f;
  }
}

}  // namespace
}  // namespace mariana
