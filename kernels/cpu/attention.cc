// CPU causal attention with document masks. Each (sequence, head) is processed in blocks of
// kRowBlock query rows; a block only looks at the key columns [min doc_start of its rows, last row],
// so the fully masked upper triangle (and earlier documents) costs nothing (64-row blocks measured
// as fast as 96 or 128 and faster than 32 or 256 at S = 512). Scores and each product are one gemm
// per block (single-threaded OpenBLAS inside the OpenMP region). Scratch: one std::vector per
// call holding a kRowBlock × S slice per thread (P and the row sums in the forward, P and dS in
// the backward), allocated before the parallel loop; nothing is allocated inside it. Also MLA's
// assembly of per-head keys and values from the latent projection (mla_kv_split_*).
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

constexpr int64_t kRowBlock = 64;

// The key columns a block of rows [i0, i1) of one sequence needs: [lo, i1). Checks the mask.
inline int64_t block_first_col(const int32_t* ds, int64_t i0, int64_t i1) {
  int64_t lo = i1;
  for (int64_t i = i0; i < i1; ++i) {
    MARIANA_CHECK(ds[i] >= 0 && ds[i] <= i);  // a row must see at least itself
    lo = std::min<int64_t>(lo, ds[i]);
  }
  return lo;
}

template <typename T>
void attention_forward_impl(T* out, T* lse, const T* q, const T* k, const T* v, const int32_t* doc_start,
                            int64_t B, int64_t S, int64_t H, int64_t Dqk, int64_t Dv, T scale) {
  const int64_t ldq = H * Dqk, ldv = H * Dv;
  const int64_t n_blocks = (S + kRowBlock - 1) / kRowBlock;
  const int64_t n_units = B * H * n_blocks;  // row blocks are independent in the forward
  const int n_threads = omp_get_max_threads();
  const size_t per_thread = size_t(kRowBlock) * (S + 1);
  std::vector<T> scratch(size_t(n_threads) * per_thread);

#pragma omp parallel for schedule(dynamic, 1) if (n_units > 1 && detail::worth_parallel(B * H * S * S))
  for (int64_t u = 0; u < n_units; ++u) {
    // Largest blocks (the last rows of a sequence) first, for load balance.
    const int64_t blk = n_blocks - 1 - u % n_blocks, bh = u / n_blocks;
    const int64_t b = bh / H, h = bh % H;
    T* P = scratch.data() + size_t(omp_get_thread_num()) * per_thread;
    T* inv_sum = P + kRowBlock * S;  // [kRowBlock]
    const int32_t* ds = doc_start + b * S;
    const T* qb = q + b * S * ldq + h * Dqk;
    const T* kb = k + b * S * ldq + h * Dqk;
    const T* vb = v + b * S * ldv + h * Dv;
    T* ob = out + b * S * ldv + h * Dv;

    const int64_t i0 = blk * kRowBlock, i1 = std::min(S, i0 + kRowBlock), nr = i1 - i0;
    const int64_t lo = block_first_col(ds, i0, i1), W = i1 - lo;
    // P[nr, W] = scale · Q[i0:i1] · K[lo:i1]ᵀ
    detail::blas_gemm<T>(false, true, nr, W, Dqk, scale, qb + i0 * ldq, ldq, kb + lo * ldq, ldq, T(0), P, W);
    for (int64_t r = 0; r < nr; ++r) {
      const int64_t i = i0 + r, a = ds[i] - lo, n = i - ds[i] + 1;  // valid columns [a, a+n)
      T* row = P + r * W;
      const T m = detail::row_max(row + a, n);
      const T sum = detail::exp_shift_sum(row + a, row + a, n, m);
      lse[(b * S + i) * H + h] = m + std::log(sum);
      inv_sum[r] = T(1) / sum;
      std::fill(row, row + a, T(0));
      std::fill(row + a + n, row + W, T(0));
    }
    // out[i0:i1] = P · V[lo:i1], with P still unnormalised: the rows are scaled afterwards, which
    // touches nr·Dv values instead of nr·W.
    T* o = ob + i0 * ldv;
    detail::blas_gemm<T>(false, false, nr, Dv, W, T(1), P, W, vb + lo * ldv, ldv, T(0), o, ldv);
    for (int64_t r = 0; r < nr; ++r)
      for (int64_t d = 0; d < Dv; ++d) o[r * ldv + d] *= inv_sum[r];
  }
}

// With P = softmax(scale·QKᵀ) (masked), O = P·V:
//   dV += Pᵀ·dO,  dP = dO·Vᵀ,  dS = P ∘ (dP − rowsum(dO∘O)),  dQ += scale·dS·K,  dK += scale·dSᵀ·Q.
// Parallel over (sequence, head): each unit owns its slices of dq, dk, dv.
template <typename T>
void attention_backward_impl(T* dq, T* dk, T* dv, const T* dout, const T* out, const T* lse, const T* q,
                             const T* k, const T* v, const int32_t* doc_start, int64_t B, int64_t S,
                             int64_t H, int64_t Dqk, int64_t Dv, T scale) {
  const int64_t ldq = H * Dqk, ldv = H * Dv;
  const int n_threads = omp_get_max_threads();
  const size_t per_thread = size_t(2) * kRowBlock * S;
  std::vector<T> scratch(size_t(n_threads) * per_thread);

#pragma omp parallel for schedule(dynamic, 1) if (B * H > 1 && detail::worth_parallel(B * H * S * S))
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    T* P = scratch.data() + size_t(omp_get_thread_num()) * per_thread;
    T* dS = P + kRowBlock * S;
    const int32_t* ds = doc_start + b * S;
    const T* qb = q + b * S * ldq + h * Dqk;
    const T* kb = k + b * S * ldq + h * Dqk;
    const T* vb = v + b * S * ldv + h * Dv;
    const T* ob = out + b * S * ldv + h * Dv;
    const T* gb = dout + b * S * ldv + h * Dv;
    T* dqb = dq + b * S * ldq + h * Dqk;
    T* dkb = dk + b * S * ldq + h * Dqk;
    T* dvb = dv + b * S * ldv + h * Dv;

    for (int64_t i0 = 0; i0 < S; i0 += kRowBlock) {
      const int64_t i1 = std::min(S, i0 + kRowBlock), nr = i1 - i0;
      const int64_t lo = block_first_col(ds, i0, i1), W = i1 - lo;
      // Recompute P from the saved log-sum-exp.
      detail::blas_gemm<T>(false, true, nr, W, Dqk, scale, qb + i0 * ldq, ldq, kb + lo * ldq, ldq, T(0), P, W);
      // dP[nr, W] = dO[i0:i1] · V[lo:i1]ᵀ
      detail::blas_gemm<T>(false, true, nr, W, Dv, T(1), gb + i0 * ldv, ldv, vb + lo * ldv, ldv, T(0), dS, W);
      for (int64_t r = 0; r < nr; ++r) {
        const int64_t i = i0 + r, a = ds[i] - lo, n = i - ds[i] + 1;
        T* prow = P + r * W;
        T* drow = dS + r * W;
        const T* go = gb + i * ldv;
        const T* oo = ob + i * ldv;
        T di = 0;
        for (int64_t d = 0; d < Dv; ++d) di += go[d] * oo[d];
        detail::exp_shift_sum(prow + a, prow + a, n, lse[(b * S + i) * H + h]);
        for (int64_t j = 0; j < a; ++j) prow[j] = drow[j] = 0;
#pragma omp simd
        for (int64_t j = a; j < a + n; ++j) drow[j] = prow[j] * (drow[j] - di);
        for (int64_t j = a + n; j < W; ++j) prow[j] = drow[j] = 0;
      }
      // dQ[i0:i1] += scale · dS · K[lo:i1]
      detail::blas_gemm<T>(false, false, nr, Dqk, W, scale, dS, W, kb + lo * ldq, ldq, T(1), dqb + i0 * ldq, ldq);
      // dK[lo:i1] += scale · dSᵀ · Q[i0:i1]
      detail::blas_gemm<T>(true, false, W, Dqk, nr, scale, dS, W, qb + i0 * ldq, ldq, T(1), dkb + lo * ldq, ldq);
      // dV[lo:i1] += Pᵀ · dO[i0:i1]
      detail::blas_gemm<T>(true, false, W, Dv, nr, T(1), P, W, gb + i0 * ldv, ldv, T(1), dvb + lo * ldv, ldv);
    }
  }
}

// k = [k_nope ; k_pe] and v per (token, head); parallel over tokens.
template <typename T>
void mla_kv_split_forward_impl(T* k, T* v, const T* kv, const T* k_pe, const MlaKvDims& d) {
  const int64_t H = d.H, dn = d.dn, dr = d.dr, dv = d.dv, dqk = dn + dr;
#pragma omp parallel for schedule(static) if (detail::worth_parallel(d.T * H * (dqk + dv)))
  for (int64_t t = 0; t < d.T; ++t) {
    const T* kpe = k_pe + t * d.kpe_stride;
    for (int64_t h = 0; h < H; ++h) {
      const T* kvh = kv + (t * H + h) * (dn + dv);
      T* kh = k + (t * H + h) * dqk;
      std::memcpy(kh, kvh, dn * sizeof(T));
      std::memcpy(kh + dn, kpe, dr * sizeof(T));
      std::memcpy(v + (t * H + h) * dv, kvh + dn, dv * sizeof(T));
    }
  }
}

// dkv = [dk_nope ; dv] per head, and dk_pe summed over heads in order; parallel over tokens.
template <typename T>
void mla_kv_split_backward_impl(T* dkv, T* dk_pe, const T* dk, const T* dv, const MlaKvDims& d) {
  const int64_t H = d.H, dn = d.dn, dr = d.dr, Dv = d.dv, dqk = dn + dr;
#pragma omp parallel for schedule(static) if (detail::worth_parallel(d.T * H * (dqk + Dv)))
  for (int64_t t = 0; t < d.T; ++t) {
    T* dkpe = dk_pe + t * d.kpe_stride;
    for (int64_t h = 0; h < H; ++h) {
      T* dkvh = dkv + (t * H + h) * (dn + Dv);
      const T* dkh = dk + (t * H + h) * dqk;
      const T* dvh = dv + (t * H + h) * Dv;
      for (int64_t i = 0; i < dn; ++i) dkvh[i] += dkh[i];
      for (int64_t i = 0; i < Dv; ++i) dkvh[dn + i] += dvh[i];
      for (int64_t i = 0; i < dr; ++i) dkpe[i] += dkh[dn + i];
    }
  }
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       const int32_t* doc_start, int64_t B, int64_t S, int64_t H, int64_t Dqk, int64_t Dv,
                       float scale) {
  attention_forward_impl(out, lse, q, k, v, doc_start, B, S, H, Dqk, Dv, scale);
}
void attention_forward(double* out, double* lse, const double* q, const double* k, const double* v,
                       const int32_t* doc_start, int64_t B, int64_t S, int64_t H, int64_t Dqk, int64_t Dv,
                       double scale) {
  attention_forward_impl(out, lse, q, k, v, doc_start, B, S, H, Dqk, Dv, scale);
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out,
                        const float* lse, const float* q, const float* k, const float* v,
                        const int32_t* doc_start, int64_t B, int64_t S, int64_t H, int64_t Dqk, int64_t Dv,
                        float scale) {
  attention_backward_impl(dq, dk, dv, dout, out, lse, q, k, v, doc_start, B, S, H, Dqk, Dv, scale);
}
void attention_backward(double* dq, double* dk, double* dv, const double* dout, const double* out,
                        const double* lse, const double* q, const double* k, const double* v,
                        const int32_t* doc_start, int64_t B, int64_t S, int64_t H, int64_t Dqk, int64_t Dv,
                        double scale) {
  attention_backward_impl(dq, dk, dv, dout, out, lse, q, k, v, doc_start, B, S, H, Dqk, Dv, scale);
}

void mla_kv_split_forward(float* k, float* v, const float* kv, const float* k_pe, const MlaKvDims& d) {
  mla_kv_split_forward_impl(k, v, kv, k_pe, d);
}
void mla_kv_split_forward(double* k, double* v, const double* kv, const double* k_pe, const MlaKvDims& d) {
  mla_kv_split_forward_impl(k, v, kv, k_pe, d);
}

void mla_kv_split_backward(float* dkv, float* dk_pe, const float* dk, const float* dv, const MlaKvDims& d) {
  mla_kv_split_backward_impl(dkv, dk_pe, dk, dv, d);
}
void mla_kv_split_backward(double* dkv, double* dk_pe, const double* dk, const double* dv, const MlaKvDims& d) {
  mla_kv_split_backward_impl(dkv, dk_pe, dk, dv, d);
}

}  // namespace mariana::cpu
