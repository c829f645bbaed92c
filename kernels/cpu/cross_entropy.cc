// CPU softmax cross-entropy over the vocabulary, parallel over tokens. Stable: the log-sum-exp
// subtracts the row max before exponentiating; the backward recomputes softmax from the saved lse.
#include <cmath>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

template <typename T>
void cross_entropy_forward_impl(T* losses, T* lse, const T* logits, const int32_t* targets, int64_t T_,
                                int64_t V) {
#pragma omp parallel for schedule(static) if (T_ > 1 && detail::worth_parallel(T_ * V))
  for (int64_t t = 0; t < T_; ++t) {
    const T* x = logits + t * V;
    const T m = detail::row_max(x, V);
    const T l = m + std::log(detail::exp_shift_sum(static_cast<T*>(nullptr), x, V, m));
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
