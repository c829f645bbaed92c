// CPU emulation of DeepSeek-V3's fine-grained FP8 (docs/numerics.md#fp8-emulation): quantise each
// 1×128 activation tile or 128×128 weight block to e4m3 with its own scale and dequantise again, so
// a float model sees exactly the values an FP8 GEMM would. Edge tiles cover the remaining
// columns/rows (as if zero-padded, which leaves amax unchanged). The e4m3 rounding is
// detail::e4m3_round (cpu_util.h).
#include <cmath>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

template <typename T>
void fp8_quant_dequant_tile_impl(T* out, T* scales, const T* x, int64_t rows, int64_t cols, bool pow2) {
  const int64_t n_tiles = (cols + kFp8TileSize - 1) / kFp8TileSize;
#pragma omp parallel for schedule(static) if (detail::worth_parallel(rows * cols * 4))
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t c0 = tile * kFp8TileSize, c1 = std::min(cols, c0 + kFp8TileSize);
      const T* xi = x + r * cols;
      T* yi = out + r * cols;
      T amax = 0;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(xi[c]));
      const T s = detail::fp8_scale(amax, pow2);
      scales[r * n_tiles + tile] = s;
      for (int64_t c = c0; c < c1; ++c) yi[c] = detail::e4m3_round(xi[c] / s) * s;
    }
  }
}

template <typename T>
void fp8_quant_dequant_block_impl(T* out, T* scales, const T* w, int64_t rows, int64_t cols, bool pow2) {
  const int64_t n_br = (rows + kFp8TileSize - 1) / kFp8TileSize;
  const int64_t n_bc = (cols + kFp8TileSize - 1) / kFp8TileSize;
#pragma omp parallel for schedule(static) collapse(2) if (detail::worth_parallel(rows * cols * 4))
  for (int64_t br = 0; br < n_br; ++br) {
    for (int64_t bc = 0; bc < n_bc; ++bc) {
      const int64_t r0 = br * kFp8TileSize, r1 = std::min(rows, r0 + kFp8TileSize);
      const int64_t c0 = bc * kFp8TileSize, c1 = std::min(cols, c0 + kFp8TileSize);
      T amax = 0;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      const T s = detail::fp8_scale(amax, pow2);
      scales[br * n_bc + bc] = s;
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t c = c0; c < c1; ++c) out[r * cols + c] = detail::e4m3_round(w[r * cols + c] / s) * s;
    }
  }
}

}  // namespace

void fp8_quant_dequant_tile(float* out, float* scales, const float* x, int64_t rows, int64_t cols,
                            bool pow2_scales) {
  fp8_quant_dequant_tile_impl(out, scales, x, rows, cols, pow2_scales);
}
void fp8_quant_dequant_tile(double* out, double* scales, const double* x, int64_t rows, int64_t cols,
                            bool pow2_scales) {
  fp8_quant_dequant_tile_impl(out, scales, x, rows, cols, pow2_scales);
}

void fp8_quant_dequant_block(float* out, float* scales, const float* w, int64_t rows, int64_t cols,
                             bool pow2_scales) {
  fp8_quant_dequant_block_impl(out, scales, w, rows, cols, pow2_scales);
}
void fp8_quant_dequant_block(double* out, double* scales, const double* w, int64_t rows, int64_t cols,
                             bool pow2_scales) {
  fp8_quant_dequant_block_impl(out, scales, w, rows, cols, pow2_scales);
}

}  // namespace mariana::cpu
