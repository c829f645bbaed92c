// train_run: the training loop of every phase but rl (pretrain, extend; sft and rm plug in their data
// and objective), checkpoints and resume.
#include "train/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "train/corpora.h"
#include "train/data.h"
#include "train/optimizer.h"
#include "train/parallel.h"
#include "train/run_checkpoints.h"
#include "train/train_step.h"
#include "train/tokenizer.h"

namespace mariana {

namespace fs = std::filesystem;

namespace {





// The model config of an extension: YaRN by `factor` over the source (composing with an earlier
// extension: the original length stays, the factors multiply).
Result<ModelConfig> extended_config(const ModelConfig& src, const JobSpec& spec) {
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(src.json_text);
  const int64_t original = src.yarn.enabled ? src.yarn.original_max_position
                                            : (spec.yarn_original > 0 ? spec.yarn_original : src.max_position_embeddings);
  const double factor = (src.yarn.enabled ? src.yarn.factor : 1.0) * spec.yarn_factor;
  nlohmann::ordered_json yarn = {{"factor", factor},
                                 {"original_max_position_embeddings", original},
                                 {"beta_fast", spec.yarn_beta_fast},
                                 {"beta_slow", spec.yarn_beta_slow},
                                 {"mscale", spec.yarn_mscale},
                                 {"mscale_all_dim", spec.yarn_mscale_all_dim}};
  // Both layouts the source may use (model/config.cc): transformers 5's rope_parameters keeps
  // rope_theta inside; the older rope_scaling beside a top-level rope_theta.
  const bool v5 = j.contains("rope_parameters") && j["rope_parameters"].is_object();
  if (v5) {
    nlohmann::ordered_json rp = {{"rope_type", "yarn"}, {"rope_theta", src.rope_theta}};
    rp.update(yarn);
    j["rope_parameters"] = rp;
  }
  if (!v5 || (j.contains("rope_scaling") && !j["rope_scaling"].is_null())) {
    nlohmann::ordered_json rs = {{"type", "yarn"}};
    rs.update(yarn);
    j["rope_scaling"] = rs;
  }
  j["max_position_embeddings"] = static_cast<int64_t>(std::llround(factor * static_cast<double>(original)));
  return model_config_from_json_text(j.dump(2) + "\n", src.source + " (extended)");
}

// A source checkpoint without MTP weights (saved by HF transformers) whose config declares MTP
// modules: with model.init_mtp, `model` becomes the full model, its MTP modules drawn from
// model.init_seed (the values a fresh model of that seed has) and the rest copied; without it, an
// error naming the key.
Status init_missing_mtp(const JobSpec& spec, const std::string& src, Model<float>& model, const ShardFilter& shard) {
  const ModelConfig& c = model.config();
  if (c.mtp_missing == 0) return Status::Ok();
  if (!spec.init_mtp) {
    return InvalidArgument(spec.source + ": field 'model.init_mtp': " + src + " has no MTP weights (model.layers." +
                           std::to_string(c.num_hidden_layers) + ".*; HF transformers does not save them) but its " +
                           "config.json declares " + std::to_string(c.mtp_missing) +
                           " MTP module(s); set model.init_mtp = true to initialise them from model.init_seed");
  }
  std::fprintf(stderr, "initialising MTP modules from seed %llu (%s has no MTP weights)\n",
               (unsigned long long)spec.init_seed, src.c_str());
  ModelConfig full = c;
  full.num_nextn_predict_layers = c.mtp_missing;
  full.mtp_missing = 0;
  Model<float> m(std::move(full), shard);  // `model`'s part (a rank's shard) of the full model
  m.init_weights(spec.init_seed);
  for (const ParamSpec& s : model.table().specs()) {
    const ParamSpec& d = m.table().at(s.name);
    std::copy(model.params() + s.offset, model.params() + s.offset + s.numel(), m.params() + d.offset);
  }
  model = std::move(m);
  return Status::Ok();
}

// The run's tokenizer: tokenizer.path, else the source checkpoint's, else (when `train_inputs` is
// not empty) one trained on them; copied to run_dir/tokenizer.json and reused on resume.
Result<Tokenizer> setup_tokenizer(const JobSpec& spec, const std::string& run_dir, int64_t vocab_size,
                                  const std::string& inherited_tokenizer,
                                  const std::vector<std::string>& train_inputs) {
  std::string tok_path = spec.tokenizer.empty() ? inherited_tokenizer : spec.tokenizer;
  const fs::path own_tok = fs::path(run_dir) / kTokenizerFile;
  if (tok_path.empty()) {
    tok_path = own_tok.string();
    if (!fs::exists(own_tok)) {
      if (train_inputs.empty()) {
        return InvalidArgument(spec.source + ": field 'tokenizer.path': the " + spec.phase +
                               " phase needs a tokenizer and the source checkpoint has no tokenizer.json");
      }
      TokenizerTrainOptions to;
      to.vocab_size = vocab_size;
      MARIANA_ASSIGN_OR_RETURN(Tokenizer t, Tokenizer::train(train_inputs, to));
      MARIANA_RETURN_IF_ERROR(t.save(own_tok.string()));
    }
  }
  MARIANA_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::load(tok_path));
  if (tokenizer.vocab_size() > vocab_size) {
    return InvalidArgument(tok_path + ": tokenizer has " + std::to_string(tokenizer.vocab_size()) +
                           " tokens but the model's vocab_size is " + std::to_string(vocab_size));
  }
  if (tok_path != own_tok.string()) {
    MARIANA_ASSIGN_OR_RETURN(std::string bytes, read_file(tok_path));
    MARIANA_RETURN_IF_ERROR(write_file_atomic(own_tok.string(), bytes));
  }
  return tokenizer;
}

struct DataSetup {
  Tokenizer tokenizer;
  std::string data_dir;
  std::string held_out_dir;  // eval.held_out > 0: the held-out documents' shards
};

// Shards of the inputs' documents on one side of the held-out split, prepared once into `dir`.
Status prepare_split(const JobSpec& spec, const Tokenizer& tok, const std::vector<std::string>& inputs,
                     DataSplit split, const std::string& dir) {
  if (fs::exists(dir)) return Status::Ok();
  PrepareOptions po;
  po.inputs = inputs;
  po.out_dir = dir;
  po.skip_bad = spec.skip_bad;
  po.split = split;
  po.held_out = spec.eval_held_out;
  auto rep = data_prepare(tok, po);
  if (!rep.ok() && split == DataSplit::kHeldOut && rep.status().message().find("no documents") != std::string::npos) {
    return InvalidArgument(spec.source + ": field 'eval.held_out': no document of the data falls in the held-out " +
                           "fraction " + std::to_string(spec.eval_held_out) + "; raise it or add documents");
  }
  MARIANA_RETURN_IF_ERROR(rep.status());
  if (rep->skipped > 0 && split != DataSplit::kHeldOut)
    std::fprintf(stderr, "data: skipped %lld bad item(s)\n", (long long)rep->skipped);
  return Status::Ok();
}

// Tokenizer and prepared shards for the job, built once per run directory and reused on resume.
Result<DataSetup> setup_data(const JobSpec& spec, const std::string& run_dir, int64_t vocab_size,
                             const std::string& inherited_tokenizer) {
  const fs::path data_root = fs::path(run_dir) / "data";
  fs::create_directories(data_root);
  std::vector<std::string> inputs = spec.data_inputs;
  if (!spec.data_builtin.empty()) {
    const std::string corpus = (data_root / (spec.data_builtin + ".jsonl")).string();
    if (!fs::exists(corpus)) {
      CorpusOptions co;
      // Passkey documents sized to roughly fill a training row (~3 characters per token).
      co.passkey_chars = spec.passkey_filler_chars > 0 ? spec.passkey_filler_chars : spec.seq_len * 3;
      co.arithmetic = job_arithmetic_options(spec);
      MARIANA_ASSIGN_OR_RETURN(CorpusTask task, corpus_task_parse(spec.data_builtin));
      MARIANA_RETURN_IF_ERROR(write_corpus_jsonl(task, spec.data_documents, spec.data_seed, co, corpus));
    }
    inputs.push_back(corpus);
  }
  MARIANA_ASSIGN_OR_RETURN(Tokenizer tokenizer, setup_tokenizer(spec, run_dir, vocab_size, inherited_tokenizer, inputs));
  DataSetup out{std::move(tokenizer), (data_root / "shards").string(), ""};
  if (spec.eval_held_out > 0) {  // one directory pair per fraction, so a changed fraction never mixes
    char frac[32];
    std::snprintf(frac, sizeof(frac), "%g", spec.eval_held_out);
    out.data_dir = (data_root / ("shards-train-" + std::string(frac))).string();
    out.held_out_dir = (data_root / ("shards-held-out-" + std::string(frac))).string();
    MARIANA_RETURN_IF_ERROR(prepare_split(spec, out.tokenizer, inputs, DataSplit::kHeldOut, out.held_out_dir));
  }
  MARIANA_RETURN_IF_ERROR(prepare_split(spec, out.tokenizer, inputs,
                                        spec.eval_held_out > 0 ? DataSplit::kTrain : DataSplit::kAll, out.data_dir));
  return out;
}


// Rewrites metrics.jsonl keeping only the lines of steps <= step (after a resume).

// The pretraining data: the shard DataLoader as a BatchSource.
class ShardBatchSource : public BatchSource {
 public:
  explicit ShardBatchSource(DataLoader loader) : loader_(std::move(loader)) {}
  Status next(int64_t rows, Batch* out) override { return loader_.next(rows, out); }
  nlohmann::json state() const override { return loader_.state(); }
  Status restore(const nlohmann::json& state) override { return loader_.restore(state); }

 private:
  DataLoader loader_;
};

// The validation loss (eval.every): the next-token cross-entropy over the target tokens of the
// held-out source's first eval.batches batches of batch.rows rows — the same batches every time,
// as its position returns to the start. Forward only: no gradient, no bias update, no optimizer
// step, and neither the training source nor any RNG is touched, so training goes exactly as with
// evaluation off.
class Validator {
 public:
  Validator(std::unique_ptr<BatchSource> source, const JobSpec& spec)
      : source_(std::move(source)), start_(source_->state()), rows_(spec.rows), batches_(spec.eval_batches),
        where_(spec.source + ": eval.held_out") {}
  Result<double> loss(Model<float>& model) {
    MARIANA_RETURN_IF_ERROR(source_->restore(start_));
    LossWeights w;
    w.mtp_weight = 0;  // the main head's loss only
    w.balance_alpha = 0;
    double sum = 0;
    int64_t tokens = 0;
    for (int64_t b = 0; b < batches_; ++b) {
      MARIANA_RETURN_IF_ERROR(source_->next(rows_, &batch_));
      MARIANA_RETURN_IF_ERROR(model.forward(batch_, w, &res_));
      sum += res_.loss_main * static_cast<double>(res_.target_tokens);
      tokens += res_.target_tokens;
    }
    if (tokens == 0) return InvalidArgument(where_ + ": the held-out batches have no token with a target");
    return sum / static_cast<double>(tokens);
  }

 private:
  std::unique_ptr<BatchSource> source_;
  nlohmann::json start_;
  int64_t rows_, batches_;
  std::string where_;
  Batch batch_;
  ForwardResult res_;
};

// The least number of steps whose batches (JobSpec::rows_at) hold `rows` rows.
int64_t steps_for_rows(const JobSpec& spec, int64_t rows) {
  int64_t steps = 0;
  for (int64_t covered = 0; covered < rows; ++steps) covered += spec.rows_at(steps);
  return std::max<int64_t>(steps, 1);
}

void print_progress(const StepMetrics& m, int64_t total) {
  const int width = 28;
  const int filled = static_cast<int>(width * m.step / std::max<int64_t>(total, 1));
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f lr %.2e %.0f tok/s ", bar.c_str(), (long long)m.step,
               (long long)total, m.loss, m.lr, m.tokens_per_s);
  if (m.step == total) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace

Status check_step_memory(const Model<float>& model, int64_t arena_copies, int64_t models, int64_t rows,
                         int64_t seq_len, const std::string& what) {
  const double gib = 1024.0 * 1024.0 * 1024.0;
  const double need = static_cast<double>(arena_copies) * static_cast<double>(model.table().arena_size()) * sizeof(float) +
                      static_cast<double>(models) * static_cast<double>(model.activation_bytes(rows, seq_len)) +
                      7.0 * sizeof(int32_t) * static_cast<double>(rows) * static_cast<double>(seq_len);
  const double have = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  if (have > 0 && need > have) {
    char buf[160];
    std::snprintf(buf, sizeof(buf), " need at least %.1f GiB (parameters, gradients, optimizer state, activations); "
                  "this machine has %.1f GiB", need / gib, have / gib);
    return InvalidArgument(what + buf);
  }
  return Status::Ok();
}

Status check_finite_step(const std::string& where, double loss, double grad_norm) {
  if (std::isfinite(loss) && std::isfinite(grad_norm)) return Status::Ok();
  char buf[200];
  std::snprintf(buf, sizeof(buf), ": the %s is %g (loss %g, gradient norm %g); stopping before this update, "
                "no checkpoint of it is written (the run diverged: lower the learning rate)",
                std::isfinite(loss) ? "gradient norm" : "loss", std::isfinite(loss) ? grad_norm : loss, loss, grad_norm);
  return OutOfRange(where + buf);
}




Status metrics_truncate(const std::string& path, int64_t upto, const char* key) {
  if (!fs::exists(path)) return Status::Ok();
  MARIANA_ASSIGN_OR_RETURN(auto lines, metrics_lines_read(path, std::numeric_limits<int64_t>::min(), upto, key));
  std::string kept;
  for (auto& [s, line] : lines) kept += line + "\n";
  return write_file_atomic(path, kept);
}

Result<std::vector<std::pair<int64_t, std::string>>> metrics_lines_read(const std::string& path, int64_t after,
                                                                         int64_t upto, const char* key) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  std::vector<std::pair<int64_t, std::string>> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) break;  // a torn last line is dropped
    std::string line = text.substr(start, end - start);
    start = end + 1;
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains(key) || !j[key].is_number_integer()) continue;
    const int64_t step = j[key].get<int64_t>();
    if (step > after && step <= upto) out.emplace_back(step, std::move(line));
  }
  return out;
}

Result<TrainSummary> train_run(const TrainOptions& o) {
  JobSpec spec = o.spec;  // steps are derived from the data when train.epochs > 0
  cpu::set_num_threads(spec.threads);

  // The model: fresh, from the phase's source, or from this run's newest checkpoint on --resume.
  // Plain --resume with no checkpoint at all starts fresh (start-or-continue); a resume_from that
  // names a checkpoint, or checkpoints that are all corrupt, never silently do.
  std::string resume_dir;
  if (o.resume) {
    std::string named_rejected;
    if (!o.resume_from.empty()) {
      const Status st = checkpoint_manifest_verify(o.resume_from);
      if (st.ok()) {
        resume_dir = o.resume_from;
      } else {
        std::fprintf(stderr, "warning: cannot resume from %s: %s; using the newest valid checkpoint\n",
                     o.resume_from.c_str(), st.to_string().c_str());
        named_rejected = "\n  " + o.resume_from + ": " + st.message();
      }
    }
    if (resume_dir.empty()) {
      auto r = latest_valid_checkpoint(o.run_dir);
      if (r.ok()) {
        resume_dir = r.value();
      } else if (r.status().code() == StatusCode::kNotFound && o.resume_from.empty()) {
        std::fprintf(stderr, "resume: %s; starting fresh\n", r.status().message().c_str());
      } else {
        return DataLoss("resume: no checkpoint to resume from:" + named_rejected + "\n  " + r.status().message());
      }
    }
  }
  std::string inherited_tokenizer;
  std::string source_dir;  // the starting checkpoint of a fresh extend / sft / rm run
  // Expert parallelism: this rank holds only its routed experts; its model is built, drawn or
  // loaded for its shard, so no rank ever holds the whole model (a model whose experts do not
  // split evenly is refused below).
  auto shard_of = [&](const ModelConfig& c) {
    const bool ep = o.parallel != nullptr && o.parallel->layout().world > 1 && spec.ep > 1;
    return ep && c.n_routed_experts > 0 && c.n_routed_experts % spec.ep == 0
               ? shard_filter_of_rank(o.parallel->layout(), c.n_routed_experts)
               : ShardFilter{};
  };
  std::unique_ptr<Model<float>> model;
  if (!resume_dir.empty()) {
    MARIANA_ASSIGN_OR_RETURN(ModelConfig rc, model_config_load((fs::path(resume_dir) / "config.json").string()));
    CheckpointLoadOptions lo;
    lo.verify_manifest = false;  // verified just above
    lo.shard = shard_of(rc);
    MARIANA_ASSIGN_OR_RETURN(auto ck, checkpoint_load<float>(resume_dir, lo));
    model = std::make_unique<Model<float>>(std::move(ck.model));
  } else if (spec.phase == "pretrain") {
    MARIANA_ASSIGN_OR_RETURN(ModelConfig cfg, model_config_load(spec.model_config));
    const ShardFilter shard = shard_of(cfg);
    model = std::make_unique<Model<float>>(std::move(cfg), shard);
    model->init_weights(spec.init_seed);  // a shard draws exactly the full model's values
  } else {
    MARIANA_ASSIGN_OR_RETURN(std::string src, resolve_checkpoint(spec.init_from));
    MARIANA_ASSIGN_OR_RETURN(ModelConfig sc, model_config_load((fs::path(src) / "config.json").string()));
    CheckpointLoadOptions lo;
    lo.shard = shard_of(sc);
    MARIANA_ASSIGN_OR_RETURN(auto ck, checkpoint_load<float>(src, lo));
    MARIANA_RETURN_IF_ERROR(init_missing_mtp(spec, src, ck.model, lo.shard));
    if (spec.phase == "extend") {
      MARIANA_ASSIGN_OR_RETURN(ModelConfig cfg, extended_config(ck.model.config(), spec));
      const ShardFilter shard = shard_of(cfg);
      model = std::make_unique<Model<float>>(std::move(cfg), shard);
      for (const ParamSpec& s : model->table().specs()) std::copy_n(ck.model.param(s.name), s.numel(), model->param(s.name));
    } else {  // sft, rm (one process): the same model, trained on
      model = std::make_unique<Model<float>>(std::move(ck.model));
    }
    source_dir = src;
    if (fs::exists(fs::path(src) / kTokenizerFile)) inherited_tokenizer = (fs::path(src) / kTokenizerFile).string();
  }
  const ModelConfig& cfg = model->config();
  const ParamTable full_table(cfg);  // the whole model's layout: checkpoints and their moments
  if (spec.seq_len > cfg.max_position_embeddings) {
    return InvalidArgument(spec.source + ": field 'train.seq_len': " + std::to_string(spec.seq_len) +
                           " exceeds the model's max_position_embeddings " + std::to_string(cfg.max_position_embeddings));
  }
  // Parallel layout: this process is rank `rank` of spec.world() (the rows of the global batch it
  // trains on, train/parallel.h); rank 0 writes the run's files.
  const int64_t world = o.parallel != nullptr ? o.parallel->layout().world : 1;
  const int64_t rank = o.parallel != nullptr ? o.parallel->layout().rank : 0;
  const bool par = world > 1, lead = rank == 0;
  if (world != spec.world())
    return InvalidArgument(spec.source + ": field 'parallel.dp': the job has dp·ep = " + std::to_string(spec.world()) +
                           " ranks; run it with `mariana train --nproc " + std::to_string(spec.world()) +
                           "`, `mariana run` or `mariana submit`");
  if (par && o.objective) return InvalidArgument(spec.source + ": the " + spec.phase + " phase runs in one process");
  {
    const int64_t E = cfg.n_routed_experts, K = cfg.num_experts_per_tok;
    auto bad = [&](const std::string& field, const std::string& what) {
      return InvalidArgument(spec.source + ": field '" + field + "': " + what);
    };
    if (spec.ep > 1 && (E == 0 || E % spec.ep != 0))
      return bad("parallel.ep", std::to_string(spec.ep) + " ranks do not split the model's " + std::to_string(E) +
                                    " routed experts evenly");
    if (spec.nodes > 1 && (E == 0 || E % spec.nodes != 0))
      return bad("parallel.nodes", std::to_string(spec.nodes) + " nodes do not split the model's " + std::to_string(E) +
                                       " routed experts evenly");
    if (spec.max_nodes_per_token > 0 && spec.max_nodes_per_token < spec.nodes &&
        K > spec.max_nodes_per_token * (E / spec.nodes))
      return bad("parallel.max_nodes_per_token", std::to_string(spec.max_nodes_per_token) + " node(s) of " +
                                                     std::to_string(E / spec.nodes) + " experts cannot hold a token's " +
                                                     std::to_string(K) + " experts");
    ModelParallel mp;
    mp.ep = par && spec.ep > 1 ? &o.parallel->ep() : nullptr;
    mp.n_nodes = spec.nodes;
    mp.max_nodes = spec.max_nodes_per_token;
    model->set_parallel(mp);
  }
  const int64_t max_rows = std::max(spec.rows, spec.rows_start);
  MARIANA_RETURN_IF_ERROR(check_step_memory(*model, 4, 1, max_rows, spec.seq_len,
                                            spec.source + ": field 'batch.rows': " + std::to_string(max_rows) +
                                                " rows of train.seq_len " + std::to_string(spec.seq_len) + " tokens"));
  std::error_code ec;  // the run directory: only once the job is known to fit
  fs::create_directories(o.run_dir, ec);
  if (ec) return Unavailable(o.run_dir + ": cannot create the run directory: " + ec.message());
  std::unique_ptr<BatchSource> loader, held_out;
  if (o.data_source) {
    MARIANA_ASSIGN_OR_RETURN(Tokenizer tok, setup_tokenizer(spec, o.run_dir, cfg.vocab_size, inherited_tokenizer, {}));
    MARIANA_ASSIGN_OR_RETURN(loader, o.data_source(spec, tok, o.run_dir, DataSplit::kTrain));
    if (spec.eval_every > 0) {
      MARIANA_ASSIGN_OR_RETURN(held_out, o.data_source(spec, tok, o.run_dir, DataSplit::kHeldOut));
    }
  } else {
    // Rank 0 prepares the tokenizer and shards; the others read them once it has.
    Result<DataSetup> setup = lead ? setup_data(spec, o.run_dir, cfg.vocab_size, inherited_tokenizer)
                                   : Result<DataSetup>(Unavailable("rank 0 has not prepared the data"));
    if (par)
      MARIANA_RETURN_IF_ERROR(
          agree_status(o.parallel->world(), lead ? setup.status() : Status::Ok(), "preparing the data on rank 0"));
    if (!lead) setup = setup_data(spec, o.run_dir, cfg.vocab_size, inherited_tokenizer);
    MARIANA_ASSIGN_OR_RETURN(DataSetup data, std::move(setup));
    LoaderOptions lo;
    lo.data_dir = data.data_dir;
    lo.seq_len = spec.seq_len;
    lo.seed = spec.seed;
    lo.fim_rate = spec.fim_rate;
    loader_options_set_special_tokens(data.tokenizer, &lo);
    MARIANA_ASSIGN_OR_RETURN(DataLoader dl, DataLoader::open(lo));
    loader = std::make_unique<ShardBatchSource>(std::move(dl));
    if (spec.eval_every > 0) {  // the held-out documents in stored order, as written (no FIM)
      lo.data_dir = data.held_out_dir;
      lo.shuffle = false;
      lo.fim_rate = 0;
      MARIANA_ASSIGN_OR_RETURN(DataLoader vl, DataLoader::open(lo));
      held_out = std::make_unique<ShardBatchSource>(std::move(vl));
    }
  }
  std::unique_ptr<Validator> validator;
  if (held_out) validator = std::make_unique<Validator>(std::move(held_out), spec);
  if (spec.epochs > 0) {
    const int64_t rows = loader->total_rows();
    if (rows < 0) {
      return InvalidArgument(spec.source + ": field 'train.epochs': the " + spec.phase +
                             " phase's data has no fixed size; set train.steps instead");
    }
    spec.steps = steps_for_rows(spec, rows);
    std::fprintf(stderr, "data: %lld rows over %lld epoch(s): %lld steps\n", (long long)rows,
                 (long long)spec.epochs, (long long)spec.steps);
  }

  AdamWConfig ac;
  ac.beta1 = spec.beta1;
  ac.beta2 = spec.beta2;
  ac.eps = spec.eps;
  ac.weight_decay = spec.weight_decay;
  // One process: AdamW over the whole arena. Parallel: ZeRO-1 over this rank's slices.
  std::unique_ptr<StepOptimizer> opt = par ? zero1_adamw(model->table(), full_table, cfg.n_routed_experts, ac, *o.parallel)
                                           : local_adamw(model->table(), ac);
  int64_t optimizer_steps = 0;
  const auto run_start = std::chrono::steady_clock::now();
  TrainSummary summary;
  summary.total_steps = spec.steps;
  int64_t step = 0;
  int64_t tokens_seen = 0;
  nlohmann::ordered_json bias_history = nlohmann::ordered_json::array();
  const fs::path metrics_path = fs::path(o.run_dir) / "metrics.jsonl";
  if (!resume_dir.empty()) {
    MARIANA_ASSIGN_OR_RETURN(std::string st_text, read_file((fs::path(resume_dir) / kTrainerStateFile).string()));
    nlohmann::json st;
    try {
      st = nlohmann::json::parse(st_text);
      step = st.at("step").get<int64_t>();
      tokens_seen = st.at("tokens_seen").get<int64_t>();
      optimizer_steps = st.at("optimizer_steps").get<int64_t>();
      bias_history = st.at("bias_history");
      if (st.contains("eval")) {  // absent before validation losses existed, or with eval.every = 0
        const nlohmann::json& ev = st["eval"];
        summary.val_loss = ev.at("val_loss").get<double>();
        summary.val_step = ev.at("val_step").get<int64_t>();
        summary.best_val_loss = ev.at("best_val_loss").get<double>();
        summary.best_val_step = ev.at("best_val_step").get<int64_t>();
      }
      MARIANA_RETURN_IF_ERROR(loader->restore(st.at("loader")));
    } catch (const nlohmann::json::exception& e) {
      return DataLoss(resume_dir + "/" + kTrainerStateFile + ": " + e.what());
    }
    {
      // This rank's tensors only (an ep rank's shard), from any earlier layout's files.
      std::vector<float> m(static_cast<size_t>(model->table().arena_size()), 0.0f), v(m.size(), 0.0f);
      MARIANA_RETURN_IF_ERROR(training_moments_load(resume_dir, model->table(), m.data(), v.data()));
      opt->load(m.data(), v.data(), optimizer_steps);
    }
    summary.resumed_from = step;
    if (lead) MARIANA_RETURN_IF_ERROR(metrics_truncate(metrics_path.string(), step));
    if (lead) std::fprintf(stderr, "resumed from %s (step %lld)\n", resume_dir.c_str(), (long long)step);
  } else if (lead) {
    MARIANA_RETURN_IF_ERROR(write_file_atomic(metrics_path.string(), ""));
  }
  if (o.objective) MARIANA_RETURN_IF_ERROR(o.objective->start(*model, source_dir, resume_dir));
  if (par) {
    // Every rank resumed from the same checkpoint (each resolves it alone: a rank that fell back
    // to another one would train on a different state), and metrics.jsonl exists.
    std::vector<float> at = {static_cast<float>(step), static_cast<float>(optimizer_steps)};
    std::vector<float> lead_at = at;
    MARIANA_RETURN_IF_ERROR(o.parallel->world().broadcast(lead_at, 0));
    MARIANA_RETURN_IF_ERROR(agree_status(
        o.parallel->world(),
        at == lead_at ? Status::Ok()
                      : DataLoss("rank " + std::to_string(rank) + " resumed at step " + std::to_string(step) +
                                 ", rank 0 at step " + std::to_string(static_cast<int64_t>(lead_at[0])) +
                                 ": the ranks' checkpoints differ"),
        "agreeing on the resumed step"));
  }
  // Rank 0 alone writes the run's metrics.
  std::FILE* metrics = lead ? std::fopen(metrics_path.c_str(), "a") : nullptr;
  if (lead && metrics == nullptr) return Unavailable(metrics_path.string() + ": cannot open for appending");

  if (o.on_start) o.on_start(step, resume_dir, spec.steps);
  Batch global;
  StepContext ctx;
  ctx.model = model.get();
  ctx.spec = &spec;
  ctx.optimizer = opt.get();
  ctx.objective = o.objective.get();
  ctx.parallel = o.parallel;
  ctx.interrupt = o.interrupt;
  int64_t run_steps = 0;
  Status failure;
  while (step < spec.steps) {
    if (o.stop_after >= 0 && run_steps >= o.stop_after) break;
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t rows = spec.rows_at(step);
    Status st = loader->next(rows, &global);
    if (!st.ok()) {
      failure = st;
      break;
    }
    Result<StepMetrics> stepped = train_step(ctx, step, global);
    if (!stepped.ok()) {
      failure = stepped.status();
      break;
    }
    StepMetrics m = std::move(stepped).value();
    ++step;
    ++run_steps;
    tokens_seen += rows * spec.seq_len;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    m.step = step;
    m.tokens_per_s = static_cast<double>(rows * spec.seq_len) / secs;
    m.tokens = tokens_seen;
    if (validator && (step % spec.eval_every == 0 || step == spec.steps)) {  // every rank (ep: collectives)
      Result<double> v = validator->loss(*model);
      if (!v.ok()) {
        failure = v.status();
        break;
      }
      m.val_loss = v.value();
      summary.val_loss = m.val_loss;
      summary.val_step = step;
      if (summary.best_val_step == 0 || m.val_loss < summary.best_val_loss) {
        summary.best_val_loss = m.val_loss;
        summary.best_val_step = step;
      }
    }
    nlohmann::ordered_json line;
    line["step"] = m.step;
    line["loss"] = m.loss;
    line["loss_main"] = m.loss_main;
    line["loss_mtp"] = m.loss_mtp;
    line["loss_balance"] = m.loss_balance;
    line["lr"] = m.lr;
    line["grad_norm"] = m.grad_norm;
    line["tokens_per_s"] = m.tokens_per_s;
    line["rows"] = m.rows;
    line["tokens"] = m.tokens;
    line["loss_tokens"] = m.loss_tokens;
    line["gamma"] = m.gamma;
    line["mtp_weight"] = m.mtp_weight;
    nlohmann::ordered_json mv = nlohmann::ordered_json::object();
    for (size_t i = 0; i < m.moe_layers.size(); ++i) mv[std::to_string(m.moe_layers[i])] = m.max_vio[i];
    line["max_vio"] = mv;
    if (!std::isnan(m.val_loss)) line["val_loss"] = m.val_loss;
    if (nlohmann::ordered_json ds = loader->step_stats(); !ds.empty()) line["data"] = ds;
    if (!m.comm.empty()) line["comm"] = m.comm;  // rank 0's
    if (o.objective) {
      if (nlohmann::ordered_json os = o.objective->step_stats(); !os.empty()) line["objective"] = os;
    }
    const std::string text = line.dump() + "\n";
    if (lead) {
      std::fwrite(text.data(), 1, text.size(), metrics);
      if (o.on_metrics_line) o.on_metrics_line(text.substr(0, text.size() - 1));
      std::fflush(metrics);
    }
    if (o.progress && lead) print_progress(m, spec.steps);
    if (!o.quiet && lead && !o.progress && (step % spec.log_every == 0 || step == spec.steps)) {
      double worst = 0;
      for (double v : m.max_vio) worst = std::max(worst, v);
      std::printf("step %lld/%lld loss %.4f (main %.4f mtp %.4f bal %.4f) lr %.3e gnorm %.3f maxvio %.3f %.0f tok/s"
                  " %lld loss tokens\n",
                  (long long)step, (long long)spec.steps, m.loss, m.loss_main, m.loss_mtp, m.loss_balance, m.lr,
                  m.grad_norm, worst, m.tokens_per_s, (long long)m.loss_tokens);
      std::fflush(stdout);
    }
    if (!o.quiet && lead && !std::isnan(m.val_loss)) {
      std::FILE* to = o.progress ? stderr : stdout;  // below the progress line, which stays on stderr
      std::fprintf(to, "%sstep %lld/%lld val_loss %.4f (best %.4f at step %lld)\n", o.progress ? "\n" : "",
                   (long long)step, (long long)spec.steps, m.val_loss, summary.best_val_loss,
                   (long long)summary.best_val_step);
      std::fflush(to);
    }
    if (o.on_step) o.on_step(m);
    summary.last = m;
    summary.interrupted = par ? ctx.interrupted : o.interrupt != nullptr && o.interrupt->load();
    if (step % spec.checkpoint_every == 0 || step == spec.steps || summary.interrupted) {
      nlohmann::ordered_json biases = nlohmann::ordered_json::object();
      for (int64_t l : m.moe_layers) {
        const float* b = model->param(layer_prefix(l) + "mlp.gate.e_score_correction_bias");
        biases[std::to_string(l)] = std::vector<float>(b, b + cfg.n_routed_experts);
      }
      bias_history.push_back({{"step", step}, {"bias", biases}});
      while (bias_history.size() > 16) bias_history.erase(bias_history.begin());  // bounded
      nlohmann::ordered_json state;
      state["step"] = step;
      state["phase"] = spec.phase;
      state["job"] = spec.name;
      state["tokens_seen"] = tokens_seen;
      state["optimizer_steps"] = opt->steps();
      state["rng"] = {{"seed", spec.seed}, {"data_seed", spec.data_seed}};
      state["loader"] = loader->state();
      state["bias_history"] = bias_history;
      if (summary.val_step > 0) {
        state["eval"] = {{"val_loss", summary.val_loss}, {"val_step", summary.val_step},
                         {"best_val_loss", summary.best_val_loss}, {"best_val_step", summary.best_val_step}};
      }
      // Every step up to a checkpoint is on disk before it: a trainer that resumes from it can
      // re-report them (workers/trainer_actor.cc) even after a crash of the machine.
      if (lead && ::fsync(::fileno(metrics)) != 0) {
        failure = Unavailable(metrics_path.string() + ": fsync failed");
        break;
      }
      // One process writes the whole checkpoint; every rank of a parallel job writes its part
      // (train/parallel.h), and the checkpoint is published before any rank goes on.
      if (par) {
        st = write_rank_checkpoint(*o.parallel, o.run_dir, step, *model, full_table, opt->moment_runs(),
                                   o.objective.get(), state, spec.keep_last, &summary.final_checkpoint);
      } else {
        st = write_training_checkpoint(o.run_dir, step, *model, opt->moment_runs(), o.objective.get(), state,
                                       spec.keep_last, &summary.final_checkpoint);
      }
      if (!st.ok()) {
        failure = st;
        break;
      }
      if (o.on_checkpoint && lead) o.on_checkpoint(step, summary.final_checkpoint);
    }
    if (summary.interrupted) break;
  }
  if (metrics != nullptr) std::fclose(metrics);
  if (!failure.ok()) return failure;
  summary.steps_done = step;
  summary.tokens = tokens_seen;
  summary.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
  if (!lead) return summary;
  MARIANA_RETURN_IF_ERROR(write_file_atomic((fs::path(o.run_dir) / "summary.json").string(),
                                            train_summary_json(summary).dump(2) + "\n"));
  return summary;
}

nlohmann::ordered_json train_summary_json(const TrainSummary& s) {
  auto loss = [](bool known, double v) { return known ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr); };
  nlohmann::ordered_json j;
  j["steps"] = s.steps_done;
  j["total_steps"] = s.total_steps;
  j["resumed_from"] = s.resumed_from;
  j["tokens"] = s.tokens;
  j["wall_s"] = s.wall_s;
  j["train_loss"] = loss(s.last.step > 0, s.last.loss);
  j["val_loss"] = loss(s.val_step > 0, s.val_loss);
  j["val_step"] = s.val_step;
  j["best_val_loss"] = loss(s.best_val_step > 0, s.best_val_loss);
  j["best_val_step"] = s.best_val_step;
  j["checkpoint"] = s.final_checkpoint;
  return j;
}

std::string train_summary_text(const TrainSummary& s) {
  char buf[512];
  std::string out;
  std::snprintf(buf, sizeof(buf), "summary: %lld/%lld steps%s, %lld tokens, %.1f s\n", (long long)s.steps_done,
                (long long)s.total_steps,
                s.resumed_from > 0 ? (" (resumed at step " + std::to_string(s.resumed_from) + ")").c_str() : "",
                (long long)s.tokens, s.wall_s);
  out += buf;
  if (s.last.step > 0) {
    std::snprintf(buf, sizeof(buf), "  train loss %.4f (main %.4f) at step %lld\n", s.last.loss, s.last.loss_main,
                  (long long)s.last.step);
    out += buf;
  }
  if (s.val_step > 0) {
    std::snprintf(buf, sizeof(buf), "  val loss %.4f at step %lld, best %.4f at step %lld\n", s.val_loss,
                  (long long)s.val_step, s.best_val_loss, (long long)s.best_val_step);
    out += buf;
  }
  out += "  checkpoint " + (s.final_checkpoint.empty() ? std::string("(none written)") : s.final_checkpoint) + "\n";
  return out;
}

}  // namespace mariana
