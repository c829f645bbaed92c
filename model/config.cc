// Parsing, validation and derived sizes of ModelConfig.
#include "model/config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <vector>

#include "core/file_util.h"
#include "core/json_util.h"

namespace mariana {

double yarn_get_mscale(double scale, double m) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * m * std::log(scale) + 1.0;
}

double ModelConfig::softmax_scale() const {
  double s = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (yarn.enabled && yarn.mscale_all_dim != 0.0) {
    const double m = yarn_get_mscale(yarn.factor, yarn.mscale_all_dim);
    s *= m * m;
  }
  return s;
}

double yarn_attention_factor(const YarnConfig& y) {
  return yarn_get_mscale(y.factor, y.mscale) / yarn_get_mscale(y.factor, y.mscale_all_dim);
}

double ModelConfig::rope_mscale() const { return yarn.enabled ? yarn_attention_factor(yarn) : 1.0; }

Status ModelConfig::require_mtp(const std::string& what) const {
  if (num_nextn_predict_layers >= 1) return Status::Ok();
  if (mtp_missing > 0) {
    return FailedPrecondition(what + " needs MTP weights: " + source + " declares " + std::to_string(mtp_missing) +
                              " MTP module(s) but the checkpoint has no model.layers." +
                              std::to_string(num_hidden_layers) +
                              ".* tensors (HF transformers does not save them); train it with "
                              "model.init_mtp = true first");
  }
  return FailedPrecondition(what + " needs an MTP module (num_nextn_predict_layers >= 1 in " + source + ")");
}

namespace {

Status field_error(const std::string& src, const std::string& field, const std::string& what) {
  return InvalidArgument(src + ": field '" + field + "': " + what);
}

Status require_positive(const std::string& src, const char* field, int64_t v) {
  if (v <= 0) return field_error(src, field, "expected a positive integer, got " + std::to_string(v));
  return Status::Ok();
}

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

// RoPE and YaRN come in two layouts, and a config may carry both:
//  - transformers 4.x and DeepSeek's release: top-level "rope_theta" and "rope_scaling" (null, or
//    {"type" or "rope_type": "yarn", "factor", "original_max_position_embeddings", "beta_fast",
//    "beta_slow", "mscale", "mscale_all_dim"}).
//  - transformers 5 (PreTrainedConfig.save_pretrained with RotaryEmbeddingConfigMixin): only
//    "rope_parameters", {"rope_type": "default", "rope_theta": 10000.0} or {"rope_type": "yarn",
//    "rope_theta": ..., "factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0,
//    "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}, with the optional YaRN keys
//    "attention_factor" (the cos/sin multiplier, derived from mscale/mscale_all_dim when absent)
//    and "truncate" (floor/ceil the correction range; true by default).
// Every key and rope_type outside these is refused rather than ignored, and where both layouts
// give a value they must agree.
struct RopeSource {
  std::string name;            // "rope_scaling" or "rope_parameters"
  std::optional<double> theta; // its rope_theta, if given
  YarnConfig yarn;
};

const char* const kRopeKeys[] = {"rope_type", "type", "rope_theta", "factor", "original_max_position_embeddings",
                                 "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor",
                                 "truncate"};

Result<std::optional<RopeSource>> parse_rope_object(const JsonFields& f, const char* name, const std::string& src) {
  if (!f.has(name)) return std::optional<RopeSource>();  // absent or null
  MARIANA_ASSIGN_OR_RETURN(JsonFields rs, f.get_object(name));
  RopeSource out;
  out.name = name;
  const std::string pre = std::string(name) + ".";
  for (const std::string& k : rs.keys()) {
    if (std::find(std::begin(kRopeKeys), std::end(kRopeKeys), k) == std::end(kRopeKeys))
      return field_error(src, pre + k, "unknown RoPE key; Mariana reads rope_type, rope_theta and YaRN's factor, "
                                       "original_max_position_embeddings, beta_fast, beta_slow, mscale, "
                                       "mscale_all_dim, attention_factor and truncate");
  }
  MARIANA_ASSIGN_OR_RETURN(std::string type, rs.get_string_or("rope_type", ""));
  std::string type_key = "rope_type";
  if (rs.has("type")) {  // transformers 4's older spelling
    MARIANA_ASSIGN_OR_RETURN(std::string t, rs.get_string("type"));
    if (!type.empty() && t != type)
      return field_error(src, pre + "type", "\"" + t + "\" disagrees with rope_type \"" + type + "\"");
    type = t;
    type_key = "type";
  }
  if (type.empty()) type = "default";  // HF's default rope_type
  if (rs.has("rope_theta")) {
    MARIANA_ASSIGN_OR_RETURN(double theta, rs.get_double("rope_theta"));
    out.theta = theta;
  }
  if (type == "default") {
    for (const std::string& k : rs.keys()) {
      if (k != "rope_type" && k != "type" && k != "rope_theta")
        return field_error(src, pre + k, "is a scaling key, but rope_type is \"default\" (no scaling)");
    }
    return std::optional<RopeSource>(std::move(out));
  }
  if (type != "yarn") {
    return field_error(src, pre + type_key, "only \"default\" and \"yarn\" are supported, got \"" + type + "\"");
  }
  YarnConfig& y = out.yarn;
  y.enabled = true;
  MARIANA_ASSIGN_OR_RETURN(y.factor, rs.get_double("factor"));
  MARIANA_ASSIGN_OR_RETURN(y.original_max_position, rs.get_int("original_max_position_embeddings"));
  MARIANA_ASSIGN_OR_RETURN(y.beta_fast, rs.get_double_or("beta_fast", 32.0));
  MARIANA_ASSIGN_OR_RETURN(y.beta_slow, rs.get_double_or("beta_slow", 1.0));
  MARIANA_ASSIGN_OR_RETURN(y.mscale, rs.get_double_or("mscale", 1.0));
  MARIANA_ASSIGN_OR_RETURN(y.mscale_all_dim, rs.get_double_or("mscale_all_dim", 0.0));
  if (!(y.factor >= 1.0)) return field_error(src, pre + "factor", "expected >= 1");
  if (y.original_max_position <= 0) return field_error(src, pre + "original_max_position_embeddings", "expected > 0");
  if (!(y.beta_fast > y.beta_slow && y.beta_slow > 0)) {
    return field_error(src, pre + "beta_fast", "expected beta_fast > beta_slow > 0");
  }
  MARIANA_ASSIGN_OR_RETURN(bool truncate, rs.get_bool_or("truncate", true));
  if (!truncate) {
    return field_error(src, pre + "truncate", "only true (DeepSeek's floored/ceiled correction range) is supported");
  }
  if (rs.has("attention_factor")) {
    MARIANA_ASSIGN_OR_RETURN(double a, rs.get_double("attention_factor"));
    const double derived = yarn_attention_factor(y);
    if (!(std::abs(a - derived) <= 1e-12 * std::abs(derived))) {
      return field_error(src, pre + "attention_factor",
                         num(a) + " differs from the value mscale and mscale_all_dim give (" + num(derived) +
                             "); Mariana derives it and supports no other");
    }
  }
  return std::optional<RopeSource>(std::move(out));
}

Status parse_rope(const JsonFields& f, ModelConfig& c) {
  const std::string& src = c.source;
  MARIANA_ASSIGN_OR_RETURN(bool interleave, f.get_bool_or("rope_interleave", true));
  if (!interleave) return field_error(src, "rope_interleave", "only true (DeepSeek's interleaved pairs) is supported");
  MARIANA_ASSIGN_OR_RETURN(std::optional<RopeSource> legacy, parse_rope_object(f, "rope_scaling", src));
  MARIANA_ASSIGN_OR_RETURN(std::optional<RopeSource> v5, parse_rope_object(f, "rope_parameters", src));
  // rope_theta: every place that gives it must agree.
  std::vector<std::pair<std::string, double>> thetas;
  if (f.has("rope_theta")) {
    MARIANA_ASSIGN_OR_RETURN(double t, f.get_double("rope_theta"));
    thetas.emplace_back("rope_theta", t);
  }
  for (const auto* s : {&legacy, &v5})
    if (*s && (*s)->theta) thetas.emplace_back((*s)->name + ".rope_theta", *(*s)->theta);
  for (const auto& [name, t] : thetas) {
    if (t != thetas.front().second)
      return field_error(src, name, num(t) + " disagrees with '" + thetas.front().first + "' " +
                                        num(thetas.front().second));
  }
  if (!thetas.empty()) c.rope_theta = thetas.front().second;
  if (legacy && v5 && legacy->yarn.enabled != v5->yarn.enabled) {
    return field_error(src, "rope_parameters.rope_type",
                       std::string(v5->yarn.enabled ? "\"yarn\"" : "\"default\"") + " disagrees with rope_scaling's " +
                           (legacy->yarn.enabled ? "\"yarn\"" : "\"default\""));
  }
  if (legacy && v5 && v5->yarn.enabled) {
    const YarnConfig &a = legacy->yarn, &b = v5->yarn;
    const std::pair<const char*, std::pair<double, double>> fields[] = {
        {"factor", {a.factor, b.factor}},
        {"original_max_position_embeddings",
         {static_cast<double>(a.original_max_position), static_cast<double>(b.original_max_position)}},
        {"beta_fast", {a.beta_fast, b.beta_fast}},
        {"beta_slow", {a.beta_slow, b.beta_slow}},
        {"mscale", {a.mscale, b.mscale}},
        {"mscale_all_dim", {a.mscale_all_dim, b.mscale_all_dim}},
    };
    for (const auto& [key, v] : fields) {
      if (v.first != v.second) {
        return field_error(src, std::string("rope_parameters.") + key,
                           num(v.second) + " disagrees with 'rope_scaling." + key + "' " + num(v.first));
      }
    }
  }
  if (v5) c.yarn = v5->yarn;
  else if (legacy) c.yarn = legacy->yarn;
  return Status::Ok();
}

Status expect_string(const JsonFields& f, const char* name, const char* want, const std::string& src) {
  if (!f.has(name)) return Status::Ok();
  MARIANA_ASSIGN_OR_RETURN(std::string v, f.get_string(name));
  if (v != want) {
    return field_error(src, name, std::string("only \"") + want + "\" is supported, got \"" + v + "\"");
  }
  return Status::Ok();
}

}  // namespace

Result<ModelConfig> model_config_from_json_text(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return InvalidArgument(source + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument(source + ": expected a JSON object");
  JsonFields f(j, source);
  ModelConfig c;
  c.source = source;
  c.json_text = text;

  MARIANA_RETURN_IF_ERROR(expect_string(f, "model_type", "deepseek_v3", source));
  MARIANA_RETURN_IF_ERROR(expect_string(f, "hidden_act", "silu", source));
  MARIANA_RETURN_IF_ERROR(expect_string(f, "scoring_func", "sigmoid", source));
  MARIANA_RETURN_IF_ERROR(expect_string(f, "topk_method", "noaux_tc", source));

  struct IntField { const char* name; int64_t* dst; };
  const IntField required[] = {
      {"vocab_size", &c.vocab_size},
      {"hidden_size", &c.hidden_size},
      {"intermediate_size", &c.intermediate_size},
      {"moe_intermediate_size", &c.moe_intermediate_size},
      {"num_hidden_layers", &c.num_hidden_layers},
      {"first_k_dense_replace", &c.first_k_dense_replace},
      {"num_attention_heads", &c.num_attention_heads},
      {"kv_lora_rank", &c.kv_lora_rank},
      {"qk_nope_head_dim", &c.qk_nope_head_dim},
      {"qk_rope_head_dim", &c.qk_rope_head_dim},
      {"v_head_dim", &c.v_head_dim},
      {"n_routed_experts", &c.n_routed_experts},
      {"num_experts_per_tok", &c.num_experts_per_tok},
  };
  for (const auto& fld : required) {
    MARIANA_ASSIGN_OR_RETURN(*fld.dst, f.get_int(fld.name));
  }
  MARIANA_ASSIGN_OR_RETURN(c.q_lora_rank, f.get_int_or("q_lora_rank", 0));  // null/absent: no LoRA
  MARIANA_ASSIGN_OR_RETURN(c.n_shared_experts, f.get_int_or("n_shared_experts", 0));
  MARIANA_ASSIGN_OR_RETURN(c.n_group, f.get_int_or("n_group", 1));
  MARIANA_ASSIGN_OR_RETURN(c.topk_group, f.get_int_or("topk_group", 1));
  MARIANA_ASSIGN_OR_RETURN(c.num_nextn_predict_layers, f.get_int_or("num_nextn_predict_layers", 0));
  MARIANA_ASSIGN_OR_RETURN(c.max_position_embeddings, f.get_int_or("max_position_embeddings", 4096));
  MARIANA_ASSIGN_OR_RETURN(c.routed_scaling_factor, f.get_double_or("routed_scaling_factor", 1.0));
  MARIANA_ASSIGN_OR_RETURN(c.norm_topk_prob, f.get_bool_or("norm_topk_prob", true));
  MARIANA_ASSIGN_OR_RETURN(c.rms_norm_eps, f.get_double_or("rms_norm_eps", 1e-6));
  MARIANA_ASSIGN_OR_RETURN(c.initializer_range, f.get_double_or("initializer_range", 0.02));
  MARIANA_ASSIGN_OR_RETURN(bool tie, f.get_bool_or("tie_word_embeddings", false));
  if (tie) return field_error(source, "tie_word_embeddings", "DeepSeek-V3 unties them; true is not supported");
  MARIANA_ASSIGN_OR_RETURN(int64_t freq, f.get_int_or("moe_layer_freq", 1));
  if (freq != 1) return field_error(source, "moe_layer_freq", "only 1 is supported, got " + std::to_string(freq));
  MARIANA_RETURN_IF_ERROR(parse_rope(f, c));

  // Consistency.
  for (const auto& fld : required) {
    if (std::string(fld.name) == "first_k_dense_replace") continue;
    MARIANA_RETURN_IF_ERROR(require_positive(source, fld.name, *fld.dst));
  }
  if (c.q_lora_rank < 0) return field_error(source, "q_lora_rank", "expected >= 0 (0 or null: no query compression)");
  if (c.n_shared_experts < 0) return field_error(source, "n_shared_experts", "expected >= 0");
  if (c.num_nextn_predict_layers < 0) return field_error(source, "num_nextn_predict_layers", "expected >= 0");
  if (c.first_k_dense_replace < 0 || c.first_k_dense_replace > c.num_hidden_layers) {
    return field_error(source, "first_k_dense_replace",
                       "expected 0.." + std::to_string(c.num_hidden_layers) + ", got " +
                           std::to_string(c.first_k_dense_replace));
  }
  if (c.qk_rope_head_dim % 2 != 0) {
    return field_error(source, "qk_rope_head_dim", "expected an even number (RoPE rotates pairs), got " +
                                                       std::to_string(c.qk_rope_head_dim));
  }
  if (c.n_group <= 0) return field_error(source, "n_group", "expected a positive integer");
  if (c.n_routed_experts % c.n_group != 0) {
    return field_error(source, "n_group", std::to_string(c.n_routed_experts) +
                                              " routed experts are not divisible into " +
                                              std::to_string(c.n_group) + " groups");
  }
  if (c.topk_group <= 0 || c.topk_group > c.n_group) {
    return field_error(source, "topk_group", "expected 1..n_group (" + std::to_string(c.n_group) +
                                                 "), got " + std::to_string(c.topk_group));
  }
  const int64_t per_group = c.n_routed_experts / c.n_group;
  if (c.n_group > 1 && per_group < 2) {
    return field_error(source, "n_group", "group scores sum each group's top-2 experts; need >= 2 experts per group");
  }
  if (c.num_experts_per_tok > c.topk_group * per_group) {
    return field_error(source, "num_experts_per_tok",
                       std::to_string(c.num_experts_per_tok) + " experts cannot be chosen from " +
                           std::to_string(c.topk_group) + " groups of " + std::to_string(per_group));
  }
  if (!(c.rms_norm_eps > 0)) return field_error(source, "rms_norm_eps", "expected > 0");
  if (!(c.rope_theta > 1)) return field_error(source, "rope_theta", "expected > 1");
  if (!(c.initializer_range > 0)) return field_error(source, "initializer_range", "expected > 0");
  if (c.max_position_embeddings <= 0) return field_error(source, "max_position_embeddings", "expected > 0");
  if (c.vocab_size > (int64_t{1} << 31) - 1) return field_error(source, "vocab_size", "expected < 2^31");
  return c;
}

Result<ModelConfig> model_config_load(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  return model_config_from_json_text(text, path);
}

std::string model_config_hf_json(const ModelConfig& c) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(c.json_text);  // parsed once already
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  bool changed = false;
  if (!j.contains("architectures")) {
    out["architectures"] = {"DeepseekV3ForCausalLM"};
    changed = true;
  }
  if (!j.contains("model_type")) {
    out["model_type"] = "deepseek_v3";
    changed = true;
  }
  out.update(j);
  if (c.q_lora_rank == 0 && !(out.contains("q_lora_rank") && out["q_lora_rank"].is_null())) {
    out["q_lora_rank"] = nullptr;
    changed = true;
  }
  const std::pair<const char*, nlohmann::ordered_json> hf_differs[] = {
      {"n_shared_experts", c.n_shared_experts},
      {"n_group", c.n_group},
      {"topk_group", c.topk_group},
      {"routed_scaling_factor", c.routed_scaling_factor},
  };
  for (const auto& [key, v] : hf_differs) {
    if (!out.contains(key) || out[key].is_null()) {
      out[key] = v;
      changed = true;
    }
  }
  return changed ? out.dump(2) + "\n" : c.json_text;
}

ModelStats model_stats(const ModelConfig& c, int64_t seq_len) {
  const int64_t C = c.hidden_size, H = c.num_attention_heads;
  const int64_t dqk = c.qk_head_dim(), dv = c.v_head_dim, r = c.kv_lora_rank, dr = c.qk_rope_head_dim;
  const int64_t attn_norms = C + (c.q_lora_rank > 0 ? c.q_lora_rank : 0) + r;  // input/q_a/kv_a norms
  const int64_t q_params = c.q_lora_rank > 0 ? C * c.q_lora_rank + c.q_lora_rank * H * dqk : C * H * dqk;
  const int64_t attn = q_params + C * (r + dr) + r * H * (c.qk_nope_head_dim + dv) + H * dv * C;
  const int64_t dense = 3 * C * c.intermediate_size;
  const int64_t expert = 3 * C * c.moe_intermediate_size;
  const int64_t gate = c.n_routed_experts * C + c.n_routed_experts;
  const int64_t shared = 3 * C * c.shared_intermediate();
  const int64_t moe_total = gate + shared + c.n_routed_experts * expert;
  const int64_t moe_active = gate + shared + c.num_experts_per_tok * expert;
  const int64_t embed = c.vocab_size * C, head = c.vocab_size * C;
  const int64_t n_moe = c.num_hidden_layers - c.first_k_dense_replace;
  const int64_t n_dense = c.first_k_dense_replace;
  const int64_t block_norms = attn_norms + C;  // + post_attention_layernorm

  ModelStats s;
  s.total_params = embed + head + C + c.num_hidden_layers * (attn + block_norms) + n_dense * dense +
                   n_moe * moe_total;
  s.activated_params = embed + head + C + c.num_hidden_layers * (attn + block_norms) + n_dense * dense +
                       n_moe * moe_active;
  const int64_t mtp_own = 2 * C * C + 3 * C + attn + block_norms;  // eh_proj, enorm, hnorm, shared_head.norm
  const int64_t D = c.num_nextn_predict_layers;
  const bool mtp_is_moe = c.is_moe_layer(c.num_hidden_layers);
  s.mtp_params = D * (mtp_own + (mtp_is_moe ? moe_total : dense));
  s.activated_mtp_params = D * (mtp_own + (mtp_is_moe ? moe_active : dense));

  // Forward FLOPs per token: 2 per weight of every matmul actually applied (embedding lookups are
  // free; the gate GEMM counts), plus attention: q·k and p·v over the causal context, on average
  // (seq_len + 1) / 2 positions.
  auto matmul_params = [&](int64_t blocks_moe, int64_t blocks_dense) {
    return (blocks_moe + blocks_dense) * attn + blocks_dense * dense +
           blocks_moe * (c.n_routed_experts * C + shared + c.num_experts_per_tok * expert);
  };
  const double ctx = 0.5 * static_cast<double>(seq_len + 1);
  const double attn_flops_per_layer = 2.0 * H * (dqk + dv) * ctx;
  double fwd = 2.0 * (matmul_params(n_moe, n_dense) + head) + c.num_hidden_layers * attn_flops_per_layer;
  fwd += D * (2.0 * (2 * C * C + matmul_params(mtp_is_moe ? 1 : 0, mtp_is_moe ? 0 : 1) + head) +
              attn_flops_per_layer);
  s.forward_flops_per_token = fwd;
  s.train_flops_per_token = 3.0 * fwd;
  s.kv_naive_values_per_token = c.num_hidden_layers * H * (dqk + dv);
  s.kv_latent_values_per_token = c.num_hidden_layers * (r + dr);
  return s;
}

}  // namespace mariana
