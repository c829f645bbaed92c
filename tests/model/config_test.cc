// ModelConfig: the shipped configs, the 671B figures of docs/numerics.md#reference-figures-for-the-671b-config,
// and bad configs.
#include <gtest/gtest.h>

#include "model/config.h"
#include "model_test_util.h"

namespace mariana {
namespace {

using testing::load_config;

TEST(ModelConfig, TinyAndSmallParse) {
  const ModelConfig t = load_config("configs/models/tiny.json");
  EXPECT_EQ(t.hidden_size, 64);
  EXPECT_EQ(t.q_lora_rank, 32);
  EXPECT_EQ(t.n_group, 4);
  EXPECT_EQ(t.num_nextn_predict_layers, 1);
  EXPECT_FALSE(t.yarn.enabled);
  const ModelConfig s = load_config("configs/models/small.json");
  EXPECT_EQ(s.hidden_size, 256);
  EXPECT_EQ(s.num_experts_per_tok, 4);
  EXPECT_EQ(s.max_position_embeddings, 512);
}

TEST(ModelConfig, DeepSeekV3YarnFigures) {
  const ModelConfig c = load_config("configs/models/deepseek-v3-671b.json");
  ASSERT_TRUE(c.yarn.enabled);
  // docs/numerics.md#rope-and-yarn: mscale = 0.1·ln 40 + 1 = 1.368888; softmax scale 192^-0.5 · mscale² = 0.1352338.
  EXPECT_NEAR(yarn_get_mscale(c.yarn.factor, c.yarn.mscale_all_dim), 1.368888, 1e-6);
  EXPECT_NEAR(c.softmax_scale(), 0.1352338, 1e-7);
  EXPECT_DOUBLE_EQ(c.rope_mscale(), 1.0);  // mscale == mscale_all_dim: cos/sin unscaled
}

TEST(ModelConfig, DeepSeekV3ParameterCounts) {
  const ModelConfig c = load_config("configs/models/deepseek-v3-671b.json");
  const ModelStats s = model_stats(c, 4096);
  // 671.03B total (main model), activated ≈ 37.5B (report: 37B).
  EXPECT_NEAR(static_cast<double>(s.total_params) / 1e9, 671.03, 0.01);
  EXPECT_NEAR(static_cast<double>(s.activated_params) / 1e9, 37.5, 0.6);
  // MTP: 11.5B unique parameters (README_WEIGHTS.md).
  EXPECT_NEAR(static_cast<double>(s.mtp_params) / 1e9, 11.5, 0.2);
  // Latent cache: 576 values per layer vs 40960 (docs/numerics.md#absorbed-decode-with-the-latent-cache).
  EXPECT_EQ(s.kv_latent_values_per_token, 61 * 576);
  EXPECT_EQ(s.kv_naive_values_per_token, 61 * 40960);
}

std::string with(const std::string& key, const std::string& value) {
  std::string text = R"({"model_type":"deepseek_v3","vocab_size":1024,"hidden_size":64,
    "intermediate_size":128,"moe_intermediate_size":32,"num_hidden_layers":3,"first_k_dense_replace":1,
    "num_attention_heads":4,"q_lora_rank":32,"kv_lora_rank":16,"qk_nope_head_dim":16,
    "qk_rope_head_dim":8,"v_head_dim":16,"n_routed_experts":8,"n_shared_experts":1,
    "num_experts_per_tok":2,"n_group":4,"topk_group":2})";
  if (key.empty()) return text;
  const std::string needle = "\"" + key + "\":";
  const size_t at = text.find(needle);
  if (at == std::string::npos) return text.substr(0, text.size() - 1) + ",\"" + key + "\":" + value + "}";
  const size_t end = text.find_first_of(",}", at);
  if (value.empty()) {  // remove the field
    size_t start = at;
    size_t stop = end;
    if (text[end] == ',') ++stop; else if (text[start - 1] == ',') --start;
    return text.erase(start, stop - start);
  }
  return text.replace(at + needle.size(), end - at - needle.size(), value);
}

void expect_error(const std::string& text, const std::string& field) {
  auto r = model_config_from_json_text(text, "bad.json");
  ASSERT_FALSE(r.ok()) << "accepted: " << text;
  EXPECT_NE(r.status().message().find("bad.json"), std::string::npos) << r.status().to_string();
  EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status().to_string();
}

TEST(ModelConfig, BaseTextIsValid) { EXPECT_TRUE(model_config_from_json_text(with("", ""), "x").ok()); }

TEST(ModelConfig, MissingField) { expect_error(with("hidden_size", ""), "hidden_size"); }
TEST(ModelConfig, WronglyTypedField) { expect_error(with("hidden_size", "\"64\""), "hidden_size"); }
TEST(ModelConfig, ExpertsNotDivisibleByGroups) { expect_error(with("n_group", "3"), "n_group"); }
TEST(ModelConfig, TopkGroupAboveNGroup) { expect_error(with("topk_group", "5"), "topk_group"); }
TEST(ModelConfig, TooManyExpertsPerToken) { expect_error(with("num_experts_per_tok", "5"), "num_experts_per_tok"); }
TEST(ModelConfig, OddRopeDim) { expect_error(with("qk_rope_head_dim", "7"), "qk_rope_head_dim"); }
TEST(ModelConfig, NegativeDim) { expect_error(with("kv_lora_rank", "-1"), "kv_lora_rank"); }
TEST(ModelConfig, DenseLayersBeyondDepth) { expect_error(with("first_k_dense_replace", "4"), "first_k_dense_replace"); }
TEST(ModelConfig, SoftmaxScoringUnsupported) { expect_error(with("scoring_func", "\"softmax\""), "scoring_func"); }
TEST(ModelConfig, YarnMissingFactor) {
  expect_error(with("rope_scaling", R"({"type":"yarn","original_max_position_embeddings":64})"), "rope_scaling.factor");
}
TEST(ModelConfig, InvalidJson) {
  auto r = model_config_from_json_text("{\"vocab_size\": ", "broken.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("broken.json"), std::string::npos);
}
TEST(ModelConfig, NullQLoraRankMeansNone) {
  auto r = model_config_from_json_text(with("q_lora_rank", "null"), "x.json");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().q_lora_rank, 0);
}

}  // namespace
}  // namespace mariana
