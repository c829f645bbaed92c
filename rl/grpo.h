// GRPO in one process (`mariana train rl.toml`, phase "rl"): each iteration samples a batch of
// prompts from the task's training split, G responses per prompt from the current policy (the
// inference engine), scores them with the configured reward scorers, computes group-normalised
// advantages, and runs μ inner updates of the token-level clipped surrogate with a k3 KL penalty
// to a frozen reference model (rl/grpo_loss.h), with AdamW. Every rollout batch carries the
// policy version that produced it; the learner refuses a batch from another version at its first
// inner update (on-policy). Logs per iteration go to run_dir/metrics.jsonl; checkpoints (HF
// layout + tokenizer + rl_state.json) to run_dir/checkpoints/iter-N, written atomically.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "rl/arithmetic_task.h"
#include "rl/grpo_loss.h"
#include "train/job_spec.h"
#include "train/optimizer.h"
#include "train/parallel.h"

namespace mariana::rl {

class RolloutServices;  // rl/rollout_services.h
struct RolloutSetup;

struct RlSpec {
  std::string source, name;
  // [model]
  std::string init_from;   // checkpoint dir or run dir (its newest checkpoint)
  std::string reference;   // the frozen KL reference; "" = init_from
  // [task]
  uint64_t task_seed = 7;
  ArithmeticOptions arithmetic;
  PromptFormat format = PromptFormat::kChat;
  int64_t prompt_pool = 0;  // > 0: cycle over the first prompt_pool problems; 0: a fresh stream
  // A JSONL prompt set replacing the built-in task (rl/prompts.h), and its held-out set for the
  // accuracy evaluation (required with it); paths resolved as job files resolve them.
  std::string dataset, eval_dataset;
  // [rollout]
  int64_t prompts = 8, group_size = 8, max_new_tokens = 128;
  double temperature = 1.0, top_p = 1.0;
  int64_t top_k = 0;
  // [reward] composite: scorer names and weights
  std::vector<std::string> scorers = {"math", "format"};
  std::vector<double> weights = {1.0, 0.1};
  // The reward model (a `phase = "rm"` checkpoint or run directory) of a "model" scorer.
  std::string reward_model;
  // [grpo]
  int64_t iterations = 40, inner_updates = 1;
  GrpoLossParams loss;
  AdvantageOptions advantages;  // grpo.std, grpo.scale_rewards, grpo.adv_eps
  double lr = 1e-4, grad_clip = 1.0, weight_decay = 0.0, beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;
  uint64_t seed = 0;
  // [rl] dynamic sampling (DAPO): a group whose rewards are all equal teaches nothing; it is
  // dropped and more prompts are sampled, up to max_sample_rounds rollouts per iteration, until
  // `prompts` groups with signal are found (fewer when the rounds run out).
  bool dynamic_sampling = false;
  int64_t max_sample_rounds = 4;
  // [rl] max_staleness: 0 is on-policy (each iteration samples from the policy it then updates);
  // k > 0 lets the next iteration's rollout run while the learner updates, from a policy up to k
  // versions behind the one it is learned into (asynchronous, as veRL's and OpenRLHF's async modes).
  int64_t max_staleness = 0;
  // [campaign] on the cluster: the roles besides the learner (workers/rl_campaign.h); 0
  // generators = the whole job in the learner's process. `mariana train` always runs in one process.
  int64_t campaign_generators = 0, campaign_scorers = 1;
  // How each new version reaches the generators: "broadcast" (a comm/ group, bucketed; by actor
  // calls when it fails) or "calls" (actor calls only).
  std::string campaign_weight_sync = "broadcast";
  // [parallel] dp > 1: the learner as dp data-parallel ranks with ZeRO-1 (train/parallel.h): rank 0
  // makes the rollouts (and evaluates, logs, publishes), every rank learns from its contiguous
  // rows of each batch. timeout_s bounds each collective, a rank's wait for rank 0's next batch
  // (a rollout and an evaluation) included.
  int64_t dp = 1;
  double parallel_timeout_s = 1800;
  // [train]
  int threads = 0;
  int64_t checkpoint_every = 10, keep_last = 2;
  // [eval] held-out accuracy every `every` iterations (0: only before and after)
  int64_t eval_every = 0, eval_problems = 200, eval_max_new_tokens = 160;
};

// InvalidArgument naming the file, line and field; `overrides` are "key=value" as for train jobs.
Result<RlSpec> rl_spec_load(const std::string& path, const std::vector<std::string>& overrides);
Result<RlSpec> rl_spec_parse(const std::string& text, const std::string& source,
                             const std::vector<std::string>& overrides);
// The layout ParallelGroups::connect takes for an rl job's dp learner ranks (ep = 1).
JobSpec rl_parallel_layout(const RlSpec& spec);

struct RlIterationMetrics {
  int64_t iteration = 0, policy_version = 0;
  double reward = 0;                       // mean total reward
  std::map<std::string, double> reward_parts;  // mean of each scorer's reward
  double accuracy = 0;                     // fraction of responses the math (else math_verify) scorer accepts
  double kl = 0, clip_frac = 0, entropy = 0, loss = 0, grad_norm = 0, response_len = 0;
  int64_t zero_variance_groups = 0, responses = 0, tokens = 0;
  // Dynamic sampling: prompts drawn this iteration, groups dropped for zero variance, rollouts run.
  int64_t prompts_sampled = 0, dropped_groups = 0, sample_rounds = 1;
  // The policy version the batch was sampled from, and how many versions it lags the policy it
  // updates (0 on-policy; up to rl.max_staleness).
  int64_t sample_version = 0, staleness = 0;
  // Seconds: the rollout (made beside an earlier iteration when asynchronous), the learner, publishing
  // the new version to the generators, the iteration on the learner's clock (waiting for its
  // rollout, learning, publishing; not the evaluation) and the held-out evaluation.
  double rollout_s = 0, learn_s = 0, sync_s = 0, iteration_s = 0, eval_s = 0;
  double eval_accuracy = -1;               // held-out accuracy when evaluated this iteration
};

// The wall-clock fields of a metrics.jsonl line: the only ones that differ between two runs of one
// spec (on-policy or not, in one process or as a campaign, interrupted and resumed or not).
inline constexpr const char* kRlTimingFields[] = {"rollout_s", "learn_s", "sync_s", "iteration_s", "eval_s"};

struct RlOptions {
  RlSpec spec;
  std::string run_dir;
  bool quiet = false;
  // Continue from the newest valid checkpoint (iter-N) of run_dir: the policy, AdamW's moments and
  // step count, the reference, the prompt position and the version are restored and metrics.jsonl
  // is cut back to iteration N, so the run goes on exactly as if never stopped (bit for bit). With
  // no checkpoint it starts fresh.
  bool resume = false;
  // With resume: this checkpoint (the controller's last registered one) when its manifest
  // verifies, else the newest valid one, as TrainOptions::resume_from.
  std::string resume_from;
  // Before the first iteration: the iteration resumed from (0 fresh), its checkpoint, the total.
  std::function<void(int64_t iteration, const std::string& checkpoint, int64_t total)> on_start;
  // Each iteration's metrics.jsonl line (one JSON object, no newline), just before on_iteration.
  std::function<void(const std::string& line)> on_metrics_line;
  // After each checkpoint is written (atomically, manifest included).
  std::function<void(int64_t iteration, const std::string& checkpoint)> on_checkpoint;
  // Set (by a signal handler): the iteration in progress finishes, a checkpoint is written, the run
  // returns with RlSummary::interrupted.
  const std::atomic<bool>* interrupt = nullptr;
  std::function<void(const RlIterationMetrics&)> on_iteration;
  // The rollout's generators, scorers and reference: in this process when unset; an RL campaign's
  // roles when set (workers/rl_campaign.h), made once the run knows its setup.
  std::function<Result<std::unique_ptr<RolloutServices>>(const RolloutSetup&)> services;
  // A data-parallel learner's rank ([parallel] dp > 1): its groups (rl_parallel_layout). Only rank
  // 0 makes rollouts, evaluates, writes metrics and calls the callbacks above; every rank writes
  // its ZeRO-1 slices of the moments into each checkpoint.
  ParallelGroups* parallel = nullptr;
};

struct RlSummary {
  int64_t iterations = 0;
  int64_t resumed_from = 0;                 // the iteration of the checkpoint resumed from (0: fresh)
  bool interrupted = false;
  double eval_before = 0, eval_after = 0;   // held-out accuracy of the initial and final policy
  std::string final_checkpoint;
  RlIterationMetrics last;
};

Result<RlSummary> grpo_run(const RlOptions& opt);

// The learner step on one rollout batch: P·G samples (prompt ids, response ids including a
// closing EOS, the sample's advantage), packed one per row; log-probs at the sampling temperature
// for the policy before the update (π_old), the frozen reference and the policy during the μ inner
// updates. FailedPrecondition when the batch's policy version is not current_version, or, with
// max_staleness k > 0, is more than k versions behind it (or ahead of it).
struct LearnerBatch {
  int64_t policy_version = 0;
  std::vector<std::vector<int32_t>> prompts, responses;
  std::vector<double> advantages;
};
struct LearnerParams {
  GrpoLossParams loss;
  double temperature = 1.0, lr = 1e-4, grad_clip = 1.0;
  int64_t inner_updates = 1;
  int32_t pad_id = 0;
  int64_t max_staleness = 0;  // versions a batch may lag the policy (rl.max_staleness)
};
struct LearnerStats {
  double kl = 0, entropy = 0, loss = 0, grad_norm = 0, clip_frac = 0;
  int64_t tokens = 0;
};

// A learner batch packed one sample per row of S = the longest prompt + response: the tokens
// (pad_id after each sample), and per position the response token it predicts (−1: none) and the
// sample's advantage there.
struct PackedBatch {
  Batch batch;
  std::vector<int32_t> target;
  std::vector<double> advantage;
  int64_t tokens = 0;  // response tokens in all
};
// InvalidArgument when the lists' lengths differ or a prompt is empty.
Result<PackedBatch> pack_learner_batch(const LearnerBatch& b, int32_t pad_id);
// log p(target) under softmax(logits / temperature) at every position of the packed batch (B·S
// values; 0 where there is no target), from one forward pass of `model` (no MTP, no balance loss).
// The reference role's computation, and the learner's for π_old.
Result<std::vector<double>> tempered_target_logprobs(Model<float>& model, const PackedBatch& packed, double temperature);

// The reference's log-probs of a packed batch (B·S values, as tempered_target_logprobs): computed
// in process from a reference model, or by the campaign's reference actor.
using ReferenceLogprobs = std::function<Result<std::vector<double>>(const LearnerBatch&, const PackedBatch&)>;

Result<LearnerStats> grpo_learn(Model<float>& policy, const ReferenceLogprobs& reference, AdamW& adam,
                                const LearnerBatch& batch, const LearnerParams& p, int64_t current_version);
Result<LearnerStats> grpo_learn(Model<float>& policy, Model<float>& reference, AdamW& adam, const LearnerBatch& batch,
                                const LearnerParams& p, int64_t current_version);

// The learner step of one data-parallel rank: every rank holds the whole batch and the reference's
// log-probs of it packed whole (ref_full, B·S_full values, from rank 0); this rank learns from its
// contiguous rows, its surrogate gradient weighted by its share of the batch's response tokens so
// that the ranks' gradients sum to the whole batch's, ZeRO-1 steps (reduce-scatter, AdamW on its
// slice, all-gather). The stats are the whole batch's. Collective over the world group.
Result<LearnerStats> grpo_learn_data_parallel(Model<float>& policy, ZeroOptimizer& zero, ParallelGroups& groups,
                                              const LearnerBatch& batch, const std::vector<double>& ref_full,
                                              int64_t s_full, const LearnerParams& p, int64_t current_version);

}  // namespace mariana::rl
