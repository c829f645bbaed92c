// Feed-forward layers: the dense SwiGLU MLP and DeepSeekMoE (shared + routed experts, sigmoid
// gating with the selection-only bias and group-limited top-k, the sequence-wise balance loss).
// Free functions over explicit buffers: mlp_* and moe_* forward/backward pairs.
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "model/config.h"
#include "model/weight_grads.h"

namespace mariana {

namespace comm {
class Communicator;
}

// ---- Dense SwiGLU MLP: out = down(silu(gate(x)) · up(x)) ----
// Letters: T rows, C hidden_size, I width (intermediate_size, or an expert's width).
struct MlpDims {
  int64_t T = 0, C = 0, I = 0;
};
// An MLP's three matrices in an arena: P = const F* for the weights, F* for the gradients.
template <typename P>
struct MlpWeights {
  P gate_proj = nullptr;  // [I, C]
  P up_proj = nullptr;    // [I, C]
  P down_proj = nullptr;  // [C, I]
};
template <typename F>
using MlpParams = MlpWeights<const F*>;
template <typename F>
using MlpGrads = MlpWeights<F*>;
template <typename F>
struct MlpSaved {
  F* g = nullptr;  // [T, I] gate(x)
  F* u = nullptr;  // [T, I] up(x)
  F* a = nullptr;  // [T, I] silu(g)·u
};
template <typename F>
struct MlpScratch {
  F* da = nullptr;  // [T, I]
  F* dg = nullptr;  // [T, I]
  F* du = nullptr;  // [T, I]
  WeightGradQueue<F>* defer = nullptr;  // set: linear weight gradients wait for W (weight_grads.h)
};
// out[T, C] = MLP(x[T, C]) (overwritten).
template <typename F>
void mlp_forward(F* out, const MlpSaved<F>& s, const F* x, const MlpParams<F>& p, const MlpDims& d);
// dx += ..., grads += ...
template <typename F>
void mlp_backward(F* dx, const MlpGrads<F>& g, const MlpScratch<F>& s, const F* dout,
                  const MlpSaved<F>& saved, const F* x, const MlpParams<F>& p, const MlpDims& d);

// ---- DeepSeekMoE ----
// Letters: B sequences of S tokens (T = B·S), E n_routed_experts, K num_experts_per_tok,
// Fm moe_intermediate_size, Fs shared width (moe_intermediate_size · n_shared_experts; 0 = none).
struct MoeExpertGroup;
struct MoeDims {
  int64_t B = 0, S = 0, T = 0, C = 0, E = 0, K = 0, Fm = 0, Fs = 0;
  int64_t n_group = 1, topk_group = 1;
  // Node-limited routing (kernels/ops.h, MoeGateDims): experts on n_nodes nodes, at most max_nodes
  // per token (0: no limit).
  int64_t n_nodes = 1, max_nodes = 0;
  double route_scale = 1.0;
  bool norm_topk_prob = true;
  // The balance loss is a mean over this many sequences: B, or the global batch's rows when this
  // batch is one rank's part of it (data parallelism), so that the ranks' losses add up.
  int64_t balance_rows = 0;  // 0: B
  // Expert parallelism: null, or the group whose rank r holds experts [r·E/P, (r+1)·E/P).
  MoeExpertGroup* ep = nullptr;
};

// Expert parallelism (float only): this rank's slice of the routed experts and the group holding
// the rest. moe_forward dispatches each (token, expert) row to the rank holding the expert with an
// all-to-all-v, runs its own experts on the rows it receives and sends the outputs back; backward
// mirrors it. A failed collective is kept in `status` (the first one) and the layer's outputs are
// then meaningless; the caller checks status after each pass.
struct MoeExpertGroup {
  comm::Communicator* comm = nullptr;
  Status status;
};
// One MoE layer's expert-parallel buffers (sized on demand, reused across steps). Rows arrive
// source-rank-major (each source's rows grouped by expert); `loc_row` maps each to its place in
// the expert-major order the local experts run in.
struct MoeEpSaved {
  std::vector<int64_t> send_rows, recv_rows;  // [P] rows to / from each rank
  std::vector<float> recv_counts;             // [P, E/P] rows from rank p for local expert j
  std::vector<int32_t> loc_counts, loc_offsets, loc_row;
  std::vector<float> x_loc, g, u, a;          // [N, C], [N, Fm] ×3 in expert-major order
  std::vector<float> wire;                    // [max(N, T·K), C] rows on the wire (both directions)
  std::vector<float> y_loc, dy_loc, dx_loc;   // [N, C]
  std::vector<float> da, dg, du;              // [N, Fm]
};
// The MoeDims of a config for B sequences of S tokens.
MoeDims moe_dims_for(const ModelConfig& c, int64_t B, int64_t S);

template <typename F>
struct MoeParams {
  const F* gate = nullptr;               // [E, C]
  const F* bias = nullptr;               // [E] e_score_correction_bias (selection only)
  const MlpParams<F>* experts = nullptr; // [E]
  MlpParams<F> shared;                   // when Fs > 0
};
template <typename F>
struct MoeGrads {
  F* gate = nullptr;
  const MlpGrads<F>* experts = nullptr;  // [E]
  MlpGrads<F> shared;
};
template <typename F>
struct MoeSaved {
  F* logits = nullptr;        // [T, E]
  F* scores = nullptr;        // [T, E] sigmoid(logits)
  F* weights = nullptr;       // [T, K]
  int32_t* indices = nullptr; // [T, K]
  int32_t* counts = nullptr;  // [E] tokens routed to each expert in this batch
  int32_t* offsets = nullptr; // [E + 1]
  int32_t* row_of = nullptr;  // [T·K]
  F* x_perm = nullptr;        // [T·K, C]
  MlpSaved<F> expert;         // g, u, a: [T·K, Fm], rows grouped by expert
  F* y_perm = nullptr;        // [T·K, C]
  MlpSaved<F> shared;         // [T, Fs]
  F* shared_out = nullptr;    // [T, C]
  F* balance_f = nullptr;     // [B, E] f_i per sequence (Eq. 18)
  MoeEpSaved* ep = nullptr;   // with MoeDims::ep
};
template <typename F>
struct MoeScratch {
  F* dy_perm = nullptr;   // [T·K, C]
  F* dx_perm = nullptr;   // [T·K, C]
  F* dweights = nullptr;  // [T, K]
  F* dlogits = nullptr;   // [T, E]
  MlpScratch<F> expert;   // [T·K, Fm]
  MlpScratch<F> shared;   // [T, Fs]
  WeightGradQueue<F>* defer = nullptr;  // the router's; expert and shared carry their own
};

// out[T, C] = Σ_k w_k·expert_k(x) + shared(x). With reuse_routing, the indices already in
// saved.indices are kept (selection held fixed) and only the weights are recomputed. Returns the
// sequence-wise balance loss of this layer, mean over the B sequences of Σ_i f_i·P_i (Eqs. 17–20,
// without α).
template <typename F>
double moe_forward(F* out, const MoeSaved<F>& s, const F* x, const MoeParams<F>& p,
                   const MoeDims& d, bool reuse_routing);
// moe_forward in three passes, the way expert parallelism cuts it (DeepEP's dispatch/combine):
// route (gate, selection, plan, and x permuted into expert order: s holds the routing), the
// experts [e_begin, e_end) over their rows of s.x_perm into s.y_perm, and combine (shared experts
// plus the weighted sum of y_perm back in token order; returns the layer's balance loss). Between
// route and combine, expert parallelism moves rows to the ranks holding their experts and back.
template <typename F>
void moe_route(const MoeSaved<F>& s, const F* x, const MoeParams<F>& p, const MoeDims& d, bool reuse_routing);
template <typename F>
void moe_experts(const MoeSaved<F>& s, const MoeParams<F>& p, const MoeDims& d, int64_t e_begin, int64_t e_end);
template <typename F>
double moe_combine(F* out, const MoeSaved<F>& s, const F* x, const MoeParams<F>& p, const MoeDims& d);
// Their backward twins, run in reverse: combine (shared experts into dx; s.dy_perm and s.dweights
// from dout; s.dx_perm zeroed), experts (s.dx_perm and the experts' gradients), route (s.dx_perm
// back into dx, the gate's and the balance loss's gradients).
template <typename F>
void moe_combine_backward(F* dx, const MoeGrads<F>& g, const MoeScratch<F>& s, const F* dout, const MoeSaved<F>& sv,
                          const F* x, const MoeParams<F>& p, const MoeDims& d);
template <typename F>
void moe_experts_backward(const MoeGrads<F>& g, const MoeScratch<F>& s, const MoeSaved<F>& sv, const MoeParams<F>& p,
                          const MoeDims& d, int64_t e_begin, int64_t e_end);
template <typename F>
void moe_route_backward(F* dx, const MoeGrads<F>& g, const MoeScratch<F>& s, const MoeSaved<F>& sv, const F* x,
                        const MoeParams<F>& p, const MoeDims& d, double balance_coef);
// dx += ..., grads += ... . balance_coef is d(total loss)/d(this layer's balance loss) (α).
template <typename F>
void moe_backward(F* dx, const MoeGrads<F>& g, const MoeScratch<F>& s, const F* dout,
                  const MoeSaved<F>& saved, const F* x, const MoeParams<F>& p, const MoeDims& d,
                  double balance_coef);

}  // namespace mariana
