// RL prompt sets: the arithmetic stream and JSONL datasets; held-out accuracy on a dataset.
#include "rl/prompts.h"

#include <algorithm>
#include <fstream>
#include <random>

#include "model/inference/generate.h"
#include "sft/chat_template.h"
#include "sft/sft_data.h"

namespace mariana::rl {

PromptSet PromptSet::arithmetic(uint64_t seed, const ArithmeticOptions& opt, int64_t pool) {
  PromptSet s;
  s.seed_ = seed;
  s.arithmetic_ = opt;
  s.pool_ = pool;
  return s;
}

Result<PromptSet> PromptSet::jsonl(const std::string& path, uint64_t seed) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open the prompt set");
  PromptSet s;
  s.seed_ = seed;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(n);
    MARIANA_ASSIGN_OR_RETURN(RewardSample r, reward_sample_parse(line, where, /*response_required=*/false));
    if (r.prompt.empty()) return InvalidArgument(where + ": field 'prompt': expected a non-empty string");
    if (r.answer.has_value() == !r.tests.empty())
      return InvalidArgument(where + ": expected either field 'answer' (math) or field 'tests' (code)");
    s.rows_.push_back({std::move(r.prompt), std::move(r.answer), std::move(r.tests)});
  }
  if (s.rows_.empty()) return InvalidArgument(path + ": no problem in the prompt set");
  return s;
}

int64_t PromptSet::size() const { return rows_.empty() ? -1 : static_cast<int64_t>(rows_.size()); }

RlProblem PromptSet::at(int64_t index) const {
  if (rows_.empty()) {
    const ArithmeticProblem p = arithmetic_chat_problem(seed_, pool_ > 0 ? index % pool_ : index, arithmetic_);
    return {arithmetic_chat_question(p), std::to_string(p.answer), {}};
  }
  const int64_t n = static_cast<int64_t>(rows_.size());
  const int64_t epoch = index / n;
  if (epoch != epoch_) {  // Fisher–Yates with a generator seeded by (seed, epoch)
    order_.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order_[i] = i;
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch));
    for (int64_t i = n - 1; i > 0; --i) {
      const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
      std::swap(order_[i], order_[j]);
    }
    epoch_ = epoch;
  }
  return rows_[static_cast<size_t>(order_[static_cast<size_t>(index % n)])];
}

std::vector<int32_t> rl_prompt_tokens(const Tokenizer& tok, const RlProblem& p, PromptFormat format) {
  if (format == PromptFormat::kChat) return encode_generation_prompt(tok, p.question);
  std::vector<int32_t> ids = {tok.bos_id()};
  const auto body = tok.encode("Q: " + p.question + "\nA:");
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

RewardSample rl_reward_sample(const RlProblem& p, const std::string& response) {
  RewardSample s;
  s.prompt = p.question;
  s.response = response;
  s.answer = p.answer;
  s.tests = p.tests;
  return s;
}

Result<PromptEvalResult> eval_prompt_set(const Model<float>& model, const Tokenizer& tok, const PromptSet& set,
                                         RewardScorer& scorer, const PromptEvalOptions& opt) {
  if (set.is_arithmetic()) return InvalidArgument("eval_prompt_set: expects a dataset (arithmetic has eval_arithmetic)");
  if (opt.problems <= 0 || opt.batch <= 0) return InvalidArgument("eval_prompt_set: problems and batch must be > 0");
  InferenceEngine<float> engine(model);
  PromptEvalResult res;
  const int64_t total = std::min(opt.problems, set.size());
  // File order (row(), not at(), which shuffles): the held-out set's first `total` problems.
  for (int64_t start = 0; start < total; start += opt.batch) {
    const int64_t n = std::min(opt.batch, total - start);
    std::vector<GenerateRequest> reqs;
    for (int64_t i = 0; i < n; ++i) {
      GenerateRequest r;
      r.prompt = rl_prompt_tokens(tok, set.row(start + i), opt.format);
      r.max_new_tokens = opt.max_new_tokens;
      r.stop_tokens = {tok.eos_id()};
      reqs.push_back(std::move(r));
    }
    MARIANA_ASSIGN_OR_RETURN(std::vector<GenerateResult> out, generate(engine, reqs, GenerateOptions{}));
    for (int64_t i = 0; i < n; ++i) {
      MARIANA_ASSIGN_OR_RETURN(RewardResult rr, scorer.score(rl_reward_sample(set.row(start + i), tok.decode(out[i].tokens))));
      res.correct += rr.ok ? 1 : 0;
    }
    res.problems += n;
  }
  res.accuracy = res.problems > 0 ? static_cast<double>(res.correct) / static_cast<double>(res.problems) : 0.0;
  return res;
}

}  // namespace mariana::rl
