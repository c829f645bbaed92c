// GRPO's advantages and token-level loss: hand-computed cases, finite differences of the
// gradient, and the PyTorch reference of the same formula (tests/reference/grpo_ref.py, run with
// Debian's /usr/bin/python3 and its python3-torch).
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/philox.h"
#include "rl/grpo_loss.h"

namespace mariana::rl {
namespace {

TEST(GrpoAdvantages, GroupNormalisedWithZeroVarianceGroupsAtZero) {
  const auto a = group_advantages({1, 0, 0, 1, 1, 1, 1, 1, 0.5, 0, 0, 0}, 4, {.eps = 0.0});
  ASSERT_EQ(a.values.size(), 12u);
  for (int i : {0, 3}) EXPECT_DOUBLE_EQ(a.values[i], 1.0);   // (1 − 0.5) / 0.5
  for (int i : {1, 2}) EXPECT_DOUBLE_EQ(a.values[i], -1.0);
  for (int i = 4; i < 8; ++i) EXPECT_EQ(a.values[i], 0.0);
  EXPECT_EQ(a.zero_variance_groups, 1);
  // Third group: mean 0.125, population std sqrt(3)·0.125 → 0.375/0.2165 = sqrt(3).
  EXPECT_NEAR(a.values[8], std::sqrt(3.0), 1e-12);
  EXPECT_NEAR(a.values[9], -1.0 / std::sqrt(3.0), 1e-12);
}

// TRL's formulas (tests/reference/grpo_advantages_ref.py: mean per group, torch.std, (r − mean) /
// (std + 1e-4)) for all six std × scale_rewards settings on one fixed batch: binary and composite
// rewards, a zero-variance group, a group with one outlier.
TEST(GrpoAdvantages, MatchTrlFormulasForEverySetting) {
  const std::vector<double> rewards = {1.1, 0.1, 0.1, 1.1, 0.1, 0.1, 0.1, 0.1,
                                       1.0, 0.0, 0.5, 0.0, 1.1, 1.1, 1.1, 0.0};
  const int64_t group = 4;
  const double eps = 1e-4;
  const auto dir = std::filesystem::temp_directory_path() / ("mariana_adv_ref_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "in.json") << nlohmann::json{{"rewards", rewards}, {"group", group}, {"eps", eps}}.dump();
  const std::string cmd = "/usr/bin/python3 " + std::string(MARIANA_SOURCE_DIR) +
                          "/tests/reference/grpo_advantages_ref.py " + (dir / "in.json").string() + " " +
                          (dir / "out.json").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "the PyTorch reference failed (run scripts/setup.sh): " << cmd;
  const nlohmann::json ref = nlohmann::json::parse(std::ifstream(dir / "out.json"));
  std::filesystem::remove_all(dir);
  for (const auto& [std_name, std_kind] :
       {std::pair{"sample", AdvantageStd::kSample}, std::pair{"population", AdvantageStd::kPopulation}}) {
    for (const auto& [scale_name, scale] : {std::pair{"group", RewardScaling::kGroup},
                                            std::pair{"batch", RewardScaling::kBatch},
                                            std::pair{"none", RewardScaling::kNone}}) {
      const std::string key = std::string(std_name) + "/" + scale_name;
      const auto expected = ref.at(key).get<std::vector<double>>();
      const Advantages a = group_advantages(rewards, group, {.std = std_kind, .scale = scale, .eps = eps});
      ASSERT_EQ(a.values.size(), expected.size()) << key;
      for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(a.values[i], expected[i], 1e-12) << key << " [" << i << "]";
      EXPECT_EQ(a.zero_variance_groups, 1) << key;
    }
  }
  // Independent spot checks (by hand): group 1 is {1.1, 0.1, 0.1, 1.1}, mean 0.6, deviations ±0.5;
  // sample std sqrt(4·0.25/3), population std 0.5.
  const Advantages sample = group_advantages(rewards, group, {.std = AdvantageStd::kSample, .eps = eps});
  EXPECT_NEAR(sample.values[0], 0.5 / (std::sqrt(1.0 / 3.0) + eps), 1e-12);
  const Advantages pop = group_advantages(rewards, group, {.eps = eps});
  EXPECT_NEAR(pop.values[0], 0.5 / (0.5 + eps), 1e-12);
  const Advantages none = group_advantages(rewards, group, {.scale = RewardScaling::kNone});
  EXPECT_NEAR(none.values[15], 0.0 - 0.825, 1e-12);
}

// Dynamic sampling keeps groups with signal, up to the room left, and counts the flat ones.
TEST(GrpoAdvantages, SelectGroupsDropsFlatGroups) {
  const std::vector<double> r = {1, 1, 1, 0, 1, 0, 2, 2, 2, 0, 0, 1, 3, 4, 5};  // 5 groups of 3
  int64_t dropped = 0;
  EXPECT_EQ(select_groups(r, 3, false, 0, &dropped), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(dropped, 0);
  EXPECT_EQ(select_groups(r, 3, true, 10, &dropped), (std::vector<int64_t>{1, 3, 4}));
  EXPECT_EQ(dropped, 2);
  dropped = 0;
  EXPECT_EQ(select_groups(r, 3, true, 2, &dropped), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(dropped, 2);  // groups 0 and 2; group 4 is past the room and not looked at
  dropped = 0;
  EXPECT_TRUE(select_groups(r, 3, true, 0, &dropped).empty());
  EXPECT_EQ(dropped, 0);
}

TEST(GrpoLoss, HandComputedCases) {
  // V = 2, uniform logits: lp = log ½. On-policy (ρ = 1), A = 2, reference = policy (k3 = 0):
  // loss = −2; d/dlp = −2; dlogits = −2·(onehot − ½) = [−1, 1].
  const double logits[2] = {0, 0};
  const int32_t target[1] = {0};
  const double half = std::log(0.5);
  double old_lp[1] = {half}, ref_lp[1] = {half}, adv[1] = {2.0}, d[2];
  GrpoLossParams p;
  p.kl_beta = 0.1;
  auto st = grpo_token_loss(logits, 1, 2, target, old_lp, ref_lp, adv, p, d);
  EXPECT_NEAR(st.loss, -2.0, 1e-12);
  EXPECT_NEAR(d[0], -1.0, 1e-12);
  EXPECT_NEAR(d[1], 1.0, 1e-12);
  EXPECT_EQ(st.clip_frac, 0.0);
  EXPECT_NEAR(st.entropy, std::log(2.0), 1e-12);
  // ρ = 2 > 1 + ε with A = 1: the clipped term wins, loss −1.2 and no surrogate gradient; only the
  // KL term to a reference at lp = log ¼ remains: k3 = e^{log ½} − log ½ − 1 with δ = log ¼ − log ½.
  old_lp[0] = std::log(0.25);
  adv[0] = 1.0;
  ref_lp[0] = std::log(0.25);
  st = grpo_token_loss(logits, 1, 2, target, old_lp, ref_lp, adv, p, d);
  const double delta = std::log(0.5);
  const double k3 = std::exp(delta) - delta - 1;
  EXPECT_NEAR(st.loss, -1.2 + 0.1 * k3, 1e-12);
  EXPECT_NEAR(st.kl, k3, 1e-12);
  EXPECT_EQ(st.clip_frac, 1.0);
  const double g = 0.1 * (1 - std::exp(delta));  // β(1 − e^δ)
  EXPECT_NEAR(d[0], g * 0.5, 1e-12);
  EXPECT_NEAR(d[1], -g * 0.5, 1e-12);
  // A negative advantage with ρ < 1 − ε is clipped too; ρ > 1 + ε is not.
  adv[0] = -1.0;
  old_lp[0] = std::log(0.9);  // ρ = 0.5/0.9 < 0.8
  st = grpo_token_loss(logits, 1, 2, target, old_lp, ref_lp, adv, p, d);
  EXPECT_EQ(st.clip_frac, 1.0);
  EXPECT_NEAR(st.loss, 0.8 + 0.1 * k3, 1e-12);
  old_lp[0] = std::log(0.25);  // ρ = 2
  st = grpo_token_loss(logits, 1, 2, target, old_lp, ref_lp, adv, p, d);
  EXPECT_EQ(st.clip_frac, 0.0);
  EXPECT_NEAR(st.loss, 2.0 + 0.1 * k3, 1e-12);
}

struct Case {
  int64_t T = 6, V = 5;
  std::vector<double> logits, old_lp, ref_lp, adv;
  std::vector<int32_t> target;
  GrpoLossParams p;
};

Case random_case(uint64_t seed) {
  Case c;
  c.logits.resize(static_cast<size_t>(c.T * c.V));
  philox_fill_normal(c.logits.data(), c.T * c.V, seed, 0, 0.0, 1.0);
  std::vector<double> z(static_cast<size_t>(3 * c.T));
  philox_fill_normal(z.data(), 3 * c.T, seed, 1, 0.0, 1.0);
  c.target = {2, -1, 0, 4, 1, 3};
  c.p.clip_eps = 0.2;
  c.p.clip_eps_high = 0.28;
  c.p.kl_beta = 0.05;
  std::vector<double> lp(static_cast<size_t>(c.T));
  token_logprobs(c.logits.data(), c.T, c.V, c.target.data(), lp.data());
  for (int64_t t = 0; t < c.T; ++t) {
    c.old_lp.push_back(lp[t] + 0.8 * z[t]);  // ratios from ~0.2 to ~5: some tokens clipped
    c.ref_lp.push_back(lp[t] + 0.3 * z[c.T + t]);
    c.adv.push_back(z[2 * c.T + t]);
  }
  return c;
}

TEST(GrpoLoss, GradientMatchesFiniteDifferences) {
  for (uint64_t seed : {1, 2, 3}) {
    Case c = random_case(seed);
    std::vector<double> d(c.logits.size()), scratch(c.logits.size());
    auto loss = [&] {
      return grpo_token_loss(c.logits.data(), c.T, c.V, c.target.data(), c.old_lp.data(), c.ref_lp.data(),
                             c.adv.data(), c.p, scratch.data()).loss;
    };
    grpo_token_loss(c.logits.data(), c.T, c.V, c.target.data(), c.old_lp.data(), c.ref_lp.data(), c.adv.data(), c.p,
                    d.data());
    const double h = 1e-6;
    for (size_t i = 0; i < c.logits.size(); ++i) {
      const double x = c.logits[i];
      c.logits[i] = x + h;
      const double lp = loss();
      c.logits[i] = x - h;
      const double lm = loss();
      c.logits[i] = x;
      EXPECT_NEAR(d[i], (lp - lm) / (2 * h), 1e-7) << "seed " << seed << " element " << i;
    }
  }
}

// The statistics are sums over tokens; they come out bitwise the same on 1, 2 and 3 threads.
TEST(GrpoLoss, StatisticsBitwiseOnOneTwoThreeThreads) {
  const int64_t T = 301, V = 7;
  std::vector<double> logits(static_cast<size_t>(T * V)), z(static_cast<size_t>(3 * T));
  philox_fill_normal(logits.data(), T * V, 21, 0, 0.0, 1.0);
  philox_fill_normal(z.data(), 3 * T, 21, 1, 0.0, 1.0);
  std::vector<int32_t> target(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) target[t] = t % 5 == 4 ? -1 : static_cast<int32_t>(t % V);
  std::vector<double> lp(static_cast<size_t>(T)), old_lp, ref_lp, adv;
  token_logprobs(logits.data(), T, V, target.data(), lp.data());
  for (int64_t t = 0; t < T; ++t) {
    old_lp.push_back(lp[t] + 0.8 * z[t]);
    ref_lp.push_back(lp[t] + 0.3 * z[T + t]);
    adv.push_back(z[2 * T + t]);
  }
  GrpoLossParams p;
  p.kl_beta = 0.05;
  std::vector<double> d(logits.size());
  GrpoLossStats one;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    const GrpoLossStats st = grpo_token_loss(logits.data(), T, V, target.data(), old_lp.data(), ref_lp.data(),
                                             adv.data(), p, d.data());
    if (threads == 1) {
      one = st;
      continue;
    }
    EXPECT_EQ(st.loss, one.loss) << threads << " threads";
    EXPECT_EQ(st.kl, one.kl) << threads << " threads";
    EXPECT_EQ(st.entropy, one.entropy) << threads << " threads";
    EXPECT_EQ(st.ratio_mean, one.ratio_mean) << threads << " threads";
    EXPECT_EQ(st.clip_frac, one.clip_frac) << threads << " threads";
  }
  omp_set_num_threads(1);
}

TEST(GrpoLoss, MatchesThePyTorchReference) {
  const Case c = random_case(7);
  std::vector<double> d(c.logits.size());
  const auto st = grpo_token_loss(c.logits.data(), c.T, c.V, c.target.data(), c.old_lp.data(), c.ref_lp.data(),
                                  c.adv.data(), c.p, d.data());
  EXPECT_GT(st.clip_frac, 0.0);  // the case exercises the clip
  const auto dir = std::filesystem::temp_directory_path() / ("mariana_grpo_ref_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  nlohmann::json in = {{"T", c.T}, {"V", c.V}, {"logits", c.logits}, {"target", c.target}, {"old_lp", c.old_lp},
                       {"ref_lp", c.ref_lp}, {"adv", c.adv}, {"clip_eps", c.p.clip_eps},
                       {"clip_eps_high", c.p.clip_eps_high}, {"kl_beta", c.p.kl_beta}};
  std::ofstream(dir / "in.json") << in.dump();
  const std::string cmd = "/usr/bin/python3 " + std::string(MARIANA_SOURCE_DIR) + "/tests/reference/grpo_ref.py " +
                          (dir / "in.json").string() + " " + (dir / "out.json").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "the PyTorch reference failed (run scripts/setup.sh): " << cmd;
  nlohmann::json out = nlohmann::json::parse(std::ifstream(dir / "out.json"));
  std::filesystem::remove_all(dir);
  EXPECT_NEAR(st.loss, out["loss"].get<double>(), 1e-12);
  EXPECT_NEAR(st.kl, out["kl"].get<double>(), 1e-12);
  EXPECT_NEAR(st.clip_frac, out["clip_frac"].get<double>(), 1e-12);
  const auto ref = out["dlogits"].get<std::vector<double>>();
  ASSERT_EQ(ref.size(), d.size());
  for (size_t i = 0; i < d.size(); ++i) EXPECT_NEAR(d[i], ref[i], 1e-12) << "element " << i;
}

}  // namespace
}  // namespace mariana::rl
