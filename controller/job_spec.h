// Job specs (TOML) as the controller validates them at submit. Two families:
//
// * Training jobs, kinds "pretrain", "extend", "sft" and "rm": the job files `mariana train` takes
//   (configs/jobs/*.toml, schema in train/job_spec.cc), recognised by `[job] phase`. The
//   controller never parses training fields beyond the name and the step count (it includes no
//   train/ code): `mariana submit` validates the whole spec with the training engine's parser
//   first, and the trainer actor parses it again when it starts. One "trainer" actor with
//   { CPU = 1 } per rank runs the job (controller/train_driver.cc): one, or a gang of
//   [parallel] dp × ep placed by [parallel] placement ("pack" | "spread"). An "rl" (GRPO) job
//   with a [campaign] table has further roles (below).
//
//     [job]
//     name = "pretrain-tiny"
//     phase = "pretrain"           # | "extend" | "sft" | "rm"
//     max_restarts = 10            # trainer failures allowed within any restart_window_s; -1 unlimited
//     restart_window_s = 3600      # 0: over the job's whole life
//     [train]
//     steps = 300                  # the engine's default (100) when absent
//     [parallel]                   # optional: a gang of dp × ep trainer actors, one per rank
//     dp = 2
//     ep = 2
//     placement = "pack"           # | "spread"
//
// * "actors", the generic actor job (a placement group with one bundle per actor, then `steps`
//   rounds of a `step` call on every actor, progress and a metric point per step, a checkpoint
//   record every `checkpoint_every` steps). tests/integration/ writes its own:
//
//   name = "demo"                # optional
//   kind = "actors"
//   [actors]
//   class = "counter"            # an actor class some agent offers
//   count = 2
//   max_restarts = 3             # default 3; -1 unlimited (failures within restart_window_s)
//   restart_window_s = 0         # default 0: over the actor's whole life
//   max_task_retries = -1        # default -1 (a step call is retried on the next incarnation)
//   resources = { CPU = 1 }      # per actor = per bundle
//   [placement]
//   strategy = "SPREAD"          # PACK (default) | SPREAD | STRICT_PACK | STRICT_SPREAD
//   [run]
//   steps = 20
//   step_ms = 10                 # how long each step call works in the actor
//   checkpoint_every = 5         # 0: none
#pragma once

#include <string>
#include <vector>

#include "controller/tables.h"
#include "core/status.h"

namespace mariana::controller {

// The kinds one trainer actor runs (train_run, sft_train_run, rm_train_run, grpo_run). An rl job's
// "steps" are its GRPO iterations.
inline bool job_kind_training(const std::string& kind) {
  return kind == "pretrain" || kind == "extend" || kind == "sft" || kind == "rm" || kind == "rl";
}

// A stage of a pipeline job: a training job (its file as `mariana submit` prepares it) that starts
// once the stages it depends on have succeeded. `from` names the stage whose run directory becomes
// this stage's model.init_from (its newest checkpoint); `after` names further stages to wait for.
struct PipelineStage {
  std::string name;
  std::string from;
  std::vector<std::string> after;
  std::string spec_toml, spec_path;
  // Every stage it waits for: `from` (when set) and `after`.
  std::vector<std::string> depends() const;
};

// One role of an actor job: `count` actors of a class, each with the same constructor arguments,
// resources and restart budget. A job with [actors] has one unnamed role; one with [[roles]] names
// each (its actors are "<job name>/<role>/<index>", found by ActorHandle).
struct ActorRole {
  std::string name;
  std::string actor_class;
  std::string args;  // a JSON object's text, "" = none
  int64_t count = 1;
  Resources resources;
  int32_t max_restarts = 3;
  int64_t restart_window_s = 0;
  int32_t max_task_retries = -1;
};

struct ActorJobSpec {
  std::string name;
  std::string kind;  // "actors", "pretrain", "extend", "sft", "rm", "rl", "pipeline"
  bool training() const { return job_kind_training(kind); }
  // The actors the job runs, in one placement group (bundles in role order): one unnamed role for
  // [actors] and for a training job (its trainer, or a gang's ranks), the named [[roles]] else;
  // none for a pipeline (its stages are jobs of their own).
  std::vector<ActorRole> roles;
  int64_t actor_count() const;  // over every role
  PgStrategy strategy = PgStrategy::kPack;
  int64_t steps = 1;
  int64_t step_ms = 0;
  int64_t checkpoint_every = 0;
  std::vector<PipelineStage> stages;  // kind "pipeline": in file order, each depending on earlier ones only
  // [[roles]]: a service; its actors run until the job is stopped (or one dies past its budget),
  // with no steps.
  bool service = false;
};

// Training jobs: the trainer actor's class and its default restart budget (job.max_restarts
// failures within any job.restart_window_s seconds; the next one fails the job).
constexpr const char* kTrainerClass = "trainer";
constexpr int32_t kTrainerMaxRestarts = 10;
constexpr int64_t kTrainerRestartWindowS = 3600;
constexpr int64_t kTrainDefaultSteps = 100;  // train/job_spec.cc's default of train.steps
// An rl job with [campaign] generators > 0: roles besides the learner (its trainer actor, or the
// [parallel] dp ranks of a data-parallel learner), named
// as workers/rl_campaign.h resolves them. Each takes the job's restart budget and { CPU = 1 }.
//   [campaign]
//   generators = 2     # rl_generator actors (0: the whole job in the learner's process)
//   scorers = 1        # rl_scorer actors
//   weight_sync = "broadcast"  # | "calls" (read by the learner, rl/grpo.h)
// and one rl_reference actor.
constexpr const char* kCampaignGeneratorRole = "generator";
constexpr const char* kCampaignScorerRole = "scorer";
constexpr const char* kCampaignReferenceRole = "reference";

// Parses and validates; errors read "<path>:<line>:<col>: field 'actors.count': ...".
Result<ActorJobSpec> job_spec_parse(const std::string& toml_text, const std::string& path);

}  // namespace mariana::controller
