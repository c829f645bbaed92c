// The parts of a GRPO iteration around the learner: sampling the group responses, scoring them,
// and the frozen reference's log-probs. In one process (`mariana train`) they run in place: the
// inference engine borrows the policy, the scorers and the reference model live in the learner's
// process. In an RL campaign on the cluster each is a role of actors (workers/rl_campaign.h):
// generators that hold a pushed copy of the policy, a scorer pool, a reference actor. grpo_run
// drives either through this interface, so both compute the same thing in the same order.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/inference/generate.h"
#include "model/model.h"
#include "rl/grpo.h"
#include "rl/rewards/reward.h"

namespace mariana::rl {

// What the services need to know of the run, fixed for its life.
struct RolloutSetup {
  std::string policy_dir;     // the checkpoint the policy was loaded from (its config.json)
  std::string reference_dir;  // the frozen KL reference
  std::vector<std::string> scorers;
  std::vector<double> weights;
  std::string reward_model;   // the "model" scorer's checkpoint ("" without one)
  double temperature = 1.0;   // of the reference's log-probs (the sampling temperature)
  int32_t pad_id = 0;
  int threads = 0;            // train.threads, for the roles' kernels (same reduction order as in one process)
  // Rollouts run beside the learner (rl.max_staleness > 0): generate() must sample from a copy of
  // the published version, never from the policy being updated.
  bool snapshot = false;
};

class RolloutServices {
 public:
  virtual ~RolloutServices() = default;
  // From now on generate() samples from `version`, whose weights are the policy's now. Called at the
  // start and after every update, never while generate() runs. generate() and score() may run on
  // one thread while reference_logprobs() runs on another.
  virtual Status publish(Model<float>& policy, int64_t version) = 0;  // policy: read only
  // One result per request, in order, every one sampled from the weights of `version` (never two
  // versions within one request). FailedPrecondition when `version` is not the one published.
  virtual Result<std::vector<GenerateResult>> generate(const std::vector<GenerateRequest>& requests,
                                                       int64_t version) = 0;
  // The composite reward of each sample, in order.
  virtual Result<std::vector<RewardResult>> score(const std::vector<RewardSample>& samples) = 0;
  // The reference's log-probs of a packed batch (tempered_target_logprobs of the reference).
  virtual Result<std::vector<double>> reference_logprobs(const LearnerBatch& batch, const PackedBatch& packed) = 0;
};

// The weighted composite of the named scorers (rewards/composite); a "model" part scores with the
// reward model checkpoint `reward_model` (rl/model_scorer.h).
Result<std::unique_ptr<RewardScorer>> composite_scorer(const std::vector<std::string>& scorers,
                                                       const std::vector<double>& weights,
                                                       const std::string& reward_model = "");

// The one-process services: the engine on `policy` itself, the scorers and the reference model
// loaded here.
Result<std::unique_ptr<RolloutServices>> local_rollout_services(Model<float>& policy, const RolloutSetup& setup);

}  // namespace mariana::rl
