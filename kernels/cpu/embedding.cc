// CPU token embedding. The backward scatters rows of dout into the table without atomics: threads
// split the C columns, and each visits the tokens in order, so every table entry receives its
// contributions in token order whatever the thread count (bitwise deterministic).
#include <algorithm>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

constexpr int64_t kColChunk = 256;

template <typename T>
void embedding_forward_impl(T* out, const int32_t* tokens, const T* table, int64_t T_, int64_t C) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * C))
  for (int64_t t = 0; t < T_; ++t) {
    const T* row = table + int64_t(tokens[t]) * C;
    std::copy(row, row + C, out + t * C);
  }
}

template <typename T>
void embedding_backward_impl(T* dtable, const T* dout, const int32_t* tokens, int64_t T_, int64_t C) {
  const int64_t n_chunks = (C + kColChunk - 1) / kColChunk;
#pragma omp parallel for schedule(static) if (n_chunks > 1 && detail::worth_parallel(T_ * C))
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t c0 = ch * kColChunk, c1 = std::min(C, c0 + kColChunk);
    for (int64_t t = 0; t < T_; ++t) {
      T* d = dtable + int64_t(tokens[t]) * C;
      const T* g = dout + t * C;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) d[c] += g[c];
    }
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t T, int64_t C) {
  embedding_forward_impl(out, tokens, table, T, C);
}
void embedding_forward(double* out, const int32_t* tokens, const double* table, int64_t T, int64_t C) {
  embedding_forward_impl(out, tokens, table, T, C);
}

void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t T, int64_t C) {
  embedding_backward_impl(dtable, dout, tokens, T, C);
}
void embedding_backward(double* dtable, const double* dout, const int32_t* tokens, int64_t T, int64_t C) {
  embedding_backward_impl(dtable, dout, tokens, T, C);
}

}  // namespace mariana::cpu
