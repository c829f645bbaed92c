// Float vs double agreement of every CPU op (forward and backward) on the same float-exact inputs.
// The double run is the reference; each tolerance is derived from the float unit roundoff
// u = 2^-24 ≈ 6e-8 and the op's reduction length, as commented at each use.
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace mariana {
namespace {

using namespace kernel_test;

constexpr double u = 1.0 / (1 << 24);  // float unit roundoff

template <typename T>
std::vector<T> as(const Vec& v) {
  return std::vector<T>(v.begin(), v.end());
}

// ---- GEMM / linear ---------------------------------------------------------------------------

// Naive fp64 product and the rigorous float error bound of each entry: a float dot product of
// length K, in any order and with or without FMA, is off by at most γ_K·Σ|a||b| with γ_K ≈ K·u;
// alpha, beta and the final add cost ~2 more roundings. So tol = (K + 3)·u·(|α|Σ|a||b| + |β||C|).
struct Gemm {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  double alpha, beta;
};

void check_gemm(const Gemm& g, uint64_t seed) {
  const int64_t a_rows = g.ta ? g.K : g.M, b_rows = g.tb ? g.N : g.K;
  const Vec A = randn(a_rows * g.lda, seed), B = randn(b_rows * g.ldb, seed + 1), C0 = randn(g.M * g.ldc, seed + 2);
  Vec want = C0, bound(C0.size(), 0.0);
  for (int64_t i = 0; i < g.M; ++i) {
    for (int64_t j = 0; j < g.N; ++j) {
      double s = 0, sa = 0;
      for (int64_t k = 0; k < g.K; ++k) {
        const double a = g.ta ? A[k * g.lda + i] : A[i * g.lda + k];
        const double b = g.tb ? B[j * g.ldb + k] : B[k * g.ldb + j];
        s += a * b;
        sa += std::fabs(a * b);
      }
      want[i * g.ldc + j] = g.alpha * s + g.beta * C0[i * g.ldc + j];
      bound[i * g.ldc + j] = (g.K + 3) * u * (std::fabs(g.alpha) * sa + std::fabs(g.beta * C0[i * g.ldc + j]));
    }
  }
  Vec Cd = C0;
  cpu::gemm(g.ta, g.tb, g.M, g.N, g.K, g.alpha, A.data(), g.lda, B.data(), g.ldb, g.beta, Cd.data(), g.ldc);
  std::vector<float> Af = as<float>(A), Bf = as<float>(B), Cf = as<float>(C0);
  cpu::gemm(g.ta, g.tb, g.M, g.N, g.K, float(g.alpha), Af.data(), g.lda, Bf.data(), g.ldb, float(g.beta), Cf.data(),
            g.ldc);
  // fp64 against the naive product: ~K·2^-53 relative, far below 1e-12.
  expect_close("gemm double vs naive", Cd, want, 1e-12, 1e-12);
  for (size_t i = 0; i < Cf.size(); ++i)
    EXPECT_LE(std::fabs(double(Cf[i]) - want[i]), bound[i] + 1e-30) << "gemm float entry " << i;
}

TEST(CpuParity, GemmAllTransposesWithStrides) {
  uint64_t seed = 200;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t M = 13, N = 17, K = 37;
      const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 5;
      SCOPED_TRACE(testing::Message() << "ta=" << ta << " tb=" << tb);
      check_gemm({ta, tb, M, N, K, lda, ldb, ldc, 0.7, -0.3}, seed += 3);
    }
  check_gemm({false, false, 9, 11, 5, 5, 11, 11, 1.0, 0.0}, 230);  // beta = 0 overwrites
}

// One or two rows (decode, speculative verification) take the skinny kernel for A·Bᵀ and sgemv
// for A·B; three to five rows take sgemm. Shapes cover the AVX2 tails (K % 8, N % 4) and strides.
TEST(CpuParity, GemmFewRows) {
  uint64_t seed = 400;
  for (int64_t M : {1, 2, 3, 4, 5})
    for (int64_t K : {3, 8, 37, 300})
      for (bool tb : {true, false}) {
        const int64_t N = 67;
        SCOPED_TRACE(testing::Message() << "M=" << M << " K=" << K << " tb=" << tb);
        check_gemm({false, tb, M, N, K, K + 1, (tb ? K : N) + 3, N + 2, 0.7, -0.3}, seed += 3);
        check_gemm({false, tb, M, N, K, K, tb ? K : N, N, 1.0, 0.0}, seed += 3);
      }
}

// A token's output row is bitwise the same whatever else shares the call and however many threads
// run it: speculative verification (2 rows) must reproduce plain decoding (1 row) exactly.
TEST(CpuParity, SkinnyRowsIndependentOfBatchAndThreads) {
  const int64_t N = 4099, K = 257;  // large enough to take the OpenMP path with 2 threads
  std::vector<float> A = as<float>(randn(2 * K, 410)), B = as<float>(randn(N * K, 411));
  std::vector<float> C2(2 * N, std::numeric_limits<float>::quiet_NaN());  // beta = 0 overwrites NaN
  cpu::set_num_threads(1);
  cpu::gemm(false, true, 2, N, K, 1.f, A.data(), K, B.data(), K, 0.f, C2.data(), N);
  for (int64_t i = 0; i < 2; ++i) {
    std::vector<float> c1(N), c2(N);
    cpu::gemm(false, true, 1, N, K, 1.f, A.data() + i * K, K, B.data(), K, 0.f, c1.data(), N);
    cpu::set_num_threads(2);
    cpu::gemm(false, true, 1, N, K, 1.f, A.data() + i * K, K, B.data(), K, 0.f, c2.data(), N);
    cpu::set_num_threads(1);
    for (int64_t j = 0; j < N; ++j) {
      ASSERT_FALSE(std::isnan(C2[i * N + j]));
      ASSERT_EQ(C2[i * N + j], c1[j]) << "row " << i << " col " << j;
      ASSERT_EQ(c1[j], c2[j]) << "row " << i << " col " << j << " with 2 threads";
    }
  }
}

// Every fp32 product is bitwise the same on 1, 2 and 3 threads, outside an OpenMP region (where
// OpenBLAS threads it itself): reduction lengths K = 700, 1000 and 5000 are ones OpenBLAS blocks
// differently on one thread than on several, and M <= 2 with B not transposed is the row-vector
// path (an expert's input gradient with one or two tokens). fp64 (the test oracle) is not covered.
void check_gemm_thread_invariant(bool ta, bool tb, int64_t M, int64_t N, int64_t K, uint64_t seed) {
  SCOPED_TRACE(testing::Message() << "M=" << M << " N=" << N << " K=" << K << " ta=" << ta << " tb=" << tb);
  const std::vector<float> A = as<float>(randn(M * K, seed)), B = as<float>(randn(N * K, seed + 1)),
                           C0 = as<float>(randn(M * N, seed + 2));
  std::vector<float> one;
  for (int threads : {1, 2, 3}) {
    cpu::set_num_threads(threads);
    std::vector<float> C = C0;
    cpu::gemm(ta, tb, M, N, K, 1.f, A.data(), ta ? M : K, B.data(), tb ? K : N, 1.f, C.data(), N);
    if (threads == 1) {
      one = C;
      continue;
    }
    int64_t diffs = 0;
    for (size_t i = 0; i < C.size(); ++i) diffs += std::memcmp(&C[i], &one[i], sizeof(float)) != 0;
    EXPECT_EQ(diffs, 0) << "entries that differ from 1 thread on " << threads << " threads";
  }
  cpu::set_num_threads(0);
}

TEST(CpuParity, GemmIndependentOfThreads) {
  uint64_t seed = 900;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) check_gemm_thread_invariant(ta, tb, 300, 200, 700, seed += 3);
  check_gemm_thread_invariant(false, false, 100, 100, 5000, seed += 3);
  check_gemm_thread_invariant(true, false, 64, 64, 1000, seed += 3);  // a weight gradient, T = 1000
  for (int64_t M : {1, 2}) {
    check_gemm_thread_invariant(false, false, M, 1024, 64, seed += 3);
    check_gemm_thread_invariant(false, false, M, 512, 2048, seed += 3);
  }
}

TEST(CpuParity, Linear) {
  const int64_t T = 19, in = 33, out = 21;
  const Vec x = randn(T * in, 240), W = randn(out * in, 241), dy = randn(T * out, 242);
  Vec y(T * out), dx(T * in, 0.0), dW(out * in, 0.0);
  cpu::linear_forward(y.data(), x.data(), W.data(), T, in, out);
  cpu::linear_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), T, in, out);
  auto xf = as<float>(x), Wf = as<float>(W), dyf = as<float>(dy);
  std::vector<float> yf(T * out), dxf(T * in, 0.f), dWf(out * in, 0.f);
  cpu::linear_forward(yf.data(), xf.data(), Wf.data(), T, in, out);
  cpu::linear_backward(dxf.data(), dWf.data(), dyf.data(), xf.data(), Wf.data(), T, in, out);
  // Dot products of length L = in/out/T ≤ 33 of N(0,1) values: the rigorous bound (L+3)·u·Σ|ab|
  // with Σ|ab| ≈ (2/π)·L ≈ 21 is ≈ 4.6e-5; atol 1e-4 is about twice that.
  expect_close("linear y", yf, y, 0, 1e-4);
  expect_close("linear dx", dxf, dx, 0, 1e-4);
  expect_close("linear dW", dWf, dW, 0, 1e-4);
}

// ---- RMSNorm, RoPE, SwiGLU -------------------------------------------------------------------

TEST(CpuParity, Rmsnorm) {
  const int64_t T = 37, C = 96;
  const Vec x = randn(T * C, 250), w = randn(C, 251), g = randn(T * C, 252);
  Vec y(T * C), r(T), dx(T * C, 0.0), dw(C, 0.0);
  cpu::rmsnorm_forward(y.data(), r.data(), x.data(), w.data(), T, C, 1e-6);
  cpu::rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), r.data(), T, C);
  auto xf = as<float>(x), wf = as<float>(w), gf = as<float>(g);
  std::vector<float> yf(T * C), rf(T), dxf(T * C, 0.f), dwf(C, 0.f);
  cpu::rmsnorm_forward(yf.data(), rf.data(), xf.data(), wf.data(), T, C, 1e-6f);
  cpu::rmsnorm_backward(dxf.data(), dwf.data(), gf.data(), xf.data(), wf.data(), rf.data(), T, C);
  // Σx² over C terms is off by ≤ C·u relative; rstd by half that plus a few roundings; each output
  // by (C/2 + 4)·u. rtol = (C + 8)·u keeps a factor 2 of slack over that bound.
  expect_close("rmsnorm rstd", rf, r, (C + 8) * u, 0);
  expect_close("rmsnorm out", yf, y, (C + 8) * u, 0);
  // din = r·w·g − x·k with k = r³/C·Σ(g·w·x): the C-term dot is off by ≤ C·u·Σ|gwx|, with
  // Σ|gwx| ≈ 0.51·C for N(0,1) values and r ≈ 1, so k is off by ≲ 0.51·C·u ≈ 3e-6 absolute, times
  // |x| ≤ ~4: ≈ 1.2e-5. atol 2e-5.
  expect_close("rmsnorm din", dxf, dx, (C + 8) * u, 2e-5);
  // dweight sums T = 37 products of magnitude ≲ 10: the float products are exact to 3u, the sum is
  // in fp64; |error| ≤ 3u·Σ|g x r| ≈ 3·6e-8·37·2 ≈ 2e-5 worst case.
  expect_close("rmsnorm dweight", dwf, dw, 0, 2e-5);
}

TEST(CpuParity, RopeYarn) {
  RopeParams p;
  p.rope_dim = 64;
  p.factor = 40;
  Vec inv(32);
  std::vector<float> invf(32);
  cpu::rope_inv_freq(inv.data(), p);
  cpu::rope_inv_freq(invf.data(), p);
  // Both are computed in fp64 and the float one is rounded once: u relative.
  expect_close("rope inv_freq", invf, inv, u, 0);

  const int64_t T = 23, H = 3, rope_dim = 64, head_stride = 80, token_stride = H * head_stride;
  const auto pos = randint(T, 260, 0, 50);
  Vec x = randn(T * token_stride, 261);
  std::vector<float> xf = as<float>(x);
  Vec g = x;
  std::vector<float> gf = xf;
  cpu::rope_forward(x.data(), pos.data(), inv.data(), T, H, rope_dim, token_stride, head_stride);
  cpu::rope_forward(xf.data(), pos.data(), invf.data(), T, H, rope_dim, token_stride, head_stride);
  cpu::rope_backward(g.data(), pos.data(), inv.data(), T, H, rope_dim, token_stride, head_stride);
  cpu::rope_backward(gf.data(), pos.data(), invf.data(), T, H, rope_dim, token_stride, head_stride);
  // The float angle pos·inv_freq inherits inv_freq's rounding: ≤ 50·1·u rad; cos/sin rounding and
  // the rotation add ~4u. The pair norm is ≤ ~6, so atol = (50 + 4)·u·6 ≈ 2e-5.
  expect_close("rope forward", xf, x, 0, 54 * u * 6);
  expect_close("rope backward", gf, g, 0, 54 * u * 6);
}

TEST(CpuParity, Swiglu) {
  const int64_t N = 3001;  // vector body and scalar tail of the chunked loop
  const Vec gate = randn(N, 270, 3.0), up = randn(N, 271), d = randn(N, 272);
  Vec out(N), dg(N, 0.0), du(N, 0.0);
  cpu::swiglu_forward(out.data(), gate.data(), up.data(), N);
  cpu::swiglu_backward(dg.data(), du.data(), d.data(), gate.data(), up.data(), N);
  auto gf = as<float>(gate), uf = as<float>(up), df = as<float>(d);
  std::vector<float> of(N), dgf(N, 0.f), duf(N, 0.f);
  cpu::swiglu_forward(of.data(), gf.data(), uf.data(), N);
  cpu::swiglu_backward(dgf.data(), duf.data(), df.data(), gf.data(), uf.data(), N);
  // Products of σ (exp to ~2 ulp, one add, one divide) and two inputs: ≤ ~8u relative; rtol 16u.
  // dgate's factor 1 + g(1 − σ) cancels near g ≈ −1.28, where its error is absolute, ~4u·|g·d·up|
  // ≲ 4u·50: atol 2e-5.
  expect_close("swiglu out", of, out, 16 * u, 1e-12);
  expect_close("swiglu dup", duf, du, 16 * u, 1e-12);
  expect_close("swiglu dgate", dgf, dg, 16 * u, 2e-5);
}

// ---- Attention -------------------------------------------------------------------------------

TEST(CpuParity, AttentionForwardBackward) {
  // Three 64-row blocks (S = 130), several documents, including a boundary at a block edge.
  const int64_t B = 2, S = 130, H = 3, Dqk = 16, Dv = 8, T = B * S;
  const double scale = 0.25;
  std::vector<int32_t> ds(T);
  for (int64_t i = 0; i < S; ++i) {
    ds[i] = i < 50 ? 0 : (i < 64 ? 50 : 64);
    ds[S + i] = i < 100 ? 0 : 100;
  }
  const Vec q = randn(T * H * Dqk, 280), k = randn(T * H * Dqk, 281), v = randn(T * H * Dv, 282);
  const Vec dout = randn(T * H * Dv, 283);
  Vec out(T * H * Dv), lse(T * H), dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
  cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), ds.data(), B, S, H, Dqk, Dv, scale);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(),
                          v.data(), ds.data(), B, S, H, Dqk, Dv, scale);
  auto qf = as<float>(q), kf = as<float>(k), vf = as<float>(v), gf = as<float>(dout);
  std::vector<float> of(out.size()), lf(lse.size()), dqf(q.size(), 0.f), dkf(k.size(), 0.f), dvf(v.size(), 0.f);
  cpu::attention_forward(of.data(), lf.data(), qf.data(), kf.data(), vf.data(), ds.data(), B, S, H, Dqk, Dv,
                         float(scale));
  cpu::attention_backward(dqf.data(), dkf.data(), dvf.data(), gf.data(), of.data(), lf.data(), qf.data(), kf.data(),
                          vf.data(), ds.data(), B, S, H, Dqk, Dv, float(scale));
  // A score scale·q·k (16 terms, Σ|qk| ≲ 40) is off by ≤ 19u·0.25·40 ≈ 1.2e-5 worst case, ~1e-6
  // typically; that is also the relative error of each probability (plus the exp's 2 ulp and the
  // normalisation over ≤ 130 terms, ≤ 130u). out = Σ p·v with |v| ≲ 4, lse ~ log Σ: atol 5e-5
  // covers the worst case of both.
  expect_close("attention out", of, out, 0, 5e-5);
  expect_close("attention lse", lf, lse, 0, 5e-5);
  // The gradients sum ≤ 130 such terms (dS·k, dSᵀ·q, Pᵀ·dO) of magnitude ~1 with ~1e-6 relative
  // error each (the worst case does not add up coherently): atol 1e-4 on entries of size ~1–10.
  expect_close("attention dq", dqf, dq, 0, 1e-4);
  expect_close("attention dk", dkf, dk, 0, 1e-4);
  expect_close("attention dv", dvf, dv, 0, 1e-4);
}

// ---- MoE -------------------------------------------------------------------------------------

TEST(CpuParity, MoeGate) {
  const int64_t T = 64, E = 32, K = 4, n_group = 8, topk_group = 3;
  const Vec logits = randn(T * E, 290), bias = randn(E, 291, 0.05), dw = randn(T * K, 292);
  for (bool norm : {true, false}) {
    SCOPED_TRACE(norm ? "normalised" : "unnormalised");
    Vec w(T * K), s(T * E), dl(T * E, 0.0);
    std::vector<int32_t> idx(T * K), idxf(T * K);
    cpu::moe_gate_forward(w.data(), idx.data(), s.data(), logits.data(), bias.data(), T, E, K, n_group, topk_group,
                          2.5, norm);
    cpu::moe_gate_backward(dl.data(), dw.data(), s.data(), idx.data(), T, E, K, 2.5, norm);
    auto lf = as<float>(logits), bf = as<float>(bias), dwf = as<float>(dw);
    std::vector<float> wf(T * K), sf(T * E), dlf(T * E, 0.f);
    cpu::moe_gate_forward(wf.data(), idxf.data(), sf.data(), lf.data(), bf.data(), T, E, K, n_group, topk_group,
                          2.5f, norm);
    cpu::moe_gate_backward(dlf.data(), dwf.data(), sf.data(), idxf.data(), T, E, K, 2.5f, norm);
    // Random N(0,1) logits: the smallest gap between competing biased scores is ~1e-3, far above
    // the float scores' ~1e-7 error, so the selection must be identical.
    EXPECT_EQ(idxf, idx);
    // σ to ~4u relative; weights add a K-term sum, a divide and a multiply: rtol 16u.
    expect_close("gate scores", sf, s, 8 * u, 0);
    expect_close("gate weights", wf, w, 16 * u, 0);
    // dlogit = rs/Z·(dw − Σdw·s/Z)·s(1 − s): a K-term dot (cancellation → absolute ~K·u·Σ|dw·s|/Z
    // ≈ 4·6e-8·3·2.5 ≈ 2e-6) times s(1 − s) ≤ 1/4: atol 1e-6.
    expect_close("gate dlogits", dlf, dl, 16 * u, 1e-6);
  }
}

TEST(CpuParity, MoePermuteUnpermute) {
  const int64_t T = 33, K = 3, E = 7, C = 40;
  const auto indices = randint(T * K, 300, 0, int32_t(E - 1));
  std::vector<int32_t> counts(E), offsets(E + 1), row_of(T * K);
  cpu::moe_plan(counts.data(), offsets.data(), row_of.data(), indices.data(), T, E, K);
  const Vec x = randn(T * C, 301), y = randn(T * K * C, 302), w = randn(T * K, 303), g = randn(T * C, 304);
  const Vec gp = randn(T * K * C, 305);
  Vec xp(T * K * C), dx(T * C, 0.0), out(T * C, 0.0), dy(T * K * C, 0.0), dw(T * K, 0.0);
  cpu::moe_permute_forward(xp.data(), x.data(), row_of.data(), T, K, C);
  cpu::moe_permute_backward(dx.data(), gp.data(), row_of.data(), T, K, C);
  cpu::moe_unpermute_forward(out.data(), y.data(), w.data(), row_of.data(), T, K, C);
  cpu::moe_unpermute_backward(dy.data(), dw.data(), g.data(), y.data(), w.data(), row_of.data(), T, K, C);
  auto xf = as<float>(x), yf = as<float>(y), wf = as<float>(w), gf = as<float>(g), gpf = as<float>(gp);
  std::vector<float> xpf(T * K * C), dxf(T * C, 0.f), outf(T * C, 0.f), dyf(T * K * C, 0.f), dwf(T * K, 0.f);
  cpu::moe_permute_forward(xpf.data(), xf.data(), row_of.data(), T, K, C);
  cpu::moe_permute_backward(dxf.data(), gpf.data(), row_of.data(), T, K, C);
  cpu::moe_unpermute_forward(outf.data(), yf.data(), wf.data(), row_of.data(), T, K, C);
  cpu::moe_unpermute_backward(dyf.data(), dwf.data(), gf.data(), yf.data(), wf.data(), row_of.data(), T, K, C);
  // Permute copies: exact.
  expect_close("permute x_perm", xpf, xp, 0, 0);
  // Sums of K = 3 terms of size ≲ 4 (after a product): ≤ 5u·12 ≈ 4e-6.
  expect_close("permute dx", dxf, dx, 0, 4e-6);
  expect_close("unpermute out", outf, out, 0, 4e-6);
  expect_close("unpermute dy_perm", dyf, dy, 2 * u, 0);  // one product w·g (and += onto 0): ≤ 2u
  // dweights: a C = 40 term dot product, Σ|g·y| ≲ 40·1.5: ≤ 43u·60 ≈ 2e-4 worst case.
  expect_close("unpermute dweights", dwf, dw, 0, 2e-4);
}

// ---- Embedding, cross-entropy ----------------------------------------------------------------

TEST(CpuParity, Embedding) {
  const int64_t V = 50, C = 300, T = 200;  // C spans two 256-column chunks of the backward
  const auto tokens = randint(T, 310, 0, int32_t(V - 1));
  const Vec table = randn(V * C, 311), g = randn(T * C, 312);
  Vec out(T * C), dt(V * C, 0.0);
  cpu::embedding_forward(out.data(), tokens.data(), table.data(), T, C);
  cpu::embedding_backward(dt.data(), g.data(), tokens.data(), T, C);
  auto tf = as<float>(table), gf = as<float>(g);
  std::vector<float> outf(T * C), dtf(V * C, 0.f);
  cpu::embedding_forward(outf.data(), tokens.data(), tf.data(), T, C);
  cpu::embedding_backward(dtf.data(), gf.data(), tokens.data(), T, C);
  expect_close("embedding out", outf, out, 0, 0);  // a copy: exact
  // Each row sums ~T/V = 4 (at most ~12) N(0,1) values: ≤ 12u·12·3 ≈ 3e-5 worst case.
  expect_close("embedding dtable", dtf, dt, 0, 3e-5);
}

TEST(CpuParity, CrossEntropy) {
  const int64_t T = 40, V = 1003;  // V not a multiple of 8 or 16: vector body and scalar tail
  auto targets = randint(T, 320, 0, int32_t(V - 1));
  targets[7] = -1;
  const Vec logits = randn(T * V, 321, 3.0), dloss = randn(T, 322);
  Vec loss(T), lse(T), dl(T * V, 0.0);
  cpu::cross_entropy_forward(loss.data(), lse.data(), logits.data(), targets.data(), T, V);
  cpu::cross_entropy_backward(dl.data(), dloss.data(), logits.data(), lse.data(), targets.data(), T, V);
  auto lf = as<float>(logits), df = as<float>(dloss);
  std::vector<float> lossf(T), lsef(T), dlf(T * V, 0.f);
  cpu::cross_entropy_forward(lossf.data(), lsef.data(), lf.data(), targets.data(), T, V);
  cpu::cross_entropy_backward(dlf.data(), df.data(), lf.data(), lsef.data(), targets.data(), T, V);
  // lse = m + log Σ exp(x − m): the exp of each term to ~2 ulp of values ≤ 1, a V-term float sum
  // in 16 lanes (≤ (V/16 + 4)·u relative, ~4e-6), then log: absolute error ≲ 5e-6 on lse ~ 10.
  // The loss subtracts the exact logit. atol 1e-5.
  expect_close("cross_entropy lse", lsef, lse, 0, 1e-5);
  expect_close("cross_entropy loss", lossf, loss, 0, 1e-5);
  // dlogit = dloss·(exp(x − lse) − onehot): the exp of an argument off by ≤ 1e-5 → relative 1e-5
  // of a probability ≤ 1, times |dloss| ≲ 3: atol 3e-5.
  expect_close("cross_entropy dlogits", dlf, dl, 0, 3e-5);
}

// ---- FP8 emulation ---------------------------------------------------------------------------

// Float and double quantise the same x, but x/s is rounded differently, so an element whose x/s
// sits within float rounding (~2u relative) of an e4m3 rounding midpoint may legitimately land one
// e4m3 step apart. Such elements are excused; every other one has the same e4m3 value q, and
// q·s differs only by the scales' difference (one division each: u) and the float product's
// rounding (u): 2u relative. Power-of-two scales are exact in both, and so is q·s.
void check_fp8_parity(bool block, bool pow2, int64_t rows, int64_t cols, uint64_t seed) {
  Vec x = randn(rows * cols, seed, 2.0);
  for (size_t i = 0; i < x.size(); i += 97) x[i] = double(float(x[i] * 1e-4));  // some tiny values (subnormal e4m3 range)
  const int64_t nsr = block ? (rows + 127) / 128 : rows, nsc = (cols + 127) / 128;
  Vec y(x.size()), s(nsr * nsc);
  auto xf = as<float>(x);
  std::vector<float> yf(x.size()), sf(s.size());
  if (block) {
    cpu::fp8_quant_dequant_block(y.data(), s.data(), x.data(), rows, cols, pow2);
    cpu::fp8_quant_dequant_block(yf.data(), sf.data(), xf.data(), rows, cols, pow2);
  } else {
    cpu::fp8_quant_dequant_tile(y.data(), s.data(), x.data(), rows, cols, pow2);
    cpu::fp8_quant_dequant_tile(yf.data(), sf.data(), xf.data(), rows, cols, pow2);
  }
  expect_close("fp8 scales", sf, s, u, 0);
  int excused = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t i = r * cols + c;
      if (std::fabs(double(yf[i]) - y[i]) <= 2 * u * std::fabs(y[i])) continue;
      const double sc = s[(block ? r / 128 : r) * nsc + c / 128];
      const double v = x[i] / sc, q = y[i] / sc;  // q is the double run's e4m3 value
      // distance of v to the nearest midpoint between q and its neighbours: the step at q is
      // 2^(floor(log2|q|) − 3) (2^-9 below 2^-6), a midpoint is half a step away from q
      const double step = std::fabs(q) < 1.0 / 64 ? std::ldexp(1.0, -9) : std::ldexp(1.0, std::ilogb(q) - 3);
      const bool near_mid = std::fabs(std::fabs(v - q) - step / 2) <= 4 * u * std::fabs(v) ||
                            std::fabs(std::fabs(v - q) - step / 4) <= 4 * u * std::fabs(v);  // step halves below q
      if (near_mid) {
        ++excused;
      } else {
        ADD_FAILURE() << "fp8 element (" << r << "," << c << "): float " << yf[i] << " double " << y[i];
      }
    }
  }
  EXPECT_LE(excused, 2) << "more rounding-midpoint cases than chance allows";
}

TEST(CpuParity, Fp8TileAndBlock) {
  for (bool pow2 : {false, true}) {
    SCOPED_TRACE(pow2 ? "pow2 scales" : "fp32 scales");
    check_fp8_parity(false, pow2, 9, 300, 330);
    check_fp8_parity(true, pow2, 150, 200, 331);
  }
}

}  // namespace
}  // namespace mariana
