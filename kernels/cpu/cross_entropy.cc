// CPU softmax cross-entropy over the vocabulary, parallel over tokens. Stable: the log-sum-exp
// subtracts the row max before exponentiating; the backward recomputes softmax from the saved lse.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

// A row is reduced in chunks of kChunk logits (8 KiB of floats): the max pass pulls a chunk into
// L1, the exp pass reads it from there while prefetching the next chunk, so the memory stream
// overlaps the exp work. The running sum is rescaled when a later chunk raises the max (online
// log-sum-exp), which also keeps a 129k-wide row from ever leaving cache between its two passes.
constexpr int64_t kChunk = 2048;

template <typename T>
T row_logsumexp(const T* x, int64_t V, bool more_rows_follow) {
  T m = -std::numeric_limits<T>::infinity(), s = 0;
  for (int64_t j0 = 0; j0 < V; j0 += kChunk) {
    const int64_t n = std::min(kChunk, V - j0);
    const T cm = detail::row_max(x + j0, n);
    if (cm > m) {
      s *= detail::exp1(m - cm);  // m = −inf on the first chunk: exp → 0 and s is 0 anyway
      m = cm;
    }
    const T* next = (j0 + n < V || more_rows_follow) ? x + j0 + n : nullptr;
    s += detail::exp_shift_sum(static_cast<T*>(nullptr), x + j0, n, m, next);
  }
  return m + std::log(s);
}

template <typename T>
void cross_entropy_forward_impl(T* losses, T* lse, const T* logits, const int32_t* targets, int64_t T_,
                                int64_t V) {
#pragma omp parallel for schedule(static) if (T_ > 1 && detail::worth_parallel(T_ * V))
  for (int64_t t = 0; t < T_; ++t) {
    const T* x = logits + t * V;
    const T l = row_logsumexp(x, V, t + 1 < T_);
    lse[t] = l;
    const int32_t y = targets[t];
    MARIANA_CHECK(y < V);
    losses[t] = y < 0 ? T(0) : l - x[y];
  }
}

template <typename T>
void cross_entropy_backward_impl(T* dlogits, const T* dloss, const T* logits, const T* lse,
                                 const int32_t* targets, int64_t T_, int64_t V) {
#pragma omp parallel for schedule(static) if (T_ > 1 && detail::worth_parallel(T_ * V))
  for (int64_t t = 0; t < T_; ++t) {
    const int32_t y = targets[t];
    if (y < 0) continue;  // ignored row: gradient 0
    MARIANA_CHECK(y < V);
    T* d = dlogits + t * V;
    const T g = dloss[t];
    detail::exp_shift_axpy(d, logits + t * V, V, lse[t], g);
    d[y] -= g;
  }
}

}  // namespace

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, int64_t T,
                           int64_t V) {
  cross_entropy_forward_impl(losses, lse, logits, targets, T, V);
}
void cross_entropy_forward(double* losses, double* lse, const double* logits, const int32_t* targets,
                           int64_t T, int64_t V) {
  cross_entropy_forward_impl(losses, lse, logits, targets, T, V);
}

void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const float* lse,
                            const int32_t* targets, int64_t T, int64_t V) {
  cross_entropy_backward_impl(dlogits, dloss, logits, lse, targets, T, V);
}
void cross_entropy_backward(double* dlogits, const double* dloss, const double* logits, const double* lse,
                            const int32_t* targets, int64_t T, int64_t V) {
  cross_entropy_backward_impl(dlogits, dloss, logits, lse, targets, T, V);
}

}  // namespace mariana::cpu
