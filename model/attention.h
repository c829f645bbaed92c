// Multi-head Latent Attention in its training (naive) form: low-rank query (or plain q_proj),
// joint KV compression to c_kv [T, kv_lora_rank], a decoupled RoPE key shared by all heads, and
// causal attention with document masks. mla_forward / mla_backward over explicit buffers.
#pragma once

#include <cstdint>

#include "model/weight_grads.h"

namespace mariana {

// Letters: T tokens (= B·S), C hidden_size, H num_attention_heads, qr q_lora_rank,
// r kv_lora_rank, dn qk_nope_head_dim, dr qk_rope_head_dim, dv v_head_dim, dqk = dn + dr.
struct MlaDims {
  int64_t B = 0, S = 0, T = 0;
  int64_t C = 0, H = 0, qr = 0, r = 0, dn = 0, dr = 0, dv = 0;
  double eps = 1e-6;
  double softmax_scale = 0;  // ModelConfig::softmax_scale()
  double rope_mscale = 1;    // ModelConfig::rope_mscale(): multiplies the rotated q_pe and k_pe
  int64_t dqk() const { return dn + dr; }
};

// One MLA layer's tensors in an arena: P = const F* for the weights (MlaParams), F* for the
// gradients (MlaGrads, accumulated +=). q_a_* and q_b_proj when qr > 0, q_proj otherwise.
template <typename P>
struct MlaWeights {
  P q_a_proj = nullptr;        // [qr, C]
  P q_a_layernorm = nullptr;   // [qr]
  P q_b_proj = nullptr;        // [H·dqk, qr]
  P q_proj = nullptr;          // [H·dqk, C]
  P kv_a_proj = nullptr;       // [r + dr, C]
  P kv_a_layernorm = nullptr;  // [r]
  P kv_b_proj = nullptr;       // [H·(dn+dv), r]
  P o_proj = nullptr;          // [C, H·dv]
};
template <typename F>
using MlaParams = MlaWeights<const F*>;
template <typename F>
using MlaGrads = MlaWeights<F*>;

// Saved for backward by mla_forward (all written by it).
template <typename F>
struct MlaSaved {
  F* qa = nullptr;        // [T, qr]   q_a_proj(x)                 (qr > 0)
  F* qa_rstd = nullptr;   // [T]
  F* qan = nullptr;       // [T, qr]   q_a_layernorm(qa)
  F* q = nullptr;         // [T, H, dqk]  with RoPE applied to the last dr of each head
  F* kva = nullptr;       // [T, r + dr]  kv_a_proj(x), last dr rotated (the shared k_pe)
  F* ckv_in = nullptr;    // [T, r]    kva[:, :r] contiguous
  F* ckv_rstd = nullptr;  // [T]
  F* ckv = nullptr;       // [T, r]    the latent c_kv = kv_a_layernorm(ckv_in)
  F* kv = nullptr;        // [T, H, dn + dv]  kv_b_proj(c_kv)
  F* k = nullptr;         // [T, H, dqk]  [k_nope ; k_pe]
  F* v = nullptr;         // [T, H, dv]
  F* o = nullptr;         // [T, H, dv]   attention output
  F* lse = nullptr;       // [T, H]
};

// Scratch for mla_backward; contents are garbage on entry and exit.
template <typename F>
struct MlaScratch {
  F* dqa = nullptr;   // [T, qr]
  F* dqan = nullptr;  // [T, qr]
  F* dq = nullptr;    // [T, H, dqk]
  F* dkva = nullptr;  // [T, r + dr]
  F* dckv_in = nullptr;  // [T, r]
  F* dckv = nullptr;  // [T, r]
  F* dkv = nullptr;   // [T, H, dn + dv]
  F* dk = nullptr;    // [T, H, dqk]
  F* dv = nullptr;    // [T, H, dv]
  F* d_o = nullptr;   // [T, H, dv]
  WeightGradQueue<F>* defer = nullptr;  // set: linear weight gradients wait for W (weight_grads.h)
};

// out[T, C] = MLA(x[T, C]). pos[T]: RoPE positions; doc_start[T]: see kernels attention_forward.
// inv_freq[dr/2]: from rope_inv_freq.
template <typename F>
void mla_forward(F* out, const MlaSaved<F>& saved, const F* x, const int32_t* pos,
                 const int32_t* doc_start, const F* inv_freq, const MlaParams<F>& p,
                 const MlaDims& d);

// dx[T, C] += ...; grads += ... . dout is not modified.
template <typename F>
void mla_backward(F* dx, const MlaGrads<F>& g, const MlaScratch<F>& s, const F* dout,
                  const MlaSaved<F>& saved, const F* x, const int32_t* pos,
                  const int32_t* doc_start, const F* inv_freq, const MlaParams<F>& p,
                  const MlaDims& d);

}  // namespace mariana
