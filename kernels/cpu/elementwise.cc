// CPU elementwise adds and strided copies: residual adds, gradient fan-in, and moving a block of
// columns between row-major matrices (concatenations and column slices). Each element is written
// once, so the result does not depend on the thread count.
#include <cstring>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

template <typename T>
void add_inplace_impl(T* y, const T* x, int64_t N) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(N))
  for (int64_t i = 0; i < N; ++i) y[i] += x[i];
}

template <typename T>
void add_impl(T* out, const T* a, const T* b, int64_t N) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(N))
  for (int64_t i = 0; i < N; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void copy_strided_impl(T* dst, const T* src, int64_t rows, int64_t cols, int64_t dst_stride, int64_t src_stride) {
#pragma omp parallel for schedule(static) if (detail::worth_parallel(rows * cols))
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + r * dst_stride, src + r * src_stride, static_cast<size_t>(cols) * sizeof(T));
}

}  // namespace

void add_inplace(float* y, const float* x, int64_t N) { add_inplace_impl(y, x, N); }
void add_inplace(double* y, const double* x, int64_t N) { add_inplace_impl(y, x, N); }

void add(float* out, const float* a, const float* b, int64_t N) { add_impl(out, a, b, N); }
void add(double* out, const double* a, const double* b, int64_t N) { add_impl(out, a, b, N); }

void copy_strided(float* dst, const float* src, int64_t rows, int64_t cols, int64_t dst_stride, int64_t src_stride) {
  copy_strided_impl(dst, src, rows, cols, dst_stride, src_stride);
}
void copy_strided(double* dst, const double* src, int64_t rows, int64_t cols, int64_t dst_stride,
                  int64_t src_stride) {
  copy_strided_impl(dst, src, rows, cols, dst_stride, src_stride);
}

}  // namespace mariana::cpu
