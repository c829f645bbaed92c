// The GRPO job: spec, rollouts with the inference engine, rewards, advantages, the learner.
#include "rl/grpo.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/toml_util.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/inference/generate.h"
#include "rl/prompts.h"
#include "rl/rollout_services.h"
#include "rl/rewards/reward.h"
#include "sft/sft_data.h"
#include "train/job_spec.h"
#include "train/optimizer.h"
#include "train/run_checkpoints.h"
#include "train/trainer.h"

namespace mariana::rl {

namespace fs = std::filesystem;

namespace {

constexpr const char* kRlStateFile = "rl_state.json";

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
dataset = ""
eval_dataset = ""
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
model = ""
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
[rl]
dynamic_sampling = false
max_sample_rounds = 4
max_staleness = 0
[parallel]
dp = 1
timeout_s = 1800.0
[campaign]
generators = 0
scorers = 1
weight_sync = "broadcast"
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

// One iteration's rollout batch: P prompts × G responses, stamped with the policy version that
// sampled them, and what the iteration's metrics say of it.
struct Rollout {
  int64_t iteration = 0;
  int64_t policy_version = 0;
  int64_t groups = 0;                             // P: the prompts kept, G samples each
  std::vector<std::vector<int32_t>> prompts;      // [P·G] (each prompt repeated G times)
  std::vector<std::vector<int32_t>> responses;    // [P·G] including the EOS when generation stopped
  std::vector<double> rewards;                    // [P·G]
  // Over every sampled response (dropped groups too): means of the reward, its parts, the accuracy
  // and the length; the prompts drawn, groups dropped, rounds run, seconds taken.
  double reward = 0, accuracy = 0, response_len = 0, seconds = 0;
  std::map<std::string, double> reward_parts;
  int64_t prompts_sampled = 0, dropped_groups = 0, sample_rounds = 0;
};

// A checkpoint of an asynchronous run (rl.max_staleness > 0) carries the rollouts already made for
// the iterations after it, so that a resumed run learns from exactly the same batches.
constexpr const char* kPendingRolloutsFile = "pending_rollouts.json";

nlohmann::json rollout_json(const Rollout& r) {
  return {{"iteration", r.iteration},       {"policy_version", r.policy_version},
          {"groups", r.groups},             {"prompts", r.prompts},
          {"responses", r.responses},       {"rewards", r.rewards},
          {"reward", r.reward},             {"accuracy", r.accuracy},
          {"response_len", r.response_len}, {"seconds", r.seconds},
          {"reward_parts", r.reward_parts}, {"prompts_sampled", r.prompts_sampled},
          {"dropped_groups", r.dropped_groups}, {"sample_rounds", r.sample_rounds}};
}

Result<std::deque<Rollout>> pending_rollouts_read(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kPendingRolloutsFile).string();
  std::deque<Rollout> out;
  if (!fs::exists(path)) return out;
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  try {
    for (const auto& j : nlohmann::json::parse(text)) {
      Rollout r;
      r.iteration = j.at("iteration").get<int64_t>();
      r.policy_version = j.at("policy_version").get<int64_t>();
      r.groups = j.at("groups").get<int64_t>();
      r.prompts = j.at("prompts").get<std::vector<std::vector<int32_t>>>();
      r.responses = j.at("responses").get<std::vector<std::vector<int32_t>>>();
      r.rewards = j.at("rewards").get<std::vector<double>>();
      r.reward = j.at("reward").get<double>();
      r.accuracy = j.at("accuracy").get<double>();
      r.response_len = j.at("response_len").get<double>();
      r.seconds = j.at("seconds").get<double>();
      r.reward_parts = j.at("reward_parts").get<std::map<std::string, double>>();
      r.prompts_sampled = j.at("prompts_sampled").get<int64_t>();
      r.dropped_groups = j.at("dropped_groups").get<int64_t>();
      r.sample_rounds = j.at("sample_rounds").get<int64_t>();
      out.push_back(std::move(r));
    }
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(path + ": " + e.what());
  }
  return out;
}

// checkpoint_save into a temporary sibling, plus the optimizer's moments, the tokenizer,
// rl_state.json and the rollouts made ahead, then checkpoint_publish (manifest, one rename, keep the
// last keep_last). One process: the moments in optimizer.safetensors. A data-parallel learner
// (collective): rank 0 writes the model (every rank holds the same weights) and the files above,
// every rank its ZeRO-1 slices (optimizer-0000r-of-0000D.safetensors), and rank 0 publishes once
// all are written (write_checkpoint_of_ranks).
Status write_rl_checkpoint(const std::string& run_dir, int64_t it, const Model<float>& model,
                           const std::vector<MomentRun>& moments, ParallelGroups* parallel,
                           const std::string& tokenizer_json, const nlohmann::json& state,
                           const std::deque<Rollout>& pending, int64_t keep_last, std::string* written) {
  const bool dp = parallel != nullptr && parallel->world().size() > 1;
  auto lead_files = [&](const std::string& tmp) -> Status {
    MARIANA_RETURN_IF_ERROR(checkpoint_save(tmp, model, CheckpointOptions{}));
    MARIANA_RETURN_IF_ERROR(write_file_atomic((fs::path(tmp) / "tokenizer.json").string(), tokenizer_json));
    MARIANA_RETURN_IF_ERROR(write_file_atomic((fs::path(tmp) / kRlStateFile).string(), state.dump(2) + "\n"));
    if (!pending.empty()) {
      nlohmann::json rollouts = nlohmann::json::array();
      for (const Rollout& r : pending) rollouts.push_back(rollout_json(r));
      MARIANA_RETURN_IF_ERROR(write_file_atomic((fs::path(tmp) / kPendingRolloutsFile).string(), rollouts.dump() + "\n"));
    }
    return Status::Ok();
  };
  if (!dp) {
    const CheckpointStaging where = checkpoint_staging(run_dir, iter_dir_name(it));
    MARIANA_RETURN_IF_ERROR(lead_files(where.tmp));
    MARIANA_RETURN_IF_ERROR(write_moments((fs::path(where.tmp) / kOptimizerFile).string(), moments));
    MARIANA_RETURN_IF_ERROR(checkpoint_publish(run_dir, where.tmp, where.final_dir, it, keep_last));
    *written = where.final_dir;
    return Status::Ok();
  }
  const int64_t rank = parallel->world().rank(), D = parallel->world().size();
  return write_checkpoint_of_ranks(
      *parallel, run_dir, iter_dir_name(it), it, keep_last, lead_files,
      [&](const std::string& tmp) { return write_moments((fs::path(tmp) / moments_file_name(rank, D)).string(), moments); },
      [&](int64_t r) { return std::vector<std::string>{moments_file_name(r, D)}; }, nullptr, written);
}

// Rank 0's bytes on every rank of `world` (its length first, then the bytes as floats).
Status broadcast_bytes(comm::Communicator& world, std::string* bytes) {
  std::vector<float> head(2, 0.0f);
  uint64_t n = bytes->size();
  if (world.rank() == 0) std::memcpy(head.data(), &n, sizeof n);
  MARIANA_RETURN_IF_ERROR(world.broadcast(head, 0));
  std::memcpy(&n, head.data(), sizeof n);
  std::vector<float> buf((n + sizeof(float) - 1) / sizeof(float), 0.0f);
  if (world.rank() == 0) std::memcpy(buf.data(), bytes->data(), n);
  MARIANA_RETURN_IF_ERROR(world.broadcast(buf, 0));
  bytes->assign(reinterpret_cast<const char*>(buf.data()), n);
  return Status::Ok();
}

// Where a resumed run continues: rl_state.json of its checkpoint.
struct RlResumeState {
  int64_t iteration = 0, policy_version = 0, optimizer_steps = 0, prompt_position = 0;
  double eval_before = 0, eval_after = -1;  // eval_after: held-out accuracy at the checkpoint when measured
  std::string init_from, reference;
};

Result<RlResumeState> rl_state_read(const std::string& checkpoint_dir) {
  const std::string path = (fs::path(checkpoint_dir) / kRlStateFile).string();
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  RlResumeState r;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (!j.contains("optimizer_steps"))
      return DataLoss(path + ": no field 'optimizer_steps': written before RL checkpoints carried the optimizer's "
                             "state, so it cannot resume exactly; start the job again with --overwrite");
    r.iteration = j.at("iteration").get<int64_t>();
    r.policy_version = j.at("policy_version").get<int64_t>();
    r.optimizer_steps = j.at("optimizer_steps").get<int64_t>();
    r.prompt_position = j.at("prompt_position").get<int64_t>();
    r.eval_before = j.at("eval_before").get<double>();
    r.eval_after = j.value("eval_after", -1.0);
    r.init_from = j.at("init_from").get<std::string>();
    r.reference = j.at("reference").get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(path + ": " + e.what());
  }
  return r;
}

nlohmann::json metrics_json(const RlIterationMetrics& m) {
  nlohmann::json j = {{"iteration", m.iteration},
                      {"step", m.iteration},
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
                      {"prompts_sampled", m.prompts_sampled},
                      {"dropped_groups", m.dropped_groups},
                      {"sample_rounds", m.sample_rounds},
                      {"responses", m.responses},
                      {"tokens", m.tokens},
                      {"sample_version", m.sample_version},
                      {"staleness", m.staleness},
                      {"rollout_s", m.rollout_s},
                      {"learn_s", m.learn_s},
                      {"sync_s", m.sync_s},
                      {"iteration_s", m.iteration_s}};
  if (m.eval_accuracy >= 0) {
    j["eval_accuracy"] = m.eval_accuracy;
    j["eval_s"] = m.eval_s;
  }
  return j;
}

}  // namespace

Result<RlSpec> rl_spec_parse(const std::string& text, const std::string& source,
                             const std::vector<std::string>& overrides) {
  MARIANA_ASSIGN_OR_RETURN(toml::table merged, toml_with_schema(kRlSchema, text, source, overrides));
  TomlFields f(std::move(merged), source);
  auto sec = [&](const char* n) { return f.get_object(n).value(); };
  const TomlFields job = sec("job"), model = sec("model"), task = sec("task"), ro = sec("rollout"),
                   rw = sec("reward"), g = sec("grpo"), tr = sec("train"), ev = sec("eval"), rl = sec("rl"),
                   campaign = sec("campaign"), par = sec("parallel");
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
  s.dataset = task.get_string("dataset").value();
  s.eval_dataset = task.get_string("eval_dataset").value();
  s.dynamic_sampling = rl.get_bool("dynamic_sampling").value();
  s.max_sample_rounds = rl.get_int("max_sample_rounds").value();
  s.max_staleness = rl.get_int("max_staleness").value();
  s.campaign_generators = campaign.get_int("generators").value();
  s.campaign_scorers = campaign.get_int("scorers").value();
  s.campaign_weight_sync = campaign.get_string("weight_sync").value();
  s.dp = par.get_int("dp").value();
  s.parallel_timeout_s = par.get_double("timeout_s").value();
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
  s.reward_model = rw.get_string("model").value();
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
  if (!s.dataset.empty() && s.eval_dataset.empty())
    return bad("task.eval_dataset", "a job with task.dataset needs a held-out set of the same format to evaluate on");
  if (s.dataset.empty() && !s.eval_dataset.empty())
    return bad("task.eval_dataset", "only with task.dataset (the built-in task evaluates on its own held-out split)");
  if (s.max_sample_rounds < 1 || s.max_sample_rounds > 64) return bad("rl.max_sample_rounds", "expected 1 .. 64");
  if (s.max_staleness < 0 || s.max_staleness > 8) return bad("rl.max_staleness", "expected 0 (on-policy) .. 8");
  if (s.campaign_generators < 0 || s.campaign_generators > 256)
    return bad("campaign.generators", "expected 0 (one process) .. 256");
  if (s.campaign_scorers < 1 || s.campaign_scorers > 256) return bad("campaign.scorers", "expected 1 .. 256");
  if (s.campaign_weight_sync != "broadcast" && s.campaign_weight_sync != "calls")
    return bad("campaign.weight_sync", "expected \"broadcast\" or \"calls\", got \"" + s.campaign_weight_sync + "\"");
  if (s.dp < 1 || s.dp > 256) return bad("parallel.dp", "expected 1 .. 256 learner ranks");
  if (!(s.parallel_timeout_s > 0)) return bad("parallel.timeout_s", "expected > 0 seconds");
  if (s.prompts <= 0) return bad("rollout.prompts", "expected > 0");
  if (s.group_size < 2) return bad("rollout.group_size", "expected >= 2 (advantages compare a group's samples)");
  if (s.max_new_tokens <= 0) return bad("rollout.max_new_tokens", "expected > 0");
  if (!(s.temperature > 0)) return bad("rollout.temperature", "expected > 0 (GRPO needs sampled groups)");
  if (!(s.top_p > 0 && s.top_p <= 1)) return bad("rollout.top_p", "expected in (0, 1]");
  if (s.top_k < 0) return bad("rollout.top_k", "expected >= 0");
  if (s.scorers.empty()) return bad("reward.scorers", "expected at least one scorer");
  if (s.weights.size() != s.scorers.size()) return bad("reward.weights", "expected one weight per scorer");
  const bool model_scorer = std::find(s.scorers.begin(), s.scorers.end(), "model") != s.scorers.end();
  if (model_scorer && s.reward_model.empty())
    return bad("reward.model", "the \"model\" scorer needs a reward model (a phase \"rm\" checkpoint or run directory)");
  if (!model_scorer && !s.reward_model.empty())
    return bad("reward.model", "only with the \"model\" scorer in reward.scorers");
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

JobSpec rl_parallel_layout(const RlSpec& spec) {
  JobSpec js;
  js.dp = spec.dp;
  js.ep = 1;
  js.parallel_timeout_s = spec.parallel_timeout_s;
  return js;
}

Result<RlSpec> rl_spec_load(const std::string& path, const std::vector<std::string>& overrides) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  MARIANA_ASSIGN_OR_RETURN(RlSpec s, rl_spec_parse(text, path, overrides));
  MARIANA_RETURN_IF_ERROR(resolve_job_input(path, overrides, "task.dataset", "task.dataset", s.dataset));
  MARIANA_RETURN_IF_ERROR(resolve_job_input(path, overrides, "task.eval_dataset", "task.eval_dataset", s.eval_dataset));
  MARIANA_RETURN_IF_ERROR(resolve_job_input(path, overrides, "reward.model", "reward.model", s.reward_model));
  return s;
}

Result<PackedBatch> pack_learner_batch(const LearnerBatch& b, int32_t pad_id) {
  const int64_t N = static_cast<int64_t>(b.prompts.size());
  if (N == 0 || b.responses.size() != b.prompts.size() || b.advantages.size() != b.prompts.size())
    return InvalidArgument("learner: prompts, responses and advantages must have one entry per sample");
  int64_t S = 0;
  for (int64_t i = 0; i < N; ++i)
    S = std::max<int64_t>(S, static_cast<int64_t>(b.prompts[i].size() + b.responses[i].size()));
  PackedBatch pk;
  Batch& batch = pk.batch;
  batch.B = N;
  batch.S = S;
  batch.tokens.assign(static_cast<size_t>(N * S), pad_id);
  batch.targets.assign(static_cast<size_t>(N * S), -1);  // no cross-entropy: the surrogate alone
  batch.doc_start.assign(static_cast<size_t>(N * S), 0);
  pk.target.assign(static_cast<size_t>(N * S), -1);
  pk.advantage.assign(static_cast<size_t>(N * S), 0.0);
  for (int64_t i = 0; i < N; ++i) {
    const auto& pr = b.prompts[i];
    const auto& rs = b.responses[i];
    const int64_t P = static_cast<int64_t>(pr.size()), R = static_cast<int64_t>(rs.size());
    if (P == 0) return InvalidArgument("learner: sample " + std::to_string(i) + " has an empty prompt");
    std::copy(pr.begin(), pr.end(), batch.tokens.begin() + i * S);
    std::copy(rs.begin(), rs.end(), batch.tokens.begin() + i * S + P);
    for (int64_t k = 0; k < R; ++k) {  // position P−1+k predicts response token k
      pk.target[i * S + P - 1 + k] = rs[k];
      pk.advantage[i * S + P - 1 + k] = b.advantages[i];
    }
    pk.tokens += R;
  }
  return pk;
}

namespace {

LossWeights rl_loss_weights() {
  LossWeights lw;
  lw.mtp_weight = 0;  // no MTP, no balance loss during RL
  lw.balance_alpha = 0;
  return lw;
}

// logits / temperature into `scaled`: the sampling distribution's logits, as the rollout drew them
// (the policy, the reference and the ratio all use the same temperature).
const float* tempered(const float* logits, int64_t n, float inv_temp, std::vector<float>& scaled) {
  scaled.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) scaled[i] = logits[i] * inv_temp;
  return scaled.data();
}

}  // namespace

Result<std::vector<double>> tempered_target_logprobs(Model<float>& model, const PackedBatch& pk, double temperature) {
  const int64_t T = pk.batch.B * pk.batch.S, V = model.config().vocab_size;
  MARIANA_RETURN_IF_ERROR(model.forward(pk.batch, rl_loss_weights(), nullptr));
  std::vector<float> scaled;
  std::vector<double> lp(static_cast<size_t>(T));
  token_logprobs(tempered(model.logits(), T * V, static_cast<float>(1.0 / temperature), scaled), T, V,
                 pk.target.data(), lp.data());
  return lp;
}

Result<LearnerStats> grpo_learn(Model<float>& policy, Model<float>& reference, AdamW& adam, const LearnerBatch& b,
                                const LearnerParams& p, int64_t current_version) {
  const ReferenceLogprobs local = [&](const LearnerBatch&, const PackedBatch& pk) {
    return tempered_target_logprobs(reference, pk, p.temperature);
  };
  return grpo_learn(policy, local, adam, b, p, current_version);
}

Result<LearnerStats> grpo_learn(Model<float>& policy, const ReferenceLogprobs& reference, AdamW& adam,
                                const LearnerBatch& b, const LearnerParams& p, int64_t current_version) {
  if (b.policy_version > current_version || b.policy_version < current_version - p.max_staleness)
    return FailedPrecondition("rollout batch from policy version " + std::to_string(b.policy_version) +
                              " reached the learner at version " + std::to_string(current_version) +
                              (p.max_staleness > 0 ? " (at most " + std::to_string(p.max_staleness) + " behind)" : ""));
  MARIANA_ASSIGN_OR_RETURN(const PackedBatch pk, pack_learner_batch(b, p.pad_id));
  const int64_t V = policy.config().vocab_size;
  const int64_t T = pk.batch.B * pk.batch.S;
  LearnerStats out;
  out.tokens = pk.tokens;
  const float inv_temp = static_cast<float>(1.0 / p.temperature);
  MARIANA_ASSIGN_OR_RETURN(const std::vector<double> ref_lp, reference(b, pk));
  if (static_cast<int64_t>(ref_lp.size()) != T)
    return Internal("learner: the reference returned " + std::to_string(ref_lp.size()) + " log-probs for " +
                    std::to_string(T) + " positions");
  MARIANA_ASSIGN_OR_RETURN(const std::vector<double> old_lp, tempered_target_logprobs(policy, pk, p.temperature));
  std::vector<float> scaled, dlogits(static_cast<size_t>(T * V));
  const LossWeights lw = rl_loss_weights();
  for (int64_t u = 0; u < p.inner_updates; ++u) {
    if (u > 0) MARIANA_RETURN_IF_ERROR(policy.forward(pk.batch, lw, nullptr));
    const GrpoLossStats st =
        grpo_token_loss(tempered(policy.logits(), T * V, inv_temp, scaled), T, V, pk.target.data(), old_lp.data(),
                        ref_lp.data(), pk.advantage.data(), p.loss, dlogits.data());
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

Result<LearnerStats> grpo_learn_data_parallel(Model<float>& policy, ZeroOptimizer& zero, ParallelGroups& groups,
                                              const LearnerBatch& b, const std::vector<double>& ref_full,
                                              int64_t s_full, const LearnerParams& p, int64_t current_version) {
  if (b.policy_version > current_version || b.policy_version < current_version - p.max_staleness)
    return FailedPrecondition("rollout batch from policy version " + std::to_string(b.policy_version) +
                              " reached the learner at version " + std::to_string(current_version));
  comm::Communicator& world = groups.world();
  const int64_t N = static_cast<int64_t>(b.prompts.size()), D = world.size(), r = world.rank();
  if (N == 0 || b.responses.size() != b.prompts.size() || b.advantages.size() != b.prompts.size() ||
      static_cast<int64_t>(ref_full.size()) != N * s_full)
    return InvalidArgument("learner: prompts, responses, advantages and reference log-probs do not match");
  int64_t global_tokens = 0;
  for (const auto& rs : b.responses) global_tokens += static_cast<int64_t>(rs.size());
  // This rank's rows [lo, hi), packed on their own, the reference's log-probs moved to that packing.
  const int64_t lo = N * r / D, hi = N * (r + 1) / D;
  LearnerBatch mine;
  mine.policy_version = b.policy_version;
  for (int64_t i = lo; i < hi; ++i) {
    mine.prompts.push_back(b.prompts[i]);
    mine.responses.push_back(b.responses[i]);
    mine.advantages.push_back(b.advantages[i]);
  }
  std::optional<PackedBatch> pk;
  std::vector<double> ref_lp, old_lp;
  if (hi > lo) {
    MARIANA_ASSIGN_OR_RETURN(pk, pack_learner_batch(mine, p.pad_id));
    const int64_t S = pk->batch.S;
    ref_lp.assign(static_cast<size_t>((hi - lo) * S), 0.0);
    for (int64_t i = lo; i < hi; ++i)
      for (int64_t j = 0; j < S; ++j) ref_lp[(i - lo) * S + j] = ref_full[i * s_full + j];
    MARIANA_ASSIGN_OR_RETURN(old_lp, tempered_target_logprobs(policy, *pk, p.temperature));
  }
  const int64_t V = policy.config().vocab_size;
  const int64_t T = pk ? pk->batch.B * pk->batch.S : 0;
  const float inv_temp = static_cast<float>(1.0 / p.temperature);
  // d(whole-batch token mean)/d(this rank's token mean) = its tokens / the batch's.
  const double share = pk ? static_cast<double>(pk->tokens) / static_cast<double>(global_tokens) : 0.0;
  std::vector<float> scaled, dlogits(static_cast<size_t>(T * V));
  LearnerStats out;
  out.tokens = global_tokens;
  for (int64_t u = 0; u < p.inner_updates; ++u) {
    GrpoLossStats st;
    policy.zero_grads();
    if (pk) {
      if (u > 0) MARIANA_RETURN_IF_ERROR(policy.forward(pk->batch, rl_loss_weights(), nullptr));
      st = grpo_token_loss(tempered(policy.logits(), T * V, inv_temp, scaled), T, V, pk->target.data(), old_lp.data(),
                           ref_lp.data(), pk->advantage.data(), p.loss, dlogits.data());
      const float scale = static_cast<float>(share) * inv_temp;  // and d(logits / T)/d(logits)
      for (float& d : dlogits) d *= scale;
      policy.backward_custom(dlogits.data(), nullptr);
    }
    // The whole batch's token means, from each rank's weighted by its share.
    std::vector<double> sums = {st.loss * share, st.kl * share, st.entropy * share, st.clip_frac * share};
    MARIANA_RETURN_IF_ERROR(allreduce_doubles(world, &sums));
    MARIANA_ASSIGN_OR_RETURN(const double gn, zero.reduce_gradients(policy.grads()));
    MARIANA_RETURN_IF_ERROR(check_finite_step("learner update " + std::to_string(u + 1), sums[0], gn));
    MARIANA_RETURN_IF_ERROR(zero.update(policy.params(), gn, p.grad_clip, p.lr));
    if (u == 0) {
      out.loss = sums[0];
      out.kl = sums[1];
      out.entropy = sums[2];
      out.grad_norm = gn;
    }
    out.clip_frac += sums[3] / static_cast<double>(p.inner_updates);
  }
  return out;
}

Result<RlSummary> grpo_run(const RlOptions& o) {
  const RlSpec& s = o.spec;
  cpu::set_num_threads(s.threads);
  // A data-parallel learner's rank: rank 0 (the lead) makes the rollouts, evaluates, logs and
  // publishes; every rank learns its rows of each batch.
  const bool dp = o.parallel != nullptr && o.parallel->world().size() > 1;
  const bool lead = !dp || o.parallel->world().rank() == 0;
  if ((o.parallel != nullptr ? o.parallel->world().size() : 1) != s.dp)
    return InvalidArgument(s.source + ": field 'parallel.dp': " + std::to_string(s.dp) + " learner rank(s), but " +
                           std::to_string(o.parallel != nullptr ? o.parallel->world().size() : 1) + " joined");
  // --resume: the newest valid checkpoint of the run, if any (none: a fresh start).
  std::string resume_dir;
  RlResumeState at;
  if (o.resume && !o.resume_from.empty() && checkpoint_manifest_verify(o.resume_from).ok()) {
    resume_dir = o.resume_from;
    MARIANA_ASSIGN_OR_RETURN(at, rl_state_read(resume_dir));
  } else if (o.resume) {
    if (!o.resume_from.empty())
      std::fprintf(stderr, "warning: %s does not verify; resuming from the newest valid checkpoint\n",
                   o.resume_from.c_str());
    auto last = latest_valid_checkpoint(o.run_dir);
    if (last.ok()) {
      resume_dir = last.value();
      MARIANA_ASSIGN_OR_RETURN(at, rl_state_read(resume_dir));
    } else if (last.status().code() != StatusCode::kNotFound) {
      return last.status();
    }
  }
  std::string init_dir = at.init_from, ref_dir = at.reference;
  if (resume_dir.empty()) {
    MARIANA_ASSIGN_OR_RETURN(init_dir, resolve_checkpoint(s.init_from));
    MARIANA_ASSIGN_OR_RETURN(ref_dir, resolve_checkpoint(s.reference.empty() ? s.init_from : s.reference));
  }
  const std::string policy_dir = resume_dir.empty() ? init_dir : resume_dir;
  MARIANA_ASSIGN_OR_RETURN(LoadedCheckpoint<float> pol_ck, checkpoint_load<float>(policy_dir));
  Model<float>& policy = pol_ck.model;
  // The learner's batch: prompts × group_size samples of at least max_new_tokens + 1 tokens, through
  // the policy and the reference; parameters, gradients of both, AdamW's two moments.
  MARIANA_RETURN_IF_ERROR(check_step_memory(
      policy, 6, 2, s.prompts * s.group_size, s.max_new_tokens + 1,
      s.source + ": fields 'rollout.prompts' x 'rollout.group_size' x 'rollout.max_new_tokens': " +
          std::to_string(s.prompts) + " x " + std::to_string(s.group_size) + " samples of " +
          std::to_string(s.max_new_tokens + 1) + "+ tokens"));
  const std::string tok_path = (fs::path(policy_dir) / "tokenizer.json").string();
  MARIANA_ASSIGN_OR_RETURN(std::string tok_json, read_file(tok_path));
  MARIANA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load(tok_path));
  std::string reward_model;
  if (!s.reward_model.empty()) {
    MARIANA_ASSIGN_OR_RETURN(reward_model, resolve_checkpoint(s.reward_model));
  }
  MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<RewardScorer> scorer, composite_scorer(s.scorers, s.weights, reward_model));
  // Accuracy: the rule-based math scorer's verdict, else math_verify's, else the code scorer's.
  std::string accuracy_part;
  for (const char* n : {"code", "math_verify", "math"})
    if (std::find(s.scorers.begin(), s.scorers.end(), n) != s.scorers.end()) accuracy_part = n;
  // The prompts, and the held-out problems of a dataset (validated against the scorers up front).
  PromptSet prompts = PromptSet::arithmetic(s.task_seed, s.arithmetic, s.prompt_pool);
  std::optional<PromptSet> held_out;
  std::unique_ptr<RewardScorer> eval_scorer;
  if (!s.dataset.empty()) {
    MARIANA_ASSIGN_OR_RETURN(prompts, PromptSet::jsonl(s.dataset, s.task_seed));
    MARIANA_ASSIGN_OR_RETURN(held_out, PromptSet::jsonl(s.eval_dataset, s.task_seed));
    if (accuracy_part.empty())
      return InvalidArgument(s.source + ": field 'reward.scorers': a dataset's held-out accuracy needs a math, "
                                        "math_verify or code scorer");
    MARIANA_ASSIGN_OR_RETURN(eval_scorer, make_scorer(accuracy_part, nlohmann::json::object()));
    for (const auto* set : {&prompts, &*held_out}) {
      const std::string file = set == &prompts ? s.dataset : s.eval_dataset;
      for (int64_t i = 0; i < set->size(); ++i) {
        const Status st = scorer->validate(rl_reward_sample(set->row(i), ""));
        if (!st.ok()) return InvalidArgument(file + ": problem " + std::to_string(i + 1) + ": " + st.message());
      }
    }
  }

  fs::create_directories(o.run_dir);
  const fs::path metrics_path = fs::path(o.run_dir) / "metrics.jsonl";
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> metrics(nullptr, &std::fclose);
  if (lead) {
    MARIANA_RETURN_IF_ERROR(write_file_atomic((fs::path(o.run_dir) / "tokenizer.json").string(), tok_json));
    if (!resume_dir.empty())
      MARIANA_RETURN_IF_ERROR(metrics_truncate(metrics_path.string(), at.iteration, "iteration"));
    metrics.reset(std::fopen(metrics_path.c_str(), resume_dir.empty() ? "w" : "a"));
    if (!metrics) return Unavailable(metrics_path.string() + ": cannot open for writing");
  }

  LearnerParams learner;
  learner.loss = s.loss;
  learner.temperature = s.temperature;
  learner.inner_updates = s.inner_updates;
  learner.lr = s.lr;
  learner.grad_clip = s.grad_clip;
  learner.pad_id = tok.pad_id();
  learner.max_staleness = s.max_staleness;
  AdamWConfig acfg;
  acfg.beta1 = s.beta1;
  acfg.beta2 = s.beta2;
  acfg.eps = s.adam_eps;
  acfg.weight_decay = s.weight_decay;
  // One process: AdamW over the whole arena. Data-parallel: ZeRO-1, each rank AdamW on its slice.
  std::optional<AdamW> adam;
  std::optional<ZeroOptimizer> zero;
  if (!dp) {
    adam.emplace(policy.table(), acfg);
    if (!resume_dir.empty()) {
      MARIANA_RETURN_IF_ERROR(training_moments_load(resume_dir, policy.table(), adam->exp_avg().data(),
                                                    adam->exp_avg_sq().data()));
      adam->set_steps(at.optimizer_steps);
    }
  } else {
    zero.emplace(policy.table(), policy.table(), policy.config().n_routed_experts, acfg, *o.parallel);
    if (!resume_dir.empty()) {  // the moments of any layout, as this rank's arena, of which it keeps its slices
      std::vector<float> m1(static_cast<size_t>(policy.table().arena_size())), m2(m1.size());
      MARIANA_RETURN_IF_ERROR(training_moments_load(resume_dir, policy.table(), m1.data(), m2.data()));
      zero->load_moments(m1.data(), m2.data(), at.optimizer_steps);
    }
  }
  auto optimizer_steps = [&] { return adam ? adam->steps() : zero->steps(); };
  auto moment_runs = [&] {
    return adam ? whole_moment_runs(policy.table(), adam->exp_avg().data(), adam->exp_avg_sq().data())
                : zero->moment_runs();
  };
  ArithmeticEvalOptions eo;
  eo.problems = s.eval_problems;
  eo.arithmetic = s.arithmetic;
  eo.format = s.format;
  eo.max_new_tokens = s.eval_max_new_tokens;
  auto held_out_accuracy = [&]() -> Result<double> {
    if (!held_out) {
      MARIANA_ASSIGN_OR_RETURN(ArithmeticEvalResult ev, eval_arithmetic(policy, tok, eo));
      return ev.accuracy;
    }
    PromptEvalOptions pe;
    pe.problems = s.eval_problems;
    pe.format = s.format;
    pe.max_new_tokens = s.eval_max_new_tokens;
    MARIANA_ASSIGN_OR_RETURN(PromptEvalResult ev, eval_prompt_set(policy, tok, *held_out, *eval_scorer, pe));
    return ev.accuracy;
  };
  RlSummary sum;
  sum.resumed_from = at.iteration;
  if (resume_dir.empty()) {
    if (lead) {
      MARIANA_ASSIGN_OR_RETURN(sum.eval_before, held_out_accuracy());
    }
    if (!o.quiet)
      std::printf("rl %s: start from %s, held-out accuracy %.3f\n", s.name.c_str(), init_dir.c_str(), sum.eval_before);
  } else {
    sum.eval_before = at.eval_before;
    if (at.iteration >= s.iterations) sum.eval_after = at.eval_after;  // a finished run: nothing left to run
    if (!o.quiet)
      std::printf("rl %s: resumed from %s (iteration %lld)\n", s.name.c_str(), resume_dir.c_str(),
                  (long long)at.iteration);
  }

  RolloutSetup setup;
  setup.policy_dir = policy_dir;
  setup.reference_dir = ref_dir;
  setup.scorers = s.scorers;
  setup.weights = s.weights;
  setup.reward_model = reward_model;
  setup.temperature = s.temperature;
  setup.pad_id = tok.pad_id();
  setup.threads = s.threads;
  setup.snapshot = s.max_staleness > 0;
  std::unique_ptr<RolloutServices> services;  // the lead's
  if (lead && o.services) {
    MARIANA_ASSIGN_OR_RETURN(services, o.services(setup));
  } else if (lead) {
    MARIANA_ASSIGN_OR_RETURN(services, local_rollout_services(policy, setup));
  }
  int64_t policy_version = at.policy_version;
  int64_t prompt_position = at.prompt_position;  // prompts of the stream drawn so far (by the rollouts made)
  const int64_t k_stale = s.max_staleness;
  std::deque<Rollout> pending;  // rollouts made for the iterations ahead (asynchronous runs)
  if (!resume_dir.empty()) {
    MARIANA_ASSIGN_OR_RETURN(pending, pending_rollouts_read(resume_dir));
    if (at.iteration < s.iterations && static_cast<int64_t>(pending.size()) != std::min(k_stale, s.iterations - at.iteration))
      return FailedPrecondition(resume_dir + ": holds " + std::to_string(pending.size()) +
                                " rollout(s) made ahead, a run with rl.max_staleness = " + std::to_string(k_stale) +
                                " needs " + std::to_string(std::min(k_stale, s.iterations - at.iteration)) +
                                ": resume with the max_staleness the run was started with");
  }
  int64_t next_rollout = at.iteration + 1 + static_cast<int64_t>(pending.size());  // the iteration of the next rollout made
  if (lead) MARIANA_RETURN_IF_ERROR(services->publish(policy, policy_version));
  if (lead && o.on_start) o.on_start(at.iteration, resume_dir, s.iterations);
  const ReferenceLogprobs reference = [&](const LearnerBatch& b, const PackedBatch& pk) {
    return services->reference_logprobs(b, pk);
  };
  const int64_t G = s.group_size;
  // The rollout of iteration `iter` (1-based) from the published policy `version`: rounds of P
  // prompts × G samples; with dynamic sampling, groups whose rewards are all equal are dropped and
  // another round is drawn until P groups carry signal. Advances prompt_position; touches nothing
  // the learner uses, so it may run beside it.
  auto make_rollout = [&](int64_t iter, int64_t version) -> Result<Rollout> {
    const auto t_roll = Clock::now();
    Rollout ro;
    ro.iteration = iter;
    ro.policy_version = version;
    std::vector<RewardResult> results;  // every response's over all rounds, for the means
    std::vector<double> lens;
    for (int64_t round = 0; round < (s.dynamic_sampling ? s.max_sample_rounds : 1); ++round) {
      ++ro.sample_rounds;
      std::vector<GenerateRequest> reqs;
      std::vector<RlProblem> drawn;
      std::vector<std::vector<int32_t>> drawn_prompts;
      for (int64_t j = 0; j < s.prompts; ++j) {
        drawn.push_back(prompts.at(prompt_position + j));
        drawn_prompts.push_back(rl_prompt_tokens(tok, drawn.back(), s.format));
        for (int64_t k = 0; k < G; ++k) {
          GenerateRequest r;
          r.prompt = drawn_prompts.back();
          r.max_new_tokens = s.max_new_tokens;
          r.sampling.temperature = s.temperature;
          r.sampling.top_p = s.top_p;
          r.sampling.top_k = s.top_k;
          // Keyed by (iteration, prompt slot, sample): the same draws whatever else is generated.
          r.sampling.seed = s.seed * 1000003ULL + static_cast<uint64_t>(iter - 1);
          r.sampling.stream = (round * s.prompts + j) * G + k;
          r.stop_tokens = {tok.eos_id()};
          reqs.push_back(std::move(r));
        }
      }
      prompt_position += s.prompts;
      ro.prompts_sampled += s.prompts;
      MARIANA_ASSIGN_OR_RETURN(std::vector<GenerateResult> gen, services->generate(reqs, version));
      std::vector<double> rewards;  // [P·G] of this round
      std::vector<std::vector<int32_t>> responses;
      std::vector<RewardSample> samples;
      for (size_t i = 0; i < gen.size(); ++i) {
        std::vector<int32_t> resp = gen[i].tokens;
        samples.push_back(rl_reward_sample(drawn[i / G], tok.decode(resp)));
        if (gen[i].finish == "stop") resp.push_back(tok.eos_id());
        responses.push_back(std::move(resp));
      }
      MARIANA_ASSIGN_OR_RETURN(std::vector<RewardResult> scored, services->score(samples));
      if (scored.size() != samples.size())
        return Internal("rollout: " + std::to_string(scored.size()) + " rewards for " + std::to_string(samples.size()) +
                        " responses");
      for (size_t i = 0; i < scored.size(); ++i) {
        rewards.push_back(scored[i].reward);
        lens.push_back(static_cast<double>(responses[i].size()));
        results.push_back(std::move(scored[i]));
      }
      const int64_t room = s.prompts - ro.groups;
      for (int64_t j : select_groups(rewards, G, s.dynamic_sampling, room, &ro.dropped_groups)) {
        ++ro.groups;
        for (int64_t k = 0; k < G; ++k) {
          ro.prompts.push_back(drawn_prompts[j]);
          ro.responses.push_back(std::move(responses[j * G + k]));
          ro.rewards.push_back(rewards[j * G + k]);
        }
      }
      if (ro.groups == s.prompts) break;
    }
    const double n_sampled = static_cast<double>(results.size());
    for (size_t i = 0; i < results.size(); ++i) {
      const RewardResult& rr = results[i];
      ro.reward += rr.reward / n_sampled;
      for (const auto& [name, v] : rr.parts) ro.reward_parts[name] += v / n_sampled;
      if (!accuracy_part.empty() && rr.parts.count(accuracy_part))
        ro.accuracy += (rr.parts.at(accuracy_part) >= 1.0) / n_sampled;
      ro.response_len += lens[i] / n_sampled;
    }
    ro.seconds = since(t_roll);
    return ro;
  };
  for (int64_t it = at.iteration; it < s.iterations; ++it) {
    const auto t_iter = Clock::now();
    RlIterationMetrics m;
    m.iteration = it + 1;
    // ---- Rollouts. On-policy (max_staleness 0): this iteration's, from the current policy. With
    // max_staleness k: the k rollouts ahead are made first (from the current policy, at the start),
    // then the one k iterations ahead is made from the current policy while the learner learns this
    // iteration's (made k versions ago). The schedule depends on iterations, never on timing, so an
    // asynchronous run is as reproducible as an on-policy one.
    while (lead && static_cast<int64_t>(pending.size()) < std::max<int64_t>(k_stale, 1) &&
           next_rollout <= s.iterations) {
      MARIANA_ASSIGN_OR_RETURN(Rollout r, make_rollout(next_rollout, policy_version));
      pending.push_back(std::move(r));
      ++next_rollout;
    }
    std::optional<Result<Rollout>> ahead;
    std::thread producer;
    if (lead && k_stale > 0 && next_rollout <= s.iterations) {
      producer = std::thread([&, iter = next_rollout, version = policy_version] {
        cpu::set_num_threads(s.threads);  // per thread (OpenMP's and OpenBLAS's counts)
        ahead.emplace(make_rollout(iter, version));
      });
      ++next_rollout;
    }
    struct JoinAtExit {
      std::thread& t;
      ~JoinAtExit() {
        if (t.joinable()) t.join();
      }
    } join_producer{producer};
    if (lead && (pending.empty() || pending.front().iteration != it + 1))
      return Internal("rl: no rollout for iteration " + std::to_string(it + 1));
    Rollout ro;  // the lead's (the other ranks get its batch below)
    if (lead) {
      ro = std::move(pending.front());
      pending.pop_front();
    }
    m.reward = ro.reward;
    m.reward_parts = ro.reward_parts;
    m.accuracy = ro.accuracy;
    m.response_len = ro.response_len;
    m.prompts_sampled = ro.prompts_sampled;
    m.dropped_groups = ro.dropped_groups;
    m.sample_rounds = ro.sample_rounds;
    m.rollout_s = ro.seconds;
    m.sample_version = ro.policy_version;
    m.staleness = policy_version - ro.policy_version;
    int64_t N = static_cast<int64_t>(ro.rewards.size());
    m.responses = N;

    // ---- Learner ----
    const auto t_learn = Clock::now();
    LearnerBatch lb;  // the lead's batch (every rank's once shared, data-parallel)
    if (lead && N > 0) {
      const Advantages adv = group_advantages(ro.rewards, G, s.advantages);
      m.zero_variance_groups = adv.zero_variance_groups;
      lb.policy_version = ro.policy_version;
      lb.prompts = std::move(ro.prompts);
      lb.responses = std::move(ro.responses);
      lb.advantages = adv.values;
    }
    std::optional<Result<LearnerStats>> learned;
    if (dp) {  // the lead's batch and the reference's log-probs of it to every rank; each learns its rows
      std::string payload;
      if (lead) {
        nlohmann::json j = {{"n", N}};
        if (N > 0) {
          MARIANA_ASSIGN_OR_RETURN(const PackedBatch pk, pack_learner_batch(lb, learner.pad_id));
          MARIANA_ASSIGN_OR_RETURN(const std::vector<double> ref_full, services->reference_logprobs(lb, pk));
          j = {{"n", N},
               {"version", lb.policy_version},
               {"prompts", lb.prompts},
               {"responses", lb.responses},
               {"advantages", lb.advantages},
               {"ref", ref_full},
               {"s", pk.batch.S}};
        }
        const std::vector<uint8_t> cbor = nlohmann::json::to_cbor(j);  // doubles exactly
        payload.assign(cbor.begin(), cbor.end());
      }
      MARIANA_RETURN_IF_ERROR(broadcast_bytes(o.parallel->world(), &payload));
      std::vector<double> ref_full;
      int64_t s_full = 0;
      try {
        const nlohmann::json j = nlohmann::json::from_cbor(payload);
        N = j.at("n").get<int64_t>();
        if (N > 0) {
          lb.policy_version = j.at("version").get<int64_t>();
          lb.prompts = j.at("prompts").get<std::vector<std::vector<int32_t>>>();
          lb.responses = j.at("responses").get<std::vector<std::vector<int32_t>>>();
          lb.advantages = j.at("advantages").get<std::vector<double>>();
          ref_full = j.at("ref").get<std::vector<double>>();
          s_full = j.at("s").get<int64_t>();
        }
      } catch (const nlohmann::json::exception& e) {
        return DataLoss(s.source + ": iteration " + std::to_string(it + 1) + ": rank 0's batch: " + e.what());
      }
      if (N > 0)
        learned = grpo_learn_data_parallel(policy, *zero, *o.parallel, lb, ref_full, s_full, learner, policy_version);
    } else if (N > 0) {
      learned = grpo_learn(policy, reference, *adam, lb, learner, policy_version);
    }
    if (learned) {
      if (!learned->ok())
        return Status(learned->status().code(),
                      s.source + ": iteration " + std::to_string(it + 1) + ": " + learned->status().message());
      const LearnerStats& ls = learned->value();
      m.kl = ls.kl;
      m.entropy = ls.entropy;
      m.loss = ls.loss;
      m.grad_norm = ls.grad_norm;
      m.clip_frac = ls.clip_frac;
      m.tokens = ls.tokens;
      ++policy_version;
    }
    m.learn_s = since(t_learn);
    if (producer.joinable()) {  // the rollout ahead, made beside the learner
      producer.join();
      if (!ahead->ok()) return ahead->status();
      pending.push_back(std::move(*ahead).value());
    }
    m.policy_version = policy_version;
    if (lead && N > 0) {
      const auto t_sync = Clock::now();
      MARIANA_RETURN_IF_ERROR(services->publish(policy, policy_version));
      m.sync_s = since(t_sync);
    }

    m.iteration_s = since(t_iter);
    const bool last = it + 1 == s.iterations;
    if (lead && (last || (s.eval_every > 0 && (it + 1) % s.eval_every == 0))) {
      const auto t_eval = Clock::now();
      MARIANA_ASSIGN_OR_RETURN(m.eval_accuracy, held_out_accuracy());
      m.eval_s = since(t_eval);
      if (last) sum.eval_after = m.eval_accuracy;
    }
    const std::string line = metrics_json(m).dump();
    if (lead) {
      std::fputs((line + "\n").c_str(), metrics.get());
      std::fflush(metrics.get());
    }
    if (lead && o.on_metrics_line) o.on_metrics_line(line);
    if (lead && !o.quiet) {
      std::string ps;
      for (const auto& [k, v] : m.reward_parts) ps += (ps.empty() ? "" : ", ") + k + " " + std::to_string(v).substr(0, 5);
      std::printf("iter %lld (policy v%lld): reward %.3f (%s) acc %.3f kl %.4f clip %.3f entropy %.3f len %.1f "
                  "zero-var %lld/%lld%s rollout %.1fs learn %.1fs%s\n",
                  (long long)m.iteration, (long long)m.policy_version, m.reward, ps.c_str(), m.accuracy, m.kl,
                  m.clip_frac, m.entropy, m.response_len,
                  (long long)(s.dynamic_sampling ? m.dropped_groups : m.zero_variance_groups),
                  (long long)m.prompts_sampled,
                  s.dynamic_sampling ? (" dropped, " + std::to_string(m.responses / G) + " kept").c_str() : "",
                  m.rollout_s, m.learn_s,
                  m.eval_accuracy >= 0 ? (" | held-out accuracy " + std::to_string(m.eval_accuracy).substr(0, 5)).c_str()
                                       : "");
      std::fflush(stdout);
    }
    if (lead && o.on_iteration) o.on_iteration(m);
    sum.last = m;
    sum.iterations = it + 1;
    sum.interrupted = lead && !last && o.interrupt != nullptr && o.interrupt->load();
    if (dp) {  // the lead's interrupt stops every rank at the same iteration
      std::vector<float> flag = {sum.interrupted ? 1.0f : 0.0f};
      MARIANA_RETURN_IF_ERROR(o.parallel->world().broadcast(flag, 0));
      sum.interrupted = flag[0] > 0.0f;
    }
    if (last || (it + 1) % s.checkpoint_every == 0 || sum.interrupted) {
      nlohmann::json state = {{"phase", "rl"},
                              {"iteration", it + 1},
                              {"policy_version", policy_version},
                              {"optimizer_steps", optimizer_steps()},
                              {"prompt_position", prompt_position},
                              {"max_staleness", s.max_staleness},
                              {"eval_before", sum.eval_before},
                              {"eval_after", m.eval_accuracy},
                              {"init_from", init_dir},
                              {"reference", ref_dir},
                              {"job", s.source}};
      // Every iteration up to the checkpoint is on disk before it (a resumed run re-reports them).
      if (lead && ::fsync(::fileno(metrics.get())) != 0) return Unavailable(metrics_path.string() + ": fsync failed");
      MARIANA_RETURN_IF_ERROR(write_rl_checkpoint(o.run_dir, it + 1, policy, moment_runs(), o.parallel, tok_json, state,
                                                  pending, s.keep_last, &sum.final_checkpoint));
      if (lead && o.on_checkpoint) o.on_checkpoint(it + 1, sum.final_checkpoint);
    }
    if (sum.interrupted) break;
  }
  if (sum.final_checkpoint.empty() && !resume_dir.empty()) sum.final_checkpoint = resume_dir;  // nothing left to run
  return sum;
}

}  // namespace mariana::rl
