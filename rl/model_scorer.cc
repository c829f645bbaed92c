// The "model" reward scorer over sft/'s RewardModel.
#include "rl/model_scorer.h"

namespace mariana::rl {

Result<std::unique_ptr<RewardScorer>> ModelScorer::create(const nlohmann::json& options) {
  MARIANA_RETURN_IF_ERROR(check_option_keys("model scorer", options, {"checkpoint"}));
  if (!options.contains("checkpoint") || !options["checkpoint"].is_string())
    return InvalidArgument("model scorer: option 'checkpoint' (a reward model's checkpoint directory) is required");
  MARIANA_ASSIGN_OR_RETURN(RewardModel rm, RewardModel::load(options["checkpoint"].get<std::string>()));
  return std::unique_ptr<RewardScorer>(new ModelScorer(std::move(rm)));
}

Result<RewardResult> ModelScorer::score(const RewardSample& sample) {
  MARIANA_ASSIGN_OR_RETURN(double r, model_.score(sample.prompt, sample.response));
  RewardResult out;
  out.reward = r;
  out.ok = true;
  out.reason = kReasonCorrect;
  out.detail = "reward model score";
  return out;
}

Status register_model_scorer(ScorerRegistry* registry) { return registry->add("model", &ModelScorer::create); }

}  // namespace mariana::rl
