// GEMM and the linear layer on cuBLAS: row-major ops of kernels/ops_list.inc mapped onto
// column-major cuBLAS. Not here: FP8 / block-scaled matmuls (those will want cuBLASLt).
//
// Why cublasSgemm_64 and not cublasLtMatmul: for plain fp32 GEMM the classic API picks its own
// algorithm per shape, needs no descriptor/layout/preference objects or heuristic query per
// call, takes 64-bit sizes, and manages its own workspace per handle. cuBLASLt earns its keep
// with epilogue fusion and FP8 block scaling; it comes in when those ops do. The handle is
// created lazily once per (thread, device) (context.h) with CUBLAS_DEFAULT_MATH, so the math is
// true fp32 (no TF32), which is what the CPU oracle computes.
#include <cstdint>

// nvcc's front end warns (#2810-D) on status.h's assignment of a [[nodiscard]] Status; g++
// does not, and only MARIANA_CHECK is used here.
#pragma nv_diag_suppress 2810
#include "core/status.h"
#pragma nv_diag_default 2810
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/ops.h"

namespace mariana::cuda {
namespace kernels {

// C[M,N] (row stride ldc) = beta · C, with beta == 0 writing exact zeros (C is not read, so
// NaNs in it do not propagate: BLAS semantics). Used when K == 0 or alpha == 0, where cuBLAS's
// handling is not documented.
__global__ void gemm_scale_c(float* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  const int64_t total = M * N;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / N;
    const int64_t j = idx - i * N;
    float* c = C + i * ldc + j;
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

}  // namespace kernels

namespace {

void gemm_scale_c(float* C, int64_t M, int64_t N, int64_t ldc, float beta) {
  if (beta == 1.0f) return;
  constexpr int kThreads = 256;
  const int64_t blocks = (M * N + kThreads - 1) / kThreads;
  const int grid = static_cast<int>(blocks < 65536 ? blocks : 65536);
  kernels::gemm_scale_c<<<grid, kThreads>>>(C, M, N, ldc, beta);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

// Row-major C[M,N] = alpha·op(A)·op(B) + beta·C. A row-major matrix with row stride ld is the
// column-major matrix of its transpose with leading dimension ld, so cuBLAS sees
//   Cᵀ[N,M] = alpha · op(B)ᵀ · op(A)ᵀ + beta · Cᵀ
// i.e. the operands swap places and each keeps its own transpose flag:
//   cublas(op = trans_b, op = trans_a, m = N, n = M, k = K, B, ldb, A, lda, C, ldc).
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
          const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
          int64_t ldc) {
  MARIANA_CHECK(M >= 0 && N >= 0 && K >= 0);
  MARIANA_CHECK(lda >= (trans_a ? M : K) && lda >= 1);
  MARIANA_CHECK(ldb >= (trans_b ? K : N) && ldb >= 1);
  MARIANA_CHECK(ldc >= N && ldc >= 1);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == 0.0f) {
    gemm_scale_c(C, M, N, ldc, beta);
    return;
  }
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasSgemm_64(cublas_handle(), op_b, op_a, N, M, K, &alpha, B, ldb, A, lda, &beta,
                              C, ldc));
}

// y[T,out] = x[T,in] · W[out,in]ᵀ
void linear_forward(float* y, const float* x, const float* W, int64_t T, int64_t in,
                    int64_t out) {
  gemm(false, true, T, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
}

// dx[T,in] += dy[T,out] · W[out,in];  dW[out,in] += dy[T,out]ᵀ · x[T,in]
void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W,
                     int64_t T, int64_t in, int64_t out) {
  if (dx != nullptr) gemm(false, false, T, in, out, 1.0f, dy, out, W, in, 1.0f, dx, in);
  if (dW != nullptr) gemm(true, false, out, in, T, 1.0f, dy, out, x, in, 1.0f, dW, in);
}

}  // namespace mariana::cuda
