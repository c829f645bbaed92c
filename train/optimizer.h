// AdamW with fp32 master weights and moments over the model's parameter arena, global-norm
// gradient clipping, and the auxiliary-loss-free bias update with its MaxVio_batch metric.
// Weight decay applies to matrices and the embedding, never to norms; the gate bias
// (e_score_correction_bias) is never touched by the optimizer — only by bias_update().
#pragma once

#include <cstdint>
#include <vector>

#include "model/params.h"

namespace mariana {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

// The constants of AdamW's update number t (1-based) at learning rate lr, in the float the
// update runs in, and the update of n elements (decay: multiply θ by 1 − lr·wd first, or not).
// AdamW::step and ZeRO-1's slices (train/parallel.h) run the same code, so they agree bitwise.
struct AdamWStepConstants {
  float b1 = 0, b2 = 0, step_size = 0, inv_sqrt_bc2 = 0, eps = 0, decay = 1;
};
AdamWStepConstants adamw_step_constants(const AdamWConfig& cfg, int64_t t, double lr);
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStepConstants& c, bool decay);

class AdamW {
 public:
  AdamW(const ParamTable& table, AdamWConfig cfg);
  // One update of params from grads at learning rate lr (decoupled weight decay lr·wd·θ).
  void step(float* params, const float* grads, double lr);
  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }
  std::vector<float>& exp_avg() { return m_; }        // arena layout, like the parameters
  std::vector<float>& exp_avg_sq() { return v_; }
  const std::vector<float>& exp_avg() const { return m_; }
  const std::vector<float>& exp_avg_sq() const { return v_; }

 private:
  struct Range {
    int64_t offset, n;
    bool decay;
  };
  std::vector<Range> ranges_;
  AdamWConfig cfg_;
  std::vector<float> m_, v_;
  int64_t t_ = 0;
};

// Global L2 norm of the gradients of every trainable tensor (gate biases excluded), computed in
// fp64; if it exceeds max_norm (> 0), scales the gradients by max_norm / norm. Returns the norm
// before clipping.
double clip_grad_norm(float* grads, const ParamTable& table, double max_norm);

// grads *= scale for every trainable tensor (gate biases excluded): clip_grad_norm's scaling.
void scale_grads(float* grads, const ParamTable& table, float scale);

// Auxiliary-loss-free balancing (report §2.1.2): b_i += γ·sign(mean load − load_i) for one MoE
// layer's bias[E] given this step's per-expert token counts.
void bias_update(float* bias, const std::vector<int32_t>& counts, double gamma);
// MaxVio_batch = max_i load_i / mean load − 1 (0 for an empty batch).
double max_violation(const std::vector<int32_t>& counts);

}  // namespace mariana
