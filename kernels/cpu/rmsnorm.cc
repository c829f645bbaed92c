// CPU RMSNorm forward/backward. Parallel over tokens; the weight gradient is reduced through
// per-token-block partials in a fixed order, so it is deterministic and independent of the thread
// count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

constexpr int64_t kColChunk = 256;  // columns of dweight one thread reduces at a time

template <typename T>
void rmsnorm_forward_impl(T* out, T* rstd, const T* in, const T* weight, int64_t T_, int64_t C, T eps) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * C))
  for (int64_t t = 0; t < T_; ++t) {
    const T* x = in + t * C;
    T* y = out + t * C;
    T ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < C; ++c) ss += x[c] * x[c];
    const T r = T(1) / std::sqrt(ss / T(C) + eps);
    rstd[t] = r;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) y[c] = x[c] * r * weight[c];
  }
}

// y = x·r·w with r = (mean(x²) + eps)^-1/2:
//   dx = r·(w∘g) − x·r³/C · Σ_c g_c w_c x_c;   dw += Σ_t g∘x·r.
// One pass over fixed blocks of kTokenBlock tokens (independent of the thread count) writes din
// and a partial dweight per block into scratch (one std::vector per call, [blocks, C]); a second
// pass sums the partials per column in block order, in fp64. So dweight is deterministic for any
// thread count, and every access is sequential (a column-wise pass over tokens would stride by C).
constexpr int64_t kTokenBlock = 64;

template <typename T>
void rmsnorm_backward_impl(T* din, T* dweight, const T* dout, const T* in, const T* weight,
                           const T* rstd, int64_t T_, int64_t C) {
  const int64_t n_blocks = (T_ + kTokenBlock - 1) / kTokenBlock;
  std::vector<T> partial(dweight ? size_t(n_blocks) * C : 0);
#pragma omp parallel if (detail::worth_parallel(T_ * C))
  {
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < n_blocks; ++blk) {
      T* pw = dweight ? partial.data() + blk * C : nullptr;
      if (pw) std::fill(pw, pw + C, T(0));
      for (int64_t t = blk * kTokenBlock; t < std::min(T_, (blk + 1) * kTokenBlock); ++t) {
        const T* x = in + t * C;
        const T* g = dout + t * C;
        const T r = rstd[t];
        if (din) {
          T* dx = din + t * C;
          T dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int64_t c = 0; c < C; ++c) dot += g[c] * weight[c] * x[c];
          const T k = dot * r * r * r / T(C);
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) dx[c] += r * weight[c] * g[c] - k * x[c];
        }
        if (pw) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) pw[c] += g[c] * x[c] * r;
        }
      }
    }
    if (dweight) {
      const int64_t n_chunks = (C + kColChunk - 1) / kColChunk;
#pragma omp for schedule(static)
      for (int64_t ch = 0; ch < n_chunks; ++ch) {
        const int64_t c0 = ch * kColChunk, n = std::min(kColChunk, C - c0);
        double acc[kColChunk] = {};
        for (int64_t blk = 0; blk < n_blocks; ++blk) {
          const T* pw = partial.data() + blk * C + c0;
#pragma omp simd
          for (int64_t c = 0; c < n; ++c) acc[c] += double(pw[c]);
        }
        for (int64_t c = 0; c < n; ++c) dweight[c0 + c] += T(acc[c]);
      }
    }
  }
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* in, const float* weight, int64_t T, int64_t C,
                     float eps) {
  rmsnorm_forward_impl(out, rstd, in, weight, T, C, eps);
}
void rmsnorm_forward(double* out, double* rstd, const double* in, const double* weight, int64_t T,
                     int64_t C, double eps) {
  rmsnorm_forward_impl(out, rstd, in, weight, T, C, eps);
}

void rmsnorm_backward(float* din, float* dweight, const float* dout, const float* in, const float* weight,
                      const float* rstd, int64_t T, int64_t C) {
  rmsnorm_backward_impl(din, dweight, dout, in, weight, rstd, T, C);
}
void rmsnorm_backward(double* din, double* dweight, const double* dout, const double* in,
                      const double* weight, const double* rstd, int64_t T, int64_t C) {
  rmsnorm_backward_impl(din, dweight, dout, in, weight, rstd, T, C);
}

}  // namespace mariana::cpu
