// The GRPO learner step on the real model: one update raises the log-likelihood of the responses
// with positive advantage and lowers it for the negative ones; a stale rollout batch is refused.
#include <gtest/gtest.h>

#include "core/philox.h"
#include "rl/grpo.h"
#include "tests/model/model_test_util.h"

namespace mariana::rl {
namespace {

// Σ_t log π(response_i[t] | prefix) for each sample, at temperature 1.
std::vector<double> sequence_logprobs(Model<float>& m, const LearnerBatch& b) {
  std::vector<double> out;
  for (size_t i = 0; i < b.prompts.size(); ++i) {
    std::vector<int32_t> ids = b.prompts[i];
    ids.insert(ids.end(), b.responses[i].begin(), b.responses[i].end());
    const int64_t S = static_cast<int64_t>(ids.size()), P = static_cast<int64_t>(b.prompts[i].size());
    Batch batch = Batch::from_rows(1, S, ids);
    LossWeights w;
    w.mtp_weight = 0;
    EXPECT_TRUE(m.forward(batch, w, nullptr).ok());
    std::vector<int32_t> target(static_cast<size_t>(S), -1);
    for (int64_t k = P; k < S; ++k) target[k - 1] = ids[k];
    std::vector<double> lp(static_cast<size_t>(S));
    token_logprobs(m.logits(), S, m.config().vocab_size, target.data(), lp.data());
    double sum = 0;
    for (double v : lp) sum += v;
    out.push_back(sum);
  }
  return out;
}

TEST(GrpoLearn, OneStepMovesLikelihoodWithTheAdvantage) {
  const ModelConfig c = mariana::testing::load_config("configs/models/tiny.json");
  Model<float> policy(c), reference(c);
  mariana::testing::randomise(policy, 3, 0.05);
  mariana::testing::randomise(reference, 3, 0.05);
  LearnerBatch b;
  const int64_t G = 6;
  for (int64_t i = 0; i < G; ++i) {
    std::vector<float> u(12);
    philox_fill_uniform(u.data(), 12, 17, static_cast<uint64_t>(i));
    std::vector<int32_t> ids;
    for (float x : u) ids.push_back(static_cast<int32_t>(x * 1000));
    b.prompts.emplace_back(ids.begin(), ids.begin() + 4 + i % 3);
    b.responses.emplace_back(ids.begin() + 4 + i % 3, ids.end());
    b.advantages.push_back(i % 2 == 0 ? 1.0 : -1.0);
  }
  const auto before = sequence_logprobs(policy, b);
  AdamW adam(policy.table(), AdamWConfig{0.9, 0.95, 1e-8, 0.0});
  LearnerParams p;
  p.lr = 1e-3;
  p.temperature = 0.8;
  p.loss.kl_beta = 0.01;
  auto st = grpo_learn(policy, reference, adam, b, p, /*current_version=*/0);
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  EXPECT_GT(st.value().grad_norm, 0.0);
  EXPECT_EQ(st.value().kl, 0.0);  // policy == reference before the step
  const auto after = sequence_logprobs(policy, b);
  for (int64_t i = 0; i < G; ++i) {
    if (b.advantages[i] > 0) {
      EXPECT_GT(after[i], before[i]) << "sample " << i;
    } else {
      EXPECT_LT(after[i], before[i]) << "sample " << i;
    }
  }
  b.policy_version = 3;
  auto stale = grpo_learn(policy, reference, adam, b, p, /*current_version=*/4);
  EXPECT_FALSE(stale.ok());
  EXPECT_NE(stale.status().message().find("policy version 3"), std::string::npos);
}

}  // namespace
}  // namespace mariana::rl
