// train_step and the two StepOptimizers.
#include "train/train_step.h"

#include <cmath>

#include "train/parallel.h"

namespace mariana {

namespace {

class LocalAdamW final : public StepOptimizer {
 public:
  LocalAdamW(const ParamTable& table, const AdamWConfig& cfg) : table_(table), opt_(table, cfg) {}
  Result<double> reduce_gradients(float* grads) override { return clip_grad_norm(grads, table_, 0); }
  Status update(float* params, float* grads, double norm, double max_norm, double lr) override {
    if (max_norm > 0 && norm > max_norm) scale_grads(grads, table_, static_cast<float>(max_norm / norm));
    opt_.step(params, grads, lr);
    return Status::Ok();
  }
  int64_t steps() const override { return opt_.steps(); }
  std::vector<MomentRun> moment_runs() const override {
    return whole_moment_runs(table_, opt_.exp_avg().data(), opt_.exp_avg_sq().data());
  }
  void load(const float* exp_avg, const float* exp_avg_sq, int64_t steps) override {
    std::copy(exp_avg, exp_avg + opt_.exp_avg().size(), opt_.exp_avg().begin());
    std::copy(exp_avg_sq, exp_avg_sq + opt_.exp_avg_sq().size(), opt_.exp_avg_sq().begin());
    opt_.set_steps(steps);
  }

 private:
  const ParamTable& table_;
  AdamW opt_;
};

class Zero1AdamW final : public StepOptimizer {
 public:
  Zero1AdamW(const ParamTable& table, const ParamTable& full, int64_t n_routed_experts, const AdamWConfig& cfg,
             ParallelGroups& groups)
      : opt_(table, full, n_routed_experts, cfg, groups) {}
  Result<double> reduce_gradients(float* grads) override { return opt_.reduce_gradients(grads); }
  Status update(float* params, float*, double norm, double max_norm, double lr) override {
    return opt_.update(params, norm, max_norm, lr);
  }
  int64_t steps() const override { return opt_.steps(); }
  std::vector<MomentRun> moment_runs() const override { return opt_.moment_runs(); }
  int64_t step_bytes_analytic() const override { return opt_.step_bytes_analytic(); }
  void load(const float* exp_avg, const float* exp_avg_sq, int64_t steps) override {
    opt_.load_moments(exp_avg, exp_avg_sq, steps);
  }

 private:
  ZeroOptimizer opt_;
};

// Parallel: sums the ranks' partial losses (each rank's means are over the global batch's counts,
// so the sums are the global batch's), loss-token counts and expert loads over the world, and
// ORs their interrupt flags, so that every rank logs, balances and stops alike.
Status step_totals(comm::Communicator& world, ForwardResult* res, const std::atomic<bool>* interrupt,
                   bool* interrupted) {
  std::vector<double> v = {res->loss, res->loss_main, res->loss_mtp, res->loss_balance,
                           static_cast<double>(res->target_tokens),
                           interrupt != nullptr && interrupt->load() ? 1.0 : 0.0};
  MARIANA_RETURN_IF_ERROR(allreduce_doubles(world, &v));
  res->loss = v[0];
  res->loss_main = v[1];
  res->loss_mtp = v[2];
  res->loss_balance = v[3];
  res->target_tokens = static_cast<int64_t>(std::llround(v[4]));
  *interrupted = v[5] > 0;
  std::vector<float> counts;
  for (const auto& c : res->expert_counts) counts.insert(counts.end(), c.begin(), c.end());
  MARIANA_RETURN_IF_ERROR(world.allreduce_sum(counts));  // exact: counts are far below 2^24
  size_t i = 0;
  for (auto& c : res->expert_counts)
    for (int32_t& x : c) x = static_cast<int32_t>(counts[i++]);
  return Status::Ok();
}

}  // namespace

std::unique_ptr<StepOptimizer> local_adamw(const ParamTable& table, const AdamWConfig& cfg) {
  return std::make_unique<LocalAdamW>(table, cfg);
}

std::unique_ptr<StepOptimizer> zero1_adamw(const ParamTable& table, const ParamTable& full, int64_t n_routed_experts,
                                           const AdamWConfig& cfg, ParallelGroups& groups) {
  return std::make_unique<Zero1AdamW>(table, full, n_routed_experts, cfg, groups);
}

Result<StepMetrics> train_step(StepContext& ctx, int64_t step, const Batch& global) {
  Model<float>& model = *ctx.model;
  const JobSpec& spec = *ctx.spec;
  const ModelConfig& cfg = model.config();
  const bool par = ctx.parallel != nullptr && ctx.parallel->layout().world > 1;
  LossWeights w;
  w.mtp_weight = spec.mtp_weight_at(step);
  w.balance_alpha = spec.alpha;
  Batch local;
  if (par) {  // this rank's rows; the means over the whole batch's counts
    MARIANA_RETURN_IF_ERROR(batch_validate(global, cfg));  // every rank alike, before any collective
    local = batch_rows_of_rank(global, ctx.parallel->layout().rank, ctx.parallel->layout().world);
    set_global_denominators(global, cfg.num_nextn_predict_layers, &w);
  }
  const Batch& batch = par ? local : global;
  const int64_t written_before = par ? process_bytes_written() : 0;

  ForwardResult res;
  model.zero_grads();
  if (ctx.objective != nullptr) {
    MARIANA_RETURN_IF_ERROR(ctx.objective->forward_backward(model, batch, w, &res));
  } else {
    MARIANA_RETURN_IF_ERROR(model.forward(batch, w, &res));
    model.backward();
  }
  ctx.interrupted = ctx.interrupt != nullptr && ctx.interrupt->load();
  if (par) {
    MARIANA_RETURN_IF_ERROR(model.parallel_status());
    MARIANA_RETURN_IF_ERROR(step_totals(ctx.parallel->world(), &res, ctx.interrupt, &ctx.interrupted));
  }
  MARIANA_ASSIGN_OR_RETURN(const double model_norm, ctx.optimizer->reduce_gradients(model.grads()));
  // One global norm over the model's and the objective's parameters; the model's gradients are
  // scaled by the same factor as the objective's (max_norm relative to the model's own norm).
  double gnorm = model_norm, max_norm = spec.grad_clip;
  if (ctx.objective != nullptr) {
    gnorm = std::hypot(model_norm, ctx.objective->extra_grad_norm());
    max_norm = 0;
    if (spec.grad_clip > 0 && gnorm > spec.grad_clip) {
      const double scale = spec.grad_clip / gnorm;
      max_norm = model_norm * scale;
      ctx.objective->extra_scale_grads(scale);
    }
  }
  MARIANA_RETURN_IF_ERROR(check_finite_step(spec.source + ": step " + std::to_string(step + 1), res.loss, gnorm));
  const double lr = spec.lr_at(step);
  MARIANA_RETURN_IF_ERROR(ctx.optimizer->update(model.params(), model.grads(), model_norm, max_norm, lr));
  if (ctx.objective != nullptr) ctx.objective->extra_step(lr);

  StepMetrics m;
  if (par) {
    // This rank's bytes on the wire this step (the bias update below sends nothing), beside
    // the count the algorithms imply: ZeRO-1's reduce-scatter + all-gather, and expert
    // parallelism's rows (forward x out and y back, backward dy out and dx back).
    const int64_t written = process_bytes_written();
    m.comm["sent_bytes"] = written >= 0 && written_before >= 0 ? written - written_before : -1;
    m.comm["zero_bytes"] = ctx.optimizer->step_bytes_analytic();
    m.comm["ep_bytes"] = 2 * model.expert_rows_exchanged() * cfg.hidden_size * static_cast<int64_t>(sizeof(float));
  }
  const double gamma = spec.gamma_at(step);
  for (size_t i = 0; i < res.moe_layers.size(); ++i) {  // identical on every rank: the loads are summed
    float* bias = model.param(layer_prefix(res.moe_layers[i]) + "mlp.gate.e_score_correction_bias");
    bias_update(bias, res.expert_counts[i], gamma);
    m.moe_layers.push_back(res.moe_layers[i]);
    m.max_vio.push_back(max_violation(res.expert_counts[i]));
  }
  m.loss = res.loss;
  m.loss_main = res.loss_main;
  m.loss_mtp = res.loss_mtp;
  m.loss_balance = res.loss_balance;
  m.lr = lr;
  m.grad_norm = gnorm;
  m.gamma = gamma;
  m.mtp_weight = w.mtp_weight;
  m.rows = global.B;
  m.loss_tokens = res.target_tokens;
  return m;
}

}  // namespace mariana
