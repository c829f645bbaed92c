// The reward model: the backbone with a scalar linear head on the final normed hidden state at the
// last token of (prompt ⊕ response) in chat template form (encode_chat of a user turn and an
// assistant turn; the last token is the assistant's closing EOS), trained on preference pairs with
// the Bradley–Terry loss −log σ(r_chosen − r_rejected) (phase "rm", `mariana train rm.toml`). The
// head lives in each checkpoint directory as reward_head.safetensors ("reward_head.weight" [1, C],
// plus its AdamW moments). No bias: the BT loss depends only on reward differences.
// RewardModel scores (prompt, response) pairs from such a checkpoint.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/model.h"
#include "sft/sft_data.h"
#include "train/corpora.h"
#include "train/tokenizer.h"
#include "train/trainer.h"

namespace mariana {

constexpr const char* kRewardHeadFile = "reward_head.safetensors";
constexpr const char* kRewardHeadTensor = "reward_head.weight";

struct PreferencePair {
  std::string prompt, chosen, rejected;
};

// One pair per non-blank line: {"prompt": str, "chosen": str, "rejected": str}. NotFound for a
// missing file; InvalidArgument "<file>:<line>: ..." naming the field otherwise.
Result<std::vector<PreferencePair>> rm_read_preferences_jsonl(const std::string& path);
std::string rm_preference_json_line(const PreferencePair& p);

// The built-in arithmetic preference set: pair i asks problem i of the arithmetic chat set
// (arithmetic_chat_problem, training split); chosen = the correct worked answer; rejected = the
// same work with a wrong result, N replaced by N + d (d = ±1..±9, or ±10/±100 — a plausible
// slip, drawn from the pair's Philox stream) in the final "a op b = N" and "#### N" lines.
PreferencePair arithmetic_preference(uint64_t seed, int64_t index, const ArithmeticOptions& opt);
Status write_arithmetic_preference_jsonl(int64_t n, uint64_t seed, const ArithmeticOptions& opt,
                                         const std::string& path);

// The token ids the reward is read from: encode_chat({user: prompt}, {assistant: response}).ids.
std::vector<int32_t> rm_sequence(const Tokenizer& tok, const std::string& prompt, const std::string& response);

// The Bradley–Terry loss over P pairs, mean −log σ(r_c − r_r) with r = w · hidden[t] at each
// pair's last-token positions. hidden [T, C], w [C]. When not null: dhidden [T, C] gets
// d(loss)/d(hidden) written at the pairs' positions (other rows untouched, so zero it first) and
// dw [C] gets d(loss)/dw added. *accuracy (if not null): the fraction with r_c > r_r.
template <typename F>
double rm_bt_loss(const F* hidden, int64_t C, const F* w, const std::vector<SftLoader::PairEnds>& pairs,
                  F* dhidden, F* dw, double* accuracy);

// The rm phase's objective: the BT loss on the head over the model's final hidden states; the
// head (and its AdamW moments) is the extra trained parameter. Starts from the source
// checkpoint's reward_head.safetensors when there is one, else w = 0.
class RewardObjective : public TrainObjective {
 public:
  explicit RewardObjective(const JobSpec& spec);
  void set_source(const SftLoader* source) { source_ = source; }

  Status start(const Model<float>& model, const std::string& source_dir, const std::string& resume_dir) override;
  Status forward_backward(Model<float>& model, const Batch& batch, const LossWeights& w, ForwardResult* res) override;
  double extra_grad_norm() const override;
  void extra_scale_grads(double s) override;
  void extra_step(double lr) override;
  Status save(const std::string& checkpoint_dir) const override;
  nlohmann::ordered_json step_stats() const override;  // pairs, accuracy, mean margin

  const std::vector<float>& head() const { return w_; }

 private:
  Status load(const std::string& dir, int64_t C, bool with_moments);
  double beta1_, beta2_, eps_, weight_decay_;
  const SftLoader* source_ = nullptr;
  std::vector<float> w_, g_, m_, v_, dhidden_;
  int64_t t_ = 0;
  int64_t pairs_ = 0;
  double accuracy_ = 0, margin_ = 0;
};

// The trainer's data source for phase rm: data.preferences or the built-in arithmetic preference
// set (data.documents pairs from data.seed, written to run_dir/data/arithmetic-preference.jsonl),
// each pair's two sequences packed into one row (SftLoader::create_pairs). Hooks the objective up.
Result<std::unique_ptr<BatchSource>> rm_batch_source(const JobSpec& spec, const Tokenizer& tok, const std::string& run_dir,
                                                     RewardObjective* objective);

// train_run with the rm data source and objective plugged in (`mariana train` for phase "rm").
Result<TrainSummary> rm_train_run(TrainOptions opt);

// Scores (prompt, response) with a trained reward model checkpoint (model + tokenizer.json +
// reward_head.safetensors). Single-threaded use; one forward per call.
class RewardModel {
 public:
  static Result<RewardModel> load(const std::string& checkpoint_dir);
  Result<double> score(const std::string& prompt, const std::string& response);
  // Many at once, packed into rows of `seq_len` (default: the model's max_position_embeddings).
  Result<std::vector<double>> score_batch(const std::vector<std::pair<std::string, std::string>>& samples);

 private:
  RewardModel(std::unique_ptr<Model<float>> model, Tokenizer tok, std::vector<float> w)
      : model_(std::move(model)), tok_(std::move(tok)), w_(std::move(w)) {}
  std::unique_ptr<Model<float>> model_;
  Tokenizer tok_;
  std::vector<float> w_;
};

}  // namespace mariana
