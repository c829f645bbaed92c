// fp64 finite-difference checks of every CPU op with a backward (kernels/ops_list.inc). Gradient
// buffers start from a random prior that is subtracted afterwards, so each test also checks that
// the backward accumulates (+=) rather than overwrites. Tolerances: see expect_fd_gradient.
#include <cmath>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace mariana {
namespace {

using namespace kernel_test;

TEST(CpuGradCheck, Linear) {
  const int64_t T = 3, in = 4, out = 5;
  Vec x = randn(T * in, 1), W = randn(out * in, 2);
  const Vec R = randn(T * out, 3), dx0 = randn(T * in, 4), dW0 = randn(out * in, 5);
  auto f = [&] {
    Vec y(T * out);
    cpu::linear_forward(y.data(), x.data(), W.data(), T, in, out);
    return y;
  };
  Vec dx = dx0, dW = dW0;
  cpu::linear_backward(dx.data(), dW.data(), R.data(), x.data(), W.data(), T, in, out);
  expect_fd_gradient("linear dx", x, f, R, minus(dx, dx0));
  expect_fd_gradient("linear dW", W, f, R, minus(dW, dW0));
  // Either output may be null; the other is unaffected (bitwise: the same single product).
  Vec dx_only = dx0, dW_only = dW0;
  cpu::linear_backward(dx_only.data(), nullptr, R.data(), x.data(), W.data(), T, in, out);
  cpu::linear_backward(nullptr, dW_only.data(), R.data(), x.data(), W.data(), T, in, out);
  EXPECT_EQ(dx_only, dx);
  EXPECT_EQ(dW_only, dW);
}

TEST(CpuGradCheck, Rmsnorm) {
  const int64_t T = 3, C = 7;
  const double eps = 1e-5;
  Vec x = randn(T * C, 11), w = randn(C, 12);
  const Vec R = randn(T * C, 13), dx0 = randn(T * C, 14), dw0 = randn(C, 15);
  Vec rstd(T);
  auto f = [&] {
    Vec y(T * C), r(T);
    cpu::rmsnorm_forward(y.data(), r.data(), x.data(), w.data(), T, C, eps);
    return y;
  };
  Vec y(T * C);
  cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), T, C, eps);
  Vec dx = dx0, dw = dw0;
  cpu::rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), T, C);
  expect_fd_gradient("rmsnorm din", x, f, R, minus(dx, dx0));
  expect_fd_gradient("rmsnorm dweight", w, f, R, minus(dw, dw0));
}

TEST(CpuGradCheck, Rope) {
  // Rope on the first 6 of 8 values of each head, heads padded inside a 19-wide token row: the
  // untouched values must pass through (identity gradient) as well.
  const int64_t T = 3, H = 2, rope_dim = 6, head_stride = 8, token_stride = H * head_stride + 3;
  RopeParams p;
  p.rope_dim = int(rope_dim);
  p.theta = 10.0;
  Vec inv_freq(rope_dim / 2);
  cpu::rope_inv_freq(inv_freq.data(), p);
  const std::vector<int32_t> pos = {0, 5, 17};
  Vec x = randn(T * token_stride, 21);
  const Vec R = randn(T * token_stride, 22);
  auto f = [&] {
    Vec y = x;
    cpu::rope_forward(y.data(), pos.data(), inv_freq.data(), T, H, rope_dim, token_stride, head_stride);
    return y;
  };
  Vec g = R;  // rope_backward works in place: dout in, din out
  cpu::rope_backward(g.data(), pos.data(), inv_freq.data(), T, H, rope_dim, token_stride, head_stride);
  expect_fd_gradient("rope dx", x, f, R, g);
}

struct AttentionCase {
  int64_t B, S, H, Dqk, Dv;
  double scale;
  std::vector<int32_t> doc_start;  // [B·S]
};

void check_attention_gradient(const AttentionCase& c, uint64_t seed) {
  const int64_t T = c.B * c.S;
  Vec q = randn(T * c.H * c.Dqk, seed), k = randn(T * c.H * c.Dqk, seed + 1), v = randn(T * c.H * c.Dv, seed + 2);
  const Vec R = randn(T * c.H * c.Dv, seed + 3);
  const Vec dq0 = randn(q.size(), seed + 4), dk0 = randn(k.size(), seed + 5), dv0 = randn(v.size(), seed + 6);
  auto f = [&] {
    Vec out(T * c.H * c.Dv), lse(T * c.H);
    cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), c.doc_start.data(), c.B, c.S,
                           c.H, c.Dqk, c.Dv, c.scale);
    return out;
  };
  Vec out(T * c.H * c.Dv), lse(T * c.H);
  cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), c.doc_start.data(), c.B, c.S, c.H,
                         c.Dqk, c.Dv, c.scale);
  Vec dq = dq0, dk = dk0, dv = dv0;
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), R.data(), out.data(), lse.data(), q.data(), k.data(),
                          v.data(), c.doc_start.data(), c.B, c.S, c.H, c.Dqk, c.Dv, c.scale);
  expect_fd_gradient("attention dq", q, f, R, minus(dq, dq0));
  expect_fd_gradient("attention dk", k, f, R, minus(dk, dk0));
  expect_fd_gradient("attention dv", v, f, R, minus(dv, dv0));
}

TEST(CpuGradCheck, AttentionSmallWithDocuments) {
  // Sequence 0 packs documents [0,3) and [3,6); sequence 1 packs [0,2), [2,5) and a 1-token [5,6).
  check_attention_gradient({2, 6, 2, 4, 3, 0.5, {0, 0, 0, 3, 3, 3, 0, 0, 2, 2, 2, 5}}, 31);
}

TEST(CpuGradCheck, AttentionSeveralRowBlocks) {
  // S = 70 spans two 64-row blocks of the kernel. Sequence 0: documents [0,30) and [30,70), the
  // boundary inside the first block; sequence 1: [0,64) and [64,70), the boundary on the block edge.
  AttentionCase c{2, 70, 1, 3, 2, 0.7, {}};
  for (int64_t i = 0; i < 70; ++i) c.doc_start.push_back(i < 30 ? 0 : 30);
  for (int64_t i = 0; i < 70; ++i) c.doc_start.push_back(i < 64 ? 0 : 64);
  check_attention_gradient(c, 41);
}

TEST(CpuGradCheck, Swiglu) {
  const int64_t N = 20;
  Vec gate = randn(N, 51, 2.0), up = randn(N, 52);
  const Vec R = randn(N, 53), dg0 = randn(N, 54), du0 = randn(N, 55);
  auto f = [&] {
    Vec out(N);
    cpu::swiglu_forward(out.data(), gate.data(), up.data(), N);
    return out;
  };
  Vec dg = dg0, du = du0;
  cpu::swiglu_backward(dg.data(), du.data(), R.data(), gate.data(), up.data(), N);
  expect_fd_gradient("swiglu dgate", gate, f, R, minus(dg, dg0));
  expect_fd_gradient("swiglu dup", up, f, R, minus(du, du0));
}

// The gate's weights as a function of the logits with the selection held fixed (a plain
// re-statement of ops_list.inc: σ, gather, optional normalisation, route_scale).
Vec gate_weights_for_fixed_indices(const Vec& logits, const std::vector<int32_t>& indices, int64_t T, int64_t E,
                                   int64_t K, double route_scale, bool norm) {
  Vec w(T * K);
  for (int64_t t = 0; t < T; ++t) {
    double z = 0;
    for (int64_t r = 0; r < K; ++r) {
      w[t * K + r] = 1.0 / (1.0 + std::exp(-logits[t * E + indices[t * K + r]]));
      z += w[t * K + r];
    }
    for (int64_t r = 0; r < K; ++r) w[t * K + r] *= norm ? route_scale / z : route_scale;
  }
  return w;
}

void check_gate_gradient(bool norm) {
  const int64_t T = 4, E = 8, K = 3, n_group = 4, topk_group = 2;
  const double rs = 2.5;
  Vec logits = randn(T * E, 61), bias = randn(E, 62, 0.1);
  Vec weights(T * K), scores(T * E);
  std::vector<int32_t> indices(T * K);
  cpu::moe_gate_forward(weights.data(), indices.data(), scores.data(), logits.data(), bias.data(), T, E, K,
                        n_group, topk_group, rs, norm);
  // The kernel's forward and the fixed-selection helper agree at the base point (same formula,
  // both in fp64: only rounding-order differences, a few ulp).
  expect_close("gate weights vs helper", weights,
               gate_weights_for_fixed_indices(logits, indices, T, E, K, rs, norm), 1e-14, 0);
  const Vec R = randn(T * K, 63), dl0 = randn(T * E, 64);
  Vec dl = dl0;
  cpu::moe_gate_backward(dl.data(), R.data(), scores.data(), indices.data(), T, E, K, rs, norm);
  expect_fd_gradient(norm ? "gate dlogits (normalised)" : "gate dlogits (unnormalised)", logits,
                     [&] { return gate_weights_for_fixed_indices(logits, indices, T, E, K, rs, norm); }, R,
                     minus(dl, dl0));
}

TEST(CpuGradCheck, MoeGateNormalised) { check_gate_gradient(true); }
TEST(CpuGradCheck, MoeGateUnnormalised) { check_gate_gradient(false); }

struct Plan {
  std::vector<int32_t> counts, offsets, row_of;
};
Plan make_plan(const std::vector<int32_t>& indices, int64_t T, int64_t E, int64_t K) {
  Plan p{std::vector<int32_t>(E), std::vector<int32_t>(E + 1), std::vector<int32_t>(T * K)};
  cpu::moe_plan(p.counts.data(), p.offsets.data(), p.row_of.data(), indices.data(), T, E, K);
  return p;
}

TEST(CpuGradCheck, MoePermute) {
  const int64_t T = 5, K = 2, C = 3, E = 4;
  const Plan plan = make_plan(randint(T * K, 71, 0, int32_t(E - 1)), T, E, K);
  Vec x = randn(T * C, 72);
  const Vec R = randn(T * K * C, 73), dx0 = randn(T * C, 74);
  auto f = [&] {
    Vec xp(T * K * C);
    cpu::moe_permute_forward(xp.data(), x.data(), plan.row_of.data(), T, K, C);
    return xp;
  };
  Vec dx = dx0;
  cpu::moe_permute_backward(dx.data(), R.data(), plan.row_of.data(), T, K, C);
  expect_fd_gradient("moe_permute dx", x, f, R, minus(dx, dx0));
}

TEST(CpuGradCheck, MoeUnpermute) {
  const int64_t T = 5, K = 2, C = 3, E = 4;
  const Plan plan = make_plan(randint(T * K, 81, 0, int32_t(E - 1)), T, E, K);
  Vec y = randn(T * K * C, 82), w = randn(T * K, 83);
  const Vec R = randn(T * C, 84), dy0 = randn(T * K * C, 85), dw0 = randn(T * K, 86);
  auto f = [&] {
    Vec out(T * C, 0.0);
    cpu::moe_unpermute_forward(out.data(), y.data(), w.data(), plan.row_of.data(), T, K, C);
    return out;
  };
  Vec dy = dy0, dw = dw0;
  cpu::moe_unpermute_backward(dy.data(), dw.data(), R.data(), y.data(), w.data(), plan.row_of.data(), T, K, C);
  expect_fd_gradient("moe_unpermute dy_perm", y, f, R, minus(dy, dy0));
  expect_fd_gradient("moe_unpermute dweights", w, f, R, minus(dw, dw0));
}

TEST(CpuGradCheck, Embedding) {
  const int64_t V = 6, C = 4;
  const std::vector<int32_t> tokens = {2, 0, 5, 2, 2, 1, 0, 4, 2};  // repeats accumulate; row 3 unused
  const int64_t T = int64_t(tokens.size());
  Vec table = randn(V * C, 91);
  const Vec R = randn(T * C, 92), dt0 = randn(V * C, 93);
  auto f = [&] {
    Vec out(T * C);
    cpu::embedding_forward(out.data(), tokens.data(), table.data(), T, C);
    return out;
  };
  Vec dt = dt0;
  cpu::embedding_backward(dt.data(), R.data(), tokens.data(), T, C);
  expect_fd_gradient("embedding dtable", table, f, R, minus(dt, dt0));
}

TEST(CpuGradCheck, CrossEntropy) {
  const int64_t T = 5, V = 7;
  const std::vector<int32_t> targets = {3, -1, 0, 6, 2};  // row 1 ignored
  Vec logits = randn(T * V, 101, 2.0);
  const Vec R = randn(T, 102), dl0 = randn(T * V, 103);
  auto f = [&] {
    Vec losses(T), lse(T);
    cpu::cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), T, V);
    return losses;
  };
  Vec losses(T), lse(T);
  cpu::cross_entropy_forward(losses.data(), lse.data(), logits.data(), targets.data(), T, V);
  Vec dl = dl0;
  cpu::cross_entropy_backward(dl.data(), R.data(), logits.data(), lse.data(), targets.data(), T, V);
  const Vec grad = minus(dl, dl0);
  expect_fd_gradient("cross_entropy dlogits", logits, f, R, grad);
  for (int64_t j = 0; j < V; ++j) EXPECT_EQ(grad[1 * V + j], 0.0) << "ignored row, column " << j;
}

}  // namespace
}  // namespace mariana
