// The single-process trainer for the phases `pretrain`, `extend`, `sft` and `rm` (sft/ plugs in its
// data source and the reward model's objective): data (built-in corpora or files, tokenized into
// shards), the model, AdamW with clipping and schedules, the bias update, per-step metrics (JSONL
// in the run directory, a progress line on a terminal), a periodic validation loss on a held-out
// split (eval.every), an end-of-run summary (summary.json), checkpoints in HF layout plus trainer state
// written atomically with a checksummed manifest, keeping the last K, and exact resume: N steps +
// resume + N steps equals 2N steps straight, bit for bit.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "model/model.h"
#include "train/data.h"
#include "train/job_spec.h"
#include "train/tokenizer.h"

namespace mariana {

class ParallelGroups;  // train/parallel.h

// Where a run's batches come from. By default the pretraining DataLoader over the job's prepared
// shards; a phase with other data (SFT's chat samples) plugs in its own through
// TrainOptions::data_source. Its position is part of every checkpoint, so resume is exact.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Fills `out` with `rows` rows of the job's seq_len tokens (targets −1 where there is no loss).
  virtual Status next(int64_t rows, Batch* out) = 0;
  // The exact position, stored as "loader" in trainer_state.json; restore() continues bit-identically.
  virtual nlohmann::json state() const = 0;
  virtual Status restore(const nlohmann::json& state) = 0;
  // Rows holding data over the whole run when the source is finite (train.epochs > 0), else -1.
  // With train.epochs > 0 the trainer derives the number of steps from it (see JobSpec::epochs).
  virtual int64_t total_rows() const { return -1; }
  // Extra fields for each step's metrics line ("data": {...}), e.g. the epoch.
  virtual nlohmann::ordered_json step_stats() const { return nlohmann::ordered_json::object(); }
};
// What a step optimizes, when not the model's own loss (next-token CE + λ·MTP + α·balance): e.g.
// the reward model's Bradley–Terry loss on a scalar head. It may own extra trained parameters (the
// head), which join the global gradient-norm clipping, take an update at the step's LR and are
// saved in every checkpoint directory (before its manifest) and loaded back on resume.
class TrainObjective {
 public:
  virtual ~TrainObjective() = default;
  // Before the first step: fresh (resume_dir "") or from this run's checkpoint. `source_dir` is
  // the phase's starting checkpoint (model.init_from), "" for pretraining.
  virtual Status start(const Model<float>& model, const std::string& source_dir, const std::string& resume_dir) = 0;
  // Forward and backward of `batch` (the model's grads are zeroed before): fills res (res.loss is
  // the objective's loss) and accumulates the model's and the extra parameters' gradients.
  virtual Status forward_backward(Model<float>& model, const Batch& batch, const LossWeights& w, ForwardResult* res) = 0;
  virtual double extra_grad_norm() const = 0;    // L2 norm of the extra parameters' gradients
  virtual void extra_scale_grads(double s) = 0;  // clipping
  virtual void extra_step(double lr) = 0;        // one optimizer update of the extra parameters
  virtual Status save(const std::string& checkpoint_dir) const = 0;
  // Fields for the step's metrics line ("objective": {...}), e.g. the pair accuracy.
  virtual nlohmann::ordered_json step_stats() const { return nlohmann::ordered_json::object(); }
};

// Makes the source once the model and tokenizer are known (tokenizer: the run's tokenizer.json).
// `split`: kTrain, the training data (without the held-out split of eval.held_out, data_held_out
// in train/data.h); kHeldOut, that split, in a fixed order and endless (the validation loss,
// asked for only when eval.every > 0).
using BatchSourceFactory = std::function<Result<std::unique_ptr<BatchSource>>(
    const JobSpec& spec, const Tokenizer& tokenizer, const std::string& run_dir, DataSplit split)>;

struct StepMetrics {
  int64_t step = 0;  // 1-based: the number of optimizer steps done
  double loss = 0, loss_main = 0, loss_mtp = 0, loss_balance = 0;
  double lr = 0, grad_norm = 0, tokens_per_s = 0, gamma = 0, mtp_weight = 0;
  int64_t rows = 0, tokens = 0;
  int64_t loss_tokens = 0;      // positions with a target in this step's batch (the main loss's count)
  std::vector<int64_t> moe_layers;
  std::vector<double> max_vio;  // MaxVio_batch per MoE layer
  double val_loss = NAN;        // the validation loss on eval steps (eval.every), else NaN
  // Parallel jobs: rank 0's bytes sent this step, measured, and the counts the algorithms imply
  // ({"sent_bytes", "zero_bytes", "ep_bytes"}); empty for one process.
  nlohmann::ordered_json comm;
};

struct TrainOptions {
  JobSpec spec;
  std::string run_dir;
  bool resume = false;
  bool progress = false;          // a refreshing progress line on stderr
  bool quiet = false;             // no per-step log lines on stdout
  int64_t stop_after = -1;        // stop (as if killed) after this many steps of this run; -1: never
  // Set from a signal handler (Ctrl-C): the current step finishes, a checkpoint is written and
  // train_run returns with TrainSummary::interrupted. Null: not watched.
  const std::atomic<bool>* interrupt = nullptr;
  // With resume: this checkpoint directory (when its manifest verifies) instead of the newest one;
  // a missing or corrupt one falls back to the newest valid checkpoint, with a warning.
  std::string resume_from;
  std::function<void(const StepMetrics&)> on_step;
  // Each step's metrics.jsonl line (one JSON object, no newline), just before on_step.
  std::function<void(const std::string& line)> on_metrics_line;
  // The data: empty = the pretraining DataLoader over data.builtin / data.inputs, tokenized into
  // shards under the run directory. A phase with its own data (sft) sets it; the tokenizer is then
  // the one the source checkpoint carries (or tokenizer.path), never trained here.
  BatchSourceFactory data_source;
  // The loss: null = the model's own. Shared so that the data source's factory can reach it.
  std::shared_ptr<TrainObjective> objective;
  // Before the first step: the step the run starts from, the checkpoint it resumed ("" fresh) and
  // the run's total steps (derived from the data when train.epochs > 0).
  std::function<void(int64_t step, const std::string& checkpoint, int64_t total_steps)> on_start;
  // After each checkpoint is written (atomically, manifest included).
  std::function<void(int64_t step, const std::string& checkpoint)> on_checkpoint;
  // A parallel job (spec.world() > 1): this rank's groups (train/parallel.h). Every rank runs
  // train_run with the same options but its own groups; rank 0 writes metrics.jsonl, the
  // checkpoints and summary.json, and alone calls on_metrics_line, on_checkpoint and prints.
  ParallelGroups* parallel = nullptr;
};

struct TrainSummary {
  int64_t steps_done = 0;
  int64_t total_steps = 0;        // the run's train.steps (derived from the data when train.epochs > 0)
  int64_t resumed_from = 0;       // step of the checkpoint resumed from (0: fresh)
  int64_t tokens = 0;             // tokens trained on over the whole run, resumed parts included
  double wall_s = 0;              // wall time of this train_run call
  StepMetrics last;               // the last step of this call (step 0: none)
  std::string final_checkpoint;   // directory of the last checkpoint written
  bool interrupted = false;       // stopped early by TrainOptions::interrupt (checkpoint written)
  // The validation loss (eval.every > 0): the last one and the lowest, with their steps (0: none
  // yet). The best is kept across resumes (trainer_state.json, "eval").
  double val_loss = 0, best_val_loss = 0;
  int64_t val_step = 0, best_val_step = 0;
};
// The summary as train_run writes it to run_dir/summary.json (and the trainer actor's done
// event carries it): steps, total_steps, resumed_from, tokens, wall_s, train_loss, val_loss,
// val_step, best_val_loss, best_val_step, checkpoint; a loss that does not exist is null.
nlohmann::ordered_json train_summary_json(const TrainSummary& s);
// The same as the lines `mariana train` prints at the end of a run.
std::string train_summary_text(const TrainSummary& s);

Result<TrainSummary> train_run(const TrainOptions& opt);

// The lines of a run's metrics.jsonl whose `key` (the training step, an RL job's "iteration") is
// in (after, upto], in file order, as written (one JSON object each, no newline); a torn or
// unparsable line is skipped.
Result<std::vector<std::pair<int64_t, std::string>>> metrics_lines_read(const std::string& path, int64_t after,
                                                                         int64_t upto, const char* key = "step");
// Keeps only the lines of metrics.jsonl up to `upto` (by `key`), atomically: a resumed run
// rewrites the lines after its checkpoint. A missing file is left missing.
Status metrics_truncate(const std::string& path, int64_t upto, const char* key = "step");
// Refuses a step that cannot fit the machine: at least `arena_copies` copies of the model's
// parameter arena (parameters, gradients, optimizer moments, ...) plus `models` × the activations
// of rows × seq_len tokens (Model::activation_bytes) and the batch's token arrays, against the
// physical memory (sysconf). InvalidArgument "<what> need at least X GiB ..., this machine has Y GiB";
// `what` names the job fields, e.g. "<job>: field 'batch.rows': 8 rows of 128 tokens".
Status check_step_memory(const Model<float>& model, int64_t arena_copies, int64_t models, int64_t rows,
                         int64_t seq_len, const std::string& what);
// OutOfRange "<where>: the loss is nan ..." when the loss or the gradient norm is not finite: the run
// stops there, before the optimizer applies the step and before any checkpoint of that state.
Status check_finite_step(const std::string& where, double loss, double grad_norm);

}  // namespace mariana
