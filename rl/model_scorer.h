// The model-based reward scorer: a trained reward model (sft/reward_model.h, phase "rm") behind the
// RewardScorer interface, registered as "model" with the option {"checkpoint": DIR} (a checkpoint
// directory with reward_head.safetensors, or a run directory: its newest checkpoint). Lives in rl/
// because it joins rl/rewards' interface to sft/'s reward model (sft may not include rl).
#pragma once

#include <memory>
#include <string>

#include "rl/rewards/reward.h"
#include "sft/reward_model.h"

namespace mariana::rl {

// reward = the model's scalar for (prompt, response), unbounded (a BT logit); ok with reason
// "correct" whenever it could be computed (a reward model has no notion of a wrong answer).
// InvalidArgument from score() for a sample longer than the model's context.
class ModelScorer : public RewardScorer {
 public:
  // options: {"checkpoint": DIR}. InvalidArgument for a missing or unknown option; the load's
  // errors (NotFound when DIR holds no reward head) otherwise.
  static Result<std::unique_ptr<RewardScorer>> create(const nlohmann::json& options);
  std::string name() const override { return "model"; }
  Result<RewardResult> score(const RewardSample& sample) override;

 private:
  explicit ModelScorer(RewardModel model) : model_(std::move(model)) {}
  RewardModel model_;
};

// Adds "model" (ModelScorer::create) to the registry.
Status register_model_scorer(ScorerRegistry* registry);

}  // namespace mariana::rl
