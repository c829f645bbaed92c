// The one-process rollout services (see rollout_services.h).
#include "rl/rollout_services.h"

#include "model/checkpoint.h"
#include "rl/model_scorer.h"

namespace mariana::rl {

namespace {

class LocalRolloutServices final : public RolloutServices {
 public:
  // With `snapshot` the engine samples from a copy of the policy made at each publish; without, it
  // reads the policy in place (nothing else runs while it samples).
  LocalRolloutServices(Model<float>& policy, bool snapshot, LoadedCheckpoint<float> reference,
                       std::unique_ptr<RewardScorer> scorer, double temperature)
      : copy_(snapshot ? std::make_unique<Model<float>>(policy.config()) : nullptr),
        engine_(copy_ ? *copy_ : policy),
        reference_(std::move(reference)),
        scorer_(std::move(scorer)),
        temperature_(temperature) {}

  Status publish(Model<float>& policy, int64_t version) override {
    if (copy_)
      std::copy(policy.params(), policy.params() + policy.table().arena_size(), copy_->params());
    version_ = version;
    return Status::Ok();
  }
  Result<std::vector<GenerateResult>> generate(const std::vector<GenerateRequest>& requests, int64_t version) override {
    if (version != version_)
      return FailedPrecondition("generate: asked for policy version " + std::to_string(version) + ", the policy is at " +
                                std::to_string(version_));
    return mariana::generate(engine_, requests, GenerateOptions{});
  }
  Result<std::vector<RewardResult>> score(const std::vector<RewardSample>& samples) override {
    std::vector<RewardResult> out;
    out.reserve(samples.size());
    for (const RewardSample& s : samples) {
      MARIANA_ASSIGN_OR_RETURN(RewardResult r, scorer_->score(s));
      out.push_back(std::move(r));
    }
    return out;
  }
  Result<std::vector<double>> reference_logprobs(const LearnerBatch&, const PackedBatch& packed) override {
    return tempered_target_logprobs(reference_.model, packed, temperature_);
  }

 private:
  std::unique_ptr<Model<float>> copy_;
  InferenceEngine<float> engine_;
  LoadedCheckpoint<float> reference_;
  std::unique_ptr<RewardScorer> scorer_;
  double temperature_;
  int64_t version_ = -1;
};

}  // namespace

Result<std::unique_ptr<RewardScorer>> composite_scorer(const std::vector<std::string>& scorers,
                                                       const std::vector<double>& weights,
                                                       const std::string& reward_model) {
  nlohmann::json parts = nlohmann::json::array();
  for (size_t i = 0; i < scorers.size(); ++i) {
    nlohmann::json part = {{"scorer", scorers[i]}, {"weight", i < weights.size() ? weights[i] : 1.0}};
    if (scorers[i] == "model") part["options"] = {{"checkpoint", reward_model}};
    parts.push_back(std::move(part));
  }
  ScorerRegistry registry = ScorerRegistry::with_builtins();
  MARIANA_RETURN_IF_ERROR(register_model_scorer(&registry));
  return registry.make("composite", {{"parts", parts}});
}

Result<std::unique_ptr<RolloutServices>> local_rollout_services(Model<float>& policy, const RolloutSetup& setup) {
  MARIANA_ASSIGN_OR_RETURN(LoadedCheckpoint<float> ref, checkpoint_load<float>(setup.reference_dir));
  if (ref.model.table().arena_size() != policy.table().arena_size())
    return InvalidArgument(setup.reference_dir + ": the reference model's shape differs from the policy's (" +
                           setup.policy_dir + ")");
  MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<RewardScorer> scorer,
                           composite_scorer(setup.scorers, setup.weights, setup.reward_model));
  return std::unique_ptr<RolloutServices>(
      std::make_unique<LocalRolloutServices>(policy, setup.snapshot, std::move(ref), std::move(scorer),
                                             setup.temperature));
}

}  // namespace mariana::rl
