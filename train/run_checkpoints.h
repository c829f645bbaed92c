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

// Writes run_dir/checkpoints/step-N: the model (HF layout), the AdamW moments exp_avg /
// exp_avg_sq (arena layout, every tensor but the gate biases) as optimizer.safetensors, `state`
// as trainer_state.json, the run's tokenizer.json and the objective's files, then publishes it.
// *written: the checkpoint's directory.
Status write_training_checkpoint(const std::string& run_dir, int64_t step, const Model<float>& model,
                                 const float* exp_avg, const float* exp_avg_sq, const TrainObjective* objective,
                                 const nlohmann::ordered_json& state, int64_t keep_last, std::string* written);
// Reads a training checkpoint's optimizer.safetensors into arena-layout moment buffers of `table`
// (DataLoss naming the file and tensor when one is missing, malformed or not finite).
Status training_moments_load(const std::string& checkpoint_dir, const ParamTable& table, float* exp_avg,
                             float* exp_avg_sq);

}  // namespace mariana
