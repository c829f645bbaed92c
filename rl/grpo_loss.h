// GRPO's math (DeepSeekMath / DeepSeek-V3 report Eqs. 26–28, per token): group-normalised
// advantages and the token-level clipped surrogate with a k3 KL penalty to a frozen reference,
// aggregated as the mean over all response tokens of the batch ("token-mean").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace mariana::rl {

// How rewards become advantages (grpo.std and grpo.scale_rewards in an rl job).
//   std: which standard deviation divides — kPopulation (÷n, Mariana's default since the first
//     GRPO runs) or kSample (÷(n−1), Bessel-corrected: torch.std, what TRL uses).
//   scale: TRL's scale_rewards — kGroup divides by the group's std (DeepSeekMath's GRPO), kBatch
//     by the std of all rewards of the batch, kNone only subtracts the group mean (Dr. GRPO).
//   eps: added to the std before dividing (TRL uses 1e-4).
enum class AdvantageStd { kPopulation, kSample };
enum class RewardScaling { kGroup, kBatch, kNone };
struct AdvantageOptions {
  AdvantageStd std = AdvantageStd::kPopulation;
  RewardScaling scale = RewardScaling::kGroup;
  double eps = 1e-6;
};
// "population" | "sample" and "group" | "batch" | "none"; InvalidArgument naming the accepted values.
Result<AdvantageStd> advantage_std_parse(const std::string& s);
Result<RewardScaling> reward_scaling_parse(const std::string& s);

// A_i = (r_i − mean_g(r)) / (std + eps) for each consecutive group g of `group` rewards, std as
// chosen by `o` (no division for kNone). A group whose rewards are all equal gets A = 0 for every
// member (it carries no preference; counted in zero_variance_groups) instead of dividing noise by
// eps; r_i − mean is 0 there anyway, so this matches TRL's formula up to rounding.
struct Advantages {
  std::vector<double> values;
  int64_t zero_variance_groups = 0;
};
Advantages group_advantages(const std::vector<double>& rewards, int64_t group, const AdvantageOptions& o = {});

// Dynamic sampling (DAPO) over one round of rollouts: rewards [n·group], group by group. Returns
// the groups to train on, in order: with `dynamic`, those whose rewards are not all equal, at most
// `room` of them (*dropped counts the all-equal ones; groups past `room` are neither kept nor
// counted); without it, every group (room is ignored).
std::vector<int64_t> select_groups(const std::vector<double>& rewards, int64_t group, bool dynamic, int64_t room,
                                   int64_t* dropped);

struct GrpoLossParams {
  double clip_eps = 0.2;        // ε: ratio clipped to [1 − ε, 1 + ε_high]
  double clip_eps_high = -1;    // ε_high; < 0: same as ε
  double kl_beta = 0.04;        // β
};

struct GrpoLossStats {
  double loss = 0;        // token-mean of −min(ρA, clip(ρ)A) + β·k3
  double kl = 0;          // token-mean k3 = exp(ref − lp) − (ref − lp) − 1
  double clip_frac = 0;   // fraction of tokens whose gradient the clip removed
  double entropy = 0;     // token-mean entropy of the policy at those positions
  double ratio_mean = 0;
  int64_t tokens = 0;
};

// Over T positions with logits [T, V]: positions with target >= 0 are response tokens with their
// sampling-policy log-prob old_lp, reference log-prob ref_lp and advantage adv (per position).
// Writes dlogits [T, V] = d(loss)/d(logits) (zero at other positions) and the per-position
// current log-probs into lp (when not null). Templated on float (training) and double (tests).
template <typename F>
GrpoLossStats grpo_token_loss(const F* logits, int64_t T, int64_t V, const int32_t* target, const double* old_lp,
                              const double* ref_lp, const double* adv, const GrpoLossParams& p, F* dlogits,
                              double* lp = nullptr);

// log softmax(logits[t])[target[t]] for each position with target >= 0 (0 elsewhere).
template <typename F>
void token_logprobs(const F* logits, int64_t T, int64_t V, const int32_t* target, double* out);

}  // namespace mariana::rl
