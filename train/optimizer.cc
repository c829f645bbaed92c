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

AdamWStepConstants adamw_step_constants(const AdamWConfig& cfg, int64_t t, double lr) {
  const double bc1 = 1.0 - std::pow(cfg.beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(cfg.beta2, static_cast<double>(t));
  AdamWStepConstants c;
  c.b1 = static_cast<float>(cfg.beta1);
  c.b2 = static_cast<float>(cfg.beta2);
  c.step_size = static_cast<float>(lr / bc1);
  c.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  c.eps = static_cast<float>(cfg.eps);
  c.decay = static_cast<float>(1.0 - lr * cfg.weight_decay);
  return c;
}

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStepConstants& c, bool decay) {
  const float d = decay ? c.decay : 1.0f, b1 = c.b1, b2 = c.b2;
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    const float denom = std::sqrt(v[i]) * c.inv_sqrt_bc2 + c.eps;
    p[i] = p[i] * d - c.step_size * m[i] / denom;
  }
}

void AdamW::step(float* params, const float* grads, double lr) {
  ++t_;
  const AdamWStepConstants c = adamw_step_constants(cfg_, t_, lr);
  for (const Range& r : ranges_) {
    adamw_update(params + r.offset, grads + r.offset, m_.data() + r.offset, v_.data() + r.offset, r.n, c, r.decay);
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
  if (max_norm > 0 && norm > max_norm) scale_grads(grads, table, static_cast<float>(max_norm / norm));
  return norm;
}

void scale_grads(float* grads, const ParamTable& table, float scale) {
  for (const ParamSpec& s : table.specs()) {
    if (s.kind == ParamKind::kGateBias) continue;
    float* g = grads + s.offset;
    const int64_t n = s.numel();
#pragma omp parallel for schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) g[i] *= scale;
  }
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
