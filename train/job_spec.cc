// The job schema with its defaults, merging, overrides and schedules.
#include "train/job_spec.h"

#include <cmath>
#include <filesystem>
#include <numbers>
#include <sstream>

#include "core/file_util.h"
#include "core/toml_util.h"

namespace mariana {

namespace fs = std::filesystem;

namespace {

// Every field a job may set, with its default. Keep in sync with JobSpec and docs.
constexpr const char* kJobSchema = R"(
[job]
name = "job"
phase = "pretrain"
max_restarts = 10
restart_window_s = 3600
[model]
config = ""
init_from = ""
init_seed = 0
init_mtp = false
[extend]
factor = 4.0
original_max_position_embeddings = 0
beta_fast = 32.0
beta_slow = 1.0
mscale = 1.0
mscale_all_dim = 1.0
[tokenizer]
path = ""
[data]
builtin = "mix"
documents = 2000
seed = 1
inputs = []
fim_rate = 0.1
skip_bad = false
passkey_filler_chars = 0
arithmetic_min_digits = 1
arithmetic_max_digits = 3
arithmetic_ops = "+-*"
arithmetic_teacher_slip = 0.0
chat = ""
preferences = ""
[train]
steps = 100
epochs = 0
seq_len = 128
seed = 0
threads = 0
log_every = 1
checkpoint_every = 50
keep_last = 3
grad_clip = 1.0
[batch]
rows = 8
rows_start = 0
ramp_steps = 0
[optimizer]
lr = 3e-3
final_lr = 3e-4
tail_lr = -1.0
warmup_steps = 10
constant_steps = 0
decay_steps = -1
beta1 = 0.9
beta2 = 0.95
eps = 1e-8
weight_decay = 0.1
[balance]
gamma = 0.001
gamma_zero_after = -1
alpha = 0.0001
[mtp]
weight = 0.3
weight_after = 0.1
switch_step = -1
[eval]
every = 0
batches = 4
held_out = -1.0
[parallel]
dp = 1
ep = 1
nodes = 1
max_nodes_per_token = 0
placement = "pack"
timeout_s = 120.0
)";

bool compatible(const toml::node& schema, const toml::node& value) {
  if (schema.type() == value.type()) return true;
  return schema.is_floating_point() && value.is_integer();  // 1 where 1.0 is expected
}

std::string where(const toml::node& n, const std::string& file) {
  const auto& src = n.source();
  if (src.begin.line == 0) return file;
  return file + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column);
}

// False when v (or an element of the array v) is a NaN or infinite float: no field takes one.
bool finite_numbers(const toml::node& v) {
  if (const auto* d = v.as_floating_point()) return std::isfinite(d->get());
  if (const auto* a = v.as_array()) {
    for (const toml::node& e : *a)
      if (!finite_numbers(e)) return false;
  }
  return true;
}

std::string toml_text(const toml::node& v) {
  std::ostringstream out;
  v.visit([&](const auto& n) { out << n; });
  return out.str();
}

// Copies `in` over `out`, checking every key exists in `schema` and every number is finite.
Status merge(const toml::table& schema, const toml::table& in, toml::table& out, const std::string& file,
             const std::string& prefix) {
  for (const auto& [k, v] : in) {
    const std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    const toml::node* s = schema.get(k.str());
    if (s == nullptr) return InvalidArgument(where(v, file) + ": unknown field '" + key + "'");
    if (s->is_table()) {
      if (!v.is_table()) return InvalidArgument(where(v, file) + ": field '" + key + "': expected a table");
      MARIANA_RETURN_IF_ERROR(merge(*s->as_table(), *v.as_table(), *out.get(k.str())->as_table(), file, key));
      continue;
    }
    if (!compatible(*s, v)) {
      return InvalidArgument(where(v, file) + ": field '" + key + "': expected " +
                             std::string(s->is_string() ? "a string" : s->is_integer() ? "an integer" :
                                         s->is_floating_point() ? "a number" : s->is_boolean() ? "a boolean" : "an array"));
    }
    if (!finite_numbers(v)) {
      return InvalidArgument(where(v, file) + ": field '" + key + "': expected a finite number, got " +
                             toml_text(v));
    }
    if (s->is_floating_point() && v.is_integer()) {
      out.insert_or_assign(k.str(), static_cast<double>(v.as_integer()->get()));
    } else {
      out.insert_or_assign(k.str(), v);
    }
  }
  return Status::Ok();
}

Status apply_override(const toml::table& schema, toml::table& out, const std::string& kv) {
  // Build {a = {b = value}} and merge it, so the same checks apply.
  toml::table root;
  MARIANA_RETURN_IF_ERROR(toml_set_override(root, kv));
  Status st = merge(schema, root, out, "--set " + kv, "");
  if (!st.ok()) return InvalidArgument(st.message());
  return Status::Ok();
}

}  // namespace

Result<toml::table> toml_with_schema(const char* schema_text, const std::string& text, const std::string& source,
                                     const std::vector<std::string>& overrides) {
  const toml::table schema = toml::parse(schema_text);
  MARIANA_ASSIGN_OR_RETURN(toml::table job, toml_parse(text, source));
  toml::table merged = schema;
  MARIANA_RETURN_IF_ERROR(merge(schema, job, merged, source, ""));
  for (const std::string& kv : overrides) MARIANA_RETURN_IF_ERROR(apply_override(schema, merged, kv));
  return merged;
}

Result<JobSpec> job_spec_parse(const std::string& text, const std::string& source,
                               const std::vector<std::string>& overrides) {
  MARIANA_ASSIGN_OR_RETURN(toml::table merged, toml_with_schema(kJobSchema, text, source, overrides));

  TomlFields f(std::move(merged), source);
  JobSpec s;
  s.source = source;
  auto sec = [&](const char* name) { return f.get_object(name).value(); };
  const TomlFields job_f = sec("job"), model = sec("model"), ext = sec("extend"), tok = sec("tokenizer"),
                   data = sec("data"), train = sec("train"), batch = sec("batch"), opt = sec("optimizer"),
                   bal = sec("balance"), mtp = sec("mtp"), ev = sec("eval"), par = sec("parallel");
  s.name = job_f.get_string("name").value();
  s.phase = job_f.get_string("phase").value();
  s.model_config = model.get_string("config").value();
  s.init_from = model.get_string("init_from").value();
  s.init_seed = static_cast<uint64_t>(model.get_int("init_seed").value());
  s.init_mtp = model.get_bool("init_mtp").value();
  s.yarn_factor = ext.get_double("factor").value();
  s.yarn_original = ext.get_int("original_max_position_embeddings").value();
  s.yarn_beta_fast = ext.get_double("beta_fast").value();
  s.yarn_beta_slow = ext.get_double("beta_slow").value();
  s.yarn_mscale = ext.get_double("mscale").value();
  s.yarn_mscale_all_dim = ext.get_double("mscale_all_dim").value();
  s.tokenizer = tok.get_string("path").value();
  s.data_builtin = data.get_string("builtin").value();
  s.data_documents = data.get_int("documents").value();
  s.data_seed = static_cast<uint64_t>(data.get_int("seed").value());
  MARIANA_ASSIGN_OR_RETURN(s.data_inputs, data.get_string_array("inputs"));
  s.fim_rate = data.get_double("fim_rate").value();
  s.skip_bad = data.get_bool("skip_bad").value();
  s.passkey_filler_chars = data.get_int("passkey_filler_chars").value();
  s.arithmetic_min_digits = static_cast<int>(data.get_int("arithmetic_min_digits").value());
  s.arithmetic_max_digits = static_cast<int>(data.get_int("arithmetic_max_digits").value());
  s.arithmetic_ops = data.get_string("arithmetic_ops").value();
  s.arithmetic_teacher_slip = data.get_double("arithmetic_teacher_slip").value();
  s.data_chat = data.get_string("chat").value();
  s.data_preferences = data.get_string("preferences").value();
  s.steps = train.get_int("steps").value();
  s.epochs = train.get_int("epochs").value();
  s.seq_len = train.get_int("seq_len").value();
  s.seed = static_cast<uint64_t>(train.get_int("seed").value());
  s.threads = static_cast<int>(train.get_int("threads").value());
  s.log_every = train.get_int("log_every").value();
  s.checkpoint_every = train.get_int("checkpoint_every").value();
  s.keep_last = train.get_int("keep_last").value();
  s.grad_clip = train.get_double("grad_clip").value();
  s.rows = batch.get_int("rows").value();
  s.rows_start = batch.get_int("rows_start").value();
  s.ramp_steps = batch.get_int("ramp_steps").value();
  s.lr = opt.get_double("lr").value();
  s.final_lr = opt.get_double("final_lr").value();
  s.tail_lr = opt.get_double("tail_lr").value();
  s.warmup_steps = opt.get_int("warmup_steps").value();
  s.constant_steps = opt.get_int("constant_steps").value();
  s.decay_steps = opt.get_int("decay_steps").value();
  s.beta1 = opt.get_double("beta1").value();
  s.beta2 = opt.get_double("beta2").value();
  s.eps = opt.get_double("eps").value();
  s.weight_decay = opt.get_double("weight_decay").value();
  s.gamma = bal.get_double("gamma").value();
  s.gamma_zero_after = bal.get_int("gamma_zero_after").value();
  s.alpha = bal.get_double("alpha").value();
  s.mtp_weight = mtp.get_double("weight").value();
  s.mtp_weight_after = mtp.get_double("weight_after").value();
  s.mtp_switch_step = mtp.get_int("switch_step").value();
  s.eval_every = ev.get_int("every").value();
  s.eval_batches = ev.get_int("batches").value();
  s.eval_held_out = ev.get_double("held_out").value();
  s.dp = par.get_int("dp").value();
  s.ep = par.get_int("ep").value();
  s.nodes = par.get_int("nodes").value();
  s.max_nodes_per_token = par.get_int("max_nodes_per_token").value();
  s.placement = par.get_string("placement").value();
  s.parallel_timeout_s = par.get_double("timeout_s").value();

  auto bad = [&](const std::string& field, const std::string& what) {
    return InvalidArgument(source + ": field '" + field + "': " + what);
  };
  if (s.phase != "pretrain" && s.phase != "extend" && s.phase != "sft" && s.phase != "rm")
    return bad("job.phase", "expected \"pretrain\", \"extend\", \"sft\" or \"rm\", got \"" + s.phase + "\"");
  if (s.phase == "pretrain" && s.model_config.empty()) return bad("model.config", "a pretrain job needs a model config.json");
  if (s.phase != "pretrain" && s.init_from.empty())
    return bad("model.init_from", "an " + s.phase + " job starts from a checkpoint or run directory");
  if (s.epochs < 0) return bad("train.epochs", "expected >= 0");
  if (!(s.arithmetic_min_digits >= 1 && s.arithmetic_min_digits <= s.arithmetic_max_digits && s.arithmetic_max_digits <= 9))
    return bad("data.arithmetic_min_digits", "expected 1 <= arithmetic_min_digits <= arithmetic_max_digits <= 9");
  if (s.arithmetic_ops.empty() || s.arithmetic_ops.find_first_not_of("+-*") != std::string::npos)
    return bad("data.arithmetic_ops", "expected operators from \"+-*\", got \"" + s.arithmetic_ops + "\"");
  if (!(s.arithmetic_teacher_slip >= 0 && s.arithmetic_teacher_slip <= 1))
    return bad("data.arithmetic_teacher_slip", "expected a probability in [0, 1], got " + std::to_string(s.arithmetic_teacher_slip));
  if (s.phase == "sft" && s.data_chat.empty() && s.data_builtin != "arithmetic-chat")
    return bad("data.builtin", "an sft job takes chat data: set data.chat = \"file.jsonl\" or data.builtin = "
               "\"arithmetic-chat\", got \"" + s.data_builtin + "\"");
  if (s.phase != "sft" && !s.data_chat.empty()) return bad("data.chat", "chat data is for the sft phase only");
  if (s.phase == "rm" && s.data_preferences.empty() && s.data_builtin != "arithmetic-preference")
    return bad("data.builtin", "an rm job takes preference pairs: set data.preferences = \"file.jsonl\" or "
               "data.builtin = \"arithmetic-preference\", got \"" + s.data_builtin + "\"");
  if (s.phase != "rm" && !s.data_preferences.empty())
    return bad("data.preferences", "preference pairs are for the rm phase only");
  const bool own_data = s.phase == "sft" || s.phase == "rm";  // not the pretraining corpora
  if (s.steps <= 0) return bad("train.steps", "expected > 0");
  if (s.seq_len < 2) return bad("train.seq_len", "expected >= 2");
  if (s.rows <= 0) return bad("batch.rows", "expected > 0");
  if (s.rows_start < 0) return bad("batch.rows_start", "expected >= 0");
  if (s.checkpoint_every <= 0) return bad("train.checkpoint_every", "expected > 0");
  if (s.keep_last <= 0) return bad("train.keep_last", "expected > 0");
  if (s.log_every <= 0) return bad("train.log_every", "expected > 0");
  if (!(s.lr > 0)) return bad("optimizer.lr", "expected > 0");
  if (s.warmup_steps < 0) return bad("optimizer.warmup_steps", "expected >= 0");
  if (!(s.fim_rate >= 0 && s.fim_rate <= 1)) return bad("data.fim_rate", "expected 0..1");
  if (!own_data && s.data_builtin.empty() && s.data_inputs.empty()) return bad("data.inputs", "no data: set data.builtin or data.inputs");
  if (!own_data && !s.data_builtin.empty() && s.data_builtin != "mix" && s.data_builtin != "arithmetic" && s.data_builtin != "passkey")
    return bad("data.builtin", "expected \"mix\", \"arithmetic\", \"passkey\" or \"\", got \"" + s.data_builtin + "\"");
  if (s.phase == "extend" && !(s.yarn_factor > 1)) return bad("extend.factor", "expected > 1");
  if (s.threads < 0 || s.threads > kMaxThreads)
    return bad("train.threads", "expected 0 (the machine's cores) .. " + std::to_string(kMaxThreads));
  // Every other number: in range (finiteness is checked as the file is merged).
  if (s.data_documents <= 0) return bad("data.documents", "expected > 0");
  if (s.passkey_filler_chars < 0) return bad("data.passkey_filler_chars", "expected >= 0 (0: the default)");
  if (s.yarn_original < 0) return bad("extend.original_max_position_embeddings", "expected >= 0 (0: the source model's)");
  if (!(s.yarn_beta_fast > 0)) return bad("extend.beta_fast", "expected > 0");
  if (!(s.yarn_beta_slow > 0)) return bad("extend.beta_slow", "expected > 0");
  if (!(s.yarn_mscale > 0)) return bad("extend.mscale", "expected > 0");
  if (!(s.yarn_mscale_all_dim >= 0)) return bad("extend.mscale_all_dim", "expected >= 0");
  if (!(s.grad_clip >= 0)) return bad("train.grad_clip", "expected >= 0 (0: no clipping)");
  if (s.ramp_steps < 0) return bad("batch.ramp_steps", "expected >= 0");
  // rows × seq_len tokens per step; the memory this needs is checked against the machine when
  // the model is known (train_run), this only keeps the products far from overflow.
  for (const auto& [field, rows] : {std::pair<const char*, int64_t>{"batch.rows", s.rows}, {"batch.rows_start", s.rows_start}}) {
    if (rows > kMaxBatchTokens / s.seq_len)
      return bad(field, std::to_string(rows) + " rows of train.seq_len " + std::to_string(s.seq_len) +
                            " tokens exceed " + std::to_string(kMaxBatchTokens) + " tokens per step");
  }
  if (!(s.final_lr >= 0)) return bad("optimizer.final_lr", "expected >= 0");
  if (s.constant_steps < 0) return bad("optimizer.constant_steps", "expected >= 0");
  if (s.decay_steps < -1) return bad("optimizer.decay_steps", "expected >= 0, or -1 (until the end)");
  if (!(s.beta1 >= 0 && s.beta1 < 1)) return bad("optimizer.beta1", "expected in [0, 1)");
  if (!(s.beta2 >= 0 && s.beta2 < 1)) return bad("optimizer.beta2", "expected in [0, 1)");
  if (!(s.eps > 0)) return bad("optimizer.eps", "expected > 0");
  if (!(s.weight_decay >= 0)) return bad("optimizer.weight_decay", "expected >= 0");
  if (!(s.gamma >= 0)) return bad("balance.gamma", "expected >= 0");
  if (s.gamma_zero_after < -1) return bad("balance.gamma_zero_after", "expected >= 0, or -1 (never)");
  if (!(s.alpha >= 0)) return bad("balance.alpha", "expected >= 0");
  if (!(s.mtp_weight >= 0)) return bad("mtp.weight", "expected >= 0");
  if (!(s.mtp_weight_after >= 0)) return bad("mtp.weight_after", "expected >= 0");
  if (s.mtp_switch_step < -1) return bad("mtp.switch_step", "expected >= 0, or -1 (never)");
  if (s.eval_every < 0) return bad("eval.every", "expected >= 0 (0: no validation loss)");
  if (s.eval_batches <= 0) return bad("eval.batches", "expected > 0");
  if (!(s.eval_held_out == -1 || (s.eval_held_out >= 0 && s.eval_held_out <= 0.5)))
    return bad("eval.held_out", "expected a fraction in [0, 0.5], or -1 (" + std::to_string(kDefaultHeldOut).substr(0, 4) +
                                    " when eval.every > 0, else 0)");
  if (s.eval_held_out == -1) s.eval_held_out = s.eval_every > 0 ? kDefaultHeldOut : 0.0;
  if (s.eval_every > 0 && s.eval_held_out == 0)
    return bad("eval.held_out", "eval.every needs held-out data: expected > 0 with eval.every = " +
                                    std::to_string(s.eval_every));
  if (s.phase == "rm" && (s.eval_every > 0 || s.eval_held_out > 0))
    return bad("eval.every", "the rm phase has no validation loss (its objective is the pair loss); set eval.every = 0");
  if (s.dp < 1) return bad("parallel.dp", "expected >= 1");
  if (s.ep < 1) return bad("parallel.ep", "expected >= 1");
  if (s.nodes < 1 || (s.ep > 1 && s.ep % s.nodes != 0))
    return bad("parallel.nodes", "expected >= 1 and dividing parallel.ep = " + std::to_string(s.ep) + ", got " +
                                     std::to_string(s.nodes));
  if (s.max_nodes_per_token < 0) return bad("parallel.max_nodes_per_token", "expected >= 0 (0: no limit)");
  if (s.placement != "pack" && s.placement != "spread")
    return bad("parallel.placement", "expected \"pack\" or \"spread\", got \"" + s.placement + "\"");
  if (!(s.parallel_timeout_s > 0)) return bad("parallel.timeout_s", "expected > 0 seconds");
  if (s.world() > 1) {
    if (s.phase == "sft" || s.phase == "rm")
      return bad("parallel.dp", "the " + s.phase + " phase runs in one process; parallel jobs are pretrain and extend");
    for (int64_t r : {s.rows, s.rows_start}) {
      if (r > 0 && r % s.world() != 0)
        return bad(r == s.rows ? "batch.rows" : "batch.rows_start",
                   std::to_string(r) + " rows do not split over dp·ep = " + std::to_string(s.world()) + " ranks");
    }
    if (s.ramp_steps > 0) return bad("batch.ramp_steps", "a batch-size ramp is not supported with parallel.dp·ep > 1");
  }
  return s;
}

ArithmeticOptions job_arithmetic_options(const JobSpec& spec) {
  ArithmeticOptions ao;
  ao.min_digits = spec.arithmetic_min_digits;
  ao.max_digits = spec.arithmetic_max_digits;
  ao.ops = spec.arithmetic_ops;
  ao.teacher_slip = spec.arithmetic_teacher_slip;
  return ao;
}

namespace {

bool overridden(const std::vector<std::string>& overrides, const std::string& field) {
  for (const std::string& kv : overrides)
    if (kv.compare(0, kv.find('='), field) == 0) return true;
  return false;
}

}  // namespace

Status resolve_job_input(const std::string& job_path, const std::vector<std::string>& overrides,
                         const std::string& field, const std::string& key, std::string& value) {
  if (value.empty()) return Status::Ok();
  const fs::path job_dir = fs::path(job_path).parent_path();
  std::string how = "a relative path given by --set resolves against the current directory";
  if (field == "model.init_from") {
    how = "model.init_from resolves against the current directory, where run directories are written";
  } else if (!overridden(overrides, field)) {
    how = "a relative path in a job file resolves against its directory " + (job_dir.empty() ? "." : job_dir.string());
    if (fs::path(value).is_relative() && !job_dir.empty()) value = (job_dir / value).lexically_normal().string();
  }
  std::error_code ec;
  if (!fs::exists(value, ec))
    return InvalidArgument(job_path + ": field '" + key + "': " + value + " does not exist (" + how + ")");
  return Status::Ok();
}

Result<JobSpec> job_spec_load(const std::string& path, const std::vector<std::string>& overrides) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  MARIANA_ASSIGN_OR_RETURN(JobSpec s, job_spec_parse(text, path, overrides));
  for (auto [field, value] : {std::pair<const char*, std::string*>{"model.config", &s.model_config},
                              {"model.init_from", &s.init_from},
                              {"tokenizer.path", &s.tokenizer},
                              {"data.chat", &s.data_chat},
                              {"data.preferences", &s.data_preferences}})
    MARIANA_RETURN_IF_ERROR(resolve_job_input(path, overrides, field, field, *value));
  for (size_t i = 0; i < s.data_inputs.size(); ++i)
    MARIANA_RETURN_IF_ERROR(
        resolve_job_input(path, overrides, "data.inputs", "data.inputs[" + std::to_string(i) + "]", s.data_inputs[i]));
  return s;
}

double JobSpec::lr_at(int64_t step) const {
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  int64_t k = step - warmup_steps;
  if (k < constant_steps) return lr;
  k -= constant_steps;
  const int64_t decay = decay_steps >= 0 ? decay_steps : std::max<int64_t>(steps - warmup_steps - constant_steps, 1);
  if (k < decay) {
    const double c = 0.5 * (1.0 + std::cos(std::numbers::pi * static_cast<double>(k) / static_cast<double>(decay)));
    return final_lr + (lr - final_lr) * c;
  }
  return tail_lr >= 0 ? tail_lr : final_lr;
}

int64_t JobSpec::rows_at(int64_t step) const {
  if (rows_start <= 0 || ramp_steps <= 0 || step >= ramp_steps) return rows;
  return rows_start + (rows - rows_start) * step / ramp_steps;
}

double JobSpec::gamma_at(int64_t step) const {
  return gamma_zero_after >= 0 && step >= gamma_zero_after ? 0.0 : gamma;
}

double JobSpec::mtp_weight_at(int64_t step) const {
  return mtp_switch_step >= 0 && step >= mtp_switch_step ? mtp_weight_after : mtp_weight;
}

}  // namespace mariana
