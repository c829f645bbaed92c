// The GRPO job: spec, rollouts with the inference engine, rewards, advantages, the learner.
#include "rl/grpo.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/toml_util.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/inference/generate.h"
#include "rl/rewards/reward.h"
#include "sft/sft_data.h"
#include "train/job_spec.h"
#include "train/optimizer.h"
#include "train/run_checkpoints.h"
#include "train/trainer.h"

namespace mariana::rl {

namespace fs = std::filesystem;

namespace {

// Every field an RL job may set, with its default. Keep in sync with RlSpec.
constexpr const char* kRlSchema = R"(
[job]
name = "rl"
phase = "rl"
[model]
init_from = ""
reference = ""
[task]
builtin = "arithmetic"
seed = 7
arithmetic_min_digits = 1
arithmetic_max_digits = 2
arithmetic_ops = "+-"
prompt_format = "chat"
prompt_pool = 0
[rollout]
prompts = 8
group_size = 8
max_new_tokens = 128
temperature = 1.0
top_p = 1.0
top_k = 0
[reward]
scorers = ["math", "format"]
weights = [1.0, 0.1]
[grpo]
iterations = 40
inner_updates = 1
clip_eps = 0.2
clip_eps_high = -1.0
kl_beta = 0.04
adv_eps = 1e-6
std = "population"
scale_rewards = "group"
lr = 1e-4
grad_clip = 1.0
weight_decay = 0.0
beta1 = 0.9
beta2 = 0.95
adam_eps = 1e-8
seed = 0
[train]
threads = 0
checkpoint_every = 10
keep_last = 2
[eval]
every = 0
problems = 200
max_new_tokens = 160
)";

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string iter_dir_name(int64_t it) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "iter-%06lld", static_cast<long long>(it));
  return buf;
}

// checkpoint_save into a temporary sibling, plus the tokenizer and rl_state.json, then
// checkpoint_publish (manifest, one rename, keep the last keep_last).
Status write_rl_checkpoint(const std::string& run_dir, int64_t it, const Model<float>& model,
                           const std::string& tokenizer_json, const nlohmann::json& state, int64_t keep_last,
                           std::string* written) {
  const CheckpointStaging where = checkpoint_staging(run_dir, iter_dir_name(it));
  const fs::path tmp = where.tmp;
  MARIANA_RETURN_IF_ERROR(checkpoint_save(tmp.string(), model, CheckpointOptions{}));
  MARIANA_RETURN_IF_ERROR(write_file_atomic((tmp / "tokenizer.json").string(), tokenizer_json));
  MARIANA_RETURN_IF_ERROR(write_file_atomic((tmp / "rl_state.json").string(), state.dump(2) + "\n"));
  MARIANA_RETURN_IF_ERROR(checkpoint_publish(run_dir, where.tmp, where.final_dir, it, keep_last));
  *written = where.final_dir;
  return Status::Ok();
}

// One rollout batch: P prompts × G responses, stamped with the policy version that sampled it.
struct Rollout {
  int64_t policy_version = 0;
  std::vector<ArithmeticProblem> problems;        // [P]
  std::vector<std::vector<int32_t>> prompts;      // [P·G] (each prompt repeated G times)
  std::vector<std::vector<int32_t>> responses;    // [P·G] including the EOS when generation stopped
  std::vector<std::string> texts;                 // [P·G] decoded responses
};

nlohmann::json metrics_json(const RlIterationMetrics& m) {
  nlohmann::json j = {{"iteration", m.iteration},
                      {"policy_version", m.policy_version},
                      {"reward", m.reward},
                      {"reward_parts", m.reward_parts},
                      {"accuracy", m.accuracy},
                      {"kl", m.kl},
                      {"clip_frac", m.clip_frac},
                      {"entropy", m.entropy},
                      {"loss", m.loss},
                      {"grad_norm", m.grad_norm},
                      {"response_len", m.response_len},
                      {"zero_variance_groups", m.zero_variance_groups},
                      {"responses", m.responses},
                      {"tokens", m.tokens},
                      {"rollout_s", m.rollout_s},
                      {"learn_s", m.learn_s}};
  if (m.eval_accuracy >= 0) j["eval_accuracy"] = m.eval_accuracy;
  return j;
}

}  // namespace

Result<RlSpec> rl_spec_parse(const std::string& text, const std::string& source,
                             const std::vector<std::string>& overrides) {
  MARIANA_ASSIGN_OR_RETURN(toml::table merged, toml_with_schema(kRlSchema, text, source, overrides));
  TomlFields f(std::move(merged), source);
  auto sec = [&](const char* n) { return f.get_object(n).value(); };
  const TomlFields job = sec("job"), model = sec("model"), task = sec("task"), ro = sec("rollout"),
                   rw = sec("reward"), g = sec("grpo"), tr = sec("train"), ev = sec("eval");
  RlSpec s;
  s.source = source;
  s.name = job.get_string("name").value();
  auto bad = [&](const std::string& field, const std::string& what) {
    return InvalidArgument(source + ": field '" + field + "': " + what);
  };
  if (job.get_string("phase").value() != "rl") return bad("job.phase", "expected \"rl\"");
  s.init_from = model.get_string("init_from").value();
  s.reference = model.get_string("reference").value();
  if (task.get_string("builtin").value() != "arithmetic") return bad("task.builtin", "expected \"arithmetic\"");
  s.task_seed = static_cast<uint64_t>(task.get_int("seed").value());
  s.arithmetic.min_digits = static_cast<int>(task.get_int("arithmetic_min_digits").value());
  s.arithmetic.max_digits = static_cast<int>(task.get_int("arithmetic_max_digits").value());
  s.arithmetic.ops = task.get_string("arithmetic_ops").value();
  auto fmt = prompt_format_parse(task.get_string("prompt_format").value());
  if (!fmt.ok()) return bad("task.prompt_format", "expected \"chat\" or \"raw\"");
  s.format = fmt.value();
  s.prompt_pool = task.get_int("prompt_pool").value();
  if (s.prompt_pool < 0) return bad("task.prompt_pool", "expected >= 0");
  s.prompts = ro.get_int("prompts").value();
  s.group_size = ro.get_int("group_size").value();
  s.max_new_tokens = ro.get_int("max_new_tokens").value();
  s.temperature = ro.get_double("temperature").value();
  s.top_p = ro.get_double("top_p").value();
  s.top_k = ro.get_int("top_k").value();
  MARIANA_ASSIGN_OR_RETURN(s.scorers, rw.get_string_array("scorers"));
  MARIANA_ASSIGN_OR_RETURN(s.weights, rw.get_double_array("weights"));
  s.iterations = g.get_int("iterations").value();
  s.inner_updates = g.get_int("inner_updates").value();
  s.loss.clip_eps = g.get_double("clip_eps").value();
  s.loss.clip_eps_high = g.get_double("clip_eps_high").value();
  s.loss.kl_beta = g.get_double("kl_beta").value();
  s.advantages.eps = g.get_double("adv_eps").value();
  auto adv_std = advantage_std_parse(g.get_string("std").value());
  if (!adv_std.ok()) return bad("grpo.std", adv_std.status().message());
  s.advantages.std = adv_std.value();
  auto scaling = reward_scaling_parse(g.get_string("scale_rewards").value());
  if (!scaling.ok()) return bad("grpo.scale_rewards", scaling.status().message());
  s.advantages.scale = scaling.value();
  s.lr = g.get_double("lr").value();
  s.grad_clip = g.get_double("grad_clip").value();
  s.weight_decay = g.get_double("weight_decay").value();
  s.beta1 = g.get_double("beta1").value();
  s.beta2 = g.get_double("beta2").value();
  s.adam_eps = g.get_double("adam_eps").value();
  s.seed = static_cast<uint64_t>(g.get_int("seed").value());
  s.threads = static_cast<int>(tr.get_int("threads").value());
  s.checkpoint_every = tr.get_int("checkpoint_every").value();
  s.keep_last = tr.get_int("keep_last").value();
  s.eval_every = ev.get_int("every").value();
  s.eval_problems = ev.get_int("problems").value();
  s.eval_max_new_tokens = ev.get_int("max_new_tokens").value();

  if (s.init_from.empty()) return bad("model.init_from", "an rl job starts from a checkpoint or run directory");
  if (!(s.arithmetic.min_digits >= 1 && s.arithmetic.min_digits <= s.arithmetic.max_digits &&
        s.arithmetic.max_digits <= 9))
    return bad("task.arithmetic_min_digits", "expected 1 <= arithmetic_min_digits <= arithmetic_max_digits <= 9");
  if (s.arithmetic.ops.empty() || s.arithmetic.ops.find_first_not_of("+-*") != std::string::npos)
    return bad("task.arithmetic_ops", "expected operators from \"+-*\"");
  if (s.prompts <= 0) return bad("rollout.prompts", "expected > 0");
  if (s.group_size < 2) return bad("rollout.group_size", "expected >= 2 (advantages compare a group's samples)");
  if (s.max_new_tokens <= 0) return bad("rollout.max_new_tokens", "expected > 0");
  if (!(s.temperature > 0)) return bad("rollout.temperature", "expected > 0 (GRPO needs sampled groups)");
  if (!(s.top_p > 0 && s.top_p <= 1)) return bad("rollout.top_p", "expected in (0, 1]");
  if (s.top_k < 0) return bad("rollout.top_k", "expected >= 0");
  if (s.scorers.empty()) return bad("reward.scorers", "expected at least one scorer");
  if (s.weights.size() != s.scorers.size()) return bad("reward.weights", "expected one weight per scorer");
  if (s.iterations <= 0) return bad("grpo.iterations", "expected > 0");
  if (s.inner_updates <= 0) return bad("grpo.inner_updates", "expected > 0");
  if (!(s.loss.clip_eps > 0 && s.loss.clip_eps < 1)) return bad("grpo.clip_eps", "expected in (0, 1)");
  if (!(s.loss.kl_beta >= 0)) return bad("grpo.kl_beta", "expected >= 0");
  if (!(s.lr > 0)) return bad("grpo.lr", "expected > 0");
  if (!(s.advantages.eps >= 0)) return bad("grpo.adv_eps", "expected >= 0");
  if (s.checkpoint_every <= 0) return bad("train.checkpoint_every", "expected > 0");
  if (s.keep_last <= 0) return bad("train.keep_last", "expected > 0");
  if (s.eval_every < 0) return bad("eval.every", "expected >= 0");
  if (s.eval_problems <= 0) return bad("eval.problems", "expected > 0");
  if (s.threads < 0 || s.threads > kMaxThreads)
    return bad("train.threads", "expected 0 (the machine's cores) .. " + std::to_string(kMaxThreads));
  // Every other number: in range (finiteness is checked as the file is merged).
  if (s.prompts > kMaxBatchTokens / s.group_size || s.prompts * s.group_size > kMaxBatchTokens / s.max_new_tokens)
    return bad("rollout.prompts", "prompts x group_size x max_new_tokens exceeds " + std::to_string(kMaxBatchTokens) +
                                      " tokens per iteration");
  if (!(s.grad_clip >= 0)) return bad("grpo.grad_clip", "expected >= 0 (0: no clipping)");
  if (!(s.weight_decay >= 0)) return bad("grpo.weight_decay", "expected >= 0");
  if (!(s.beta1 >= 0 && s.beta1 < 1)) return bad("grpo.beta1", "expected in [0, 1)");
  if (!(s.beta2 >= 0 && s.beta2 < 1)) return bad("grpo.beta2", "expected in [0, 1)");
  if (!(s.adam_eps > 0)) return bad("grpo.adam_eps", "expected > 0");
  if (s.eval_max_new_tokens <= 0) return bad("eval.max_new_tokens", "expected > 0");
  return s;
}

Result<RlSpec> rl_spec_load(const std::string& path, const std::vector<std::string>& overrides) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  return rl_spec_parse(text, path, overrides);
}

Result<LearnerStats> grpo_learn(Model<float>& policy, Model<float>& reference, AdamW& adam, const LearnerBatch& b,
                                const LearnerParams& p, int64_t current_version) {
  if (b.policy_version != current_version)
    return FailedPrecondition("rollout batch from policy version " + std::to_string(b.policy_version) +
                              " reached the learner at version " + std::to_string(current_version));
  const int64_t N = static_cast<int64_t>(b.prompts.size());
  if (N == 0 || b.responses.size() != b.prompts.size() || b.advantages.size() != b.prompts.size())
    return InvalidArgument("learner: prompts, responses and advantages must have one entry per sample");
  const int64_t V = policy.config().vocab_size;
  LearnerStats out;
  int64_t S = 0;
  for (int64_t i = 0; i < N; ++i)
    S = std::max<int64_t>(S, static_cast<int64_t>(b.prompts[i].size() + b.responses[i].size()));
  Batch batch;
  batch.B = N;
  batch.S = S;
  batch.tokens.assign(static_cast<size_t>(N * S), p.pad_id);
  batch.targets.assign(static_cast<size_t>(N * S), -1);  // no cross-entropy: the surrogate alone
  batch.doc_start.assign(static_cast<size_t>(N * S), 0);
  std::vector<int32_t> target(static_cast<size_t>(N * S), -1);
  std::vector<double> adv_pos(static_cast<size_t>(N * S), 0.0);
  for (int64_t i = 0; i < N; ++i) {
    const auto& pr = b.prompts[i];
    const auto& rs = b.responses[i];
    const int64_t P = static_cast<int64_t>(pr.size()), R = static_cast<int64_t>(rs.size());
    if (P == 0) return InvalidArgument("learner: sample " + std::to_string(i) + " has an empty prompt");
    std::copy(pr.begin(), pr.end(), batch.tokens.begin() + i * S);
    std::copy(rs.begin(), rs.end(), batch.tokens.begin() + i * S + P);
    for (int64_t k = 0; k < R; ++k) {  // position P−1+k predicts response token k
      target[i * S + P - 1 + k] = rs[k];
      adv_pos[i * S + P - 1 + k] = b.advantages[i];
    }
    out.tokens += R;
  }
  LossWeights lw;
  lw.mtp_weight = 0;  // no MTP, no balance loss during RL
  lw.balance_alpha = 0;
  const int64_t T = N * S;
  // Log-probs of the sampling distribution: logits / temperature, as the rollout drew them
  // (the policy, the reference and the ratio all use the same temperature).
  const float inv_temp = static_cast<float>(1.0 / p.temperature);
  std::vector<float> scaled(static_cast<size_t>(T * V));
  auto tempered = [&](const float* logits) {
    for (int64_t i = 0; i < T * V; ++i) scaled[i] = logits[i] * inv_temp;
    return scaled.data();
  };
  std::vector<double> old_lp(static_cast<size_t>(T)), ref_lp(static_cast<size_t>(T));
  MARIANA_RETURN_IF_ERROR(reference.forward(batch, lw, nullptr));
  token_logprobs(tempered(reference.logits()), T, V, target.data(), ref_lp.data());
  MARIANA_RETURN_IF_ERROR(policy.forward(batch, lw, nullptr));
  token_logprobs(tempered(policy.logits()), T, V, target.data(), old_lp.data());
  std::vector<float> dlogits(static_cast<size_t>(T * V));
  for (int64_t u = 0; u < p.inner_updates; ++u) {
    if (u > 0) MARIANA_RETURN_IF_ERROR(policy.forward(batch, lw, nullptr));
    const GrpoLossStats st = grpo_token_loss(tempered(policy.logits()), T, V, target.data(), old_lp.data(),
                                             ref_lp.data(), adv_pos.data(), p.loss, dlogits.data());
    for (float& d : dlogits) d *= inv_temp;  // d(logits / T)/d(logits)
    policy.zero_grads();
    policy.backward_custom(dlogits.data(), nullptr);
    const double gn = clip_grad_norm(policy.grads(), policy.table(), p.grad_clip);
    MARIANA_RETURN_IF_ERROR(check_finite_step("learner update " + std::to_string(u + 1), st.loss, gn));
    adam.step(policy.params(), policy.grads(), p.lr);
    if (u == 0) {
      out.kl = st.kl;
      out.entropy = st.entropy;
      out.loss = st.loss;
      out.grad_norm = gn;
    }
    out.clip_frac += st.clip_frac / static_cast<double>(p.inner_updates);
  }
  return out;
}

Result<RlSummary> grpo_run(const RlOptions& o) {
  const RlSpec& s = o.spec;
  cpu::set_num_threads(s.threads);
  MARIANA_ASSIGN_OR_RETURN(std::string init_dir, resolve_checkpoint(s.init_from));
  MARIANA_ASSIGN_OR_RETURN(std::string ref_dir, resolve_checkpoint(s.reference.empty() ? s.init_from : s.reference));
  MARIANA_ASSIGN_OR_RETURN(LoadedCheckpoint<float> pol_ck, checkpoint_load<float>(init_dir));
  MARIANA_ASSIGN_OR_RETURN(LoadedCheckpoint<float> ref_ck, checkpoint_load<float>(ref_dir));
  Model<float>& policy = pol_ck.model;
  Model<float>& reference = ref_ck.model;
  if (reference.table().arena_size() != policy.table().arena_size())
    return InvalidArgument(ref_dir + ": the reference model's shape differs from the policy's (" + init_dir + ")");
  // The learner's batch: prompts × group_size samples of at least max_new_tokens + 1 tokens, through
  // the policy and the reference; parameters, gradients of both, AdamW's two moments.
  MARIANA_RETURN_IF_ERROR(check_step_memory(
      policy, 6, 2, s.prompts * s.group_size, s.max_new_tokens + 1,
      s.source + ": fields 'rollout.prompts' x 'rollout.group_size' x 'rollout.max_new_tokens': " +
          std::to_string(s.prompts) + " x " + std::to_string(s.group_size) + " samples of " +
          std::to_string(s.max_new_tokens + 1) + "+ tokens"));
  const std::string tok_path = (fs::path(init_dir) / "tokenizer.json").string();
  MARIANA_ASSIGN_OR_RETURN(std::string tok_json, read_file(tok_path));
  MARIANA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load(tok_path));
  nlohmann::json parts = nlohmann::json::array();
  for (size_t i = 0; i < s.scorers.size(); ++i) parts.push_back({{"scorer", s.scorers[i]}, {"weight", s.weights[i]}});
  MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<RewardScorer> scorer, make_scorer("composite", {{"parts", parts}}));
  // Accuracy: the rule-based math scorer's verdict, else math_verify's.
  std::string accuracy_part;
  for (const char* n : {"math_verify", "math"})
    if (std::find(s.scorers.begin(), s.scorers.end(), n) != s.scorers.end()) accuracy_part = n;

  fs::create_directories(o.run_dir);
  MARIANA_RETURN_IF_ERROR(write_file_atomic((fs::path(o.run_dir) / "tokenizer.json").string(), tok_json));
  const fs::path metrics_path = fs::path(o.run_dir) / "metrics.jsonl";
  std::ofstream metrics(metrics_path, std::ios::trunc);
  if (!metrics) return Unavailable(metrics_path.string() + ": cannot open for writing");

  LearnerParams learner;
  learner.loss = s.loss;
  learner.temperature = s.temperature;
  learner.inner_updates = s.inner_updates;
  learner.lr = s.lr;
  learner.grad_clip = s.grad_clip;
  learner.pad_id = tok.pad_id();
  AdamWConfig acfg;
  acfg.beta1 = s.beta1;
  acfg.beta2 = s.beta2;
  acfg.eps = s.adam_eps;
  acfg.weight_decay = s.weight_decay;
  AdamW adam(policy.table(), acfg);
  ArithmeticEvalOptions eo;
  eo.problems = s.eval_problems;
  eo.arithmetic = s.arithmetic;
  eo.format = s.format;
  eo.max_new_tokens = s.eval_max_new_tokens;
  RlSummary sum;
  MARIANA_ASSIGN_OR_RETURN(ArithmeticEvalResult ev0, eval_arithmetic(policy, tok, eo));
  sum.eval_before = ev0.accuracy;
  if (!o.quiet)
    std::printf("rl %s: start from %s, held-out accuracy %.3f (%lld problems)\n", s.name.c_str(), init_dir.c_str(),
                ev0.accuracy, (long long)ev0.problems);

  int64_t policy_version = 0;
  InferenceEngine<float> engine(policy);
  for (int64_t it = 0; it < s.iterations; ++it) {
    RlIterationMetrics m;
    m.iteration = it + 1;
    // ---- Rollout ----
    const auto t_roll = Clock::now();
    Rollout ro;
    ro.policy_version = policy_version;
    std::vector<GenerateRequest> reqs;
    for (int64_t j = 0; j < s.prompts; ++j) {
      int64_t index = it * s.prompts + j;
      if (s.prompt_pool > 0) index %= s.prompt_pool;
      ro.problems.push_back(arithmetic_chat_problem(s.task_seed, index, s.arithmetic));
      const std::vector<int32_t> prompt = arithmetic_prompt(tok, ro.problems.back(), s.format);
      for (int64_t k = 0; k < s.group_size; ++k) {
        GenerateRequest r;
        r.prompt = prompt;
        r.max_new_tokens = s.max_new_tokens;
        r.sampling.temperature = s.temperature;
        r.sampling.top_p = s.top_p;
        r.sampling.top_k = s.top_k;
        r.sampling.seed = s.seed * 1000003ULL + static_cast<uint64_t>(it);
        r.stop_tokens = {tok.eos_id()};
        reqs.push_back(std::move(r));
        ro.prompts.push_back(prompt);
      }
    }
    MARIANA_ASSIGN_OR_RETURN(std::vector<GenerateResult> gen, generate(engine, reqs, GenerateOptions{}));
    const int64_t N = static_cast<int64_t>(gen.size());
    std::vector<double> rewards(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) {
      std::vector<int32_t> resp = gen[i].tokens;
      ro.texts.push_back(tok.decode(resp));
      if (gen[i].finish == "stop") resp.push_back(tok.eos_id());
      ro.responses.push_back(std::move(resp));
      RewardSample rs;
      const ArithmeticProblem& p = ro.problems[static_cast<size_t>(i / s.group_size)];
      rs.prompt = arithmetic_chat_question(p);
      rs.response = ro.texts.back();
      rs.answer = std::to_string(p.answer);
      MARIANA_ASSIGN_OR_RETURN(RewardResult rr, scorer->score(rs));
      rewards[i] = rr.reward;
      m.reward += rr.reward / static_cast<double>(N);
      for (const auto& [k, v] : rr.parts) m.reward_parts[k] += v / static_cast<double>(N);
      if (!accuracy_part.empty() && rr.parts.count(accuracy_part))
        m.accuracy += (rr.parts.at(accuracy_part) >= 1.0) / static_cast<double>(N);
      m.response_len += static_cast<double>(ro.responses.back().size()) / static_cast<double>(N);
    }
    m.rollout_s = since(t_roll);
    const Advantages adv = group_advantages(rewards, s.group_size, s.advantages);
    m.zero_variance_groups = adv.zero_variance_groups;
    m.responses = N;

    // ---- Learner ----
    const auto t_learn = Clock::now();
    LearnerBatch lb;
    lb.policy_version = ro.policy_version;
    lb.prompts = std::move(ro.prompts);
    lb.responses = std::move(ro.responses);
    lb.advantages = adv.values;
    auto learned = grpo_learn(policy, reference, adam, lb, learner, policy_version);
    if (!learned.ok())
      return Status(learned.status().code(), s.source + ": iteration " + std::to_string(it + 1) + ": " + learned.status().message());
    const LearnerStats& ls = learned.value();
    m.kl = ls.kl;
    m.entropy = ls.entropy;
    m.loss = ls.loss;
    m.grad_norm = ls.grad_norm;
    m.clip_frac = ls.clip_frac;
    m.tokens = ls.tokens;
    ++policy_version;
    m.policy_version = policy_version;
    m.learn_s = since(t_learn);

    const bool last = it + 1 == s.iterations;
    if (last || (s.eval_every > 0 && (it + 1) % s.eval_every == 0)) {
      MARIANA_ASSIGN_OR_RETURN(ArithmeticEvalResult ev, eval_arithmetic(policy, tok, eo));
      m.eval_accuracy = ev.accuracy;
      if (last) sum.eval_after = ev.accuracy;
    }
    metrics << metrics_json(m).dump() << "\n";
    metrics.flush();
    if (!o.quiet) {
      std::string ps;
      for (const auto& [k, v] : m.reward_parts) ps += (ps.empty() ? "" : ", ") + k + " " + std::to_string(v).substr(0, 5);
      std::printf("iter %lld (policy v%lld): reward %.3f (%s) acc %.3f kl %.4f clip %.3f entropy %.3f len %.1f "
                  "zero-var %lld/%lld rollout %.1fs learn %.1fs%s\n",
                  (long long)m.iteration, (long long)m.policy_version, m.reward, ps.c_str(), m.accuracy, m.kl,
                  m.clip_frac, m.entropy, m.response_len, (long long)m.zero_variance_groups, (long long)s.prompts,
                  m.rollout_s, m.learn_s,
                  m.eval_accuracy >= 0 ? (" | held-out accuracy " + std::to_string(m.eval_accuracy).substr(0, 5)).c_str()
                                       : "");
      std::fflush(stdout);
    }
    if (o.on_iteration) o.on_iteration(m);
    if (last || (it + 1) % s.checkpoint_every == 0) {
      nlohmann::json state = {{"phase", "rl"}, {"iteration", it + 1}, {"policy_version", policy_version},
                              {"init_from", init_dir}, {"reference", ref_dir}, {"job", s.source}};
      MARIANA_RETURN_IF_ERROR(write_rl_checkpoint(o.run_dir, it + 1, policy, tok_json, state, s.keep_last,
                                                  &sum.final_checkpoint));
    }
    sum.last = m;
    sum.iterations = it + 1;
  }
  return sum;
}

}  // namespace mariana::rl
