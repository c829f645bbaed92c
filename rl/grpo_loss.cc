// GRPO advantages and the clipped, KL-penalised token-level surrogate with its gradient.
#include "rl/grpo_loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace mariana::rl {

Result<AdvantageStd> advantage_std_parse(const std::string& s) {
  if (s == "population") return AdvantageStd::kPopulation;
  if (s == "sample") return AdvantageStd::kSample;
  return InvalidArgument("expected \"population\" or \"sample\", got \"" + s + "\"");
}

Result<RewardScaling> reward_scaling_parse(const std::string& s) {
  if (s == "group") return RewardScaling::kGroup;
  if (s == "batch") return RewardScaling::kBatch;
  if (s == "none") return RewardScaling::kNone;
  return InvalidArgument("expected \"group\", \"batch\" or \"none\", got \"" + s + "\"");
}

namespace {

// The standard deviation of x[b, e) around `mean`: population (÷n) or sample (÷(n−1); 0 for n = 1).
double std_dev(const std::vector<double>& x, int64_t b, int64_t e, double mean, AdvantageStd kind) {
  double ss = 0;
  for (int64_t i = b; i < e; ++i) ss += (x[i] - mean) * (x[i] - mean);
  const int64_t n = e - b;
  const int64_t dof = kind == AdvantageStd::kSample ? n - 1 : n;
  return dof > 0 ? std::sqrt(ss / static_cast<double>(dof)) : 0.0;
}

double mean_of(const std::vector<double>& x, int64_t b, int64_t e) {
  double m = 0;
  for (int64_t i = b; i < e; ++i) m += x[i];
  return m / static_cast<double>(e - b);
}

}  // namespace

Advantages group_advantages(const std::vector<double>& rewards, int64_t group, const AdvantageOptions& o) {
  Advantages a;
  a.values.assign(rewards.size(), 0.0);
  const int64_t n = static_cast<int64_t>(rewards.size());
  if (n == 0) return a;
  const double batch_sd = o.scale == RewardScaling::kBatch ? std_dev(rewards, 0, n, mean_of(rewards, 0, n), o.std) : 0.0;
  for (int64_t g0 = 0; g0 < n; g0 += group) {
    const int64_t g1 = std::min(n, g0 + group);
    const double mean = mean_of(rewards, g0, g1);
    bool all_equal = true;
    for (int64_t i = g0; i < g1; ++i) all_equal = all_equal && rewards[i] == rewards[g0];
    if (all_equal) {
      ++a.zero_variance_groups;
      continue;
    }
    double denom = 1.0;
    if (o.scale == RewardScaling::kGroup) denom = std_dev(rewards, g0, g1, mean, o.std) + o.eps;
    if (o.scale == RewardScaling::kBatch) denom = batch_sd + o.eps;
    for (int64_t i = g0; i < g1; ++i) a.values[i] = (rewards[i] - mean) / denom;
  }
  return a;
}

namespace {

// log-sum-exp of one row, in double.
template <typename F>
double row_lse(const F* x, int64_t V) {
  double mx = static_cast<double>(x[0]);
  for (int64_t v = 1; v < V; ++v) mx = std::max(mx, static_cast<double>(x[v]));
  double s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(x[v]) - mx);
  return mx + std::log(s);
}

}  // namespace

template <typename F>
void token_logprobs(const F* logits, int64_t T, int64_t V, const int32_t* target, double* out) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    out[t] = target[t] >= 0 ? static_cast<double>(logits[t * V + target[t]]) - row_lse(logits + t * V, V) : 0.0;
}

template <typename F>
GrpoLossStats grpo_token_loss(const F* logits, int64_t T, int64_t V, const int32_t* target, const double* old_lp,
                              const double* ref_lp, const double* adv, const GrpoLossParams& p, F* dlogits,
                              double* lp_out) {
  const double lo = 1.0 - p.clip_eps, hi = 1.0 + (p.clip_eps_high >= 0 ? p.clip_eps_high : p.clip_eps);
  GrpoLossStats st;
  for (int64_t t = 0; t < T; ++t) st.tokens += target[t] >= 0;
  const double inv_n = st.tokens > 0 ? 1.0 / static_cast<double>(st.tokens) : 0.0;
  // Per-token terms, summed in token order afterwards: the same statistics on any thread count.
  struct Terms {
    double loss = 0, kl = 0, clipped = 0, ent = 0, ratio = 0;
  };
  std::vector<Terms> terms(static_cast<size_t>(T));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    F* d = dlogits + t * V;
    const F* x = logits + t * V;
    if (target[t] < 0) {
      std::fill(d, d + V, F(0));
      if (lp_out != nullptr) lp_out[t] = 0;
      continue;
    }
    const double lse = row_lse(x, V);
    const double lp = static_cast<double>(x[target[t]]) - lse;
    if (lp_out != nullptr) lp_out[t] = lp;
    const double ratio = std::exp(lp - old_lp[t]);
    const double A = adv[t];
    const double unclipped = ratio * A, clipped_obj = std::clamp(ratio, lo, hi) * A;
    // The min picks the clipped term (zero gradient) when it is strictly smaller.
    const bool clip_active = clipped_obj < unclipped;
    const double surrogate = std::min(unclipped, clipped_obj);
    const double delta = ref_lp[t] - lp;
    const double k3 = std::exp(delta) - delta - 1.0;
    Terms& tt = terms[static_cast<size_t>(t)];
    tt.loss = -surrogate + p.kl_beta * k3;
    tt.kl = k3;
    tt.clipped = clip_active ? 1.0 : 0.0;
    tt.ratio = ratio;
    // d(loss_t)/d(lp) = −ρA·[not clipped] + β(1 − e^{ref − lp}); d(lp)/d(logits) = onehot − softmax.
    const double g = ((clip_active ? 0.0 : -unclipped) + p.kl_beta * (1.0 - std::exp(delta))) * inv_n;
    double h = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double pv = std::exp(static_cast<double>(x[v]) - lse);
      if (pv > 0) h -= pv * (static_cast<double>(x[v]) - lse);
      d[v] = static_cast<F>(-g * pv);
    }
    d[target[t]] += static_cast<F>(g);
    tt.ent = h;
  }
  double loss = 0, kl = 0, clipped = 0, ent = 0, ratio_sum = 0;
  for (const Terms& tt : terms) {
    loss += tt.loss;
    kl += tt.kl;
    clipped += tt.clipped;
    ent += tt.ent;
    ratio_sum += tt.ratio;
  }
  st.loss = loss * inv_n;
  st.kl = kl * inv_n;
  st.clip_frac = clipped * inv_n;
  st.entropy = ent * inv_n;
  st.ratio_mean = ratio_sum * inv_n;
  return st;
}

template void token_logprobs<float>(const float*, int64_t, int64_t, const int32_t*, double*);
template void token_logprobs<double>(const double*, int64_t, int64_t, const int32_t*, double*);
template GrpoLossStats grpo_token_loss<float>(const float*, int64_t, int64_t, const int32_t*, const double*,
                                              const double*, const double*, const GrpoLossParams&, float*, double*);
template GrpoLossStats grpo_token_loss<double>(const double*, int64_t, int64_t, const int32_t*, const double*,
                                               const double*, const double*, const GrpoLossParams&, double*, double*);

std::vector<int64_t> select_groups(const std::vector<double>& rewards, int64_t group, bool dynamic, int64_t room,
                                   int64_t* dropped) {
  std::vector<int64_t> keep;
  const int64_t n = static_cast<int64_t>(rewards.size()) / group;
  for (int64_t j = 0; j < n; ++j) {
    if (!dynamic) {
      keep.push_back(j);
      continue;
    }
    if (static_cast<int64_t>(keep.size()) == room) break;
    const double* r = rewards.data() + j * group;
    if (std::all_of(r, r + group, [&](double v) { return v == r[0]; })) {
      ++*dropped;
    } else {
      keep.push_back(j);
    }
  }
  return keep;
}

}  // namespace mariana::rl
