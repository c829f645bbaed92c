// The "model" reward scorer: registered by name, reading a reward model checkpoint, scoring as
// RewardModel does; bad options and a checkpoint without a head are errors.
#include "rl/model_scorer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/safetensors.h"
#include "model/checkpoint.h"

namespace mariana::rl {
namespace {

namespace fs = std::filesystem;

TEST(ModelScorer, ScoresWithTheRewardModelsHead) {
  const fs::path dir = fs::temp_directory_path() / ("mariana_model_scorer_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  auto cfg = model_config_load(std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json");
  ASSERT_TRUE(cfg.ok());
  Model<float> model(cfg.value());
  model.init_weights(2);
  ASSERT_TRUE(checkpoint_save(dir.string(), model, CheckpointOptions{}).ok());
  TokenizerTrainOptions to;
  to.vocab_size = 300;
  auto tok = Tokenizer::train_from_texts({"12 + 30 = ?", "Add the digits from the right.\n#### 42"}, to);
  ASSERT_TRUE(tok.ok());
  ASSERT_TRUE(tok->save((dir / "tokenizer.json").string()).ok());

  ScorerRegistry reg = ScorerRegistry::with_builtins();
  EXPECT_EQ(reg.make("model", {{"checkpoint", dir.string()}}).status().code(), StatusCode::kNotFound);  // no head yet
  const int64_t C = cfg->hidden_size;
  std::vector<float> w(C);
  for (int64_t i = 0; i < C; ++i) w[i] = static_cast<float>(std::cos(0.3 * static_cast<double>(i)));
  ASSERT_TRUE(safetensors_write((dir / kRewardHeadFile).string(),
                                {{kRewardHeadTensor, Tensor::view(w.data(), DType::kF32, {1, C})}})
                  .ok());

  ASSERT_TRUE(register_model_scorer(&reg).ok());
  EXPECT_TRUE(reg.has("model"));
  EXPECT_EQ(register_model_scorer(&reg).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(reg.make("model", nlohmann::json::object()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(reg.make("model", {{"checkpoint", dir.string()}, {"temp", 1}}).status().code(), StatusCode::kInvalidArgument);
  auto scorer = reg.make("model", {{"checkpoint", dir.string()}});
  ASSERT_TRUE(scorer.ok()) << scorer.status().to_string();
  EXPECT_EQ((*scorer)->name(), "model");
  RewardSample s;
  s.prompt = "12 + 30 = ?";
  s.response = "Add the digits from the right.\n#### 42";
  auto r = (*scorer)->score(s);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(r->ok);
  auto rm = RewardModel::load(dir.string());
  ASSERT_TRUE(rm.ok());
  const double want = rm->score(s.prompt, s.response).value();
  EXPECT_EQ(r->reward, want);
  EXPECT_NE(want, 0.0);
  s.response = "#### 41";
  EXPECT_NE((*scorer)->score(s)->reward, want);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mariana::rl
