// ModelConfig: the fields of a HuggingFace DeepSeek-V3 config.json that affect the math, parsed and
// validated. Errors name the file and the field ("tiny.json: field 'n_group': 8 routed experts are
// not divisible into 3 groups"). Derived sizes (qk_head_dim, parameter counts, FLOPs) live here too.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace mariana {

struct YarnConfig {
  bool enabled = false;           // rope_type "yarn" (in rope_scaling or rope_parameters)
  double factor = 1.0;            // s
  int64_t original_max_position = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;    // 0: absent (no softmax-scale correction)
};

struct ModelConfig {
  int64_t vocab_size = 0;               // V
  int64_t hidden_size = 0;              // C
  int64_t intermediate_size = 0;        // dense MLP width
  int64_t moe_intermediate_size = 0;    // one expert's width
  int64_t num_hidden_layers = 0;        // L
  int64_t first_k_dense_replace = 0;
  int64_t num_attention_heads = 0;      // H
  int64_t q_lora_rank = 0;              // 0: plain q_proj
  int64_t kv_lora_rank = 0;             // r
  int64_t qk_nope_head_dim = 0;         // dn
  int64_t qk_rope_head_dim = 0;         // dr
  int64_t v_head_dim = 0;               // dv
  int64_t n_routed_experts = 0;         // E
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;      // K
  int64_t n_group = 1;
  int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  int64_t num_nextn_predict_layers = 0; // D (MTP depth)
  // MTP modules config.json declares but the checkpoint holds no weights for (HF transformers saves
  // none): checkpoint_load then runs the model without them (num_nextn_predict_layers = 0).
  int64_t mtp_missing = 0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  double initializer_range = 0.02;
  int64_t max_position_embeddings = 4096;
  YarnConfig yarn;

  std::string source;     // file it came from, for messages
  std::string json_text;  // the file's bytes, written back unchanged on export

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t hf_layer) const { return hf_layer >= first_k_dense_replace; }
  int64_t shared_intermediate() const { return moe_intermediate_size * n_shared_experts; }
  // softmax scale: qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN
  // (docs/numerics.md#rope-and-yarn).
  double softmax_scale() const;
  // cos/sin multiplier under YaRN: mscale(s, mscale) / mscale(s, mscale_all_dim) (1 when plain).
  double rope_mscale() const;
  // Ok when the model has an MTP module; otherwise FailedPrecondition "<what> needs ..." saying
  // whether the config has none or the checkpoint lacks its weights.
  Status require_mtp(const std::string& what) const;
};

// yarn_get_mscale: 1 if scale <= 1, else 0.1·m·ln(scale) + 1 (m = 0 gives 1).
double yarn_get_mscale(double scale, double m);
// YaRN's cos/sin multiplier (HF's attention_factor): mscale(factor, mscale) / mscale(factor, mscale_all_dim).
double yarn_attention_factor(const YarnConfig& y);

// Parses and validates. InvalidArgument (bad value or inconsistent dimensions) or NotFound
// (missing file) with the file and field in the message.
Result<ModelConfig> model_config_from_json_text(const std::string& text, const std::string& source);
Result<ModelConfig> model_config_load(const std::string& path);

// The config.json a checkpoint carries: json_text, made unambiguous for HF transformers —
// "architectures": ["DeepseekV3ForCausalLM"] and "model_type": "deepseek_v3" when absent,
// q_lora_rank 0 written as null (HF's "no query compression"; 0 would build a 0-wide q_a_proj),
// and the fields whose HF default differs from Mariana's (q_lora_rank, n_shared_experts,
// n_group, topk_group, routed_scaling_factor) written out when absent. json_text itself when
// nothing needs adding, so import then export stays byte-identical.
std::string model_config_hf_json(const ModelConfig& c);

// Sizes for `mariana model info`.
struct ModelStats {
  int64_t total_params = 0;        // main model (embedding, layers, norm, head)
  int64_t mtp_params = 0;          // MTP modules' own parameters (embedding and head are shared)
  int64_t activated_params = 0;    // per token in the main model (K routed + shared experts)
  int64_t activated_mtp_params = 0;
  double train_flops_per_token = 0;  // 3 × forward (matmuls + attention at seq_len), with MTP
  double forward_flops_per_token = 0;
  int64_t kv_naive_values_per_token = 0;   // all layers: H·(qk_head_dim + v_head_dim) each
  int64_t kv_latent_values_per_token = 0;  // all layers: kv_lora_rank + qk_rope_head_dim each
};
ModelStats model_stats(const ModelConfig& c, int64_t seq_len);

}  // namespace mariana
