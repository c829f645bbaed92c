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

void ParamTable::add(std::string name, std::vector<int64_t> shape, ParamKind kind, ParamSlot slot, int64_t layer,
                     int64_t expert) {
  ParamSpec s{std::move(name), std::move(shape), kind, slot, layer, expert, 0, added_++};
  if (!shard_.selects(s, num_hidden_layers_, num_blocks_)) return;
  constexpr int64_t kAlign = 16;  // elements: 64 bytes in fp32
  s.offset = (arena_size_ + kAlign - 1) / kAlign * kAlign;
  arena_size_ = s.offset + s.numel();
  num_params_ += s.numel();
  index_.emplace(s.name, specs_.size());
  specs_.push_back(std::move(s));
}

ParamTable::ParamTable(const ModelConfig& c, const ShardFilter& shard)
    : shard_(shard), num_hidden_layers_(c.num_hidden_layers), num_blocks_(c.num_hidden_layers + c.num_nextn_predict_layers) {
  using S = ParamSlot;
  const int64_t C = c.hidden_size, H = c.num_attention_heads;
  const int64_t r = c.kv_lora_rank, dr = c.qk_rope_head_dim, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  add("model.embed_tokens.weight", {c.vocab_size, C}, ParamKind::kEmbedding, S::kEmbed);

  auto add_block = [&](const std::string& p, int64_t l) {
    auto matrix = [&](const std::string& n, std::vector<int64_t> shape, S slot, int64_t e = -1) {
      add(p + n, std::move(shape), ParamKind::kMatrix, slot, l, e);
    };
    auto norm = [&](const std::string& n, int64_t dim, S slot) { add(p + n, {dim}, ParamKind::kNorm, slot, l); };
    // gate_proj, up_proj, down_proj of an MLP with I hidden units under `q`, in slots g, g + 1, g + 2.
    auto mlp = [&](const std::string& q, int64_t I, S g, int64_t e = -1) {
      matrix(q + "gate_proj.weight", {I, C}, g, e);
      matrix(q + "up_proj.weight", {I, C}, S(uint8_t(g) + 1), e);
      matrix(q + "down_proj.weight", {C, I}, S(uint8_t(g) + 2), e);
    };
    norm("input_layernorm.weight", C, S::kInputNorm);
    if (c.q_lora_rank > 0) {
      matrix("self_attn.q_a_proj.weight", {c.q_lora_rank, C}, S::kQaProj);
      norm("self_attn.q_a_layernorm.weight", c.q_lora_rank, S::kQaNorm);
      matrix("self_attn.q_b_proj.weight", {H * (dn + dr), c.q_lora_rank}, S::kQbProj);
    } else {
      matrix("self_attn.q_proj.weight", {H * (dn + dr), C}, S::kQProj);
    }
    matrix("self_attn.kv_a_proj_with_mqa.weight", {r + dr, C}, S::kKvaProj);
    norm("self_attn.kv_a_layernorm.weight", r, S::kKvaNorm);
    matrix("self_attn.kv_b_proj.weight", {H * (dn + dv), r}, S::kKvbProj);
    matrix("self_attn.o_proj.weight", {C, H * dv}, S::kOProj);
    norm("post_attention_layernorm.weight", C, S::kPostNorm);
    if (!c.is_moe_layer(l)) {
      mlp("mlp.", c.intermediate_size, S::kMlpGate);
      return;
    }
    const int64_t E = c.n_routed_experts;
    matrix("mlp.gate.weight", {E, C}, S::kRouter);
    add(p + "mlp.gate.e_score_correction_bias", {E}, ParamKind::kGateBias, S::kRouterBias, l);
    for (int64_t e = 0; e < E; ++e)
      mlp("mlp.experts." + std::to_string(e) + ".", c.moe_intermediate_size, S::kExpertGate, e);
    if (c.n_shared_experts > 0) mlp("mlp.shared_experts.", c.shared_intermediate(), S::kSharedGate);
  };

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) add_block(layer_prefix(l), l);
  add("model.norm.weight", {C}, ParamKind::kNorm, S::kFinalNorm);
  add("lm_head.weight", {c.vocab_size, C}, ParamKind::kMatrix, S::kLmHead);
  // MTP modules: own norms and projection plus one block; embedding and head are shared (the
  // checkpoint's shared_head.head is a copy of lm_head, handled by model/checkpoint).
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int64_t hf = c.num_hidden_layers + k;
    const std::string p = layer_prefix(hf);
    add(p + "enorm.weight", {C}, ParamKind::kNorm, S::kEnorm, hf);
    add(p + "hnorm.weight", {C}, ParamKind::kNorm, S::kHnorm, hf);
    add(p + "eh_proj.weight", {C, 2 * C}, ParamKind::kMatrix, S::kEhProj, hf);
    add_block(p, hf);
    add(p + "shared_head.norm.weight", {C}, ParamKind::kNorm, S::kHeadNorm, hf);
  }
}

bool ShardFilter::selects(const ParamSpec& s, int64_t L, int64_t num_blocks) const {
  if (s.layer >= 0) {
    if (s.layer < layer_begin || s.layer >= layer_end) return false;
    return s.expert < 0 || (s.expert >= expert_begin && s.expert < expert_end);
  }
  const bool any_mtp = layer_begin < num_blocks && layer_end > L && L < num_blocks;  // an MTP module
  if (s.slot == ParamSlot::kEmbed) return layer_begin == 0 || any_mtp;
  return (layer_begin < L && layer_end >= L) || any_mtp;  // model.norm, lm_head: with layer L − 1
}

std::vector<const ParamSpec*> ParamTable::select(const ShardFilter& filter) const {
  std::vector<const ParamSpec*> out;
  for (const ParamSpec& s : specs_)
    if (filter.selects(s, num_hidden_layers_, num_blocks_)) out.push_back(&s);
  return out;
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
