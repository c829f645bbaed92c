// CPU MoE routing (docs/numerics.md#deepseekmoe-routing): the sigmoid gate with group-limited
// top-k (and its weights for a fixed selection), the sequence-wise balance loss, the deterministic
// routing plan, the permute/unpermute between token order and expert-sorted order, and the row
// gather/scatter of expert parallelism. Parallel over tokens (rows); every output row is written by
// exactly one token, so no atomics and no races; the balance loss's sums run in order on one thread.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

// DeepSeek-V3's Gate.forward for score_func = "sigmoid", per token:
//   scores = σ(logits); b = scores + bias (selection only);
//   n_group > 1: group score = sum of the top-2 b in the group (max of b when bias is null, as in
//   the reference), keep the topk_group best groups, mask the others;
//   indices = top-K of b among the kept groups; weights = scores[indices] (normalised) · route_scale.
// Ties go to the lower index (groups and experts). Scratch: one std::vector per call with E + n_group
// values per thread, allocated before the parallel loop.
template <typename T>
void moe_gate_forward_impl(T* weights, int32_t* indices, T* scores, const T* logits, const T* bias,
                           const MoeGateDims& d) {
  const int64_t T_ = d.T, E = d.E, K = d.K, n_group = d.n_group, topk_group = d.topk_group;
  const T route_scale = static_cast<T>(d.route_scale);
  const bool norm_topk_prob = d.norm_topk_prob;
  MARIANA_CHECK(n_group >= 1 && E % n_group == 0);
  const int64_t group_size = E / n_group;
  if (n_group > 1) MARIANA_CHECK(topk_group >= 1 && topk_group <= n_group);
  MARIANA_CHECK(K >= 1 && K <= (n_group > 1 ? topk_group * group_size : E));
  const bool node_limit = d.max_nodes > 0 && d.max_nodes < d.n_nodes;
  MARIANA_CHECK(d.n_nodes >= 1 && E % d.n_nodes == 0);
  const int64_t n_nodes = node_limit ? d.n_nodes : 0, node_size = E / d.n_nodes;
  const int64_t node_top = node_limit ? (K + d.max_nodes - 1) / d.max_nodes : 0;  // ceil(K / M)
  if (node_limit) MARIANA_CHECK(K <= d.max_nodes * node_size && node_top <= node_size);
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  const int n_threads = omp_get_max_threads();
  const int64_t per_thread = E + n_group + n_nodes + node_top;
  std::vector<T> scratch(size_t(n_threads) * per_thread);

#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * E * 4))
  for (int64_t t = 0; t < T_; ++t) {
    T* sel = scratch.data() + size_t(omp_get_thread_num()) * per_thread;  // biased scores [E]
    T* gscore = sel + E;                                                   // [n_group]
    T* s = scores + t * E;
    detail::sigmoid(s, logits + t * E, E);
    for (int64_t e = 0; e < E; ++e) sel[e] = bias ? s[e] + bias[e] : s[e];

    if (node_limit) {  // keep the max_nodes nodes with the best sums of their top node_top scores
      T* nscore = gscore + n_group;  // [n_nodes]
      T* top = nscore + n_nodes;     // [node_top], descending
      for (int64_t n = 0; n < n_nodes; ++n) {
        std::fill_n(top, node_top, kNegInf);
        for (int64_t e = n * node_size; e < (n + 1) * node_size; ++e) {
          if (sel[e] <= top[node_top - 1]) continue;
          int64_t i = node_top - 1;
          for (; i > 0 && top[i - 1] < sel[e]; --i) top[i] = top[i - 1];
          top[i] = sel[e];
        }
        T sum = 0;
        for (int64_t i = 0; i < node_top; ++i) sum += top[i];
        nscore[n] = sum;
      }
      for (int64_t r = 0; r < d.max_nodes; ++r) {
        int64_t best = -1;
        for (int64_t n = 0; n < n_nodes; ++n)
          if (nscore[n] != std::numeric_limits<T>::infinity() && (best < 0 || nscore[n] > nscore[best])) best = n;
        if (best < 0) break;  // only NaN scores left (a diverged model): keep the nodes chosen so far
        nscore[best] = std::numeric_limits<T>::infinity();
      }
      for (int64_t n = 0; n < n_nodes; ++n)
        if (nscore[n] != std::numeric_limits<T>::infinity())
          for (int64_t e = n * node_size; e < (n + 1) * node_size; ++e) sel[e] = kNegInf;
    }

    if (n_group > 1) {
      for (int64_t g = 0; g < n_group; ++g) {
        const T* x = sel + g * group_size;
        T top1 = kNegInf, top2 = kNegInf;
        for (int64_t e = 0; e < group_size; ++e) {
          if (x[e] > top1) {
            top2 = top1;
            top1 = x[e];
          } else if (x[e] > top2) {
            top2 = x[e];
          }
        }
        gscore[g] = (bias && group_size >= 2) ? top1 + top2 : top1;
      }
      // Keep the topk_group best groups; mark a kept group by setting its score to +inf.
      for (int64_t r = 0; r < topk_group; ++r) {
        int64_t best = -1;
        for (int64_t g = 0; g < n_group; ++g)
          if (gscore[g] != std::numeric_limits<T>::infinity() && (best < 0 || gscore[g] > gscore[best])) best = g;
        gscore[best] = std::numeric_limits<T>::infinity();
      }
      for (int64_t g = 0; g < n_group; ++g)
        if (gscore[g] != std::numeric_limits<T>::infinity())
          for (int64_t e = 0; e < group_size; ++e) sel[g * group_size + e] = kNegInf;
    }

    int32_t* idx = indices + t * K;
    T* w = weights + t * K;
    T denom = 0;
    for (int64_t r = 0; r < K; ++r) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e)
        if (sel[e] != kNegInf && (best < 0 || sel[e] > sel[best])) best = e;
      MARIANA_CHECK(best >= 0);
      sel[best] = kNegInf;  // taken
      idx[r] = int32_t(best);
      w[r] = s[best];
      denom += s[best];
    }
    const T f = norm_topk_prob ? route_scale / denom : route_scale;
    for (int64_t r = 0; r < K; ++r) w[r] *= f;
  }
}

// With Z = Σ_k s_k and w_k = rs·s_k/Z (normalised):  ds_j = rs/Z · (dw_j − Σ_k dw_k·s_k/Z);
// without normalisation ds_j = rs·dw_j. Then dlogit = ds·s·(1 − s).
template <typename T>
void moe_gate_backward_impl(T* dlogits, const T* dweights, const T* scores, const int32_t* indices,
                            int64_t T_, int64_t E, int64_t K, T route_scale, bool norm_topk_prob) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * K * 8))
  for (int64_t t = 0; t < T_; ++t) {
    const T* s = scores + t * E;
    const int32_t* idx = indices + t * K;
    const T* dw = dweights + t * K;
    T z = 0, dot = 0;
    for (int64_t r = 0; r < K; ++r) {
      z += s[idx[r]];
      dot += dw[r] * s[idx[r]];
    }
    for (int64_t r = 0; r < K; ++r) {
      const T sj = s[idx[r]];
      const T ds = norm_topk_prob ? route_scale / z * (dw[r] - dot / z) : route_scale * dw[r];
      dlogits[t * E + idx[r]] += ds * sj * (T(1) - sj);
    }
  }
}

// One pass counts, a prefix sum gives offsets, and a second pass in (t, k) order hands out rows,
// reusing counts as the per-expert cursor (it ends equal to the counts again).
void moe_plan_impl(int32_t* counts, int32_t* offsets, int32_t* row_of, const int32_t* indices, int64_t T,
                   int64_t E, int64_t K) {
  for (int64_t e = 0; e < E; ++e) counts[e] = 0;
  for (int64_t i = 0; i < T * K; ++i) {
    MARIANA_CHECK(indices[i] >= 0 && indices[i] < E);
    ++counts[indices[i]];
  }
  offsets[0] = 0;
  for (int64_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + counts[e];
  for (int64_t e = 0; e < E; ++e) counts[e] = 0;
  for (int64_t i = 0; i < T * K; ++i) {
    const int32_t e = indices[i];
    row_of[i] = offsets[e] + counts[e]++;
  }
}

template <typename T>
void moe_permute_forward_impl(T* x_perm, const T* x, const int32_t* row_of, int64_t T_, int64_t K, int64_t C) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * K * C))
  for (int64_t t = 0; t < T_; ++t)
    for (int64_t k = 0; k < K; ++k) std::copy(x + t * C, x + (t + 1) * C, x_perm + int64_t(row_of[t * K + k]) * C);
}

template <typename T>
void moe_permute_backward_impl(T* dx, const T* dx_perm, const int32_t* row_of, int64_t T_, int64_t K, int64_t C) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * K * C))
  for (int64_t t = 0; t < T_; ++t) {
    T* d = dx + t * C;
    for (int64_t k = 0; k < K; ++k) {
      const T* src = dx_perm + int64_t(row_of[t * K + k]) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) d[c] += src[c];
    }
  }
}

template <typename T>
void moe_unpermute_forward_impl(T* out, const T* y_perm, const T* weights, const int32_t* row_of, int64_t T_,
                                int64_t K, int64_t C) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * K * C))
  for (int64_t t = 0; t < T_; ++t) {
    T* o = out + t * C;
    for (int64_t k = 0; k < K; ++k) {
      const T* y = y_perm + int64_t(row_of[t * K + k]) * C;
      const T w = weights[t * K + k];
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) o[c] += w * y[c];
    }
  }
}

template <typename T>
void moe_unpermute_backward_impl(T* dy_perm, T* dweights, const T* dout, const T* y_perm, const T* weights,
                                 const int32_t* row_of, int64_t T_, int64_t K, int64_t C) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * K * C))
  for (int64_t t = 0; t < T_; ++t) {
    const T* g = dout + t * C;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t row = row_of[t * K + k];
      const T* y = y_perm + row * C;
      T* dy = dy_perm + row * C;
      const T w = weights[t * K + k];
      T dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < C; ++c) {
        dy[c] += w * g[c];
        dot += g[c] * y[c];
      }
      dweights[t * K + k] += dot;
    }
  }
}

// Sigmoid through std::exp (not the vectorised exp of moe_gate_forward), then the weights of the
// given selection.
template <typename T>
void moe_gate_weights_impl(T* weights, T* scores, const T* logits, const int32_t* indices, const MoeGateDims& d) {
  const int64_t T_ = d.T, E = d.E, K = d.K;
  const T route_scale = static_cast<T>(d.route_scale);
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * E))
  for (int64_t t = 0; t < T_; ++t) {
    for (int64_t e = 0; e < E; ++e) scores[t * E + e] = T(1) / (T(1) + std::exp(-logits[t * E + e]));
    T sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += scores[t * E + indices[t * K + k]];
    for (int64_t k = 0; k < K; ++k) {
      const T v = scores[t * E + indices[t * K + k]];
      weights[t * K + k] = (d.norm_topk_prob ? v / sum : v) * route_scale;
    }
  }
}

// P_i is accumulated for kBalanceChunk experts at a time in a stack buffer (no allocation); with
// more experts than that, a token's Σ_j s_j is recomputed per chunk, the same sum in the same order.
constexpr int64_t kBalanceChunk = 256;

template <typename T>
void moe_balance_forward_impl(T* f_all, double* loss, const T* scores, const int32_t* indices, int64_t B,
                              int64_t S, int64_t E, int64_t K) {
  const T f_scale = static_cast<T>(static_cast<double>(E) / static_cast<double>(K * S));
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {
    T* f = f_all + b * E;
    const int64_t t0 = b * S, t1 = (b + 1) * S;
    std::fill_n(f, E, T(0));
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t k = 0; k < K; ++k) f[indices[t * K + k]] += T(1);
    double lb = 0;
    for (int64_t e0 = 0; e0 < E; e0 += kBalanceChunk) {
      const int64_t ne = std::min(kBalanceChunk, E - e0);
      double P[kBalanceChunk] = {};
      for (int64_t t = t0; t < t1; ++t) {
        const T* st = scores + t * E;
        double denom = 0;
        for (int64_t e = 0; e < E; ++e) denom += st[e];
        for (int64_t j = 0; j < ne; ++j) P[j] += st[e0 + j] / denom;
      }
      for (int64_t j = 0; j < ne; ++j) {
        f[e0 + j] *= f_scale;
        lb += static_cast<double>(f[e0 + j]) * P[j] / static_cast<double>(S);
      }
    }
    total += lb;
  }
  *loss = total;
}

template <typename T>
void moe_balance_backward_impl(T* dlogits, const T* f_all, const T* scores, int64_t T_, int64_t S, int64_t E,
                               double scale) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * E))
  for (int64_t t = 0; t < T_; ++t) {
    const T* f = f_all + (t / S) * E;
    const T* st = scores + t * E;
    double denom = 0, fs = 0;
    for (int64_t e = 0; e < E; ++e) denom += st[e];
    for (int64_t e = 0; e < E; ++e) fs += static_cast<double>(f[e]) * st[e] / denom;
    for (int64_t e = 0; e < E; ++e) {
      const double ds = scale / denom * (static_cast<double>(f[e]) - fs);
      dlogits[t * E + e] += static_cast<T>(ds * st[e] * (1.0 - st[e]));
    }
  }
}

// dst[to(i)] = src[from(i)] for rows of C elements.
template <typename T>
void move_rows(T* dst, const T* src, const int32_t* map, int64_t n, int64_t C, bool scatter) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(n * C))
  for (int64_t i = 0; i < n; ++i) {
    const int64_t to = scatter ? map[i] : i, from = scatter ? i : map[i];
    std::memcpy(dst + to * C, src + from * C, static_cast<size_t>(C) * sizeof(T));
  }
}

}  // namespace

namespace {
MoeGateDims gate_dims(int64_t T, int64_t E, int64_t K, int64_t n_group, int64_t topk_group, double route_scale,
                      bool norm_topk_prob) {
  MoeGateDims d;
  d.T = T;
  d.E = E;
  d.K = K;
  d.n_group = n_group;
  d.topk_group = topk_group;
  d.route_scale = route_scale;
  d.norm_topk_prob = norm_topk_prob;
  return d;
}
}  // namespace

void moe_gate_forward(float* weights, int32_t* indices, float* scores, const float* logits, const float* bias,
                      int64_t T, int64_t E, int64_t K, int64_t n_group, int64_t topk_group, float route_scale,
                      bool norm_topk_prob) {
  moe_gate_forward_impl(weights, indices, scores, logits, bias,
                        gate_dims(T, E, K, n_group, topk_group, route_scale, norm_topk_prob));
}
void moe_gate_forward(double* weights, int32_t* indices, double* scores, const double* logits,
                      const double* bias, int64_t T, int64_t E, int64_t K, int64_t n_group,
                      int64_t topk_group, double route_scale, bool norm_topk_prob) {
  moe_gate_forward_impl(weights, indices, scores, logits, bias,
                        gate_dims(T, E, K, n_group, topk_group, route_scale, norm_topk_prob));
}
void moe_gate_forward(float* weights, int32_t* indices, float* scores, const float* logits, const float* bias,
                      const MoeGateDims& d) {
  moe_gate_forward_impl(weights, indices, scores, logits, bias, d);
}
void moe_gate_forward(double* weights, int32_t* indices, double* scores, const double* logits,
                      const double* bias, const MoeGateDims& d) {
  moe_gate_forward_impl(weights, indices, scores, logits, bias, d);
}

void moe_gate_backward(float* dlogits, const float* dweights, const float* scores, const int32_t* indices,
                       int64_t T, int64_t E, int64_t K, float route_scale, bool norm_topk_prob) {
  moe_gate_backward_impl(dlogits, dweights, scores, indices, T, E, K, route_scale, norm_topk_prob);
}
void moe_gate_backward(double* dlogits, const double* dweights, const double* scores, const int32_t* indices,
                       int64_t T, int64_t E, int64_t K, double route_scale, bool norm_topk_prob) {
  moe_gate_backward_impl(dlogits, dweights, scores, indices, T, E, K, route_scale, norm_topk_prob);
}

void moe_plan(int32_t* counts, int32_t* offsets, int32_t* row_of, const int32_t* indices, int64_t T,
              int64_t E, int64_t K) {
  moe_plan_impl(counts, offsets, row_of, indices, T, E, K);
}

void moe_permute_forward(float* x_perm, const float* x, const int32_t* row_of, int64_t T, int64_t K, int64_t C) {
  moe_permute_forward_impl(x_perm, x, row_of, T, K, C);
}
void moe_permute_forward(double* x_perm, const double* x, const int32_t* row_of, int64_t T, int64_t K,
                         int64_t C) {
  moe_permute_forward_impl(x_perm, x, row_of, T, K, C);
}

void moe_permute_backward(float* dx, const float* dx_perm, const int32_t* row_of, int64_t T, int64_t K,
                          int64_t C) {
  moe_permute_backward_impl(dx, dx_perm, row_of, T, K, C);
}
void moe_permute_backward(double* dx, const double* dx_perm, const int32_t* row_of, int64_t T, int64_t K,
                          int64_t C) {
  moe_permute_backward_impl(dx, dx_perm, row_of, T, K, C);
}

void moe_unpermute_forward(float* out, const float* y_perm, const float* weights, const int32_t* row_of,
                           int64_t T, int64_t K, int64_t C) {
  moe_unpermute_forward_impl(out, y_perm, weights, row_of, T, K, C);
}
void moe_unpermute_forward(double* out, const double* y_perm, const double* weights, const int32_t* row_of,
                           int64_t T, int64_t K, int64_t C) {
  moe_unpermute_forward_impl(out, y_perm, weights, row_of, T, K, C);
}

void moe_unpermute_backward(float* dy_perm, float* dweights, const float* dout, const float* y_perm,
                            const float* weights, const int32_t* row_of, int64_t T, int64_t K, int64_t C) {
  moe_unpermute_backward_impl(dy_perm, dweights, dout, y_perm, weights, row_of, T, K, C);
}
void moe_unpermute_backward(double* dy_perm, double* dweights, const double* dout, const double* y_perm,
                            const double* weights, const int32_t* row_of, int64_t T, int64_t K, int64_t C) {
  moe_unpermute_backward_impl(dy_perm, dweights, dout, y_perm, weights, row_of, T, K, C);
}

void moe_gate_weights(float* weights, float* scores, const float* logits, const int32_t* indices,
                      const MoeGateDims& d) {
  moe_gate_weights_impl(weights, scores, logits, indices, d);
}
void moe_gate_weights(double* weights, double* scores, const double* logits, const int32_t* indices,
                      const MoeGateDims& d) {
  moe_gate_weights_impl(weights, scores, logits, indices, d);
}

void moe_balance_forward(float* f, double* loss, const float* scores, const int32_t* indices, int64_t B, int64_t S,
                         int64_t E, int64_t K) {
  moe_balance_forward_impl(f, loss, scores, indices, B, S, E, K);
}
void moe_balance_forward(double* f, double* loss, const double* scores, const int32_t* indices, int64_t B,
                         int64_t S, int64_t E, int64_t K) {
  moe_balance_forward_impl(f, loss, scores, indices, B, S, E, K);
}

void moe_balance_backward(float* dlogits, const float* f, const float* scores, int64_t T, int64_t S, int64_t E,
                          double scale) {
  moe_balance_backward_impl(dlogits, f, scores, T, S, E, scale);
}
void moe_balance_backward(double* dlogits, const double* f, const double* scores, int64_t T, int64_t S, int64_t E,
                          double scale) {
  moe_balance_backward_impl(dlogits, f, scores, T, S, E, scale);
}

void moe_gather_rows(float* dst, const float* src, const int32_t* map, int64_t n, int64_t C) {
  move_rows(dst, src, map, n, C, /*scatter=*/false);
}
void moe_gather_rows(double* dst, const double* src, const int32_t* map, int64_t n, int64_t C) {
  move_rows(dst, src, map, n, C, /*scatter=*/false);
}
void moe_scatter_rows(float* dst, const float* src, const int32_t* map, int64_t n, int64_t C) {
  move_rows(dst, src, map, n, C, /*scatter=*/true);
}
void moe_scatter_rows(double* dst, const double* src, const int32_t* map, int64_t n, int64_t C) {
  move_rows(dst, src, map, n, C, /*scatter=*/true);
}

}  // namespace mariana::cpu
