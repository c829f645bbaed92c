// CPU RMSNorm forward/backward. Parallel over tokens; the weight gradient is reduced over tokens
// per column chunk (each chunk owned by one thread, tokens in order), so it is deterministic and
// independent of the thread count.
#include <cmath>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

constexpr int64_t kColChunk = 64;  // columns of dweight one thread reduces at a time

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
template <typename T>
void rmsnorm_backward_impl(T* din, T* dweight, const T* dout, const T* in, const T* weight,
                           const T* rstd, int64_t T_, int64_t C) {
#pragma omp parallel if (detail::worth_parallel(T_ * C))
  {
    if (din) {
#pragma omp for schedule(static)
      for (int64_t t = 0; t < T_; ++t) {
        const T* x = in + t * C;
        const T* g = dout + t * C;
        T* dx = din + t * C;
        const T r = rstd[t];
        T dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < C; ++c) dot += g[c] * weight[c] * x[c];
        const T k = dot * r * r * r / T(C);
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dx[c] += r * weight[c] * g[c] - k * x[c];
      }
    }
    if (dweight) {
      const int64_t n_chunks = (C + kColChunk - 1) / kColChunk;
#pragma omp for schedule(static)
      for (int64_t ch = 0; ch < n_chunks; ++ch) {
        const int64_t c0 = ch * kColChunk, c1 = std::min(C, c0 + kColChunk);
        double acc[kColChunk] = {};  // fp64 accumulators: T may be in the tens of thousands
        for (int64_t t = 0; t < T_; ++t) {
          const T* x = in + t * C;
          const T* g = dout + t * C;
          const T r = rstd[t];
          for (int64_t c = c0; c < c1; ++c) acc[c - c0] += double(g[c] * x[c] * r);
        }
        for (int64_t c = c0; c < c1; ++c) dweight[c] += T(acc[c - c0]);
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
