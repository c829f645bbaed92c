// Builds the parameter table from a config, in HF naming.
#include "model/params.h"

#include <cstdio>
#include <cstdlib>

namespace mariana {

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string layer_prefix(int64_t hf_layer) { return "model.layers." + std::to_string(hf_layer) + "."; }

void ParamTable::add(std::string name, std::vector<int64_t> shape, ParamKind kind) {
  ParamSpec s{std::move(name), std::move(shape), kind, 0};
  constexpr int64_t kAlign = 16;  // elements: 64 bytes in fp32
  s.offset = (arena_size_ + kAlign - 1) / kAlign * kAlign;
  arena_size_ = s.offset + s.numel();
  num_params_ += s.numel();
  index_.emplace(s.name, specs_.size());
  specs_.push_back(std::move(s));
}

ParamTable::ParamTable(const ModelConfig& c) {
  const int64_t C = c.hidden_size, H = c.num_attention_heads;
  const int64_t r = c.kv_lora_rank, dr = c.qk_rope_head_dim, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  add("model.embed_tokens.weight", {c.vocab_size, C}, ParamKind::kEmbedding);

  auto add_block = [&](const std::string& p, int64_t hf_layer) {
    add(p + "input_layernorm.weight", {C}, ParamKind::kNorm);
    if (c.q_lora_rank > 0) {
      add(p + "self_attn.q_a_proj.weight", {c.q_lora_rank, C}, ParamKind::kMatrix);
      add(p + "self_attn.q_a_layernorm.weight", {c.q_lora_rank}, ParamKind::kNorm);
      add(p + "self_attn.q_b_proj.weight", {H * (dn + dr), c.q_lora_rank}, ParamKind::kMatrix);
    } else {
      add(p + "self_attn.q_proj.weight", {H * (dn + dr), C}, ParamKind::kMatrix);
    }
    add(p + "self_attn.kv_a_proj_with_mqa.weight", {r + dr, C}, ParamKind::kMatrix);
    add(p + "self_attn.kv_a_layernorm.weight", {r}, ParamKind::kNorm);
    add(p + "self_attn.kv_b_proj.weight", {H * (dn + dv), r}, ParamKind::kMatrix);
    add(p + "self_attn.o_proj.weight", {C, H * dv}, ParamKind::kMatrix);
    add(p + "post_attention_layernorm.weight", {C}, ParamKind::kNorm);
    if (!c.is_moe_layer(hf_layer)) {
      add(p + "mlp.gate_proj.weight", {c.intermediate_size, C}, ParamKind::kMatrix);
      add(p + "mlp.up_proj.weight", {c.intermediate_size, C}, ParamKind::kMatrix);
      add(p + "mlp.down_proj.weight", {C, c.intermediate_size}, ParamKind::kMatrix);
      return;
    }
    const int64_t E = c.n_routed_experts, Fm = c.moe_intermediate_size;
    add(p + "mlp.gate.weight", {E, C}, ParamKind::kMatrix);
    add(p + "mlp.gate.e_score_correction_bias", {E}, ParamKind::kGateBias);
    for (int64_t e = 0; e < E; ++e) {
      const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
      add(q + "gate_proj.weight", {Fm, C}, ParamKind::kMatrix);
      add(q + "up_proj.weight", {Fm, C}, ParamKind::kMatrix);
      add(q + "down_proj.weight", {C, Fm}, ParamKind::kMatrix);
    }
    if (c.n_shared_experts > 0) {
      const int64_t Fs = c.shared_intermediate();
      add(p + "mlp.shared_experts.gate_proj.weight", {Fs, C}, ParamKind::kMatrix);
      add(p + "mlp.shared_experts.up_proj.weight", {Fs, C}, ParamKind::kMatrix);
      add(p + "mlp.shared_experts.down_proj.weight", {C, Fs}, ParamKind::kMatrix);
    }
  };

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) add_block(layer_prefix(l), l);
  add("model.norm.weight", {C}, ParamKind::kNorm);
  add("lm_head.weight", {c.vocab_size, C}, ParamKind::kMatrix);
  // MTP modules: own norms and projection plus one block; embedding and head are shared (the
  // checkpoint's shared_head.head is a copy of lm_head, handled by model/checkpoint).
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int64_t hf = c.num_hidden_layers + k;
    const std::string p = layer_prefix(hf);
    add(p + "enorm.weight", {C}, ParamKind::kNorm);
    add(p + "hnorm.weight", {C}, ParamKind::kNorm);
    add(p + "eh_proj.weight", {C, 2 * C}, ParamKind::kMatrix);
    add_block(p, hf);
    add(p + "shared_head.norm.weight", {C}, ParamKind::kNorm);
  }
}

const ParamSpec* ParamTable::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &specs_[it->second];
}

const ParamSpec& ParamTable::at(const std::string& name) const {
  const ParamSpec* s = find(name);
  if (s == nullptr) {
    std::fprintf(stderr, "ParamTable::at: no parameter named %s\n", name.c_str());
    std::abort();
  }
  return *s;
}

}  // namespace mariana
