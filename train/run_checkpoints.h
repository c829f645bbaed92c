// A run directory's checkpoints: runs/<job>/checkpoints/step-N/ (training) or iter-N/ (GRPO), each
// an HF checkpoint plus the trainer's files, published with a checksummed manifest in one rename,
// the newest keep_last kept. Finding the newest valid one, resolving a run directory to it, and
// the training checkpoint's optimizer moments. Readers (eval, generate, init_from) need only this.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "model/model.h"

namespace mariana {

class TrainObjective;  // train/trainer.h

constexpr const char* kTrainerStateFile = "trainer_state.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kTokenizerFile = "tokenizer.json";

// "step-00000042": a training checkpoint's directory name (zero-padded, so name order is age order).
std::string step_dir_name(int64_t step);

// Where a checkpoint named `name` (step-N, iter-N) of a run is written before checkpoint_publish
// moves it into place: run_dir/checkpoints/.<name>.tmp-<pid> (emptied), and its final directory.
struct CheckpointStaging {
  std::string tmp, final_dir;
};
CheckpointStaging checkpoint_staging(const std::string& run_dir, const std::string& name);
// The same paths with `tag` in place of the pid (.<name>.tmp-<tag>), nothing touched: the staging
// directory a parallel job's ranks share.
CheckpointStaging checkpoint_staging_path(const std::string& run_dir, const std::string& name, const std::string& tag);

// Publishes a checkpoint written into `tmp` (a sibling of final_dir under run_dir/checkpoints):
// writes tmp/manifest.json (the step or RL iteration, and the size and XXH64 of every other
// file), renames tmp to final_dir in one step, then keeps only the newest keep_last checkpoints of
// the run. Training (step-N) and GRPO (iter-N) checkpoints both go through it.
Status checkpoint_publish(const std::string& run_dir, const std::string& tmp, const std::string& final_dir,
                          int64_t step, int64_t keep_last);
// Newest checkpoint (step-N or iter-N) under run_dir/checkpoints whose manifest verifies; NotFound if none.
// Corrupt or partial ones are skipped with a warning on stderr.
Result<std::string> latest_valid_checkpoint(const std::string& run_dir);
// The directory itself when it holds a checkpoint (config.json), else latest_valid_checkpoint of
// it as a run directory.
Result<std::string> resolve_checkpoint(const std::string& path);

// A run of one tensor's AdamW moments: elements [start, start + n) of the full model's tensor
// `spec`. One process holds every tensor whole; a ZeRO-1 rank holds the runs of its slices.
struct MomentRun {
  const ParamSpec* spec = nullptr;  // in the full model's table
  int64_t start = 0, n = 0;
  const float* exp_avg = nullptr;
  const float* exp_avg_sq = nullptr;
};

// Every tensor of `table` but the gate biases, whole, from arena-layout moments (one process's).
std::vector<MomentRun> whole_moment_runs(const ParamTable& table, const float* exp_avg, const float* exp_avg_sq);

// The moments file of rank `rank` of `count` in a parallel job's checkpoint:
// "optimizer-00001-of-00004.safetensors" (1-based, as HF numbers model shards).
std::string moments_file_name(int64_t rank, int64_t count);
// Writes `runs` to path (safetensors, atomic): "exp_avg.<name>" and "exp_avg_sq.<name>" per run,
// in the tensor's shape when the run is the whole tensor, else 1-D with its start in the metadata
// ("start.<name>").
Status write_moments(const std::string& path, const std::vector<MomentRun>& runs);

// Writes run_dir/checkpoints/step-N of one process: the model (HF layout), the AdamW moments
// (every tensor but the gate biases, whole) as optimizer.safetensors, then the trainer's files
// (write_trainer_files), and publishes it. *written: the checkpoint's directory.
Status write_training_checkpoint(const std::string& run_dir, int64_t step, const Model<float>& model,
                                 const std::vector<MomentRun>& moments, const TrainObjective* objective,
                                 const nlohmann::ordered_json& state, int64_t keep_last, std::string* written);
// The trainer's files of a training checkpoint being written in `tmp`: `state` as
// trainer_state.json, the run's tokenizer.json and the objective's files.
Status write_trainer_files(const std::string& tmp, const std::string& run_dir, const nlohmann::ordered_json& state,
                           const TrainObjective* objective);
// Reads a training checkpoint's moments into arena-layout buffers of `table` (the full model's or
// a shard's: tensors it lacks are skipped): optimizer.safetensors of one process, or every rank's
// moments file of a parallel job, whatever its layout. DataLoss naming the file and tensor when one
// is missing, malformed, not finite, or when the files do not cover a tensor exactly once.
Status training_moments_load(const std::string& checkpoint_dir, const ParamTable& table, float* exp_avg,
                             float* exp_avg_sq);

}  // namespace mariana
