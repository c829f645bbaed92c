// The single-process trainer for the phases `pretrain` and `extend`: data (built-in corpora or
// files, tokenized into shards), the model, AdamW with clipping and schedules, the bias update,
// per-step metrics (JSONL in the run directory, a progress line on a terminal), checkpoints in HF
// layout plus trainer state written atomically with a checksummed manifest, keeping the last K,
// and exact resume: N steps + resume + N steps equals 2N steps straight, bit for bit.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/status.h"
#include "train/job_spec.h"

namespace mariana {

struct StepMetrics {
  int64_t step = 0;  // 1-based: the number of optimizer steps done
  double loss = 0, loss_main = 0, loss_mtp = 0, loss_balance = 0;
  double lr = 0, grad_norm = 0, tokens_per_s = 0, gamma = 0, mtp_weight = 0;
  int64_t rows = 0, tokens = 0;
  std::vector<int64_t> moe_layers;
  std::vector<double> max_vio;  // MaxVio_batch per MoE layer
};

struct TrainOptions {
  JobSpec spec;
  std::string run_dir;
  bool resume = false;
  bool progress = false;          // a refreshing progress line on stderr
  bool quiet = false;             // no per-step log lines on stdout
  int64_t stop_after = -1;        // stop (as if killed) after this many steps of this run; -1: never
  std::function<void(const StepMetrics&)> on_step;
};

struct TrainSummary {
  int64_t steps_done = 0;
  int64_t resumed_from = 0;       // step of the checkpoint resumed from (0: fresh)
  StepMetrics last;
  std::string final_checkpoint;   // directory of the last checkpoint written
};

Result<TrainSummary> train_run(const TrainOptions& opt);

// Newest checkpoint under run_dir/checkpoints whose manifest verifies; NotFound if none.
// Corrupt or partial ones are skipped with a warning on stderr.
Result<std::string> latest_valid_checkpoint(const std::string& run_dir);

}  // namespace mariana
