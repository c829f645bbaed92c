// Every layer's backward against central finite differences in fp64: MLA (with and without query
// compression, with YaRN), the dense MLP and DeepSeekMoE (routing held fixed), and the whole tiny
// model (every parameter tensor, routing held fixed).
#include <gtest/gtest.h>

#include <functional>
#include <numeric>

#include "kernels/ops.h"
#include "model/attention.h"
#include "model/moe.h"
#include "model_test_util.h"

namespace mariana {
namespace {

using testing::normals;

// Central differences with h = 1e-5 in fp64: truncation error ~h²·f''' ≈ 1e-10 and rounding error
// ~ε·|f|/h ≈ 1e-10 for |f| ~ 10, so |fd − analytic| ≤ 1e-7 + 1e-5·|analytic| leaves ~100× margin
// while still catching any real mistake (a wrong term is off by O(|gradient|)).
constexpr double kH = 1e-5;
constexpr double kAtol = 1e-7;
constexpr double kRtol = 1e-5;

// Checks up to `max_checks` entries of p[0..n) (evenly strided) against analytic[].
void check_fd(const std::string& what, double* p, const double* analytic, int64_t n,
              const std::function<double()>& loss, int64_t max_checks = 40) {
  const int64_t step = std::max<int64_t>(1, n / max_checks);
  for (int64_t i = 0; i < n; i += step) {
    const double keep = p[i];
    p[i] = keep + kH;
    const double lp = loss();
    p[i] = keep - kH;
    const double lm = loss();
    p[i] = keep;
    const double fd = (lp - lm) / (2 * kH);
    ASSERT_NEAR(analytic[i], fd, kAtol + kRtol * std::abs(fd)) << what << "[" << i << "]";
  }
}

struct Buffers {
  std::vector<std::vector<double>> store;
  double* take(int64_t n) {
    store.emplace_back(static_cast<size_t>(std::max<int64_t>(n, 1)), 0.0);
    return store.back().data();
  }
  double* random(int64_t n, uint64_t seed, double std) {
    double* p = take(n);
    auto z = normals(n, seed, store.size(), std);
    std::copy(z.begin(), z.end(), p);
    return p;
  }
};

double dot(const double* a, const double* b, int64_t n) { return std::inner_product(a, a + n, b, 0.0); }

void run_mla_case(int64_t qr, bool yarn) {
  MlaDims d;
  d.B = 2;
  d.S = 6;
  d.T = 12;
  d.C = 16;
  d.H = 2;
  d.qr = qr;
  d.r = 8;
  d.dn = 4;
  d.dr = 4;
  d.dv = 4;
  d.eps = 1e-6;
  d.softmax_scale = 1.0 / std::sqrt(8.0) * (yarn ? 1.3 : 1.0);
  d.rope_mscale = yarn ? 0.9 : 1.0;
  const int64_t T = d.T, C = d.C, H = d.H, dqk = d.dqk();
  Buffers b;
  double* x = b.random(T * C, 1, 1.0);
  MlaParams<double> p;
  MlaGrads<double> g;
  double *wqa = nullptr, *wqan = nullptr, *wqb = nullptr, *wq = nullptr;
  if (qr > 0) {
    wqa = b.random(qr * C, 2, 0.3);
    wqan = b.random(qr, 3, 0.1);
    for (int64_t i = 0; i < qr; ++i) wqan[i] += 1.0;
    wqb = b.random(H * dqk * qr, 4, 0.3);
    p.q_a_proj = wqa;
    p.q_a_layernorm = wqan;
    p.q_b_proj = wqb;
    g.q_a_proj = b.take(qr * C);
    g.q_a_layernorm = b.take(qr);
    g.q_b_proj = b.take(H * dqk * qr);
  } else {
    wq = b.random(H * dqk * C, 5, 0.3);
    p.q_proj = wq;
    g.q_proj = b.take(H * dqk * C);
  }
  double* wkva = b.random((d.r + d.dr) * C, 6, 0.3);
  double* wkvn = b.random(d.r, 7, 0.1);
  for (int64_t i = 0; i < d.r; ++i) wkvn[i] += 1.0;
  double* wkvb = b.random(H * (d.dn + d.dv) * d.r, 8, 0.3);
  double* wo = b.random(C * H * d.dv, 9, 0.3);
  p.kv_a_proj = wkva;
  p.kv_a_layernorm = wkvn;
  p.kv_b_proj = wkvb;
  p.o_proj = wo;
  g.kv_a_proj = b.take((d.r + d.dr) * C);
  g.kv_a_layernorm = b.take(d.r);
  g.kv_b_proj = b.take(H * (d.dn + d.dv) * d.r);
  g.o_proj = b.take(C * H * d.dv);
  MlaSaved<double> sv{b.take(T * std::max<int64_t>(qr, 1)), b.take(T), b.take(T * std::max<int64_t>(qr, 1)),
                      b.take(T * H * dqk), b.take(T * (d.r + d.dr)), b.take(T * d.r), b.take(T),
                      b.take(T * d.r), b.take(T * H * (d.dn + d.dv)), b.take(T * H * dqk),
                      b.take(T * H * d.dv), b.take(T * H * d.dv), b.take(T * H)};
  MlaScratch<double> sc{b.take(T * std::max<int64_t>(qr, 1)), b.take(T * std::max<int64_t>(qr, 1)),
                        b.take(T * H * dqk), b.take(T * (d.r + d.dr)), b.take(T * d.r), b.take(T * d.r),
                        b.take(T * H * (d.dn + d.dv)), b.take(T * H * dqk), b.take(T * H * d.dv),
                        b.take(T * H * d.dv)};
  // Two documents in row 0 (split at 3), one in row 1; positions restart per document.
  std::vector<int32_t> doc_start = {0, 0, 0, 3, 3, 3, 0, 0, 0, 0, 0, 0};
  std::vector<int32_t> pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = static_cast<int32_t>(t % d.S) - doc_start[t];
  std::vector<double> inv_freq(d.dr / 2);
  RopeParams rp;
  rp.rope_dim = static_cast<int>(d.dr);
  if (yarn) {
    rp.factor = 4;
    rp.original_max_position = 4;
  }
  cpu::rope_inv_freq(inv_freq.data(), rp);
  double* out = b.take(T * C);
  double* R = b.random(T * C, 10, 1.0);
  auto loss = [&]() {
    mla_forward(out, sv, x, pos.data(), doc_start.data(), inv_freq.data(), p, d);
    return dot(out, R, T * C);
  };
  loss();
  double* dx = b.take(T * C);
  mla_backward(dx, g, sc, R, sv, x, pos.data(), doc_start.data(), inv_freq.data(), p, d);
  check_fd("x", x, dx, T * C, loss);
  if (qr > 0) {
    check_fd("q_a_proj", wqa, g.q_a_proj, qr * C, loss);
    check_fd("q_a_layernorm", wqan, g.q_a_layernorm, qr, loss);
    check_fd("q_b_proj", wqb, g.q_b_proj, H * dqk * qr, loss);
  } else {
    check_fd("q_proj", wq, g.q_proj, H * dqk * C, loss);
  }
  check_fd("kv_a_proj_with_mqa", wkva, g.kv_a_proj, (d.r + d.dr) * C, loss);
  check_fd("kv_a_layernorm", wkvn, g.kv_a_layernorm, d.r, loss);
  check_fd("kv_b_proj", wkvb, g.kv_b_proj, H * (d.dn + d.dv) * d.r, loss);
  check_fd("o_proj", wo, g.o_proj, C * H * d.dv, loss);
}

TEST(MlaGrad, QueryLoraMatchesFiniteDifferences) { run_mla_case(6, false); }
TEST(MlaGrad, PlainQueryWithYarnMatchesFiniteDifferences) { run_mla_case(0, true); }

TEST(MlpGrad, MatchesFiniteDifferences) {
  const MlpDims d{5, 8, 12};
  Buffers b;
  double* x = b.random(d.T * d.C, 1, 1.0);
  MlpParams<double> p{b.random(d.I * d.C, 2, 0.3), b.random(d.I * d.C, 3, 0.3), b.random(d.C * d.I, 4, 0.3)};
  MlpGrads<double> g{b.take(d.I * d.C), b.take(d.I * d.C), b.take(d.C * d.I)};
  MlpSaved<double> sv{b.take(d.T * d.I), b.take(d.T * d.I), b.take(d.T * d.I)};
  MlpScratch<double> sc{b.take(d.T * d.I), b.take(d.T * d.I), b.take(d.T * d.I)};
  double* out = b.take(d.T * d.C);
  double* R = b.random(d.T * d.C, 5, 1.0);
  auto loss = [&]() {
    mlp_forward(out, sv, x, p, d);
    return dot(out, R, d.T * d.C);
  };
  loss();
  double* dx = b.take(d.T * d.C);
  mlp_backward(dx, g, sc, R, sv, x, p, d);
  check_fd("x", x, dx, d.T * d.C, loss);
  check_fd("gate_proj", const_cast<double*>(p.gate_proj), g.gate_proj, d.I * d.C, loss);
  check_fd("up_proj", const_cast<double*>(p.up_proj), g.up_proj, d.I * d.C, loss);
  check_fd("down_proj", const_cast<double*>(p.down_proj), g.down_proj, d.C * d.I, loss);
}

TEST(MoeGrad, MatchesFiniteDifferencesWithRoutingHeldFixed) {
  MoeDims d;
  d.B = 2;
  d.S = 5;
  d.T = 10;
  d.C = 8;
  d.E = 8;
  d.K = 2;
  d.Fm = 6;
  d.Fs = 6;
  d.n_group = 4;
  d.topk_group = 2;
  d.route_scale = 2.5;
  const int64_t T = d.T, C = d.C, E = d.E, K = d.K;
  Buffers b;
  double* x = b.random(T * C, 1, 1.0);
  std::vector<MlpParams<double>> ep(E);
  std::vector<MlpGrads<double>> eg(E);
  for (int64_t e = 0; e < E; ++e) {
    ep[e] = {b.random(d.Fm * C, 10 + e, 0.3), b.random(d.Fm * C, 30 + e, 0.3), b.random(C * d.Fm, 50 + e, 0.3)};
    eg[e] = {b.take(d.Fm * C), b.take(d.Fm * C), b.take(C * d.Fm)};
  }
  MoeParams<double> p;
  p.gate = b.random(E * C, 2, 0.5);
  p.bias = b.random(E, 3, 0.05);
  p.experts = ep.data();
  p.shared = {b.random(d.Fs * C, 4, 0.3), b.random(d.Fs * C, 5, 0.3), b.random(C * d.Fs, 6, 0.3)};
  MoeGrads<double> g;
  g.gate = b.take(E * C);
  g.experts = eg.data();
  g.shared = {b.take(d.Fs * C), b.take(d.Fs * C), b.take(C * d.Fs)};
  std::vector<int32_t> idx(T * K), counts(E), offsets(E + 1), row_of(T * K);
  MoeSaved<double> sv;
  sv.logits = b.take(T * E);
  sv.scores = b.take(T * E);
  sv.weights = b.take(T * K);
  sv.indices = idx.data();
  sv.counts = counts.data();
  sv.offsets = offsets.data();
  sv.row_of = row_of.data();
  sv.x_perm = b.take(T * K * C);
  sv.expert = {b.take(T * K * d.Fm), b.take(T * K * d.Fm), b.take(T * K * d.Fm)};
  sv.y_perm = b.take(T * K * C);
  sv.shared = {b.take(T * d.Fs), b.take(T * d.Fs), b.take(T * d.Fs)};
  sv.shared_out = b.take(T * C);
  sv.balance_f = b.take(d.B * E);
  MoeScratch<double> sc;
  sc.dy_perm = b.take(T * K * C);
  sc.dx_perm = b.take(T * K * C);
  sc.dweights = b.take(T * K);
  sc.dlogits = b.take(T * E);
  sc.expert = {b.take(T * K * d.Fm), b.take(T * K * d.Fm), b.take(T * K * d.Fm)};
  sc.shared = {b.take(T * d.Fs), b.take(T * d.Fs), b.take(T * d.Fs)};
  double* out = b.take(T * C);
  double* R = b.random(T * C, 7, 1.0);
  const double alpha = 0.5;  // large, so the balance-loss gradient is visible in the check
  bool first = true;
  auto loss = [&]() {
    const double bal = moe_forward(out, sv, x, p, d, /*reuse_routing=*/!first);
    first = false;
    return dot(out, R, T * C) + alpha * bal;
  };
  loss();
  double* dx = b.take(T * C);
  moe_backward(dx, g, sc, R, sv, x, p, d, alpha);
  check_fd("x", x, dx, T * C, loss);
  check_fd("gate", const_cast<double*>(p.gate), g.gate, E * C, loss, 64);
  for (int64_t e = 0; e < E; ++e) {
    check_fd("expert.gate_proj", const_cast<double*>(ep[e].gate_proj), eg[e].gate_proj, d.Fm * C, loss, 8);
    check_fd("expert.down_proj", const_cast<double*>(ep[e].down_proj), eg[e].down_proj, C * d.Fm, loss, 8);
  }
  check_fd("shared.up_proj", const_cast<double*>(p.shared.up_proj), g.shared.up_proj, d.Fs * C, loss);
  // The routing the checks ran under is the one the analytic gradient used.
  int32_t total = 0;
  for (int64_t e = 0; e < E; ++e) total += counts[e];
  EXPECT_EQ(total, T * K);
}

void run_model_case(const std::string& config_rel, bool yarn_variant) {
  ModelConfig c = testing::load_config(config_rel);
  if (yarn_variant) {
    c.q_lora_rank = 0;
    c.n_group = 1;
    c.topk_group = 1;
    c.num_nextn_predict_layers = 2;
    c.yarn.enabled = true;
    c.yarn.factor = 4;
    c.yarn.original_max_position = 8;
    c.yarn.mscale = 1.0;
    c.yarn.mscale_all_dim = 0.8;
  }
  Model<double> m(c);
  testing::randomise(m, 3, 0.1);
  const Batch batch = testing::random_batch(2, 8, c.vocab_size, 5);
  LossWeights w;
  w.mtp_weight = 0.3;
  w.balance_alpha = 0.1;
  ForwardResult res;
  ASSERT_TRUE(m.forward(batch, w, &res).ok());
  m.zero_grads();
  m.backward();
  auto loss = [&]() {
    ForwardResult r;
    const Status st = m.forward(batch, w, &r, /*reuse_routing=*/true);
    EXPECT_TRUE(st.ok()) << st.to_string();
    return r.loss;
  };
  // The loss is a sum of CE means (~7 each): rounding error ε·7/h ≈ 2e-10, still under kAtol.
  for (const ParamSpec& s : m.table().specs()) {
    if (s.kind == ParamKind::kGateBias) continue;  // selection only: no gradient by design
    check_fd(s.name, m.params() + s.offset, m.grads() + s.offset, s.numel(), loss, 3);
  }
}

TEST(ModelGrad, TinyMatchesFiniteDifferencesOnEveryTensor) { run_model_case("configs/models/tiny.json", false); }
TEST(ModelGrad, PlainQueryOneGroupYarnTwoMtpModules) { run_model_case("configs/models/tiny.json", true); }

}  // namespace
}  // namespace mariana

namespace mariana {
namespace {

// backward_custom: a user loss U = Σ G·logits + Σ R·final_hidden on top of the CE losses, with
// the MTP modules skipped (mtp_weight 0) — the path GRPO's surrogate and the reward head take.
TEST(ModelGrad, CustomLogitAndHiddenGradientsMatchFiniteDifferences) {
  ModelConfig c = testing::load_config("configs/models/tiny.json");
  Model<double> m(c);
  testing::randomise(m, 4, 0.1);
  Batch batch = testing::random_batch(2, 6, c.vocab_size, 9);
  for (size_t i = 0; i < batch.targets.size(); i += 2) batch.targets[i] = -1;  // some CE left
  LossWeights w;
  w.mtp_weight = 0;
  w.balance_alpha = 0.1;
  const int64_t T = 12, V = c.vocab_size, C = c.hidden_size;
  const auto G = testing::normals(T * V, 11, 0, 0.01);
  const auto R = testing::normals(T * C, 11, 1, 0.1);
  ForwardResult res;
  ASSERT_TRUE(m.forward(batch, w, &res).ok());
  EXPECT_EQ(res.loss_mtp, 0.0);
  m.zero_grads();
  m.backward_custom(G.data(), R.data());
  auto loss = [&]() {
    ForwardResult r;
    EXPECT_TRUE(m.forward(batch, w, &r, /*reuse_routing=*/true).ok());
    return r.loss + dot(m.logits(), G.data(), T * V) + dot(m.final_hidden(), R.data(), T * C);
  };
  for (const ParamSpec& s : m.table().specs()) {
    if (s.kind == ParamKind::kGateBias) continue;
    if (s.name.find("layers." + std::to_string(c.num_hidden_layers) + ".") != std::string::npos) {
      // The skipped MTP module gets no gradient at all.
      for (int64_t i = 0; i < s.numel(); ++i) ASSERT_EQ(m.grads()[s.offset + i], 0.0) << s.name;
      continue;
    }
    check_fd(s.name, m.params() + s.offset, m.grads() + s.offset, s.numel(), loss, 3);
  }
}

}  // namespace
}  // namespace mariana
