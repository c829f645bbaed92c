// One optimizer step of training, the same code for one process and for each rank of a parallel
// job: zero → forward/backward of this rank's rows → gradient reduction → global-norm clip →
// AdamW (over this rank's slice) → parameters made whole → expert loads summed → bias update.
// What differs between the two lives behind StepOptimizer (one process's AdamW, or ZeRO-1) and the
// rank's groups (LocalCommunicators for one process). train_run drives it: data, metrics,
// validation and checkpoints around it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "model/model.h"
#include "train/job_spec.h"
#include "train/optimizer.h"
#include "train/run_checkpoints.h"
#include "train/trainer.h"

namespace mariana {

class ParallelGroups;

// The optimizer side of a step.
class StepOptimizer {
 public:
  virtual ~StepOptimizer() = default;
  // Sums the gradients over the ranks that share them (nothing for one process) and returns the
  // global L2 norm of all of them.
  virtual Result<double> reduce_gradients(float* grads) = 0;
  // Scales the gradients by max_norm / norm when max_norm > 0 and norm > max_norm, runs one AdamW
  // update at lr, and leaves every rank's parameters whole.
  virtual Status update(float* params, float* grads, double norm, double max_norm, double lr) = 0;
  virtual int64_t steps() const = 0;
  // This rank's moments for its checkpoint file, as runs of the full model's tensors (one
  // process: every tensor but the gate biases, whole; ZeRO-1: its slices). Valid until the next update.
  virtual std::vector<MomentRun> moment_runs() const = 0;
  // Restores the moments (laid out as this rank's model's arena) and the update count.
  virtual void load(const float* exp_avg, const float* exp_avg_sq, int64_t steps) = 0;
  // The bytes this rank sends in one step's gradient reduction and parameter gathering, by the
  // algorithms' count (0 for one process).
  virtual int64_t step_bytes_analytic() const { return 0; }
};

// One process: AdamW over the whole arena, clipping as clip_grad_norm does.
std::unique_ptr<StepOptimizer> local_adamw(const ParamTable& table, const AdamWConfig& cfg);
// A rank of a parallel job: ZeRO-1 over its groups (train/parallel.h); table: its model's (a
// shard's), full: the full model's.
std::unique_ptr<StepOptimizer> zero1_adamw(const ParamTable& table, const ParamTable& full, int64_t n_routed_experts,
                                           const AdamWConfig& cfg, ParallelGroups& groups);

struct StepContext {
  Model<float>* model = nullptr;
  const JobSpec* spec = nullptr;
  StepOptimizer* optimizer = nullptr;
  TrainObjective* objective = nullptr;     // null: the model's own loss
  ParallelGroups* parallel = nullptr;      // null: one process
  const std::atomic<bool>* interrupt = nullptr;
  // Out: an interrupt seen by any rank this step (agreed on by all ranks, so all stop together).
  bool interrupted = false;
};

// Step `step` (0-based) on the step's global batch. Fills the metrics of the step that do not
// depend on time or on the run's totals (loss and parts, lr, grad_norm, gamma, mtp_weight, rows,
// loss_tokens, MaxVio per MoE layer, comm); `step` and the token counts are the caller's. A loss
// or gradient norm that is not finite stops before the update (check_finite_step).
Result<StepMetrics> train_step(StepContext& ctx, int64_t step, const Batch& global);

}  // namespace mariana
