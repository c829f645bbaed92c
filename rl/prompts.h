// Where an RL job's prompts come from: the built-in arithmetic task (an endless stream of
// training-split problems, or a pool of the first N) or a JSONL dataset of math problems
// {"prompt", "answer"} or code problems {"prompt", "tests": [{"stdin", "stdout"}]}, one per line.
// A prompt set is indexed: prompt i of the run's stream is at(i), a pure function of the set, its
// seed and i, so a run's position in it is one integer (RL checkpoints store it) and any process
// drawing prompt i draws the same one. A dataset is walked in a fresh seeded order every epoch.
// Held-out accuracy on a dataset of the same format: eval_prompt_set.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/model.h"
#include "rl/arithmetic_task.h"
#include "rl/rewards/reward.h"
#include "train/corpora.h"
#include "train/tokenizer.h"

namespace mariana::rl {

// One prompt: the user turn and what its reward scorers check the response against.
struct RlProblem {
  std::string question;
  std::optional<std::string> answer;  // math
  std::vector<CodeTest> tests;        // code
};

class PromptSet {
 public:
  // Training-split arithmetic problems arithmetic_chat_problem(seed, i); pool > 0 cycles over the
  // first `pool` of them.
  static PromptSet arithmetic(uint64_t seed, const ArithmeticOptions& opt, int64_t pool);
  // A JSONL file; InvalidArgument naming the file, line and field for a malformed line, a line
  // with neither "answer" nor "tests" (or both), an empty prompt, or a file with no problem.
  // Blank lines are skipped. Epoch e visits every line once in the order seeded by (seed, e).
  static Result<PromptSet> jsonl(const std::string& path, uint64_t seed);

  RlProblem at(int64_t index) const;
  // A dataset's problem i in file order, 0 <= i < size().
  const RlProblem& row(int64_t i) const { return rows_.at(static_cast<size_t>(i)); }
  // Problems in the set: −1 for the endless arithmetic stream.
  int64_t size() const;
  bool is_arithmetic() const { return rows_.empty(); }

 private:
  uint64_t seed_ = 0;
  ArithmeticOptions arithmetic_;
  int64_t pool_ = 0;
  std::vector<RlProblem> rows_;
  mutable int64_t epoch_ = -1;            // the epoch whose order is cached
  mutable std::vector<int64_t> order_;
};

// chat: [BOS] [USER] question [ASSISTANT]; raw: [BOS] "Q: question\nA:" (arithmetic_prompt's forms).
std::vector<int32_t> rl_prompt_tokens(const Tokenizer& tok, const RlProblem& p, PromptFormat format);

// The sample a reward scorer judges: the question, the response, the answer or the tests.
RewardSample rl_reward_sample(const RlProblem& p, const std::string& response);

struct PromptEvalOptions {
  int64_t problems = 200;        // the first `problems` lines (fewer when the file has fewer)
  PromptFormat format = PromptFormat::kChat;
  int64_t max_new_tokens = 160;
  int64_t batch = 50;
};
struct PromptEvalResult {
  int64_t problems = 0, correct = 0;
  double accuracy = 0;
};
// Greedy decoding of the held-out problems in file order; a response is correct when `scorer`
// (the job's accuracy scorer: math, math_verify or code) accepts it.
Result<PromptEvalResult> eval_prompt_set(const Model<float>& model, const Tokenizer& tok, const PromptSet& set,
                                         RewardScorer& scorer, const PromptEvalOptions& opt);

}  // namespace mariana::rl
