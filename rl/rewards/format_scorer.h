// The format reward: does the response follow the required template — some reasoning, then one
// marked final-answer line, then nothing but whitespace? Checks the shape only, never whether the
// answer is right (that is math_scorer.h).
#pragma once

#include <regex>
#include <string>

#include <nlohmann/json.hpp>

#include "rl/rewards/reward.h"

namespace mariana::rl {

// The default answer line: "#### N" with N an integer or decimal, optionally signed, commas allowed.
inline constexpr const char* kFormatDefaultAnswerRegex =
    "####[ \\t]*(-|\xE2\x88\x92)?[0-9][0-9,]*(\\.[0-9]+)?";

// Options (JSON object, all optional):
//   "answer_regex": ECMAScript regex that the whole answer line (trailing whitespace removed) must
//                   match; default kFormatDefaultAnswerRegex;
//   "require_reasoning": a non-blank line must come before the answer line; default true.
// Reward 1 ("correct") or 0 ("bad format", the detail says which rule failed).
class FormatScorer : public RewardScorer {
 public:
  static Result<std::unique_ptr<RewardScorer>> create(const nlohmann::json& options);
  std::string name() const override { return "format"; }
  Result<RewardResult> score(const RewardSample& sample) override;

 private:
  FormatScorer(std::string pattern, std::regex answer_line, bool require_reasoning)
      : pattern_(std::move(pattern)), answer_line_(std::move(answer_line)), require_reasoning_(require_reasoning) {}
  std::string pattern_;
  std::regex answer_line_;
  bool require_reasoning_;
};

}  // namespace mariana::rl
