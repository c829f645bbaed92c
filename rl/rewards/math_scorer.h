// Rule-based math rewards: find the final answer in a response (the last \boxed{...}, else the
// number after the last answer marker) and compare it numerically with the reference. Every
// accepted form is listed in rl/rewards/README.md. Not a symbolic algebra checker: expressions
// other than numbers compare as normalised text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "rl/rewards/reward.h"

namespace mariana::rl {

// The final-answer text of a response: the contents of the last well-formed \boxed{...} (or
// \fbox{...}), nested braces allowed; otherwise the rest of the line after the last answer marker
// ("####", "The answer is", "Answer:", case-insensitive; the next non-empty line when the marker
// ends its line). nullopt when there is neither.
std::optional<std::string> math_extract_final_answer(const std::string& response);

// A number parsed from answer text. Exact (num/den, den > 0, reduced) when both fit in 64 bits;
// otherwise only `approx` is meaningful.
struct MathNumber {
  bool exact = false;
  int64_t num = 0;
  int64_t den = 1;
  long double approx = 0;
};

// The first number in the answer text after the last '=' and after normalisation (unicode minus,
// $, %, \text{}, \left/\right, LaTeX spacing, thousands separators): integers, decimals,
// scientific notation, a/b and \frac{a}{b} (\dfrac, \tfrac, \frac12), with a sign. nullopt if
// there is no number.
std::optional<MathNumber> math_parse_number(const std::string& text);

// The relative tolerance for numbers that are not exact: |a - b| <= kMathRelTol * max(|a|, |b|).
inline constexpr long double kMathRelTol = 1e-9L;

// Whether two numbers are equal: exactly when both are exact, within kMathRelTol otherwise.
bool math_numbers_equal(const MathNumber& a, const MathNumber& b);

// Whether an extracted answer matches the reference. The reference may itself be a full solution
// (its final answer is extracted the same way) or a bare value. Numeric when the reference holds
// exactly one number (after its last '='), else normalised text equality (whitespace, $, \text{},
// trailing period removed, lower case), so "x^2+1" is never equal to "x^2+3".
bool math_answers_match(const std::string& answer, const std::string& reference);

// Reward 1 when the final answer matches sample.answer ("correct"), else 0 with "no answer" or
// "wrong answer". No options.
class MathScorer : public RewardScorer {
 public:
  std::string name() const override { return "math"; }
  Status validate(const RewardSample& sample) const override;
  Result<RewardResult> score(const RewardSample& sample) override;
};

}  // namespace mariana::rl
