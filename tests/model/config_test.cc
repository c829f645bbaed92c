// ModelConfig: the shipped configs, the 671B figures of docs/numerics.md#reference-figures-for-the-671b-config,
// bad configs, the RoPE/YaRN layouts of transformers 4 (rope_scaling) and 5 (rope_parameters), and
// the config.json written for HF (q_lora_rank null, architectures).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

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

// `text` (a JSON object) with one more field.
std::string plus(const std::string& text, const std::string& key, const std::string& value) {
  return text.substr(0, text.rfind('}')) + ",\"" + key + "\":" + value + "}";
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
  if (at == std::string::npos) return plus(text, key, value);
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

// RoPE / YaRN in transformers 5's layout. save_pretrained (PreTrainedConfig.to_dict with
// RotaryEmbeddingConfigMixin) writes no top-level rope_theta or rope_scaling, only
// "rope_parameters": {"rope_type": "default", "rope_theta": θ} or {"rope_type": "yarn",
// "rope_theta": θ, "factor": s, "original_max_position_embeddings": n, "beta_fast": 32.0,
// "beta_slow": 1.0, "mscale": m, "mscale_all_dim": m'} (factor and betas as floats), plus the
// optional YaRN keys "attention_factor" and "truncate". These configs are written by hand in that
// format (transformers is not installed here).
constexpr const char* kYarnOld = R"({"type":"yarn","factor":40,"original_max_position_embeddings":4096,
    "beta_fast":32,"beta_slow":1,"mscale":1.0,"mscale_all_dim":0.8})";
constexpr const char* kYarnV5 = R"({"rope_type":"yarn","rope_theta":50000.0,"factor":40.0,
    "original_max_position_embeddings":4096,"beta_fast":32.0,"beta_slow":1.0,"mscale":1.0,"mscale_all_dim":0.8})";

ModelConfig parse_ok(const std::string& text) {
  auto r = model_config_from_json_text(text, "x.json");
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? r.value() : ModelConfig{};
}

void expect_same_rope(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.yarn.enabled, b.yarn.enabled);
  EXPECT_EQ(a.yarn.factor, b.yarn.factor);
  EXPECT_EQ(a.yarn.original_max_position, b.yarn.original_max_position);
  EXPECT_EQ(a.yarn.beta_fast, b.yarn.beta_fast);
  EXPECT_EQ(a.yarn.beta_slow, b.yarn.beta_slow);
  EXPECT_EQ(a.yarn.mscale, b.yarn.mscale);
  EXPECT_EQ(a.yarn.mscale_all_dim, b.yarn.mscale_all_dim);
  EXPECT_EQ(a.softmax_scale(), b.softmax_scale());
  EXPECT_EQ(a.rope_mscale(), b.rope_mscale());
}

TEST(ModelConfigRope, YarnInRopeParametersEqualsRopeScaling) {
  const ModelConfig old = parse_ok(plus(with("rope_theta", "50000"), "rope_scaling", kYarnOld));
  const ModelConfig v5 = parse_ok(with("rope_parameters", kYarnV5));
  ASSERT_TRUE(v5.yarn.enabled);
  EXPECT_EQ(v5.rope_theta, 50000.0);
  EXPECT_EQ(v5.yarn.factor, 40.0);
  EXPECT_EQ(v5.yarn.mscale_all_dim, 0.8);
  expect_same_rope(old, v5);
  // Both layouts at once, agreeing.
  expect_same_rope(old, parse_ok(plus(plus(with("rope_parameters", kYarnV5), "rope_theta", "50000"),
                                      "rope_scaling", kYarnOld)));
  // attention_factor equal to the derived cos/sin multiplier, and truncate true, are accepted.
  char af[32];
  std::snprintf(af, sizeof(af), "%.17g", old.rope_mscale());
  const std::string v5_extra = plus(plus(kYarnV5, "truncate", "true"), "attention_factor", af);
  expect_same_rope(old, parse_ok(with("rope_parameters", v5_extra)));
}

TEST(ModelConfigRope, DefaultRopeParametersEqualsTopLevelTheta) {
  const ModelConfig old = parse_ok(with("rope_theta", "500000"));
  const ModelConfig v5 = parse_ok(with("rope_parameters", R"({"rope_type":"default","rope_theta":500000.0})"));
  EXPECT_EQ(v5.rope_theta, 500000.0);
  EXPECT_FALSE(v5.yarn.enabled);
  expect_same_rope(old, v5);
  expect_same_rope(parse_ok(with("", "")), parse_ok(with("rope_parameters", "null")));
  expect_same_rope(parse_ok(with("", "")), parse_ok(with("rope_scaling", "null")));
}

TEST(ModelConfigRope, UnknownRopeTypeIsRefused) {
  expect_error(with("rope_parameters", R"({"rope_type":"llama3","rope_theta":10000.0,"factor":8.0})"),
               "rope_parameters.rope_type");
  expect_error(with("rope_scaling", R"({"type":"linear","factor":2.0})"), "rope_scaling.type");
}

TEST(ModelConfigRope, UnknownRopeKeyIsRefused) {
  expect_error(with("rope_parameters", R"({"rope_type":"yarn","rope_theta":10000.0,"factor":4.0,
      "original_max_position_embeddings":64,"low_freq_factor":1.0})"), "rope_parameters.low_freq_factor");
  expect_error(with("rope_parameters", R"({"rope_type":"default","rope_theta":10000.0,"factor":4.0})"),
               "rope_parameters.factor");
  expect_error(with("rope_scaling", R"({"type":"yarn","factor":4.0,"original_max_position_embeddings":64,
      "partial_rotary_factor":0.5})"), "rope_scaling.partial_rotary_factor");
  expect_error(with("rope_parameters", R"({"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":64,
      "truncate":false})"), "rope_parameters.truncate");
  expect_error(with("rope_parameters", R"({"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":64,
      "attention_factor":1.5})"), "rope_parameters.attention_factor");
  expect_error(with("rope_interleave", "false"), "rope_interleave");
}

TEST(ModelConfigRope, ConflictingLayoutsAreRefused) {
  // rope_theta at the top level and inside rope_parameters.
  expect_error(plus(with("rope_theta", "10000"), "rope_parameters", R"({"rope_type":"default","rope_theta":50000.0})"),
               "rope_parameters.rope_theta");
  // YaRN in one layout, none in the other.
  expect_error(plus(with("rope_parameters", R"({"rope_type":"default"})"), "rope_scaling", kYarnOld),
               "rope_parameters.rope_type");
  // YaRN in both with a different factor.
  std::string other = kYarnV5;
  other.replace(other.find("\"factor\":40.0"), 13, "\"factor\":4.00");
  expect_error(plus(with("rope_parameters", other), "rope_scaling", kYarnOld), "rope_parameters.factor");
}

TEST(ModelConfigHfJson, QLoraRankZeroIsWrittenAsNull) {
  for (const char* q : {"0", "null", ""}) {
    const ModelConfig c = parse_ok(with("q_lora_rank", q));
    ASSERT_EQ(c.q_lora_rank, 0) << q;
    const std::string out = model_config_hf_json(c);
    const nlohmann::json j = nlohmann::json::parse(out);
    ASSERT_TRUE(j.contains("q_lora_rank")) << q;
    EXPECT_TRUE(j["q_lora_rank"].is_null()) << q << ": " << out;
    EXPECT_EQ(j["architectures"], nlohmann::json::array({"DeepseekV3ForCausalLM"}));
    EXPECT_EQ(j["model_type"], "deepseek_v3");
    // Mariana reads it back as the same model.
    const ModelConfig back = parse_ok(out);
    EXPECT_EQ(back.q_lora_rank, 0);
    EXPECT_EQ(back.n_group, c.n_group);
    EXPECT_EQ(back.hidden_size, c.hidden_size);
    // Nothing left to add: written unchanged.
    EXPECT_EQ(model_config_hf_json(back), out);
  }
}

TEST(ModelConfigHfJson, DefaultsWhereHfDiffersAreExplicit) {
  // Absent n_shared_experts / routed_scaling_factor mean 0 / 1.0 to Mariana, 1 / 2.5 to HF.
  const ModelConfig c = parse_ok(with("n_shared_experts", ""));
  const nlohmann::json j = nlohmann::json::parse(model_config_hf_json(c));
  EXPECT_EQ(j["n_shared_experts"], 0);
  EXPECT_EQ(j["routed_scaling_factor"], 1.0);
  EXPECT_EQ(j["n_group"], 4);
  EXPECT_EQ(j["q_lora_rank"], 32);
}

TEST(ModelConfigHfJson, CompleteConfigIsWrittenUnchanged) {
  const ModelConfig c = load_config("configs/models/deepseek-v3-671b.json");
  EXPECT_EQ(model_config_hf_json(c), c.json_text);
}

}  // namespace
}  // namespace mariana
