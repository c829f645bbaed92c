// Views of a parameter or gradient arena laid out by ParamTable, per block, for the shard a
// ShardFilter selects: the one place that turns the table into pointers (training's Model<F>, the
// inference engine and checkpoints all use it; the HF names live only in params.cc).
#pragma once

#include <cstdint>
#include <vector>

#include "model/attention.h"
#include "model/moe.h"
#include "model/params.h"

namespace mariana {

// One block's tensors (P = const F* for weights, F* for gradients); null where the shard lacks them.
template <typename P>
struct BlockWeights {
  int64_t hf_layer = -1;  // −1: the block is not in the shard
  bool moe = false;
  P input_layernorm = nullptr;
  P post_attention_layernorm = nullptr;
  MlaWeights<P> attn;
  MlpWeights<P> mlp;                   // dense layers
  P router = nullptr;                  // MoE: mlp.gate.weight [E, C]
  P router_bias = nullptr;             // MoE: e_score_correction_bias [E]
  std::vector<MlpWeights<P>> experts;  // MoE: [E], null outside the shard's expert range
  MlpWeights<P> shared;                // MoE with shared experts
};

// MTP module k's own tensors (its block is blocks[L + k]).
template <typename P>
struct MtpWeights {
  P enorm = nullptr, hnorm = nullptr, eh_proj = nullptr, head_norm = nullptr;
};

template <typename P>
struct ModelWeights {
  P embed = nullptr, norm = nullptr, lm_head = nullptr;
  std::vector<BlockWeights<P>> blocks;  // [L + D] by HF layer
  std::vector<MtpWeights<P>> mtp;       // [D]
};

// Views into `arena` (params() or grads() of a model with this table) of the tensors `filter`
// selects; the default filter gives the full model.
template <typename P>
ModelWeights<P> model_weights(const ParamTable& table, P arena, const ShardFilter& filter = {}) {
  using S = ParamSlot;
  ModelWeights<P> w;
  const int64_t L = table.num_hidden_layers();
  w.blocks.resize(static_cast<size_t>(table.num_blocks()));
  w.mtp.resize(static_cast<size_t>(table.num_blocks() - L));
  for (const ParamSpec* s : table.select(filter)) {
    P p = arena + s->offset;
    if (s->layer < 0) {
      (s->slot == S::kEmbed ? w.embed : s->slot == S::kFinalNorm ? w.norm : w.lm_head) = p;
      continue;
    }
    BlockWeights<P>& b = w.blocks[static_cast<size_t>(s->layer)];
    b.hf_layer = s->layer;
    MtpWeights<P>* m = s->layer >= L ? &w.mtp[static_cast<size_t>(s->layer - L)] : nullptr;
    auto expert = [&]() -> MlpWeights<P>& { return b.experts.at(static_cast<size_t>(s->expert)); };
    switch (s->slot) {
      case S::kInputNorm: b.input_layernorm = p; break;
      case S::kPostNorm: b.post_attention_layernorm = p; break;
      case S::kQaProj: b.attn.q_a_proj = p; break;
      case S::kQaNorm: b.attn.q_a_layernorm = p; break;
      case S::kQbProj: b.attn.q_b_proj = p; break;
      case S::kQProj: b.attn.q_proj = p; break;
      case S::kKvaProj: b.attn.kv_a_proj = p; break;
      case S::kKvaNorm: b.attn.kv_a_layernorm = p; break;
      case S::kKvbProj: b.attn.kv_b_proj = p; break;
      case S::kOProj: b.attn.o_proj = p; break;
      case S::kMlpGate: b.mlp.gate_proj = p; break;
      case S::kMlpUp: b.mlp.up_proj = p; break;
      case S::kMlpDown: b.mlp.down_proj = p; break;
      case S::kRouter:
        b.moe = true;
        b.router = p;
        b.experts.resize(static_cast<size_t>(s->shape[0]));  // [E, C]; the table lists it before the experts
        break;
      case S::kRouterBias: b.router_bias = p; break;
      case S::kExpertGate: expert().gate_proj = p; break;
      case S::kExpertUp: expert().up_proj = p; break;
      case S::kExpertDown: expert().down_proj = p; break;
      case S::kSharedGate: b.shared.gate_proj = p; break;
      case S::kSharedUp: b.shared.up_proj = p; break;
      case S::kSharedDown: b.shared.down_proj = p; break;
      case S::kEnorm: m->enorm = p; break;
      case S::kHnorm: m->hnorm = p; break;
      case S::kEhProj: m->eh_proj = p; break;
      case S::kHeadNorm: m->head_norm = p; break;
      case S::kEmbed: case S::kFinalNorm: case S::kLmHead: break;  // layer −1, handled above
    }
  }
  return w;
}

}  // namespace mariana
