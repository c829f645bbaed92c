// CPU rotary embeddings (docs/numerics.md#rope-and-yarn): the YaRN-blended inverse frequencies and
// the in-place rotation of interleaved pairs, and the in-place scaling of the RoPE part by YaRN's
// mscale. Angles pos·inv_freq and their cos/sin are computed in
// double for both element types (positions reach 1e5, where a float angle would be off by ~1e-2 rad).
#include <cmath>
#include <numbers>

#include "kernels/cpu/cpu_util.h"
#include "kernels/ops.h"

namespace mariana::cpu {
namespace {

template <typename T>
void rope_inv_freq_impl(T* inv_freq, const RopeParams& p) {
  MARIANA_CHECK(p.rope_dim > 0 && p.rope_dim % 2 == 0);
  const int half = p.rope_dim / 2;
  const double dim = p.rope_dim;
  // YaRN (DeepSeek's precompute_freqs_cis): dims below `low` keep their frequency, dims above
  // `high` are divided by `factor`, a linear ramp in between.
  double low = 0, high = 0;
  if (p.factor > 1.0) {
    const auto corr = [&](double rotations) {
      return dim * std::log(p.original_max_position / (rotations * 2 * std::numbers::pi)) /
             (2 * std::log(p.theta));
    };
    low = std::max(std::floor(corr(p.beta_fast)), 0.0);
    high = std::min(std::ceil(corr(p.beta_slow)), dim - 1);
    if (low == high) high += 0.001;
  }
  for (int j = 0; j < half; ++j) {
    double f = 1.0 / std::pow(p.theta, 2.0 * j / dim);
    if (p.factor > 1.0) {
      const double ramp = std::clamp((j - low) / (high - low), 0.0, 1.0);  // = 1 − smooth
      f = f / p.factor * ramp + f * (1.0 - ramp);
    }
    inv_freq[j] = T(f);
  }
}

// Rotates every (t, h) pair j by sign·pos[t]·inv_freq[j].
template <typename T>
void rope_rotate(T* x, const int32_t* pos, const T* inv_freq, int64_t T_, int64_t H, int64_t rope_dim,
                 int64_t token_stride, int64_t head_stride, double sign) {
  MARIANA_CHECK(rope_dim % 2 == 0);
  const int64_t half = rope_dim / 2;
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * H * rope_dim * 4))
  for (int64_t t = 0; t < T_; ++t) {
    T* xt = x + t * token_stride;
    for (int64_t j = 0; j < half; ++j) {
      const double angle = sign * double(pos[t]) * double(inv_freq[j]);
      const T c = T(std::cos(angle)), s = T(std::sin(angle));
      for (int64_t h = 0; h < H; ++h) {
        T* p = xt + h * head_stride + 2 * j;
        const T a = p[0], b = p[1];
        p[0] = a * c - b * s;
        p[1] = a * s + b * c;
      }
    }
  }
}

template <typename T>
void rope_scale_impl(T* x, int64_t T_, int64_t H, int64_t rope_dim, int64_t token_stride, int64_t head_stride,
                     T scale) {
  if (scale == T(1)) return;
#pragma omp parallel for schedule(static) if (detail::worth_parallel(T_ * H * rope_dim))
  for (int64_t t = 0; t < T_; ++t)
    for (int64_t h = 0; h < H; ++h) {
      T* p = x + t * token_stride + h * head_stride;
      for (int64_t i = 0; i < rope_dim; ++i) p[i] *= scale;
    }
}

}  // namespace

void rope_inv_freq(float* inv_freq, const RopeParams& p) { rope_inv_freq_impl(inv_freq, p); }
void rope_inv_freq(double* inv_freq, const RopeParams& p) { rope_inv_freq_impl(inv_freq, p); }

void rope_forward(float* x, const int32_t* pos, const float* inv_freq, int64_t T, int64_t H,
                  int64_t rope_dim, int64_t token_stride, int64_t head_stride) {
  rope_rotate(x, pos, inv_freq, T, H, rope_dim, token_stride, head_stride, 1.0);
}
void rope_forward(double* x, const int32_t* pos, const double* inv_freq, int64_t T, int64_t H,
                  int64_t rope_dim, int64_t token_stride, int64_t head_stride) {
  rope_rotate(x, pos, inv_freq, T, H, rope_dim, token_stride, head_stride, 1.0);
}

// The rotation is orthogonal, so its gradient is the inverse rotation (by −angle), in place.
void rope_backward(float* dx, const int32_t* pos, const float* inv_freq, int64_t T, int64_t H,
                   int64_t rope_dim, int64_t token_stride, int64_t head_stride) {
  rope_rotate(dx, pos, inv_freq, T, H, rope_dim, token_stride, head_stride, -1.0);
}
void rope_backward(double* dx, const int32_t* pos, const double* inv_freq, int64_t T, int64_t H,
                   int64_t rope_dim, int64_t token_stride, int64_t head_stride) {
  rope_rotate(dx, pos, inv_freq, T, H, rope_dim, token_stride, head_stride, -1.0);
}

void rope_scale(float* x, int64_t T, int64_t H, int64_t rope_dim, int64_t token_stride, int64_t head_stride,
                float scale) {
  rope_scale_impl(x, T, H, rope_dim, token_stride, head_stride, scale);
}
void rope_scale(double* x, int64_t T, int64_t H, int64_t rope_dim, int64_t token_stride, int64_t head_stride,
                double scale) {
  rope_scale_impl(x, T, H, rope_dim, token_stride, head_stride, scale);
}

}  // namespace mariana::cpu
