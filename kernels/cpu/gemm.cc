// CPU GEMM and linear layers: thin row-major wrappers over OpenBLAS (cblas_sgemm/dgemm), plus the
// backend's thread-count controls. OpenBLAS threads the large products itself.
#include <omp.h>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

template <typename T>
void linear_forward_impl(T* y, const T* x, const T* W, int64_t T_, int64_t in, int64_t out) {
  // y[T,out] = x[T,in] · W[out,in]ᵀ
  detail::blas_gemm<T>(false, true, T_, out, in, T(1), x, in, W, in, T(0), y, out);
}

template <typename T>
void linear_backward_impl(T* dx, T* dW, const T* dy, const T* x, const T* W, int64_t T_, int64_t in,
                          int64_t out) {
  // dx[T,in] += dy[T,out] · W[out,in]
  if (dx) detail::blas_gemm<T>(false, false, T_, in, out, T(1), dy, out, W, in, T(1), dx, in);
  // dW[out,in] += dy[T,out]ᵀ · x[T,in]
  if (dW) detail::blas_gemm<T>(true, false, out, in, T_, T(1), dy, out, x, in, T(1), dW, in);
}

// The thread count the process started with, captured before set_num_threads first changes it.
int default_threads() {
  static const int n = omp_get_max_threads();
  return n;
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  detail::blas_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
          int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  detail::blas_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void linear_forward(float* y, const float* x, const float* W, int64_t T, int64_t in, int64_t out) {
  linear_forward_impl(y, x, W, T, in, out);
}
void linear_forward(double* y, const double* x, const double* W, int64_t T, int64_t in, int64_t out) {
  linear_forward_impl(y, x, W, T, in, out);
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int64_t T,
                     int64_t in, int64_t out) {
  linear_backward_impl(dx, dW, dy, x, W, T, in, out);
}
void linear_backward(double* dx, double* dW, const double* dy, const double* x, const double* W,
                     int64_t T, int64_t in, int64_t out) {
  linear_backward_impl(dx, dW, dy, x, W, T, in, out);
}

void set_num_threads(int n) {
  const int d = default_threads();
  const int k = n > 0 ? n : d;
  omp_set_num_threads(k);
  openblas_set_num_threads(k);
}

int num_threads() {
  default_threads();
  return omp_get_max_threads();
}

}  // namespace mariana::cpu
