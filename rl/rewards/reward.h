// Reward scorers: one interface for every way a (prompt, response) pair earns a reward, a weighted
// composite of several, and a registry that builds them by name. The scorers themselves live in
// math_scorer.h, math_verify_scorer.h, format_scorer.h and code_scorer.h; a model-based scorer plugs in through
// ScorerRegistry::add. Not the GRPO advantage computation (rl/grpo*).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace mariana::rl {

// One stdin/stdout test case for a generated program.
struct CodeTest {
  std::string stdin_text;
  std::string expected_stdout;
};

struct RewardSample {
  std::string prompt;
  std::string response;
  std::optional<std::string> answer;  // reference answer (math)
  std::vector<CodeTest> tests;        // test cases (code)
};

// The success reason of every scorer.
inline constexpr const char* kReasonCorrect = "correct";

// A scored sample. A sample that earns nothing is a result, not an error: `ok` false, `reward`
// (usually 0) and a short `reason` from a fixed vocabulary — "wrong answer", "no answer",
// "bad format", "timeout", "memory", "sandbox violation", "runtime error", "output limit" —
// plus a free-text `detail` for humans. Errors (Status) are for the scorer itself failing, e.g. a
// code sandbox that cannot be isolated.
struct RewardResult {
  double reward = 0.0;
  bool ok = false;
  std::string reason;
  std::string detail;
  // For a composite: each part's own (unweighted) reward by scorer name, so logs can show
  // "mean reward and its parts". Empty for a single scorer.
  std::map<std::string, double> parts;
};

// {"reward", "ok", "reason", "detail"} plus "parts" when not empty.
nlohmann::json reward_result_to_json(const RewardResult& r);

// One JSONL line as a sample: {"prompt", "response", "answer"} (math; the answer a string or a
// number) or {"prompt", "response", "tests": [{"stdin", "stdout"}]} (code); other fields ignored.
// `where` ("file:line") prefixes the errors, which name the field. Without response_required (a
// prompt set for RL, whose responses are generated) "response" may be absent.
Result<RewardSample> reward_sample_parse(const std::string& text, const std::string& where,
                                         bool response_required = true);

class RewardScorer {
 public:
  virtual ~RewardScorer();
  virtual std::string name() const = 0;
  // InvalidArgument when the sample lacks what this scorer needs (math: an answer; code: tests).
  // Called by score(); callers that read many samples call it first to reject bad input early.
  virtual Status validate(const RewardSample& sample) const;
  virtual Result<RewardResult> score(const RewardSample& sample) = 0;
};

// reward = sum_i w_i * r_i over its parts; ok when every part is ok; reason and detail from the
// first part that is not ok ("format: bad format"); `parts` holds each r_i by the part's name (a
// name used twice gets "#2", "#3" suffixes).
class CompositeScorer : public RewardScorer {
 public:
  struct Part {
    double weight;
    std::unique_ptr<RewardScorer> scorer;
  };
  explicit CompositeScorer(std::vector<Part> parts);
  std::string name() const override;  // "composite(math*1+format*0.1)"
  Status validate(const RewardSample& sample) const override;
  Result<RewardResult> score(const RewardSample& sample) override;

 private:
  std::vector<Part> parts_;
  std::vector<std::string> keys_;  // unique per part
};

// Builds scorers by name from JSON options. with_builtins() knows "math", "math_verify",
// "format", "code" and "composite" ({"parts": [{"scorer": NAME, "weight": W, "options": {...}}, ...]}); more (the
// reward model) are added with add(). An unknown option key is an InvalidArgument naming it.
class ScorerRegistry {
 public:
  using Factory = std::function<Result<std::unique_ptr<RewardScorer>>(const nlohmann::json& options)>;

  static ScorerRegistry with_builtins();

  // AlreadyExists if the name is taken.
  Status add(const std::string& name, Factory factory);
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted, "composite" included
  // NotFound "unknown scorer 'x' (known: code, composite, format, math, math_verify)" for an unknown name.
  Result<std::unique_ptr<RewardScorer>> make(const std::string& name, const nlohmann::json& options) const;

 private:
  Result<std::unique_ptr<RewardScorer>> make_composite(const nlohmann::json& options) const;
  std::map<std::string, Factory> factories_;
};

// ScorerRegistry::with_builtins().make(name, options).
Result<std::unique_ptr<RewardScorer>> make_scorer(const std::string& name,
                                                  const nlohmann::json& options = nlohmann::json::object());

// InvalidArgument "field 'answer': the <scorer> scorer needs a reference answer" when the sample
// has none. For the validate() of scorers that compare with a reference (math, math_verify).
Status require_answer(const std::string& scorer, const RewardSample& sample);

// InvalidArgument "<who>: unknown option 'k' (known: a, b)" if `options` is not an object or has
// a key outside `known`. For scorer factories.
Status check_option_keys(const std::string& who, const nlohmann::json& options,
                         const std::vector<std::string>& known);

}  // namespace mariana::rl
