// The built-in arithmetic task for evaluation and RL: prompts from arithmetic problems (chat form
// for SFT/RL models, raw "Q: ... = ?\nA:" form for pretrained ones), and held-out accuracy with
// greedy decoding, judged by the rule-based math scorer against the problem's answer. Evaluation
// draws only held-out problems (train/corpora.h ArithmeticSplit::kHeldOut), which no training
// corpus, SFT set or RL prompt set contains.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/model.h"
#include "train/corpora.h"
#include "train/tokenizer.h"

namespace mariana::rl {

enum class PromptFormat { kChat, kRaw };
// "chat" | "raw"; InvalidArgument otherwise.
Result<PromptFormat> prompt_format_parse(const std::string& name);

// chat: [BOS] [USER] "347 + 85 = ?" [ASSISTANT];  raw: [BOS] "Q: 347 + 85 = ?\nA:".
std::vector<int32_t> arithmetic_prompt(const Tokenizer& tok, const ArithmeticProblem& p, PromptFormat format);

struct ArithmeticEvalOptions {
  int64_t problems = 200;
  uint64_t seed = 20261129;
  ArithmeticOptions arithmetic;  // digits and operators; the split is always held-out
  PromptFormat format = PromptFormat::kChat;
  int64_t max_new_tokens = 160;
  int64_t batch = 50;            // requests decoded together
  int64_t examples = 3;          // (prompt, response) pairs kept for the report
  // Sampling instead of greedy decoding: `samples` responses per problem at `temperature`
  // (Philox stream seeded by sample_seed and the request); accuracy is then the mean over all
  // responses (pass@1 at that temperature) and pass_at_k the share of problems with one right.
  int64_t samples = 1;
  double temperature = 0;
  uint64_t sample_seed = 1;
  bool keep_responses = false;   // fill ArithmeticEvalResult::responses
};

struct ArithmeticEvalResponse {
  std::string question, answer, response;
  bool correct = false;
};

struct ArithmeticEvalResult {
  int64_t problems = 0, correct = 0;   // correct: over problems x samples responses
  int64_t samples = 1;
  double accuracy = 0;                  // correct / (problems x samples)
  int64_t solved = 0;                   // problems with at least one correct response
  double pass_at_k = 0;                 // solved / problems (k = samples)
  std::map<std::string, std::pair<int64_t, int64_t>> by_op;  // op -> (correct, total)
  double seconds = 0;
  std::vector<std::string> examples;
  std::vector<ArithmeticEvalResponse> responses;  // every response, when keep_responses
};

// Greedy decoding (or sampling, see above) of each held-out problem; correct when the math scorer accepts the response's
// final answer ("#### N" and the other forms rl/rewards/README.md lists).
Result<ArithmeticEvalResult> eval_arithmetic(const Model<float>& model, const Tokenizer& tok,
                                             const ArithmeticEvalOptions& opt);

}  // namespace mariana::rl
