// An RL campaign on the cluster: a GRPO job (`[job] phase = "rl"`) with a [campaign] table runs as
// one job of several roles (controller/job_spec.h): the learner (the trainer actor, which runs
// grpo_run and drives the campaign; with [parallel] dp its rank 0), `generators` rollout
// generators, `scorers` reward scorers and one reference actor. This file is the learner's side: RolloutServices (rl/rollout_services.h)
// whose calls go to those roles through ActorMesh / ActorHandle, and the role classes themselves.
//
//   rl_generator  join_group(RlWeightsGroup)  joins the learner's comm/ group for weight sync
//                 receive_weights(RlWeightsReceive)  receives a version broadcast (rl/weight_sync.h)
//                 weights_group()          the group it is in ("" none; asked before each broadcast)
//                 load_weights(RlWeights)  the same by actor call, one bucket of the policy's arena;
//                                          the version is taken for sampling once every bucket
//                                          arrived and the arena's XXH64 equals the learner's
//                 generate(RlGenerate)     -> RlGenerated; FailedPrecondition unless it holds
//                                          exactly the version asked for
//   rl_scorer     score(RlScore)           -> RlScored (the composite reward of each sample)
//   rl_reference  logprobs(RlReferenceLogprobs) -> RlLogprobs
//
// The learner splits each round's requests over the generators in contiguous slices and the
// samples over the scorers. Sampling is keyed by (iteration, slot, sample), not by the generator
// or its batch, so any split draws the same tokens as one process. Every call is safe to repeat:
// a role whose worker dies is restarted by the controller and the learner's handle calls the new
// incarnation; a new generator holds no weights, refuses to generate, and is sent the version
// again before the call is repeated. Weights go over a comm/ (Gloo) group of the learner and the
// generators, formed through the controller's key-value table under campaign/<job>/ and formed
// again when a generator is no longer in it (restarted); by load_weights calls when that fails.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/status.h"
#include "proto/curve.h"
#include "rl/rollout_services.h"
#include "workers/actor.h"

namespace mariana::workers {

// The role names of a campaign job's actors ("<job>/<role>/<i>") and their classes.
inline constexpr const char* kGeneratorRole = "generator";
inline constexpr const char* kScorerRole = "scorer";
inline constexpr const char* kReferenceRole = "reference";

struct CampaignAddress {
  std::string controller, token, job_id;
  proto::CurveClientKeys curve;  // the learner's worker's, for a controller that requires CURVE
  int call_timeout_ms = 30 * 60 * 1000;  // a generation or forward pass may take minutes
  int64_t weight_bucket_bytes = 8LL << 20;  // under the control plane's 16 MiB frame limit
  // Weight sync: a comm/ (Gloo) group of the learner (rank 0) and the generators, formed through the
  // controller's key-value table and formed again when a generator has restarted, each version
  // broadcast in buckets (rl/weight_sync.h); the actor-call push when false, and whenever a
  // broadcast or a formation fails (the next 10 versions then go by calls before it tries again).
  bool broadcast = true;
  int64_t group_timeout_ms = 20000;  // of the group's rendezvous and of each collective
  int64_t broadcast_bucket_bytes = 32LL << 20;
  std::string host = "127.0.0.1";    // the learner's address for its peers in the group
};

// The services of a campaign's roles, resolving them through the controller.
Result<std::unique_ptr<rl::RolloutServices>> campaign_rollout_services(const CampaignAddress& where,
                                                                      const rl::RolloutSetup& setup);

ActorClass rl_generator_class();
ActorClass rl_scorer_class();
ActorClass rl_reference_class();

}  // namespace mariana::workers
