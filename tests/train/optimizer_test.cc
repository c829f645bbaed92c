// AdamW against a hand computation, clipping, the decay mask, and the bias update driving
// MaxVio_batch down on a skewed router.
#include <gtest/gtest.h>

#include <cmath>

#include "core/philox.h"
#include "kernels/ops.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace mariana {
namespace {

ModelConfig tiny() {
  return model_config_load(std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json").value();
}

TEST(AdamW, TwoStepsMatchAHandComputation) {
  const ModelConfig c = tiny();
  const ParamTable t(c);
  std::vector<float> p(t.arena_size(), 0.5f), g(t.arena_size(), 0.0f);
  const ParamSpec& w = t.at("lm_head.weight");
  const ParamSpec& n = t.at("model.norm.weight");
  const ParamSpec& b = t.at("model.layers.1.mlp.gate.e_score_correction_bias");
  AdamWConfig cfg;
  AdamW opt(t, cfg);
  double m = 0, v = 0, x = 0.5, xn = 0.5;
  const double lr = 0.01;
  for (int step = 1; step <= 2; ++step) {
    const double grad = step == 1 ? 0.2 : -0.1;
    g[w.offset] = static_cast<float>(grad);
    g[n.offset] = static_cast<float>(grad);
    g[b.offset] = 1.0f;  // must be ignored
    opt.step(p.data(), g.data(), lr);
    m = 0.9 * m + 0.1 * grad;
    v = 0.95 * v + 0.05 * grad * grad;
    const double mh = m / (1 - std::pow(0.9, step)), vh = v / (1 - std::pow(0.95, step));
    x = x * (1 - lr * 0.1) - lr * mh / (std::sqrt(vh) + 1e-8);
    xn = xn - lr * mh / (std::sqrt(vh) + 1e-8);
  }
  // fp32 arithmetic on O(1) values: 1e-6 absolute covers its rounding.
  EXPECT_NEAR(p[w.offset], x, 1e-6);   // decayed matrix
  EXPECT_NEAR(p[n.offset], xn, 1e-6);  // norm: no weight decay
  EXPECT_EQ(p[b.offset], 0.5f);        // gate bias untouched by the optimizer
}

TEST(ClipGradNorm, ScalesToMaxNormAndSkipsTheBias) {
  const ParamTable t(tiny());
  std::vector<float> g(t.arena_size(), 0.0f);
  g[t.at("lm_head.weight").offset] = 3.0f;
  g[t.at("model.norm.weight").offset] = 4.0f;
  g[t.at("model.layers.1.mlp.gate.e_score_correction_bias").offset] = 100.0f;
  EXPECT_DOUBLE_EQ(clip_grad_norm(g.data(), t, 1.0), 5.0);
  EXPECT_FLOAT_EQ(g[t.at("lm_head.weight").offset], 0.6f);
  EXPECT_FLOAT_EQ(g[t.at("model.norm.weight").offset], 0.8f);
  // Below max_norm: unchanged (the norm of the fp32 values 0.6, 0.8 is 1 within fp32 rounding).
  EXPECT_NEAR(clip_grad_norm(g.data(), t, 10.0), 1.0, 1e-6);
  EXPECT_FLOAT_EQ(g[t.at("lm_head.weight").offset], 0.6f);
}

// The global norm is bitwise the same on 1, 2 and 3 threads (lm_head alone is long enough for
// the parallel path), so clipping scales every gradient identically on any machine.
TEST(ClipGradNorm, BitwiseOnOneTwoThreeThreads) {
  const ParamTable t(tiny());
  std::vector<float> g0(t.arena_size());
  philox_fill_normal(g0.data(), t.arena_size(), 5, 0, 0.0f, 1.0f);
  std::vector<float> want;
  double want_norm = 0;
  for (int threads : {1, 2, 3}) {
    cpu::set_num_threads(threads);
    std::vector<float> g = g0;
    const double norm = clip_grad_norm(g.data(), t, 1.0);
    if (threads == 1) {
      want = g;
      want_norm = norm;
      continue;
    }
    EXPECT_EQ(norm, want_norm) << threads << " threads";
    EXPECT_TRUE(g == want) << "clipped gradients on " << threads << " threads";
  }
  cpu::set_num_threads(0);
}

TEST(BiasUpdate, SignRule) {
  std::vector<float> bias = {0, 0, 0, 0};
  bias_update(bias.data(), {10, 2, 2, 2}, 0.01);  // mean 4
  EXPECT_FLOAT_EQ(bias[0], -0.01f);
  EXPECT_FLOAT_EQ(bias[1], 0.01f);
  EXPECT_DOUBLE_EQ(max_violation({10, 2, 2, 2}), 1.5);
  EXPECT_DOUBLE_EQ(max_violation({4, 4, 4, 4}), 0.0);
}

TEST(BiasUpdate, DrivesMaxVioDownOnASkewedRouter) {
  // A toy router: tokens x ~ N(μ, 1) in 16 dims, gate rows random except experts 0 and 1, which
  // point along μ — so they win most top-k selections. Each step routes a fresh batch through the
  // real gate kernel (sigmoid, groups, top-k with the bias) and applies the bias update.
  const int64_t T = 512, C = 16, E = 8, K = 2;
  std::vector<float> W(E * C), mu(C), x(T * C), logits(T * E), scores(T * E), weights(T * K);
  std::vector<int32_t> idx(T * K), counts(E), offsets(E + 1), row_of(T * K);
  std::vector<float> bias(E, 0.0f);
  philox_fill_normal(W.data(), E * C, 1, 0, 0.0f, 0.3f);
  philox_fill_normal(mu.data(), C, 1, 1, 0.0f, 1.0f);
  for (int64_t e = 0; e < 2; ++e)
    for (int64_t i = 0; i < C; ++i) W[e * C + i] += 0.6f * mu[i];
  auto route = [&](uint64_t step) {
    philox_fill_normal(x.data(), T * C, 2, step, 0.0f, 1.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < C; ++i) x[t * C + i] += mu[i];
    cpu::linear_forward(logits.data(), x.data(), W.data(), T, C, E);
    cpu::moe_gate_forward(weights.data(), idx.data(), scores.data(), logits.data(), bias.data(), T, E, K, 4, 2,
                          2.5f, true);
    cpu::moe_plan(counts.data(), offsets.data(), row_of.data(), idx.data(), T, E, K);
    return std::vector<int32_t>(counts.begin(), counts.end());
  };
  const double before = max_violation(route(0));
  double late = 0;
  for (uint64_t step = 1; step <= 400; ++step) {
    const std::vector<int32_t> c = route(step);
    if (step > 300) late += max_violation(c) / 100.0;  // mean over the last 100 steps
    bias_update(bias.data(), c, 0.01);
  }
  EXPECT_GT(before, 1.5);          // skewed: the busiest expert carries > 2.5× the mean load
  EXPECT_LT(late, 0.25 * before);  // balanced by the bias alone, without any gradient
}

}  // namespace
}  // namespace mariana
