// Training job specs (TOML) for the phases `pretrain`, `extend`, `sft` and `rm`: every field has a default in
// one schema (kJobSchema in job_spec.cc); a job file or `--set key=value` naming a field the schema
// lacks is an error naming it. Schedules (LR, batch-size ramp, γ, λ) are evaluated from here.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "core/status.h"
#include "train/corpora.h"

namespace mariana {

struct JobSpec {
  std::string source;         // the job file, for messages
  std::string name;
  std::string phase;          // "pretrain" | "extend" | "sft" | "rm" (reward model)
  // [model]
  std::string model_config;   // pretrain: HF config.json
  std::string init_from;      // extend, sft, rm: a checkpoint directory or a run directory (its newest checkpoint)
  uint64_t init_seed = 0;
  bool init_mtp = false;      // extend, sft, rm: draw MTP modules from init_seed when init_from has none (HF's save)
  // [extend] YaRN (docs/numerics.md#rope-and-yarn); original 0 = the source model's max_position_embeddings
  double yarn_factor = 4.0;
  int64_t yarn_original = 0;
  double yarn_beta_fast = 32, yarn_beta_slow = 1, yarn_mscale = 1.0, yarn_mscale_all_dim = 1.0;
  // [tokenizer]
  std::string tokenizer;      // "" = train one on the data (vocab = the model's)
  // [data]
  std::string data_builtin;   // "mix" | "arithmetic" | "passkey" | "" (use data.inputs); sft: "arithmetic-chat";
                              // rm: "arithmetic-preference"
  int64_t data_documents = 2000;
  uint64_t data_seed = 1;
  std::vector<std::string> data_inputs;
  double fim_rate = 0.1;
  bool skip_bad = false;
  int64_t passkey_filler_chars = 0;  // builtin passkey/mix: filler length (0 = default)
  // Built-in arithmetic (and arithmetic-chat): operand digits uniform in [min, max], operators.
  int arithmetic_min_digits = 1, arithmetic_max_digits = 3;
  std::string arithmetic_ops = "+-*";
  // The worked solutions' teacher forgets every carry and borrow in this fraction of the + and −
  // problems (ArithmeticOptions::teacher_slip, train/corpora.h); 0 = a perfect teacher.
  double arithmetic_teacher_slip = 0;
  // sft: a chat JSONL file ({"messages": [...]} per line, sft/sft_data.h); when set, data.builtin
  // is ignored, else data.builtin must be "arithmetic-chat".
  std::string data_chat;
  // rm: a preference JSONL file ({"prompt", "chosen", "rejected"} per line, sft/reward_model.h);
  // when set, data.builtin is ignored, else data.builtin must be "arithmetic-preference".
  std::string data_preferences;
  // [train]
  int64_t steps = 100;
  // > 0: the data (a finite set: sft) is visited this many times, shuffled per epoch, and the
  // number of steps is derived from it — the least n whose batches hold every packed row — so
  // train.steps is ignored. 0: train.steps steps, cycling over the data as needed.
  int64_t epochs = 0;
  int64_t seq_len = 128;
  uint64_t seed = 0;
  int threads = 0;
  int64_t log_every = 1;
  int64_t checkpoint_every = 50;
  int64_t keep_last = 3;
  double grad_clip = 1.0;
  // [batch]
  int64_t rows = 8;
  int64_t rows_start = 0;     // 0 = rows (no ramp)
  int64_t ramp_steps = 0;
  // [optimizer]
  double lr = 3e-3, final_lr = 3e-4, tail_lr = -1;  // tail_lr < 0: stay at final_lr
  int64_t warmup_steps = 10, constant_steps = 0, decay_steps = -1;  // decay -1: until the end
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  // [balance]
  double gamma = 0.001;
  int64_t gamma_zero_after = -1;  // steps at and after this use γ = 0 (-1: never)
  double alpha = 0.0001;
  // [mtp]
  double mtp_weight = 0.3, mtp_weight_after = 0.1;
  int64_t mtp_switch_step = -1;   // steps at and after this use mtp_weight_after (-1: never)
  // [eval] The validation loss (pretrain, extend, sft): every eval_every steps (0: never) the
  // trainer computes the next-token cross-entropy on the first eval_batches batches (batch.rows
  // rows each, always the same ones) of the held-out split, in inference mode. The split holds
  // the fraction eval_held_out of the documents (sft: conversations), chosen by a hash of each
  // one's text (data_held_out in train/data.h), and is never trained on. In the file, -1 means
  // kDefaultHeldOut when eval.every > 0, else 0: set it explicitly to train on the very same data
  // with evaluation on or off. Parsed values are the resolved fraction.
  int64_t eval_every = 0;
  int64_t eval_batches = 4;
  double eval_held_out = 0;
  // [parallel] (train/parallel.h) dp·ep rank processes: ZeRO-1 data parallelism over dp replicas,
  // routed experts sharded over ep ranks (world rank = dp_rank·ep + ep_rank). nodes: how many
  // nodes the ep group spans (ep / nodes consecutive ep ranks per node; one process simulates
  // it); max_nodes_per_token: node-limited routing's M (0: no limit). placement: "pack" fills a
  // node before the next, "spread" puts each rank on another node where it can. timeout_s: the
  // limit of each collective.
  int64_t dp = 1, ep = 1, nodes = 1, max_nodes_per_token = 0;
  std::string placement = "pack";
  double parallel_timeout_s = 120;
  int64_t world() const { return dp * ep; }

  double lr_at(int64_t step) const;        // step counts from 0
  int64_t rows_at(int64_t step) const;
  double gamma_at(int64_t step) const;
  double mtp_weight_at(int64_t step) const;
};

// The most tokens one step may hold (batch.rows × train.seq_len): far beyond any machine this
// trainer runs on, so sizes derived from it never overflow; the real bound is the machine's memory.
constexpr int64_t kMaxBatchTokens = int64_t{1} << 31;
// eval.held_out's value when it is left at -1 and eval.every > 0.
constexpr double kDefaultHeldOut = 0.05;
// The most threads train.threads may ask for (0: the machine's cores).
constexpr int kMaxThreads = 4096;

// The data.arithmetic_* options as the built-in generators take them (training split).
ArithmeticOptions job_arithmetic_options(const JobSpec& spec);

// Loads the job file, applies "key=value" overrides (value parsed as TOML, else taken as a
// string), validates. InvalidArgument naming the file/field or the override. A relative input path
// written in the file (model.config, tokenizer.path, data.inputs, data.chat, data.preferences)
// resolves against the job file's directory; one given by --set, and model.init_from (a run's
// output, found where `train` writes run directories), against the current directory. Every
// input path must exist: else InvalidArgument naming the field and how it was resolved.
Result<JobSpec> job_spec_load(const std::string& path, const std::vector<std::string>& overrides);
// A path field of a job file resolved as job_spec_load does (a relative path in the file against
// the file's directory; one given by --set, and model.init_from, against the current directory),
// then checked to exist: InvalidArgument "<job>: field '<key>': <path> does not exist (...)".
// Empty stays empty.
Status resolve_job_input(const std::string& job_path, const std::vector<std::string>& overrides,
                         const std::string& field, const std::string& key, std::string& value);
// The machinery under job_spec_parse, for other job kinds (rl/grpo.cc): `text` merged over the
// defaults of `schema_text` (TOML), then the overrides; a field the schema lacks or of the wrong
// type is an InvalidArgument naming the file, line and field.
Result<toml::table> toml_with_schema(const char* schema_text, const std::string& text, const std::string& source,
                                     const std::vector<std::string>& overrides);
Result<JobSpec> job_spec_parse(const std::string& text, const std::string& source,
                               const std::vector<std::string>& overrides);

}  // namespace mariana
