// The `math_verify` reward scorer: symbolic answer checking with Hugging Face's math-verify
// library (the checker veRL, TRL and open-r1 use), for answers the rule-based `math` scorer only
// compares as text (\sqrt{8} = 2\sqrt{2}, x^2+1 = 1+x^2, {1,2} = {2,1}). Python workers
// (rl/rewards/math_verify_worker.py, built into the binary) run in a venv made by scripts/pyenv.sh
// and stay up across calls (rl/rewards/worker_pool.h).
#pragma once

#include <memory>
#include <string>

#include "rl/rewards/reward.h"
#include "rl/rewards/worker_pool.h"

namespace mariana::rl {

// The pinned PyPI requirement and the command that creates a venv with it.
inline constexpr const char* kMathVerifyRequirement = "math-verify==0.9.0";
std::string math_verify_venv_command(const std::string& venv);

// The venv used when the options name none: $MARIANA_MATH_VERIFY_VENV, else
// <build dir>/pyenv-math-verify (where scripts/setup.sh creates it).
std::string math_verify_default_venv();

// Reward 1 when math-verify finds the response's final answer equal to sample.answer ("correct");
// else 0 with "no answer" (nothing extracted), "wrong answer", "timeout" (a call over timeout_s;
// the worker is restarted) or "runtime error" (the library raised, or its worker died twice).
class MathVerifyScorer : public RewardScorer {
 public:
  // options: {"venv": DIR, "workers": N (default 1), "timeout_s": S (default 20)}. Starts the
  // workers; FailedPrecondition naming the venv and the command that creates it when DIR has no
  // python or that python cannot import math_verify.
  static Result<std::unique_ptr<RewardScorer>> create(const nlohmann::json& options);
  std::string name() const override { return "math_verify"; }
  Status validate(const RewardSample& sample) const override;
  Result<RewardResult> score(const RewardSample& sample) override;
  JsonLineWorkerPool& pool() { return *pool_; }

 private:
  explicit MathVerifyScorer(std::unique_ptr<JsonLineWorkerPool> pool) : pool_(std::move(pool)) {}
  std::unique_ptr<JsonLineWorkerPool> pool_;
};

}  // namespace mariana::rl
