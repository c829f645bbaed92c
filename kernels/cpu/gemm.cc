// CPU GEMM and linear layers: thin row-major wrappers over OpenBLAS (cblas_sgemm/dgemm), plus the
// backend's thread-count controls. OpenBLAS threads the large products itself.
#include <omp.h>

#include <algorithm>

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

// ---- skinny_gemm_nt (cpu_util.h) ----
// Rows [j0, j1) of C for M rows of A, R rows of B per pass (M·R accumulators in registers).
template <int M, int R>
void skinny_block(int64_t j0, int64_t j1, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                  int64_t ldb, float beta, float* C, int64_t ldc) {
  auto finish = [&](float s, int64_t i, int64_t j, int64_t k_done) {
    for (int64_t k = k_done; k < K; ++k) s += A[i * lda + k] * B[j * ldb + k];
    float& c = C[i * ldc + j];
    c = beta == 0.f ? alpha * s : alpha * s + beta * c;
  };
  int64_t j = j0;
#ifdef MARIANA_CPU_AVX2
  auto pass = [&]<int RR>(int64_t jj) {
    __m256 acc[M][RR];
    for (int i = 0; i < M; ++i)
      for (int r = 0; r < RR; ++r) acc[i][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      __m256 w[RR];
      for (int r = 0; r < RR; ++r) w[r] = _mm256_loadu_ps(B + (jj + r) * ldb + k);
      for (int i = 0; i < M; ++i) {
        const __m256 a = _mm256_loadu_ps(A + i * lda + k);
        for (int r = 0; r < RR; ++r) acc[i][r] = _mm256_fmadd_ps(a, w[r], acc[i][r]);
      }
    }
    for (int i = 0; i < M; ++i)
      for (int r = 0; r < RR; ++r) {
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc[i][r]), _mm256_extractf128_ps(acc[i][r], 1));
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        h = _mm_add_ss(h, _mm_movehdup_ps(h));
        finish(_mm_cvtss_f32(h), i, jj + r, k);
      }
  };
  for (; j + R <= j1; j += R) pass.template operator()<R>(j);
  for (; j < j1; ++j) pass.template operator()<1>(j);
#else
  for (; j < j1; ++j)
    for (int i = 0; i < M; ++i) finish(0.f, i, j, 0);
#endif
}

template <int M>
void skinny_rows(int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
                 float beta, float* C, int64_t ldc) {
  constexpr int R = 4;  // M·R accumulators, M rows of A and R of B: at most 14 of the 16 ymm registers
  constexpr int64_t kChunk = 64;     // rows of B per OpenMP task
  const int64_t chunks = (N + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && detail::worth_parallel(8 * M * N * K) && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c)
    skinny_block<M, R>(c * kChunk, std::min(N, (c + 1) * kChunk), K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// C[i, j0:j1) for i < M: one accumulator per entry over k in order (acc += A[i,k]·B[k,j0:j1)).
void skinny_nn_chunk(int64_t M, int64_t j0, int64_t j1, int64_t K, float alpha, const float* A, int64_t lda,
                     const float* B, int64_t ldb, float beta, float* C, int64_t ldc, float* acc) {
  const int64_t n = j1 - j0;
  for (int64_t i = 0; i < M; ++i) {
    std::fill(acc, acc + n, 0.f);
    for (int64_t k = 0; k < K; ++k) {
      const float a = A[i * lda + k];
      const float* b = B + k * ldb + j0;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) acc[j] += a * b[j];
    }
    float* c = C + i * ldc + j0;
    for (int64_t j = 0; j < n; ++j) c[j] = beta == 0.f ? alpha * acc[j] : alpha * acc[j] + beta * c[j];
  }
}

// The thread count the process started with, captured before set_num_threads first changes it.
int default_threads() {
  static const int n = omp_get_max_threads();
  return n;
}

}  // namespace

namespace detail {
void skinny_gemm_nt(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float beta, float* C, int64_t ldc) {
  switch (M) {
    case 1: skinny_rows<1>(N, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    case 2: skinny_rows<2>(N, K, alpha, A, lda, B, ldb, beta, C, ldc); break;
    default: MARIANA_CHECK(false && "skinny_gemm_nt: M must be 1 or 2");
  }
}
void skinny_gemm_nn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float beta, float* C, int64_t ldc) {
  MARIANA_CHECK(M >= 1 && M <= kSkinnyMaxRows);
  constexpr int64_t kChunk = 256;  // columns per task: the accumulators stay in L1
  const int64_t chunks = (N + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && detail::worth_parallel(2 * M * N * K) && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    float acc[kChunk];
    skinny_nn_chunk(M, c * kChunk, std::min(N, (c + 1) * kChunk), K, alpha, A, lda, B, ldb, beta, C, ldc, acc);
  }
}
}  // namespace detail

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
