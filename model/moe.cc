// Dense MLP and DeepSeekMoE forward/backward.
#include "model/moe.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "comm/communicator.h"
#include "kernels/ops.h"

namespace mariana {

MoeDims moe_dims_for(const ModelConfig& c, int64_t B, int64_t S) {
  MoeDims d;
  d.B = B;
  d.S = S;
  d.T = B * S;
  d.C = c.hidden_size;
  d.E = c.n_routed_experts;
  d.K = c.num_experts_per_tok;
  d.Fm = c.moe_intermediate_size;
  d.Fs = c.shared_intermediate();
  d.n_group = c.n_group;
  d.topk_group = c.topk_group;
  d.route_scale = c.routed_scaling_factor;
  d.norm_topk_prob = c.norm_topk_prob;
  return d;
}


template <typename F>
void mlp_forward(F* out, const MlpSaved<F>& s, const F* x, const MlpParams<F>& p, const MlpDims& d) {
  cpu::linear_forward(s.g, x, p.gate_proj, d.T, d.C, d.I);
  cpu::linear_forward(s.u, x, p.up_proj, d.T, d.C, d.I);
  cpu::swiglu_forward(s.a, s.g, s.u, d.T * d.I);
  cpu::linear_forward(out, s.a, p.down_proj, d.T, d.I, d.C);
}

template <typename F>
void mlp_backward(F* dx, const MlpGrads<F>& g, const MlpScratch<F>& s, const F* dout,
                  const MlpSaved<F>& sv, const F* x, const MlpParams<F>& p, const MlpDims& d) {
  const int64_t n = d.T * d.I;
  std::fill_n(s.da, n, F(0));
  linear_backward_or_defer(s.defer, s.da, g.down_proj, dout, sv.a, p.down_proj, d.T, d.I, d.C);
  std::fill_n(s.dg, n, F(0));
  std::fill_n(s.du, n, F(0));
  cpu::swiglu_backward(s.dg, s.du, s.da, sv.g, sv.u, n);
  linear_backward_or_defer(s.defer, dx, g.gate_proj, s.dg, x, p.gate_proj, d.T, d.C, d.I);
  linear_backward_or_defer(s.defer, dx, g.up_proj, s.du, x, p.up_proj, d.T, d.C, d.I);
}

namespace {

// The gate's rules in the kernel API's form (route_scale rounded to F, as the gate applies it).
template <typename F>
MoeGateDims gate_dims(const MoeDims& d) {
  return MoeGateDims{.T = d.T,
                     .E = d.E,
                     .K = d.K,
                     .n_group = d.n_group,
                     .topk_group = d.topk_group,
                     .n_nodes = d.n_nodes,
                     .max_nodes = d.max_nodes,
                     .route_scale = static_cast<double>(static_cast<F>(d.route_scale)),
                     .norm_topk_prob = d.norm_topk_prob};
}

// ---- Expert parallelism (float) ----
// The ep group's rank r holds experts [r·El, (r+1)·El), El = E/P. x_perm is grouped by expert, so
// its rows are already grouped by destination rank.

// all_to_all_v of rows of C floats; records the first failure in the group.
bool exchange_rows(MoeExpertGroup& ep, const float* in, const std::vector<int64_t>& send_rows, float* out,
                   const std::vector<int64_t>& recv_rows, int64_t C) {
  if (!ep.status.ok()) return false;
  std::vector<int64_t> sc(send_rows.size()), rc(recv_rows.size());
  int64_t ns = 0, nr = 0;
  for (size_t i = 0; i < sc.size(); ++i) {
    sc[i] = send_rows[i] * C;
    ns += sc[i];
  }
  for (size_t i = 0; i < rc.size(); ++i) {
    rc[i] = recv_rows[i] * C;
    nr += rc[i];
  }
  ep.status = ep.comm->all_to_all_v(std::span<const float>(in, static_cast<size_t>(ns)), sc,
                                    std::span<float>(out, static_cast<size_t>(nr)), rc);
  return ep.status.ok();
}

// Grows v to at least n elements (buffers are reused across steps; they only grow).
template <typename V>
void reserve_at_least(V& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

void ep_experts_forward(const MoeSaved<float>& s, const MoeParams<float>& p, const MoeDims& d) {
  MoeExpertGroup& ep = *d.ep;
  MoeEpSaved& e = *s.ep;
  if (!ep.status.ok()) return;
  const int64_t P = ep.comm->size(), r = ep.comm->rank(), El = d.E / P, C = d.C, Fm = d.Fm, TK = d.T * d.K;
  // Per-expert counts to the ranks holding the experts, then the rows.
  std::vector<float> counts_f(static_cast<size_t>(d.E));
  for (int64_t x = 0; x < d.E; ++x) counts_f[x] = static_cast<float>(s.counts[x]);
  e.recv_counts.assign(static_cast<size_t>(P * El), 0.0f);
  const std::vector<int64_t> per_rank(static_cast<size_t>(P), El);
  ep.status = ep.comm->all_to_all_v(counts_f, per_rank, e.recv_counts, per_rank);
  if (!ep.status.ok()) return;
  e.send_rows.assign(static_cast<size_t>(P), 0);
  e.recv_rows.assign(static_cast<size_t>(P), 0);
  e.loc_counts.assign(static_cast<size_t>(El), 0);
  for (int64_t q = 0; q < P; ++q) {
    for (int64_t j = 0; j < El; ++j) {
      e.send_rows[q] += s.counts[q * El + j];
      const int64_t n = static_cast<int64_t>(e.recv_counts[q * El + j]);
      e.recv_rows[q] += n;
      e.loc_counts[j] += static_cast<int32_t>(n);
    }
  }
  int64_t N = 0;
  for (int64_t q = 0; q < P; ++q) N += e.recv_rows[q];
  e.loc_offsets.assign(static_cast<size_t>(El + 1), 0);
  for (int64_t j = 0; j < El; ++j) e.loc_offsets[j + 1] = e.loc_offsets[j] + e.loc_counts[j];
  // Row i of the wire (source-major, expert-grouped) goes to loc_row[i] (expert-major, then source).
  e.loc_row.assign(static_cast<size_t>(N), 0);
  {
    std::vector<int32_t> next(e.loc_offsets.begin(), e.loc_offsets.end() - 1);
    int64_t i = 0;
    for (int64_t q = 0; q < P; ++q)
      for (int64_t j = 0; j < El; ++j)
        for (int64_t n = static_cast<int64_t>(e.recv_counts[q * El + j]); n > 0; --n) e.loc_row[i++] = next[j]++;
  }
  reserve_at_least(e.wire, std::max(N, TK) * C);
  reserve_at_least(e.x_loc, N * C);
  reserve_at_least(e.y_loc, N * C);
  reserve_at_least(e.g, N * Fm);
  reserve_at_least(e.u, N * Fm);
  reserve_at_least(e.a, N * Fm);
  if (!exchange_rows(ep, s.x_perm, e.send_rows, e.wire.data(), e.recv_rows, C)) return;
  cpu::moe_scatter_rows(e.x_loc.data(), e.wire.data(), e.loc_row.data(), N, C);
  for (int64_t j = 0; j < El; ++j) {
    const int64_t n = e.loc_counts[j];
    if (n == 0) continue;
    const int64_t o = e.loc_offsets[j];
    const MlpSaved<float> es{e.g.data() + o * Fm, e.u.data() + o * Fm, e.a.data() + o * Fm};
    mlp_forward(e.y_loc.data() + o * C, es, e.x_loc.data() + o * C, p.experts[r * El + j], MlpDims{n, C, Fm});
  }
  cpu::moe_gather_rows(e.wire.data(), e.y_loc.data(), e.loc_row.data(), N, C);
  exchange_rows(ep, e.wire.data(), e.recv_rows, s.y_perm, e.send_rows, C);
}

void ep_experts_backward(float* dx_perm, const MoeGrads<float>& g, const float* dy_perm, const MoeSaved<float>& sv,
                         const MoeParams<float>& p, const MoeDims& d, WeightGradQueue<float>* defer) {
  MoeExpertGroup& ep = *d.ep;
  MoeEpSaved& e = *sv.ep;
  if (!ep.status.ok()) return;
  const int64_t P = ep.comm->size(), r = ep.comm->rank(), El = d.E / P, C = d.C, Fm = d.Fm;
  const int64_t N = static_cast<int64_t>(e.loc_row.size());
  reserve_at_least(e.dy_loc, N * C);
  reserve_at_least(e.dx_loc, N * C);
  reserve_at_least(e.da, N * Fm);
  reserve_at_least(e.dg, N * Fm);
  reserve_at_least(e.du, N * Fm);
  if (!exchange_rows(ep, dy_perm, e.send_rows, e.wire.data(), e.recv_rows, C)) return;
  cpu::moe_scatter_rows(e.dy_loc.data(), e.wire.data(), e.loc_row.data(), N, C);
  std::fill_n(e.dx_loc.data(), N * C, 0.0f);
  for (int64_t j = 0; j < El; ++j) {
    const int64_t n = e.loc_counts[j];
    if (n == 0) continue;
    const int64_t o = e.loc_offsets[j];
    const MlpSaved<float> es{e.g.data() + o * Fm, e.u.data() + o * Fm, e.a.data() + o * Fm};
    const MlpScratch<float> ss{e.da.data() + o * Fm, e.dg.data() + o * Fm, e.du.data() + o * Fm, defer};
    mlp_backward(e.dx_loc.data() + o * C, g.experts[r * El + j], ss, e.dy_loc.data() + o * C, es,
                 e.x_loc.data() + o * C, p.experts[r * El + j], MlpDims{n, C, Fm});
  }
  cpu::moe_gather_rows(e.wire.data(), e.dx_loc.data(), e.loc_row.data(), N, C);
  exchange_rows(ep, e.wire.data(), e.recv_rows, dx_perm, e.send_rows, C);
}

}  // namespace

template <typename F>
void moe_route(const MoeSaved<F>& s, const F* x, const MoeParams<F>& p, const MoeDims& d, bool reuse_routing) {
  const int64_t T = d.T, C = d.C, E = d.E, K = d.K;
  cpu::linear_forward(s.logits, x, p.gate, T, C, E);
  const MoeGateDims gd = gate_dims<F>(d);
  if (reuse_routing) {
    cpu::moe_gate_weights(s.weights, s.scores, s.logits, s.indices, gd);  // routing held fixed
  } else {
    cpu::moe_gate_forward(s.weights, s.indices, s.scores, s.logits, p.bias, gd);
  }
  cpu::moe_plan(s.counts, s.offsets, s.row_of, s.indices, T, E, K);
  cpu::moe_permute_forward(s.x_perm, x, s.row_of, T, K, C);
}

template <typename F>
void moe_experts(const MoeSaved<F>& s, const MoeParams<F>& p, const MoeDims& d, int64_t e_begin, int64_t e_end) {
  const int64_t C = d.C;
  for (int64_t e = e_begin; e < e_end; ++e) {
    const int64_t n = s.counts[e];
    if (n == 0) continue;
    const int64_t o = s.offsets[e];
    const MlpSaved<F> es{s.expert.g + o * d.Fm, s.expert.u + o * d.Fm, s.expert.a + o * d.Fm};
    mlp_forward(s.y_perm + o * C, es, s.x_perm + o * C, p.experts[e], MlpDims{n, C, d.Fm});
  }
}

template <typename F>
double moe_combine(F* out, const MoeSaved<F>& s, const F* x, const MoeParams<F>& p, const MoeDims& d) {
  const int64_t T = d.T, C = d.C, E = d.E, K = d.K;
  if (d.Fs > 0) {
    mlp_forward(out, s.shared, x, p.shared, MlpDims{T, C, d.Fs});
  } else {
    std::fill_n(out, T * C, F(0));
  }
  cpu::moe_unpermute_forward(out, s.y_perm, s.weights, s.row_of, T, K, C);

  // Sequence-wise balance loss (Eqs. 17–20): per sequence Σ_i f_i·P_i, summed over sequences.
  double total = 0;
  cpu::moe_balance_forward(s.balance_f, &total, s.scores, s.indices, d.B, d.S, E, K);
  return total / static_cast<double>(d.balance_rows > 0 ? d.balance_rows : d.B);
}

template <typename F>
double moe_forward(F* out, const MoeSaved<F>& s, const F* x, const MoeParams<F>& p,
                   const MoeDims& d, bool reuse_routing) {
  moe_route(s, x, p, d, reuse_routing);
  if (d.ep != nullptr) {
    if constexpr (std::is_same_v<F, float>) {
      ep_experts_forward(s, p, d);  // dispatch → this rank's experts → return
    } else {
      MARIANA_CHECK(false && "expert parallelism runs in float only");
    }
  } else {
    moe_experts(s, p, d, 0, d.E);
  }
  return moe_combine(out, s, x, p, d);
}

template <typename F>
void moe_combine_backward(F* dx, const MoeGrads<F>& g, const MoeScratch<F>& s, const F* dout, const MoeSaved<F>& sv,
                          const F* x, const MoeParams<F>& p, const MoeDims& d) {
  const int64_t T = d.T, C = d.C, K = d.K;
  if (d.Fs > 0) mlp_backward(dx, g.shared, s.shared, dout, sv.shared, x, p.shared, MlpDims{T, C, d.Fs});
  std::fill_n(s.dy_perm, T * K * C, F(0));
  std::fill_n(s.dweights, T * K, F(0));
  cpu::moe_unpermute_backward(s.dy_perm, s.dweights, dout, sv.y_perm, sv.weights, sv.row_of, T, K, C);
  std::fill_n(s.dx_perm, T * K * C, F(0));
}

template <typename F>
void moe_experts_backward(const MoeGrads<F>& g, const MoeScratch<F>& s, const MoeSaved<F>& sv, const MoeParams<F>& p,
                          const MoeDims& d, int64_t e_begin, int64_t e_end) {
  const int64_t C = d.C;
  for (int64_t e = e_begin; e < e_end; ++e) {
    const int64_t n = sv.counts[e];
    if (n == 0) continue;
    const int64_t o = sv.offsets[e];
    const MlpSaved<F> es{sv.expert.g + o * d.Fm, sv.expert.u + o * d.Fm, sv.expert.a + o * d.Fm};
    const MlpScratch<F> ss{s.expert.da + o * d.Fm, s.expert.dg + o * d.Fm, s.expert.du + o * d.Fm, s.expert.defer};
    mlp_backward(s.dx_perm + o * C, g.experts[e], ss, s.dy_perm + o * C, es, sv.x_perm + o * C, p.experts[e],
                 MlpDims{n, C, d.Fm});
  }
}

template <typename F>
void moe_route_backward(F* dx, const MoeGrads<F>& g, const MoeScratch<F>& s, const MoeSaved<F>& sv, const F* x,
                        const MoeParams<F>& p, const MoeDims& d, double balance_coef) {
  const int64_t T = d.T, C = d.C, E = d.E, K = d.K;
  cpu::moe_permute_backward(dx, s.dx_perm, sv.row_of, T, K, C);

  std::fill_n(s.dlogits, T * E, F(0));
  cpu::moe_gate_backward(s.dlogits, s.dweights, sv.scores, sv.indices, T, E, K,
                         static_cast<F>(d.route_scale), d.norm_topk_prob);
  if (balance_coef != 0.0) {
    // L = coef/B · Σ_b Σ_i f_i·P_i,  P_i = (1/S) Σ_t s'_{i,t},  s'_{i,t} = s_{i,t} / Σ_j s_{j,t}:
    // dL/ds_{j,t} = coef/(B·S·Σs_t) · (f_j − Σ_i f_i·s'_{i,t});  ds/dlogit = s·(1 − s).
    const double c0 = balance_coef / static_cast<double>((d.balance_rows > 0 ? d.balance_rows : d.B) * d.S);
    cpu::moe_balance_backward(s.dlogits, sv.balance_f, sv.scores, T, d.S, E, c0);
  }
  linear_backward_or_defer(s.defer, dx, g.gate, s.dlogits, x, p.gate, T, C, E);
}

template <typename F>
void moe_backward(F* dx, const MoeGrads<F>& g, const MoeScratch<F>& s, const F* dout,
                  const MoeSaved<F>& sv, const F* x, const MoeParams<F>& p, const MoeDims& d,
                  double balance_coef) {
  moe_combine_backward(dx, g, s, dout, sv, x, p, d);
  if (d.ep != nullptr) {
    if constexpr (std::is_same_v<F, float>) {
      ep_experts_backward(s.dx_perm, g, s.dy_perm, sv, p, d, s.expert.defer);
    } else {
      MARIANA_CHECK(false && "expert parallelism runs in float only");
    }
  } else {
    moe_experts_backward(g, s, sv, p, d, 0, d.E);
  }
  moe_route_backward(dx, g, s, sv, x, p, d, balance_coef);
}

#define MARIANA_INSTANTIATE_MOE(F)                                                                \
  template void mlp_forward<F>(F*, const MlpSaved<F>&, const F*, const MlpParams<F>&,            \
                               const MlpDims&);                                                   \
  template void mlp_backward<F>(F*, const MlpGrads<F>&, const MlpScratch<F>&, const F*,          \
                                const MlpSaved<F>&, const F*, const MlpParams<F>&, const MlpDims&); \
  template double moe_forward<F>(F*, const MoeSaved<F>&, const F*, const MoeParams<F>&,          \
                                 const MoeDims&, bool);                                           \
  template void moe_backward<F>(F*, const MoeGrads<F>&, const MoeScratch<F>&, const F*,          \
                                const MoeSaved<F>&, const F*, const MoeParams<F>&, const MoeDims&, \
                                double);                                                          \
  template void moe_route<F>(const MoeSaved<F>&, const F*, const MoeParams<F>&, const MoeDims&, bool); \
  template void moe_experts<F>(const MoeSaved<F>&, const MoeParams<F>&, const MoeDims&, int64_t, int64_t); \
  template double moe_combine<F>(F*, const MoeSaved<F>&, const F*, const MoeParams<F>&, const MoeDims&); \
  template void moe_combine_backward<F>(F*, const MoeGrads<F>&, const MoeScratch<F>&, const F*,  \
                                        const MoeSaved<F>&, const F*, const MoeParams<F>&, const MoeDims&); \
  template void moe_experts_backward<F>(const MoeGrads<F>&, const MoeScratch<F>&, const MoeSaved<F>&, \
                                        const MoeParams<F>&, const MoeDims&, int64_t, int64_t);  \
  template void moe_route_backward<F>(F*, const MoeGrads<F>&, const MoeScratch<F>&, const MoeSaved<F>&, \
                                      const F*, const MoeParams<F>&, const MoeDims&, double);
MARIANA_INSTANTIATE_MOE(float)
MARIANA_INSTANTIATE_MOE(double)

}  // namespace mariana
