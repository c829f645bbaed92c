// The reward model: preference data, the Bradley–Terry objective on a scalar head, scoring.
#include "sft/reward_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/file_util.h"
#include "core/json_util.h"
#include "core/philox.h"
#include "core/safetensors.h"
#include "model/checkpoint.h"
#include "train/run_checkpoints.h"

namespace mariana {

namespace fs = std::filesystem;

namespace {

constexpr uint64_t kPreferenceStream = 0x5246'0000;  // "RF": the wrong-answer draws

Result<PreferencePair> parse_preference_line(const std::string& line, const std::string& where) {
  MARIANA_ASSIGN_OR_RETURN(JsonFields f, JsonFields::parse_object(line, where));
  PreferencePair p;
  MARIANA_ASSIGN_OR_RETURN(p.prompt, f.get_string("prompt"));
  MARIANA_ASSIGN_OR_RETURN(p.chosen, f.get_string("chosen"));
  MARIANA_ASSIGN_OR_RETURN(p.rejected, f.get_string("rejected"));
  if (p.chosen == p.rejected) return InvalidArgument(where + ": field 'rejected': identical to 'chosen'");
  return p;
}

// log(1 + e^x) without overflow.
double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }

template <typename F>
double dot(const F* a, const F* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

}  // namespace

Result<std::vector<PreferencePair>> rm_read_preferences_jsonl(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  std::vector<PreferencePair> out;
  size_t start = 0;
  int64_t line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    MARIANA_ASSIGN_OR_RETURN(PreferencePair p, parse_preference_line(line, path + ":" + std::to_string(line_no)));
    out.push_back(std::move(p));
  }
  if (out.empty()) return InvalidArgument(path + ": no preference pairs");
  return out;
}

std::string rm_preference_json_line(const PreferencePair& p) {
  return nlohmann::ordered_json{{"prompt", p.prompt}, {"chosen", p.chosen}, {"rejected", p.rejected}}.dump();
}

PreferencePair arithmetic_preference(uint64_t seed, int64_t index, const ArithmeticOptions& opt) {
  MARIANA_CHECK(opt.teacher_slip == 0);  // chosen = the correct worked solution
  const ArithmeticProblem prob = arithmetic_chat_problem(seed, index, opt);
  const auto msgs = arithmetic_chat_messages(prob);
  PreferencePair p{msgs[0].content, msgs[1].content, ""};
  // The last two lines are "a op b = N" and "#### N"; redo them with a wrong N.
  const std::string tail = " = " + std::to_string(prob.answer) + "\n#### " + std::to_string(prob.answer);
  MARIANA_CHECK(p.chosen.size() >= tail.size() && p.chosen.compare(p.chosen.size() - tail.size(), tail.size(), tail) == 0);
  PhiloxStream rng(seed, kPreferenceStream + static_cast<uint64_t>(index));
  const uint32_t k = rng.next_u32() % 11;  // 0..8: 1..9, 9: 10, 10: 100
  const int64_t mag = k < 9 ? static_cast<int64_t>(k) + 1 : (k == 9 ? 10 : 100);
  const int64_t wrong = prob.answer + ((rng.next_u32() & 1) ? mag : -mag);
  p.rejected = p.chosen.substr(0, p.chosen.size() - tail.size()) + " = " + std::to_string(wrong) + "\n#### " +
               std::to_string(wrong);
  return p;
}

Status write_arithmetic_preference_jsonl(int64_t n, uint64_t seed, const ArithmeticOptions& opt, const std::string& path) {
  if (n <= 0) return InvalidArgument("arithmetic-preference: the number of pairs must be positive, got " + std::to_string(n));
  CorpusOptions co;
  co.arithmetic = opt;
  MARIANA_RETURN_IF_ERROR(corpus_options_validate(co));
  if (opt.teacher_slip != 0)
    return InvalidArgument("arithmetic-preference: teacher_slip must be 0 (the chosen answers are the correct worked "
                           "solutions), got " + std::to_string(opt.teacher_slip));
  std::string out;
  for (int64_t i = 0; i < n; ++i) out += rm_preference_json_line(arithmetic_preference(seed, i, opt)) + "\n";
  return write_file_atomic(path, out);
}

std::vector<int32_t> rm_sequence(const Tokenizer& tok, const std::string& prompt, const std::string& response) {
  return encode_chat(tok, {{"user", prompt}, {"assistant", response}}).value().ids;  // always a valid chat
}

template <typename F>
double rm_bt_loss(const F* hidden, int64_t C, const F* w, const std::vector<SftLoader::PairEnds>& pairs,
                  F* dhidden, F* dw, double* accuracy) {
  if (pairs.empty()) {
    if (accuracy != nullptr) *accuracy = 0;
    return 0;
  }
  const double inv = 1.0 / static_cast<double>(pairs.size());
  double loss = 0;
  int64_t right = 0;
  for (const auto& pr : pairs) {
    const F* hc = hidden + pr.first * C;
    const F* hr = hidden + pr.second * C;
    const double margin = dot(w, hc, C) - dot(w, hr, C);
    loss += softplus(-margin) * inv;  // −log σ(margin)
    right += margin > 0;
    // d(loss)/d(margin) = −σ(−margin)/P; margin = w·h_c − w·h_r.
    const double dm = -sigmoid(-margin) * inv;
    if (dhidden != nullptr) {
      F* dc = dhidden + pr.first * C;
      F* dr = dhidden + pr.second * C;
      for (int64_t i = 0; i < C; ++i) {
        dc[i] += static_cast<F>(dm * static_cast<double>(w[i]));
        dr[i] -= static_cast<F>(dm * static_cast<double>(w[i]));
      }
    }
    if (dw != nullptr) {
      for (int64_t i = 0; i < C; ++i) dw[i] += static_cast<F>(dm * (static_cast<double>(hc[i]) - static_cast<double>(hr[i])));
    }
  }
  if (accuracy != nullptr) *accuracy = static_cast<double>(right) * inv;
  return loss;
}

template double rm_bt_loss<float>(const float*, int64_t, const float*, const std::vector<SftLoader::PairEnds>&, float*,
                                  float*, double*);
template double rm_bt_loss<double>(const double*, int64_t, const double*, const std::vector<SftLoader::PairEnds>&,
                                   double*, double*, double*);

// ---- RewardObjective ----

RewardObjective::RewardObjective(const JobSpec& spec)
    : beta1_(spec.beta1), beta2_(spec.beta2), eps_(spec.eps), weight_decay_(spec.weight_decay) {}

Status RewardObjective::load(const std::string& dir, int64_t C, bool with_moments) {
  const std::string path = (fs::path(dir) / kRewardHeadFile).string();
  MARIANA_ASSIGN_OR_RETURN(SafetensorsFile sf, SafetensorsFile::open(path));
  auto read = [&](const std::string& name, std::vector<float>* out) -> Status {
    const SafetensorsEntry* e = sf.find(name);
    if (e == nullptr || e->dtype != DType::kF32 || e->shape != std::vector<int64_t>{1, C})
      return DataLoss(path + ": tensor '" + name + "' missing or not f32 [1, " + std::to_string(C) + "]");
    const Tensor t = sf.view(*e);
    out->assign(t.data_as<float>(), t.data_as<float>() + C);
    return Status::Ok();
  };
  MARIANA_RETURN_IF_ERROR(read(kRewardHeadTensor, &w_));
  if (!with_moments) return Status::Ok();
  MARIANA_RETURN_IF_ERROR(read(std::string("exp_avg.") + kRewardHeadTensor, &m_));
  MARIANA_RETURN_IF_ERROR(read(std::string("exp_avg_sq.") + kRewardHeadTensor, &v_));
  const auto it = sf.metadata().find("optimizer_steps");
  if (it == sf.metadata().end()) return DataLoss(path + ": metadata 'optimizer_steps' missing");
  try {
    t_ = std::stoll(it->second);
  } catch (const std::exception&) {
    return DataLoss(path + ": metadata 'optimizer_steps' is not an integer");
  }
  return Status::Ok();
}

Status RewardObjective::start(const Model<float>& model, const std::string& source_dir, const std::string& resume_dir) {
  const int64_t C = model.config().hidden_size;
  w_.assign(C, 0.0f);
  g_.assign(C, 0.0f);
  m_.assign(C, 0.0f);
  v_.assign(C, 0.0f);
  t_ = 0;
  if (!resume_dir.empty()) return load(resume_dir, C, /*with_moments=*/true);
  // Starting from a reward model (a further rm phase): its head, fresh moments.
  if (!source_dir.empty() && fs::exists(fs::path(source_dir) / kRewardHeadFile)) return load(source_dir, C, false);
  return Status::Ok();
}

Status RewardObjective::forward_backward(Model<float>& model, const Batch& batch, const LossWeights& w,
                                         ForwardResult* res) {
  MARIANA_CHECK(source_ != nullptr);
  LossWeights lw = w;
  lw.mtp_weight = 0;  // no next-token loss at all: every target is −1, and MTP is skipped
  MARIANA_RETURN_IF_ERROR(model.forward(batch, lw, res));
  const int64_t C = model.config().hidden_size, T = model.tokens();
  dhidden_.assign(static_cast<size_t>(T * C), 0.0f);
  std::fill(g_.begin(), g_.end(), 0.0f);
  const auto& pairs = source_->last_pairs();
  const double bt = rm_bt_loss(model.final_hidden(), C, w_.data(), pairs, dhidden_.data(), g_.data(), &accuracy_);
  margin_ = 0;
  for (const auto& pr : pairs) {
    margin_ += dot(w_.data(), model.final_hidden() + pr.first * C, C) - dot(w_.data(), model.final_hidden() + pr.second * C, C);
  }
  pairs_ = static_cast<int64_t>(pairs.size());
  if (pairs_ > 0) margin_ /= static_cast<double>(pairs_);
  model.backward_custom(nullptr, dhidden_.data());
  res->loss_main = bt;
  res->loss = bt + lw.balance_alpha * res->loss_balance;
  return Status::Ok();
}

double RewardObjective::extra_grad_norm() const { return std::sqrt(dot(g_.data(), g_.data(), static_cast<int64_t>(g_.size()))); }

void RewardObjective::extra_scale_grads(double s) {
  for (float& g : g_) g *= static_cast<float>(s);
}

void RewardObjective::extra_step(double lr) {
  // AdamW as train/optimizer.cc's (decoupled decay: the head is a matrix).
  ++t_;
  const double bc1 = 1.0 - std::pow(beta1_, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(beta2_, static_cast<double>(t_));
  const float b1 = static_cast<float>(beta1_), b2 = static_cast<float>(beta2_);
  const float step_size = static_cast<float>(lr / bc1), inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float decay = static_cast<float>(1.0 - lr * weight_decay_), eps = static_cast<float>(eps_);
  for (size_t i = 0; i < w_.size(); ++i) {
    m_[i] = b1 * m_[i] + (1.0f - b1) * g_[i];
    v_[i] = b2 * v_[i] + (1.0f - b2) * g_[i] * g_[i];
    w_[i] = w_[i] * decay - step_size * m_[i] / (std::sqrt(v_[i]) * inv_sqrt_bc2 + eps);
  }
}

Status RewardObjective::save(const std::string& dir) const {
  const std::vector<int64_t> shape = {1, static_cast<int64_t>(w_.size())};
  auto view = [&](const std::vector<float>& v) { return Tensor::view(const_cast<float*>(v.data()), DType::kF32, shape); };
  return safetensors_write((fs::path(dir) / kRewardHeadFile).string(),
                           {{kRewardHeadTensor, view(w_)},
                            {std::string("exp_avg.") + kRewardHeadTensor, view(m_)},
                            {std::string("exp_avg_sq.") + kRewardHeadTensor, view(v_)}},
                           {{"optimizer_steps", std::to_string(t_)}});
}

nlohmann::ordered_json RewardObjective::step_stats() const {
  return {{"pairs", pairs_}, {"accuracy", accuracy_}, {"margin", margin_}};
}

// ---- The rm phase ----

Result<std::unique_ptr<BatchSource>> rm_batch_source(const JobSpec& spec, const Tokenizer& tok, const std::string& run_dir,
                                                     RewardObjective* objective) {
  MARIANA_ASSIGN_OR_RETURN(const std::string path, sft_job_data_file(spec, spec.data_preferences, run_dir, "arithmetic-preference",
                                                                     &write_arithmetic_preference_jsonl));
  MARIANA_ASSIGN_OR_RETURN(auto prefs, rm_read_preferences_jsonl(path));
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> pairs;
  for (const PreferencePair& p : prefs) pairs.emplace_back(rm_sequence(tok, p.prompt, p.chosen), rm_sequence(tok, p.prompt, p.rejected));
  MARIANA_ASSIGN_OR_RETURN(SftLoader loader, SftLoader::create_pairs(std::move(pairs), sft_job_loader_options(spec, tok)));
  std::fprintf(stderr, "rm data %s: %lld pairs, %lld skipped (both sequences longer than seq_len %lld)\n", path.c_str(),
               (long long)loader.num_samples(), (long long)loader.skipped(), (long long)spec.seq_len);
  auto out = std::make_unique<SftLoader>(std::move(loader));
  objective->set_source(out.get());
  return std::unique_ptr<BatchSource>(std::move(out));
}

Result<TrainSummary> rm_train_run(TrainOptions opt) {
  opt.spec.mtp_weight = opt.spec.mtp_weight_after = 0;  // no MTP in this phase (so the metrics say 0)
  auto objective = std::make_shared<RewardObjective>(opt.spec);
  opt.objective = objective;
  // No held-out split: job_spec_parse refuses eval.* for this phase.
  opt.data_source = [objective](const JobSpec& spec, const Tokenizer& tok, const std::string& run_dir, DataSplit) {
    return rm_batch_source(spec, tok, run_dir, objective.get());
  };
  return train_run(opt);
}

// ---- RewardModel ----

Result<RewardModel> RewardModel::load(const std::string& path) {
  std::string dir = path;
  if (!fs::exists(fs::path(dir) / "config.json")) {
    MARIANA_ASSIGN_OR_RETURN(dir, latest_valid_checkpoint(path));
  }
  MARIANA_ASSIGN_OR_RETURN(auto ck, checkpoint_load<float>(dir));
  MARIANA_ASSIGN_OR_RETURN(Tokenizer tok, Tokenizer::load((fs::path(dir) / "tokenizer.json").string()));
  if (!fs::exists(fs::path(dir) / kRewardHeadFile)) return NotFound(dir + ": no " + kRewardHeadFile + " (not a reward model)");
  auto model = std::make_unique<Model<float>>(std::move(ck.model));
  RewardObjective head{JobSpec{}};
  MARIANA_RETURN_IF_ERROR(head.start(*model, dir, ""));  // loads the head
  return RewardModel(std::move(model), std::move(tok), head.head());
}

Result<std::vector<double>> RewardModel::score_batch(const std::vector<std::pair<std::string, std::string>>& samples) {
  std::vector<std::vector<int32_t>> seqs;
  int64_t S = 1;
  for (const auto& [prompt, response] : samples) {
    seqs.push_back(rm_sequence(tok_, prompt, response));
    S = std::max<int64_t>(S, static_cast<int64_t>(seqs.back().size()));
  }
  if (S > model_->config().max_position_embeddings) {
    return InvalidArgument("reward model: a sample has " + std::to_string(S) + " tokens, more than the model's " +
                           std::to_string(model_->config().max_position_embeddings));
  }
  // One sample per row, right-padded (the padding is its own document); read at the last token.
  Batch b;
  b.B = static_cast<int64_t>(seqs.size());
  b.S = S;
  b.tokens.assign(static_cast<size_t>(b.B * S), tok_.pad_id());
  b.targets.assign(static_cast<size_t>(b.B * S), -1);
  b.doc_start.assign(static_cast<size_t>(b.B * S), 0);
  for (int64_t r = 0; r < b.B; ++r) {
    const int64_t L = static_cast<int64_t>(seqs[r].size());
    std::copy(seqs[r].begin(), seqs[r].end(), b.tokens.begin() + r * S);
    for (int64_t i = L; i < S; ++i) b.doc_start[r * S + i] = static_cast<int32_t>(L);
  }
  LossWeights lw;
  lw.mtp_weight = 0;
  ForwardResult res;
  MARIANA_RETURN_IF_ERROR(model_->forward(b, lw, &res));
  const int64_t C = model_->config().hidden_size;
  std::vector<double> out;
  for (int64_t r = 0; r < b.B; ++r) {
    const int64_t t = r * S + static_cast<int64_t>(seqs[r].size()) - 1;
    out.push_back(dot(w_.data(), model_->final_hidden() + t * C, C));
  }
  return out;
}

Result<double> RewardModel::score(const std::string& prompt, const std::string& response) {
  MARIANA_ASSIGN_OR_RETURN(auto v, score_batch({{prompt, response}}));
  return v[0];
}

}  // namespace mariana
