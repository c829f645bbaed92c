// Hand-computed and closed-form cases for the CPU ops: values a reader can check on paper, the
// gate test vector of DeepSeek's Gate.forward (docs/numerics.md#deepseekmoe-routing), YaRN's inv_freq for the 671B config, attention against a naive
// masked softmax and against separate documents, and the FP8 emulation's e4m3 rounding.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <numeric>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace mariana {
namespace {

using namespace kernel_test;

// ---- RMSNorm ---------------------------------------------------------------------------------

TEST(CpuRmsnorm, KnownVector) {
  // mean(x²) = (1 + 4 + 9 + 16)/4 = 7.5, so rstd = 1/sqrt(7.5 + eps).
  const Vec x = {1, 2, 3, 4}, w = {1, 0.5, 2, -1};
  const double eps = 1e-6, r = 1 / std::sqrt(7.5 + eps);
  Vec y(4), rstd(1);
  cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), 1, 4, eps);
  EXPECT_NEAR(rstd[0], r, 1e-15);
  EXPECT_NEAR(r, 0.36514835, 1e-8);  // the number on paper
  const Vec want = {r, r, 6 * r, -4 * r};
  expect_close("rmsnorm out", y, want, 1e-15, 0);  // fp64: a few roundings

  std::vector<float> xf = {1, 2, 3, 4}, wf = {1, 0.5f, 2, -1}, yf(4), rf(1);
  cpu::rmsnorm_forward(yf.data(), rf.data(), xf.data(), wf.data(), 1, 4, float(eps));
  expect_close("rmsnorm out (float)", yf, want, 1e-6, 0);  // fp32: a few roundings of 6e-8
}

// ---- RoPE ------------------------------------------------------------------------------------

TEST(CpuRope, PlainRotationByKnownAngles) {
  RopeParams p;
  p.rope_dim = 4;
  p.theta = 100.0;
  Vec inv(2);
  cpu::rope_inv_freq(inv.data(), p);
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_DOUBLE_EQ(inv[1], 0.1);  // 100^(-2/4)

  // Token 0 at position 0 is unchanged; token 1 at position 3 rotates pair 0 by 3 rad and pair 1
  // by 0.3 rad: (1, 0) → (cos 3, sin 3), (0, 1) → (−sin 0.3, cos 0.3).
  const std::vector<int32_t> pos = {0, 3};
  Vec x = {1, 2, 3, 4, 1, 0, 0, 1};
  const Vec x0 = x;
  cpu::rope_forward(x.data(), pos.data(), inv.data(), 2, 1, 4, 4, 4);
  const Vec want = {1, 2, 3, 4, std::cos(3.0), std::sin(3.0), -std::sin(0.3), std::cos(0.3)};
  expect_close("rope forward", x, want, 0, 1e-15);
  // The backward is the inverse rotation: it brings the values back.
  cpu::rope_backward(x.data(), pos.data(), inv.data(), 2, 1, 4, 4, 4);
  expect_close("rope backward(forward(x))", x, x0, 0, 1e-15);
}

TEST(CpuRope, YarnInvFreq671B) {
  // DeepSeek-V3: rope_dim 64, theta 1e4, factor 40, original 4096, beta 32/1. Closed form:
  // corr(β) = 64·ln(4096/(2πβ)) / (2 ln 1e4) = 10.47 (β = 32) and 22.51 (β = 1), so low = 10,
  // high = 23, and inv_freq_j = f_j·(1 − ramp_j) + f_j/40·ramp_j with ramp_j = clamp((j−10)/13, 0, 1).
  const auto corr = [](double beta) {
    return 64 * std::log(4096 / (2 * std::numbers::pi * beta)) / (2 * std::log(1e4));
  };
  EXPECT_NEAR(corr(32), 10.47, 0.01);
  EXPECT_NEAR(corr(1), 22.51, 0.01);
  RopeParams p;
  p.rope_dim = 64;
  p.theta = 1e4;
  p.factor = 40;
  p.original_max_position = 4096;
  p.beta_fast = 32;
  p.beta_slow = 1;
  Vec inv(32);
  cpu::rope_inv_freq(inv.data(), p);
  for (int j = 0; j < 32; ++j) {
    const double f = std::pow(1e4, -2.0 * j / 64);
    if (j <= 10) {
      EXPECT_NEAR(inv[j], f, 1e-15 * f) << "j=" << j << " must be unchanged";
    } else if (j >= 23) {
      EXPECT_NEAR(inv[j], f / 40, 1e-15 * f) << "j=" << j << " must be divided by 40";
    }
  }
  // Inside the ramp, exact values: j = 11 (ramp 1/13), 15 (5/13), 22 (12/13).
  for (int j : {11, 15, 22}) {
    const double f = std::pow(1e4, -2.0 * j / 64), ramp = (j - 10) / 13.0;
    EXPECT_NEAR(inv[j], f * (1 - ramp) + f / 40 * ramp, 1e-15 * f) << "j=" << j;
  }
  EXPECT_NEAR(inv[0], 1.0, 0);
  EXPECT_NEAR(inv[31], std::pow(1e4, -62.0 / 64) / 40, 1e-20);

  // factor 1: plain RoPE, no ramp at all.
  p.factor = 1;
  cpu::rope_inv_freq(inv.data(), p);
  for (int j = 0; j < 32; ++j) EXPECT_NEAR(inv[j], std::pow(1e4, -2.0 * j / 64), 1e-16) << j;
}

// ---- Attention -------------------------------------------------------------------------------

// Direct masked softmax attention in fp64, one row at a time.
void naive_attention(Vec& out, Vec& lse, const Vec& q, const Vec& k, const Vec& v, const std::vector<int32_t>& ds,
                     int64_t B, int64_t S, int64_t H, int64_t Dqk, int64_t Dv, double scale) {
  out.assign(B * S * H * Dv, 0.0);
  lse.assign(B * S * H, 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < S; ++i) {
        const int64_t t = b * S + i;
        Vec s;
        for (int64_t j = ds[t]; j <= i; ++j) {
          double d = 0;
          for (int64_t c = 0; c < Dqk; ++c) d += q[(t * H + h) * Dqk + c] * k[((b * S + j) * H + h) * Dqk + c];
          s.push_back(scale * d);
        }
        const double m = *std::max_element(s.begin(), s.end());
        double z = 0;
        for (double x : s) z += std::exp(x - m);
        lse[t * H + h] = m + std::log(z);
        for (int64_t j = ds[t]; j <= i; ++j) {
          const double p = std::exp(s[j - ds[t]] - m) / z;
          for (int64_t c = 0; c < Dv; ++c) out[(t * H + h) * Dv + c] += p * v[((b * S + j) * H + h) * Dv + c];
        }
      }
}

TEST(CpuAttention, MatchesNaiveMaskedSoftmax) {
  const int64_t B = 2, S = 140, H = 2, Dqk = 5, Dv = 3, T = B * S;
  std::vector<int32_t> ds(T);
  for (int64_t i = 0; i < S; ++i) {
    ds[i] = i < 64 ? 0 : (i < 65 ? 64 : 65);  // a 1-token document at 64
    ds[S + i] = i < 77 ? 0 : 77;
  }
  const Vec q = randn(T * H * Dqk, 400), k = randn(T * H * Dqk, 401), v = randn(T * H * Dv, 402);
  Vec out(T * H * Dv), lse(T * H), want_out, want_lse;
  cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), ds.data(), B, S, H, Dqk, Dv, 0.6);
  naive_attention(want_out, want_lse, q, k, v, ds, B, S, H, Dqk, Dv, 0.6);
  // Same math in fp64, different summation order: ~1e-15 relative; 1e-12 leaves room.
  expect_close("attention out vs naive", out, want_out, 0, 1e-12);
  expect_close("attention lse vs naive", lse, want_lse, 0, 1e-12);
}

TEST(CpuAttention, DocumentMaskEqualsSeparateDocuments) {
  // One packed sequence of 11 tokens, documents [0,4) and [4,11), against each document run as its
  // own sequence; forward and backward.
  const int64_t S = 11, H = 2, Dqk = 4, Dv = 3;
  const std::vector<int32_t> packed_ds = {0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4};
  const Vec q = randn(S * H * Dqk, 410), k = randn(S * H * Dqk, 411), v = randn(S * H * Dv, 412);
  const Vec g = randn(S * H * Dv, 413);
  Vec out(S * H * Dv), lse(S * H), dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
  cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), packed_ds.data(), 1, S, H, Dqk, Dv,
                         0.5);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), g.data(), out.data(), lse.data(), q.data(), k.data(),
                          v.data(), packed_ds.data(), 1, S, H, Dqk, Dv, 0.5);
  for (auto [t0, n] : {std::pair<int64_t, int64_t>{0, 4}, {4, 7}}) {
    SCOPED_TRACE(testing::Message() << "document at " << t0);
    const auto slice = [&](const Vec& x, int64_t width) {
      return Vec(x.begin() + t0 * width, x.begin() + (t0 + n) * width);
    };
    const Vec qd = slice(q, H * Dqk), kd = slice(k, H * Dqk), vd = slice(v, H * Dv), gd = slice(g, H * Dv);
    const std::vector<int32_t> ds(n, 0);
    Vec od(n * H * Dv), ld(n * H), dqd(qd.size(), 0.0), dkd(kd.size(), 0.0), dvd(vd.size(), 0.0);
    cpu::attention_forward(od.data(), ld.data(), qd.data(), kd.data(), vd.data(), ds.data(), 1, n, H, Dqk, Dv, 0.5);
    cpu::attention_backward(dqd.data(), dkd.data(), dvd.data(), gd.data(), od.data(), ld.data(), qd.data(),
                            kd.data(), vd.data(), ds.data(), 1, n, H, Dqk, Dv, 0.5);
    // fp64, the same products over the same columns (masked ones contribute exact zeros): only
    // the gemm's internal order may differ, ~1e-16 relative.
    expect_close("out", slice(out, H * Dv), od, 0, 1e-13);
    expect_close("lse", slice(lse, H), ld, 0, 1e-13);
    expect_close("dq", slice(dq, H * Dqk), dqd, 0, 1e-13);
    expect_close("dk", slice(dk, H * Dqk), dkd, 0, 1e-13);
    expect_close("dv", slice(dv, H * Dv), dvd, 0, 1e-13);
  }
}

// ---- MoE gate --------------------------------------------------------------------------------

template <typename T>
void check_gate_test_vector() {
  // Computed with DeepSeek's reference Gate.forward: E=8, 4 groups, keep 2, top-2, sigmoid, route_scale 2.5.
  const std::vector<T> logits = {0.5, -1.0, 2.0, 0.1, -0.3, 1.2, 0.0, 0.8, -0.2, 0.4, -1.5, 1.1, 0.9, -0.7, 0.3, 0.6};
  const std::vector<T> bias = {0, 0.3, -0.5, 0, 0.2, 0, 0.1, -0.1};
  std::vector<T> w(4), scores(16);
  std::vector<int32_t> idx(4);
  cpu::moe_gate_forward(w.data(), idx.data(), scores.data(), logits.data(), bias.data(), 2, 8, 2, 4, 2, T(2.5), true);
  EXPECT_EQ(idx, (std::vector<int32_t>{5, 4, 4, 1}));
  const double want[4] = {1.609028, 0.890972, 1.357150, 1.142850};
  // The notes print 6 decimals: the true values are within 5e-7 of them (plus float's ~1e-7).
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(double(w[i]), want[i], 6e-7) << i;
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(double(scores[i]), 1 / (1 + std::exp(-double(logits[i]))), 1e-7) << i;
}

TEST(CpuMoeGate, NotesTestVector) {
  check_gate_test_vector<double>();
  check_gate_test_vector<float>();
}

TEST(CpuMoeGate, GroupScoreIsTop2SumWithBiasAndMaxWithout) {
  // Two groups of two experts, keep one group, pick one expert. Group 0: σ(3), σ(−3) = 0.953,
  // 0.047 (max 0.953, top-2 sum 1.0); group 1: σ(2) twice = 0.881 each (max 0.881, sum 1.762).
  const Vec logits = {3, -3, 2, 2}, zero_bias = {0, 0, 0, 0};
  Vec w(1), s(4);
  std::vector<int32_t> idx(1);
  cpu::moe_gate_forward(w.data(), idx.data(), s.data(), logits.data(), zero_bias.data(), 1, 4, 1, 2, 1, 1.0, true);
  EXPECT_EQ(idx[0], 2) << "with a bias, group 1 wins on its top-2 sum";
  EXPECT_DOUBLE_EQ(w[0], 1.0);
  cpu::moe_gate_forward(w.data(), idx.data(), s.data(), logits.data(), nullptr, 1, 4, 1, 2, 1, 1.0, true);
  EXPECT_EQ(idx[0], 0) << "without a bias, the reference ranks groups by their max";
}

TEST(CpuMoeGate, TiesGoToLowerIndexAndUnnormalisedWeights) {
  const Vec logits = {0, 1, 1, 0, 1, 0};
  Vec w(3), s(6);
  std::vector<int32_t> idx(3);
  cpu::moe_gate_forward(w.data(), idx.data(), s.data(), logits.data(), nullptr, 1, 6, 3, 1, 1, 2.0, false);
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2, 4}));
  const double s1 = 1 / (1 + std::exp(-1.0));
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(w[i], 2.0 * s1, 1e-15);
}

// ---- MoE plan / permute ----------------------------------------------------------------------

// Node-limited routing: 16 experts on 4 nodes, K = 4. Every token's experts lie on at most M
// nodes, the kept nodes are those with the best sums of their top ceil(K/M) biased scores, and with
// M < nodes the selection differs from unrestricted routing for some tokens.
TEST(CpuMoeGate, NodeLimitedRoutingKeepsEachTokenOnAtMostMNodes) {
  const int64_t T = 256, E = 16, K = 4, nodes = 4, per_node = E / nodes;
  std::vector<float> logits(T * E), bias(E);
  uint32_t state = 12345;
  for (float& x : logits) {  // uniform in [-2, 2) from a fixed LCG
    state = state * 1664525u + 1013904223u;
    x = static_cast<float>(state >> 8) / static_cast<float>(1u << 24) * 4.0f - 2.0f;
  }
  for (int64_t e = 0; e < E; ++e) bias[e] = 0.01f * static_cast<float>(e % 3);
  MoeGateDims d;
  d.T = T;
  d.E = E;
  d.K = K;
  d.n_nodes = nodes;
  d.route_scale = 2.5;
  std::vector<float> w(T * K), scores(T * E);
  std::vector<int32_t> free_idx(T * K), idx(T * K);
  cpu::moe_gate_forward(w.data(), free_idx.data(), scores.data(), logits.data(), bias.data(), d);
  auto nodes_of = [&](const std::vector<int32_t>& sel, int64_t t) {
    std::vector<bool> used(nodes, false);
    for (int64_t k = 0; k < K; ++k) used[sel[t * K + k] / per_node] = true;
    return std::count(used.begin(), used.end(), true);
  };
  int64_t free_max = 0;
  for (int64_t t = 0; t < T; ++t) free_max = std::max<int64_t>(free_max, nodes_of(free_idx, t));
  EXPECT_GT(free_max, 2);  // unrestricted routing does spread tokens over more than 2 nodes here
  for (int64_t M : {1, 2}) {
    SCOPED_TRACE("M = " + std::to_string(M));
    d.max_nodes = M;
    cpu::moe_gate_forward(w.data(), idx.data(), scores.data(), logits.data(), bias.data(), d);
    int64_t differ = 0;
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_LE(nodes_of(idx, t), M) << "token " << t;
      differ += !std::equal(idx.begin() + t * K, idx.begin() + (t + 1) * K, free_idx.begin() + t * K);
      // The kept nodes are the best by the sum of their top ceil(K/M) biased scores.
      const int64_t top = (K + M - 1) / M;
      std::vector<float> node_score(nodes);
      for (int64_t n = 0; n < nodes; ++n) {
        std::vector<float> b;
        for (int64_t e = n * per_node; e < (n + 1) * per_node; ++e) b.push_back(scores[t * E + e] + bias[e]);
        std::sort(b.rbegin(), b.rend());
        node_score[n] = std::accumulate(b.begin(), b.begin() + top, 0.0f);
      }
      std::vector<float> sorted = node_score;
      std::sort(sorted.rbegin(), sorted.rend());
      for (int64_t k = 0; k < K; ++k) EXPECT_GE(node_score[idx[t * K + k] / per_node], sorted[M - 1]) << "token " << t;
    }
    EXPECT_GT(differ, 0);
  }
  d.max_nodes = nodes;  // M = nodes: no restriction
  cpu::moe_gate_forward(w.data(), idx.data(), scores.data(), logits.data(), bias.data(), d);
  EXPECT_EQ(idx, free_idx);
}

TEST(CpuMoePermute, PlanAndRoundTrip) {
  const int64_t T = 6, K = 2, E = 5, C = 3;
  const std::vector<int32_t> indices = {3, 0, 0, 3, 4, 1, 3, 4, 0, 1, 3, 0};
  std::vector<int32_t> counts(E), offsets(E + 1), row_of(T * K);
  cpu::moe_plan(counts.data(), offsets.data(), row_of.data(), indices.data(), T, E, K);
  EXPECT_EQ(counts, (std::vector<int32_t>{4, 2, 0, 4, 2}));
  EXPECT_EQ(offsets, (std::vector<int32_t>{0, 4, 6, 6, 10, 12}));
  // Expert 0 receives (t,k) = (0,1), (1,0), (4,0), (5,1) in that order, and so on.
  EXPECT_EQ(row_of, (std::vector<int32_t>{6, 0, 1, 7, 10, 4, 8, 11, 2, 5, 9, 3}));

  const Vec x = randn(T * C, 420);
  Vec xp(T * K * C);
  cpu::moe_permute_forward(xp.data(), x.data(), row_of.data(), T, K, C);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) EXPECT_EQ(xp[row_of[t * K + k] * C + c], x[t * C + c]);
  // Unpermute with weights summing to 1 per token gives x back (the expert computation being the
  // identity); weights 0.25/0.75 are exact, so the round trip is too.
  const Vec w = {0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75};
  Vec back(T * C, 0.0);
  cpu::moe_unpermute_forward(back.data(), xp.data(), w.data(), row_of.data(), T, K, C);
  EXPECT_EQ(back, x);
  // The permute backward of the permuted copy is K·x.
  Vec dx(T * C, 0.0);
  cpu::moe_permute_backward(dx.data(), xp.data(), row_of.data(), T, K, C);
  for (int64_t i = 0; i < T * C; ++i) EXPECT_EQ(dx[i], K * x[i]);
}

// ---- Cross-entropy ---------------------------------------------------------------------------

TEST(CpuCrossEntropy, MatchesDirectComputation) {
  const int64_t T = 3, V = 5;
  const Vec logits = {0.1, -0.4, 2.0, 0.3, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, -3.0, 0.5, 0.25, 4.0, -1.0};
  const std::vector<int32_t> targets = {2, 4, -1};
  Vec loss(T), lse(T);
  cpu::cross_entropy_forward(loss.data(), lse.data(), logits.data(), targets.data(), T, V);
  for (int64_t t = 0; t < T; ++t) {
    long double z = 0;
    for (int64_t j = 0; j < V; ++j) z += std::exp((long double)logits[t * V + j]);
    const double want_lse = double(std::log(z));
    EXPECT_NEAR(lse[t], want_lse, 1e-15 * std::fabs(want_lse) + 1e-15) << t;
    EXPECT_NEAR(loss[t], targets[t] < 0 ? 0.0 : want_lse - logits[t * V + targets[t]], 1e-14) << t;
  }
  EXPECT_NEAR(loss[1], std::log(5.0), 1e-15);  // uniform row: log V
  EXPECT_EQ(loss[2], 0.0);                     // ignored

  // Gradient rows: dloss·(softmax − onehot), summing to 0; the ignored row stays untouched.
  const Vec dloss = {2.0, 0.5, 7.0};
  Vec d(T * V, 0.0);
  cpu::cross_entropy_backward(d.data(), dloss.data(), logits.data(), lse.data(), targets.data(), T, V);
  for (int64_t j = 0; j < V; ++j) EXPECT_NEAR(d[V + j], 0.5 * (0.2 - (j == 4)), 1e-15);
  for (int64_t j = 0; j < V; ++j) EXPECT_EQ(d[2 * V + j], 0.0);
  EXPECT_NEAR(std::accumulate(d.begin(), d.begin() + V, 0.0), 0.0, 1e-15);
}

TEST(CpuCrossEntropy, StableForLargeLogits) {
  // Logits around ±1000 overflow a naive exp in both precisions; shifting a row by a constant must
  // not change the loss. Float: the shift is exact (values are small integers + 1000).
  const int64_t V = 37;
  std::vector<float> base(V), shifted(V), neg(V);
  for (int64_t j = 0; j < V; ++j) {
    base[j] = float(j % 7) - 3.0f;
    shifted[j] = base[j] + 1000.0f;
    neg[j] = base[j] - 1000.0f;
  }
  const std::vector<int32_t> target = {5};
  float l0, l1, l2, s0, s1, s2;
  cpu::cross_entropy_forward(&l0, &s0, base.data(), target.data(), 1, V);
  cpu::cross_entropy_forward(&l1, &s1, shifted.data(), target.data(), 1, V);
  cpu::cross_entropy_forward(&l2, &s2, neg.data(), target.data(), 1, V);
  ASSERT_TRUE(std::isfinite(l1) && std::isfinite(l2));
  // The lse of the shifted row is ~1000, where a float ulp is 6e-5: the loss (a difference) keeps
  // that absolute error.
  EXPECT_NEAR(l1, l0, 2e-4);
  EXPECT_NEAR(l2, l0, 2e-4);
  std::vector<float> d(V, 0.f);
  const float one = 1.0f;
  cpu::cross_entropy_backward(d.data(), &one, shifted.data(), &s1, target.data(), 1, V);
  for (float x : d) ASSERT_TRUE(std::isfinite(x));
}

// ---- FP8 emulation ---------------------------------------------------------------------------

// All non-negative finite e4m3fn values, ascending: code c = (e << 3) | m; e = 0 subnormal m·2^-9,
// else (1 + m/8)·2^(e−7); code 0x7f is NaN.
std::vector<double> e4m3_table() {
  std::vector<double> t;
  for (int c = 0; c < 0x7f; ++c) {
    const int e = c >> 3, m = c & 7;
    t.push_back(e == 0 ? std::ldexp(m, -9) : std::ldexp(1.0 + m / 8.0, e - 7));
  }
  return t;
}

// Nearest table value, ties to the even code (even mantissa), saturating at 448.
double e4m3_nearest(double v) {
  static const std::vector<double> t = e4m3_table();
  const double a = std::min(std::fabs(v), 448.0);
  const auto it = std::lower_bound(t.begin(), t.end(), a);
  size_t hi = size_t(it - t.begin());
  if (hi == t.size()) hi = t.size() - 1;
  size_t best = hi;
  if (hi > 0) {
    const double dl = a - t[hi - 1], dh = t[hi] - a;
    if (dl < dh || (dl == dh && (hi - 1) % 2 == 0)) best = hi - 1;
  }
  return std::copysign(t[best], v);
}

template <typename T>
void check_e4m3_rounding_exhaustive() {
  // One row of 128: element 0 is 448, so amax = 448 and s = 1 exactly: out = e4m3(x). Fill the
  // rest with every e4m3 value, every midpoint between neighbours, and random magnitudes.
  const std::vector<double> t = e4m3_table();
  std::vector<double> probes;
  for (size_t i = 0; i < t.size(); ++i) {
    probes.push_back(t[i]);
    probes.push_back(-t[i]);
    if (i + 1 < t.size()) {
      probes.push_back((t[i] + t[i + 1]) / 2);
      probes.push_back(-(t[i] + t[i + 1]) / 2);
    }
  }
  const Vec r = uniform(2000, 430, -12, 8.8);  // log2 magnitudes from 2^-12 to ~448
  const Vec sign = uniform(2000, 431, -1, 1);
  for (size_t i = 0; i < r.size(); ++i) probes.push_back(std::copysign(double(T(std::exp2(r[i]))), sign[i]));
  for (size_t i0 = 0; i0 < probes.size(); i0 += 127) {
    std::vector<T> x(128, T(0)), y(128), s(1);
    x[0] = T(448);
    const size_t n = std::min<size_t>(127, probes.size() - i0);
    for (size_t i = 0; i < n; ++i) x[1 + i] = T(probes[i0 + i]);
    cpu::fp8_quant_dequant_tile(y.data(), s.data(), x.data(), 1, 128, false);
    ASSERT_EQ(s[0], T(1));
    for (size_t i = 0; i < 128; ++i) ASSERT_EQ(double(y[i]), e4m3_nearest(double(x[i]))) << "x = " << x[i];
  }
}

TEST(CpuFp8, E4m3RoundingMatchesTableExhaustively) {
  check_e4m3_rounding_exhaustive<double>();
  check_e4m3_rounding_exhaustive<float>();
}

TEST(CpuFp8, ExactlyRepresentableValuesStayAndTiesGoToEven) {
  // amax 448 → s = 1; every listed value is an e4m3 value.
  std::vector<float> x = {448, -448, 1, -1.75f, 0.5f, 0x1p-9f, 3 * 0x1p-9f, 240, 0, -0x1p-6f, 1.0625f, 1.1875f,
                          0x1.8p-9f, 0x1p-11f};
  std::vector<float> y(x.size()), s(1);
  cpu::fp8_quant_dequant_tile(y.data(), s.data(), x.data(), 1, int64_t(x.size()), false);
  EXPECT_EQ(s[0], 1.0f);
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(y[i], x[i]) << i;
  EXPECT_EQ(y[10], 1.0f);      // 1.0625 is halfway between 1 (even) and 1.125
  EXPECT_EQ(y[11], 1.25f);     // 1.1875 is halfway between 1.125 and 1.25 (even)
  EXPECT_EQ(y[12], 0x1p-8f);   // 1.5·2^-9 is halfway between 2^-9 and 2^-8 (even)
  EXPECT_EQ(y[13], 0.0f);      // 2^-11 is below half the smallest subnormal
  // Scaling a representable tile by any factor keeps it representable: out == x exactly.
  std::vector<float> xs(x.begin(), x.begin() + 10);
  for (float& v : xs) v *= 0.0123f;
  std::vector<float> ys(xs.size());
  cpu::fp8_quant_dequant_tile(ys.data(), s.data(), xs.data(), 1, int64_t(xs.size()), false);
  EXPECT_EQ(s[0], 448 * 0.0123f / 448);
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_NEAR(ys[i], xs[i], 2e-7 * std::fabs(xs[i])) << i;
}

TEST(CpuFp8, ScalesPartialTileAndAmaxFloor) {
  // Two rows of 200 columns: tiles [0,128) and [128,200). Row 0: amax 100 in the first tile, 3 in
  // the partial one. Row 1: all zeros → amax floor 1e-4.
  const int64_t cols = 200;
  Vec x(2 * cols, 0.0);
  for (int64_t c = 0; c < 128; ++c) x[c] = (c % 5 - 2) * 10.0;
  x[17] = -100.0;
  for (int64_t c = 128; c < cols; ++c) x[c] = (c % 3 - 1) * 1.5;
  x[150] = 3.0;
  Vec y(x.size()), s(4);
  cpu::fp8_quant_dequant_tile(y.data(), s.data(), x.data(), 2, cols, false);
  EXPECT_DOUBLE_EQ(s[0], 100.0 / 448);
  EXPECT_DOUBLE_EQ(s[1], 3.0 / 448);
  EXPECT_DOUBLE_EQ(s[2], 1e-4 / 448);
  EXPECT_DOUBLE_EQ(s[3], 1e-4 / 448);
  for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(y[cols + c], 0.0);
  EXPECT_DOUBLE_EQ(y[17], -100.0);  // the amax element maps to ±448 exactly
  EXPECT_DOUBLE_EQ(y[150], 3.0);
  for (int64_t c = 0; c < cols; ++c) {
    const double sc = s[c / 128];
    EXPECT_DOUBLE_EQ(y[c], e4m3_nearest(x[c] / sc) * sc) << c;
  }

  // Power-of-two scales: 2^ceil(log2(amax/448)): 100/448 = 0.223 → 0.25; 3/448 = 0.0067 → 2^-7.
  cpu::fp8_quant_dequant_tile(y.data(), s.data(), x.data(), 2, cols, true);
  EXPECT_EQ(s[0], 0.25);
  EXPECT_EQ(s[1], 0x1p-7);
  EXPECT_EQ(s[2], std::exp2(std::ceil(std::log2(1e-4 / 448))));
  for (int64_t c = 0; c < cols; ++c) {
    const double sc = s[c / 128];
    EXPECT_DOUBLE_EQ(y[c], e4m3_nearest(x[c] / sc) * sc) << c;
  }
  // An amax that is 448 times a power of two keeps that power exactly.
  Vec x2 = {448 * 0.5, 1.0}, y2(2), s2(1);
  cpu::fp8_quant_dequant_tile(y2.data(), s2.data(), x2.data(), 1, 2, true);
  EXPECT_EQ(s2[0], 0.5);
}

TEST(CpuFp8, BlockScalesWithPartialBlocks) {
  // 130 × 260: blocks of rows [0,128), [128,130) and columns [0,128), [128,256), [256,260).
  const int64_t rows = 130, cols = 260;
  Vec w = randn(rows * cols, 440);
  Vec y(w.size()), s(2 * 3);
  cpu::fp8_quant_dequant_block(y.data(), s.data(), w.data(), rows, cols, false);
  for (int64_t br = 0; br < 2; ++br)
    for (int64_t bc = 0; bc < 3; ++bc) {
      double amax = 0;
      for (int64_t r = br * 128; r < std::min(rows, br * 128 + 128); ++r)
        for (int64_t c = bc * 128; c < std::min(cols, bc * 128 + 128); ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
      EXPECT_DOUBLE_EQ(s[br * 3 + bc], amax / 448) << br << "," << bc;
    }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double sc = s[(r / 128) * 3 + c / 128];
      ASSERT_DOUBLE_EQ(y[r * cols + c], e4m3_nearest(w[r * cols + c] / sc) * sc) << r << "," << c;
    }
  // In place (out aliases w) gives the same result.
  Vec w2 = w, s2(6);
  cpu::fp8_quant_dequant_block(w2.data(), s2.data(), w2.data(), rows, cols, false);
  EXPECT_EQ(w2, y);
  EXPECT_EQ(s2, s);
}

// ---- Threads ---------------------------------------------------------------------------------

TEST(CpuThreads, ResultsDoNotDependOnThreadCount) {
  const int64_t T = 512, C = 256, V = 40;
  const auto tokens = randint(T, 450, 0, int32_t(V - 1));
  const auto xs = to_f(randn(T * C, 451)), ws = to_f(randn(C, 452)), gs = to_f(randn(T * C, 453));
  const int64_t B = 2, S = 200, H = 4, D = 16;
  const auto q = to_f(randn(B * S * H * D, 454)), k = to_f(randn(B * S * H * D, 455)), v = to_f(randn(B * S * H * D, 456));
  std::vector<int32_t> ds(B * S, 0);
  auto run = [&] {
    std::vector<std::vector<float>> r;
    std::vector<float> dt(V * C, 0.f), y(T * C), rs(T), dx(T * C, 0.f), dw(C, 0.f);
    cpu::embedding_backward(dt.data(), gs.data(), tokens.data(), T, C);
    cpu::rmsnorm_forward(y.data(), rs.data(), xs.data(), ws.data(), T, C, 1e-6f);
    cpu::rmsnorm_backward(dx.data(), dw.data(), gs.data(), xs.data(), ws.data(), rs.data(), T, C);
    std::vector<float> o(q.size()), l(B * S * H), dq(q.size(), 0.f), dk(q.size(), 0.f), dv(q.size(), 0.f);
    cpu::attention_forward(o.data(), l.data(), q.data(), k.data(), v.data(), ds.data(), B, S, H, D, D, 0.25f);
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), o.data(), o.data(), l.data(), q.data(), k.data(), v.data(),
                            ds.data(), B, S, H, D, D, 0.25f);
    return std::vector<std::vector<float>>{dt, y, dx, dw, o, l, dq, dk, dv};
  };
  cpu::set_num_threads(1);
  EXPECT_EQ(cpu::num_threads(), 1);
  const auto one = run();
  cpu::set_num_threads(2);
  EXPECT_EQ(cpu::num_threads(), 2);
  const auto two = run();
  cpu::set_num_threads(0);  // back to the default
  for (size_t i = 0; i < one.size(); ++i) EXPECT_EQ(one[i], two[i]) << "output " << i << " differs bitwise";
}

}  // namespace
}  // namespace mariana
