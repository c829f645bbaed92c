// CPU SwiGLU: out = silu(gate)·up, elementwise, parallel over chunks of kChunk elements; the sigmoid
// of a chunk goes through a stack buffer so the exp is vectorised.
#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

constexpr int64_t kChunk = 1024;

template <typename T>
void swiglu_forward_impl(T* out, const T* gate, const T* up, int64_t N) {
  const int64_t n_chunks = (N + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (detail::worth_parallel(N))
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t i0 = ch * kChunk, n = std::min(kChunk, N - i0);
    T sig[kChunk];
    detail::sigmoid(sig, gate + i0, n);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) out[i0 + i] = gate[i0 + i] * sig[i] * up[i0 + i];
  }
}

// d silu(g)/dg = σ(g)·(1 + g·(1 − σ(g))).
template <typename T>
void swiglu_backward_impl(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t N) {
  const int64_t n_chunks = (N + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (detail::worth_parallel(N))
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t i0 = ch * kChunk, n = std::min(kChunk, N - i0);
    T sig[kChunk];
    detail::sigmoid(sig, gate + i0, n);
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T g = gate[i0 + i], s = sig[i], d = dout[i0 + i];
      dgate[i0 + i] += d * up[i0 + i] * s * (T(1) + g * (T(1) - s));
      dup[i0 + i] += d * g * s;
    }
  }
}

}  // namespace

void swiglu_forward(float* out, const float* gate, const float* up, int64_t N) {
  swiglu_forward_impl(out, gate, up, N);
}
void swiglu_forward(double* out, const double* gate, const double* up, int64_t N) {
  swiglu_forward_impl(out, gate, up, N);
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up,
                     int64_t N) {
  swiglu_backward_impl(dgate, dup, dout, gate, up, N);
}
void swiglu_backward(double* dgate, double* dup, const double* dout, const double* gate,
                     const double* up, int64_t N) {
  swiglu_backward_impl(dgate, dup, dout, gate, up, N);
}

}  // namespace mariana::cpu
