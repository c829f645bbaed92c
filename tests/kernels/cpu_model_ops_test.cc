// The CPU ops that carry the model's glue math: elementwise adds, strided copies, the RoPE-part
// scaling, MLA's key/value assembly, the gate weights of a fixed selection, the sequence-wise balance
// loss and the row gather/scatter of expert parallelism. Hand-computed values and naive references
// (bitwise where the op promises the same arithmetic), for float and double.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace mariana {
namespace {

using namespace kernel_test;

// ---- Elementwise adds and strided copies ----------------------------------------------------

TEST(CpuElementwise, AddAndAddInplaceKnownValues) {
  const Vec a = {1, -2, 0.5}, b = {3, 4, 0.25};
  Vec out(3);
  cpu::add(out.data(), a.data(), b.data(), 3);
  EXPECT_EQ(out, (Vec{4, 2, 0.75}));
  Vec y = a;
  cpu::add_inplace(y.data(), b.data(), 3);
  EXPECT_EQ(y, (Vec{4, 2, 0.75}));
}

TEST(CpuElementwise, AddMatchesNaiveAboveTheParallelThreshold) {
  const size_t n = 100003;  // parallel, with a ragged tail
  const FVec a = to_f(randn(n, 1)), b = to_f(randn(n, 2));
  FVec out(n), y = a;
  cpu::add(out.data(), a.data(), b.data(), int64_t(n));
  cpu::add_inplace(y.data(), b.data(), int64_t(n));
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(out[i], a[i] + b[i]) << i;
    ASSERT_EQ(y[i], a[i] + b[i]) << i;
  }
}

TEST(CpuElementwise, CopyStridedConcatenatesAndSplits) {
  // cat[2, 5] = [a[2, 3] ; b[2, 2]], then the halves back out.
  const Vec a = {1, 2, 3, 4, 5, 6}, b = {7, 8, 9, 10};
  Vec cat(10, -1);
  cpu::copy_strided(cat.data(), a.data(), 2, 3, 5, 3);
  cpu::copy_strided(cat.data() + 3, b.data(), 2, 2, 5, 2);
  EXPECT_EQ(cat, (Vec{1, 2, 3, 7, 8, 4, 5, 6, 9, 10}));
  FVec fcat = to_f(cat), fa(6), fb(4);
  cpu::copy_strided(fa.data(), fcat.data(), 2, 3, 3, 5);
  cpu::copy_strided(fb.data(), fcat.data() + 3, 2, 2, 2, 5);
  EXPECT_EQ(fa, to_f(a));
  EXPECT_EQ(fb, to_f(b));
}

// ---- RoPE-part scaling --------------------------------------------------------------------------

TEST(CpuRope, ScaleTouchesOnlyTheRopePart) {
  // T = 2 tokens, H = 2 heads of 3 dims, rope part = the last 2 dims of each head (x + 1).
  Vec x(12);
  std::iota(x.begin(), x.end(), 1.0);
  cpu::rope_scale(x.data() + 1, 2, 2, 2, 6, 3, 0.5);
  EXPECT_EQ(x, (Vec{1, 1, 1.5, 4, 2.5, 3, 7, 4, 4.5, 10, 5.5, 6}));
  FVec xf = {1, 2, 3, 4};
  cpu::rope_scale(xf.data(), 2, 1, 2, 2, 0, 1.0f);  // scale 1: untouched
  EXPECT_EQ(xf, (FVec{1, 2, 3, 4}));
  cpu::rope_scale(xf.data(), 2, 1, 1, 2, 0, -2.0f);  // one dim per token, stride 2
  EXPECT_EQ(xf, (FVec{-2, 2, -6, 4}));
}

// ---- MLA key/value assembly ----------------------------------------------------------------------

// k_pe sits at column 2 of rows of 5 (a latent of 2, then the RoPE key).
MlaKvDims small_kv_dims() { return MlaKvDims{.T = 3, .H = 2, .dn = 2, .dr = 3, .dv = 4, .kpe_stride = 5}; }

TEST(CpuMla, KvSplitForwardMatchesNaive) {
  const MlaKvDims d = small_kv_dims();
  const int64_t dqk = d.dn + d.dr;
  const Vec kv = randn(size_t(d.T * d.H * (d.dn + d.dv)), 3), kva = randn(size_t(d.T * d.kpe_stride), 4);
  Vec k(size_t(d.T * d.H * dqk)), v(size_t(d.T * d.H * d.dv));
  cpu::mla_kv_split_forward(k.data(), v.data(), kv.data(), kva.data() + 2, d);
  for (int64_t t = 0; t < d.T; ++t)
    for (int64_t h = 0; h < d.H; ++h) {
      const int64_t th = t * d.H + h;
      for (int64_t i = 0; i < d.dn; ++i) EXPECT_EQ(k[th * dqk + i], kv[th * (d.dn + d.dv) + i]);
      for (int64_t i = 0; i < d.dr; ++i) EXPECT_EQ(k[th * dqk + d.dn + i], kva[t * d.kpe_stride + 2 + i]);
      for (int64_t i = 0; i < d.dv; ++i) EXPECT_EQ(v[th * d.dv + i], kv[th * (d.dn + d.dv) + d.dn + i]);
    }
}

// The backward is the forward's adjoint: <fwd(kv, k_pe), (dk, dv)> = <(kv, k_pe), bwd(dk, dv)>,
// and it adds onto what the gradients held.
TEST(CpuMla, KvSplitBackwardIsTheAdjointAndAccumulates) {
  const MlaKvDims d = small_kv_dims();
  const int64_t dqk = d.dn + d.dr;
  const Vec kv = randn(size_t(d.T * d.H * (d.dn + d.dv)), 5), kva = randn(size_t(d.T * d.kpe_stride), 6);
  const Vec dk = randn(size_t(d.T * d.H * dqk), 7), dv = randn(size_t(d.T * d.H * d.dv), 8);
  Vec k(dk.size()), v(dv.size());
  cpu::mla_kv_split_forward(k.data(), v.data(), kv.data(), kva.data() + 2, d);
  const Vec prior_kv = randn(kv.size(), 9), prior_kva = randn(kva.size(), 10);
  Vec dkv = prior_kv, dkva = prior_kva;
  cpu::mla_kv_split_backward(dkv.data(), dkva.data() + 2, dk.data(), dv.data(), d);
  const Vec gkv = minus(dkv, prior_kv), gkva = minus(dkva, prior_kva);
  double lhs = 0, rhs = 0;
  for (size_t i = 0; i < k.size(); ++i) lhs += k[i] * dk[i];
  for (size_t i = 0; i < v.size(); ++i) lhs += v[i] * dv[i];
  for (size_t i = 0; i < kv.size(); ++i) rhs += kv[i] * gkv[i];
  for (size_t i = 0; i < kva.size(); ++i) rhs += kva[i] * gkva[i];
  EXPECT_NEAR(lhs, rhs, 1e-12 * (1 + std::fabs(lhs)));
  // The latent's own columns (0, 1 of each kva row) are not k_pe's: untouched.
  for (int64_t t = 0; t < d.T; ++t)
    for (int64_t i = 0; i < 2; ++i) EXPECT_EQ(dkva[t * d.kpe_stride + i], prior_kva[t * d.kpe_stride + i]);
  // Float: the same sums, heads in order.
  const FVec fdk = to_f(dk), fdv = to_f(dv);
  FVec fkv(kv.size(), 0.0f), fkva(kva.size(), 0.0f);
  cpu::mla_kv_split_backward(fkv.data(), fkva.data() + 2, fdk.data(), fdv.data(), d);
  for (int64_t t = 0; t < d.T; ++t)
    for (int64_t i = 0; i < d.dr; ++i) {
      float s = 0;
      for (int64_t h = 0; h < d.H; ++h) s += fdk[(t * d.H + h) * dqk + d.dn + i];
      EXPECT_EQ(fkva[t * d.kpe_stride + 2 + i], s);
    }
}

// ---- Gate weights of a fixed selection -------------------------------------------------------------

TEST(CpuMoeGate, WeightsOfAFixedSelection) {
  // One token, E = 3: logits 0 → score 0.5; selection {2, 0}.
  MoeGateDims d{.T = 1, .E = 3, .K = 2, .route_scale = 2.0};
  const Vec logits = {0, 1, std::log(3.0)};  // scores 0.5, σ(1), 0.75
  const std::vector<int32_t> idx = {2, 0};
  Vec w(2), s(3);
  cpu::moe_gate_weights(w.data(), s.data(), logits.data(), idx.data(), d);
  EXPECT_DOUBLE_EQ(s[0], 0.5);
  EXPECT_DOUBLE_EQ(s[2], 0.75);
  expect_close("normalised", w, Vec{0.75 / 1.25 * 2, 0.5 / 1.25 * 2}, 1e-15, 0);
  d.norm_topk_prob = false;
  cpu::moe_gate_weights(w.data(), s.data(), logits.data(), idx.data(), d);
  expect_close("unnormalised", w, Vec{1.5, 1.0}, 1e-15, 0);

  // With the gate's own selection, the weights are the gate's (float: two exps, a few ulp apart).
  const MoeGateDims g{.T = 64, .E = 16, .K = 4, .route_scale = 2.5};
  const FVec fl = to_f(randn(size_t(g.T * g.E), 11));
  FVec gw(size_t(g.T * g.K)), gs(fl.size()), fw(gw.size()), fs(fl.size());
  std::vector<int32_t> gi(gw.size());
  cpu::moe_gate_forward(gw.data(), gi.data(), gs.data(), fl.data(), nullptr, g);
  cpu::moe_gate_weights(fw.data(), fs.data(), fl.data(), gi.data(), g);
  expect_close("fixed selection vs gate", fw, to_d(gw), 1e-6, 0);
  expect_close("scores vs gate", fs, to_d(gs), 1e-6, 0);
}

// ---- Sequence-wise balance loss ---------------------------------------------------------------------

TEST(CpuMoeBalance, ForwardKnownValues) {
  // B = 1 sequence of S = 2 tokens, E = 2, K = 1: token 0 → expert 0, token 1 → expert 0.
  // f = E/(K·S)·counts = (2, 0); scores normalise to (0.25, 0.75) and (0.5, 0.5): P = (0.375, 0.625).
  // loss = 2·0.375 + 0·0.625 = 0.75.
  const Vec scores = {0.1, 0.3, 0.4, 0.4};
  const std::vector<int32_t> idx = {0, 0};
  Vec f(2);
  double loss = -1;
  cpu::moe_balance_forward(f.data(), &loss, scores.data(), idx.data(), 1, 2, 2, 1);
  EXPECT_EQ(f, (Vec{2, 0}));
  EXPECT_NEAR(loss, 0.75, 1e-15);
}

// The order-faithful reference: per sequence, P over all experts at once (the kernel chunks them).
template <typename T>
double naive_balance(std::vector<T>& f_all, const std::vector<T>& scores, const std::vector<int32_t>& idx, int64_t B,
                     int64_t S, int64_t E, int64_t K) {
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {
    T* f = f_all.data() + b * E;
    std::fill_n(f, E, T(0));
    std::vector<double> P(size_t(E), 0.0);
    for (int64_t t = b * S; t < (b + 1) * S; ++t) {
      for (int64_t k = 0; k < K; ++k) f[idx[t * K + k]] += T(1);
      double denom = 0;
      for (int64_t e = 0; e < E; ++e) denom += scores[t * E + e];
      for (int64_t e = 0; e < E; ++e) P[e] += scores[t * E + e] / denom;
    }
    double lb = 0;
    for (int64_t e = 0; e < E; ++e) {
      f[e] *= static_cast<T>(static_cast<double>(E) / static_cast<double>(K * S));
      lb += static_cast<double>(f[e]) * P[e] / static_cast<double>(S);
    }
    total += lb;
  }
  return total;
}

TEST(CpuMoeBalance, ForwardBitwiseEqualsNaiveWithManyExperts) {
  const int64_t B = 2, S = 5, E = 300, K = 8;  // E above the kernel's expert chunk
  const FVec scores = to_f(uniform(size_t(B * S * E), 12, 0.01, 1.0));
  const std::vector<int32_t> idx = randint(size_t(B * S * K), 13, 0, int32_t(E - 1));
  FVec f(size_t(B * E)), f_ref(f.size());
  double loss = 0;
  cpu::moe_balance_forward(f.data(), &loss, scores.data(), idx.data(), B, S, E, K);
  EXPECT_EQ(loss, naive_balance(f_ref, scores, idx, B, S, E, K));
  EXPECT_EQ(f, f_ref);
  const Vec ds = to_d(scores);
  Vec df(f.size()), df_ref(f.size());
  cpu::moe_balance_forward(df.data(), &loss, ds.data(), idx.data(), B, S, E, K);
  EXPECT_EQ(loss, naive_balance(df_ref, ds, idx, B, S, E, K));
}

// G(logits) = scale·S·Σ_b Σ_i f_i·P_i with scores = σ(logits) and the selection (so f) fixed: the
// backward's dlogits is ∂G/∂logits.
TEST(CpuMoeBalance, BackwardMatchesFiniteDifferences) {
  const int64_t B = 2, S = 3, E = 5, K = 2, T = B * S;
  const double scale = 0.7 / double(B * S);
  Vec logits = randn(size_t(T * E), 14);
  const std::vector<int32_t> idx = randint(size_t(T * K), 15, 0, int32_t(E - 1));
  const auto sigmoid = [](const Vec& x) {
    Vec s(x.size());
    for (size_t i = 0; i < x.size(); ++i) s[i] = 1 / (1 + std::exp(-x[i]));
    return s;
  };
  const auto G = [&] {
    const Vec s = sigmoid(logits);
    Vec f(size_t(B * E));
    double loss = 0;
    cpu::moe_balance_forward(f.data(), &loss, s.data(), idx.data(), B, S, E, K);
    return Vec{scale * double(S) * loss};
  };
  const Vec s = sigmoid(logits);
  Vec f(size_t(B * E));
  double unused = 0;
  cpu::moe_balance_forward(f.data(), &unused, s.data(), idx.data(), B, S, E, K);
  const Vec prior = randn(logits.size(), 16);
  Vec dlogits = prior;
  cpu::moe_balance_backward(dlogits.data(), f.data(), s.data(), T, S, E, scale);
  expect_fd_gradient("balance dlogits", logits, G, Vec{1.0}, minus(dlogits, prior), kFdRtol, 1e-9);
}

// ---- Expert-parallel row moves ----------------------------------------------------------------------

TEST(CpuMoeRows, ScatterThenGatherRoundTrips) {
  const std::vector<int32_t> map = {2, 0, 1};
  const Vec src = {1, 2, 3, 4, 5, 6};  // 3 rows of C = 2
  Vec scattered(6), back(6);
  cpu::moe_scatter_rows(scattered.data(), src.data(), map.data(), 3, 2);
  EXPECT_EQ(scattered, (Vec{3, 4, 5, 6, 1, 2}));  // row i lands at map[i]
  cpu::moe_gather_rows(back.data(), scattered.data(), map.data(), 3, 2);
  EXPECT_EQ(back, src);
  // Float, above the parallel threshold, with a permutation that is not its own inverse.
  const int64_t n = 512, C = 96;
  std::vector<int32_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[i] = static_cast<int32_t>((5 * i + 3) % n);
  const FVec fs = to_f(randn(size_t(n * C), 17));
  FVec g(fs.size()), sc(fs.size());
  cpu::moe_gather_rows(g.data(), fs.data(), perm.data(), n, C);
  cpu::moe_scatter_rows(sc.data(), fs.data(), perm.data(), n, C);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < C; ++c) {
      ASSERT_EQ(g[i * C + c], fs[perm[i] * C + c]);
      ASSERT_EQ(sc[perm[i] * C + c], fs[i * C + c]);
    }
}

}  // namespace
}  // namespace mariana
