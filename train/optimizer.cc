// AdamW, clipping and the bias update.
#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mariana {

namespace {
// Below this many elements a loop runs on one thread: a parallel region costs more.
constexpr int64_t kParallelMin = 1 << 15;
}  // namespace

AdamW::AdamW(const ParamTable& table, AdamWConfig cfg) : cfg_(cfg) {
  for (const ParamSpec& s : table.specs()) {
    if (s.kind == ParamKind::kGateBias) continue;
    const bool decay = s.kind == ParamKind::kMatrix || s.kind == ParamKind::kEmbedding;
    ranges_.push_back({s.offset, s.numel(), decay});
  }
  m_.assign(static_cast<size_t>(table.arena_size()), 0.0f);
  v_.assign(static_cast<size_t>(table.arena_size()), 0.0f);
}

void AdamW::step(float* params, const float* grads, double lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(t_));
  const float b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
  const float step_size = static_cast<float>(lr / bc1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float eps = static_cast<float>(cfg_.eps);
  for (const Range& r : ranges_) {
    const float decay = r.decay ? static_cast<float>(1.0 - lr * cfg_.weight_decay) : 1.0f;
    float* p = params + r.offset;
    const float* g = grads + r.offset;
    float* m = m_.data() + r.offset;
    float* v = v_.data() + r.offset;
#pragma omp parallel for schedule(static) if (r.n > kParallelMin)
    for (int64_t i = 0; i < r.n; ++i) {
      m[i] = b1 * m[i] + (1.0f - b1) * g[i];
      v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
      const float denom = std::sqrt(v[i]) * inv_sqrt_bc2 + eps;
      p[i] = p[i] * decay - step_size * m[i] / denom;
    }
  }
}

double clip_grad_norm(float* grads, const ParamTable& table, double max_norm) {
  // Σ g² over fixed blocks of kNormBlock elements, the blocks' sums added in order: the same
  // rounding on any thread count (an OpenMP reduction would add per-thread partials).
  constexpr int64_t kNormBlock = 1 << 14;
  std::vector<double> block_sq;
  double sq = 0;
  for (const ParamSpec& s : table.specs()) {
    if (s.kind == ParamKind::kGateBias) continue;
    const float* g = grads + s.offset;
    const int64_t n = s.numel(), n_blocks = (n + kNormBlock - 1) / kNormBlock;
    block_sq.assign(static_cast<size_t>(n_blocks), 0.0);
#pragma omp parallel for schedule(static) if (n > kParallelMin)
    for (int64_t b = 0; b < n_blocks; ++b) {
      double part = 0;
      for (int64_t i = b * kNormBlock; i < std::min(n, (b + 1) * kNormBlock); ++i)
        part += static_cast<double>(g[i]) * g[i];
      block_sq[static_cast<size_t>(b)] = part;
    }
    for (double part : block_sq) sq += part;
  }
  const double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / norm);
    for (const ParamSpec& s : table.specs()) {
      if (s.kind == ParamKind::kGateBias) continue;
      float* g = grads + s.offset;
      const int64_t n = s.numel();
#pragma omp parallel for schedule(static) if (n > kParallelMin)
      for (int64_t i = 0; i < n; ++i) g[i] *= scale;
    }
  }
  return norm;
}

void bias_update(float* bias, const std::vector<int32_t>& counts, double gamma) {
  if (counts.empty() || gamma == 0.0) return;
  double mean = 0;
  for (int32_t c : counts) mean += c;
  mean /= static_cast<double>(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = mean - counts[i];
    const double s = e > 0 ? 1.0 : (e < 0 ? -1.0 : 0.0);
    bias[i] += static_cast<float>(gamma * s);
  }
}

double max_violation(const std::vector<int32_t>& counts) {
  if (counts.empty()) return 0;
  double mean = 0;
  int32_t mx = 0;
  for (int32_t c : counts) {
    mean += c;
    mx = std::max(mx, c);
  }
  mean /= static_cast<double>(counts.size());
  return mean > 0 ? mx / mean - 1.0 : 0.0;
}

}  // namespace mariana
