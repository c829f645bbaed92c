// Rule-based math rewards: find the final answer in a response (the last \boxed{...}, else the
// number after the last answer marker) and compare it as an exact rational with the reference. Every
// accepted form is listed in rl/rewards/README.md. Not a symbolic algebra checker: expressions
// other than numbers compare as normalised text (the math_verify scorer, math_verify_scorer.h, is).
#pragma once

#include <optional>
#include <string>

#include <gmpxx.h>

#include "rl/rewards/reward.h"

namespace mariana::rl {

// The final-answer text of a response: the contents of the last well-formed \boxed{...} (or
// \fbox{...}), nested braces allowed; otherwise the rest of the line after the last answer marker
// ("####", "The answer is", "Answer:", case-insensitive; the next non-empty line when the marker
// ends its line). nullopt when there is neither.
std::optional<std::string> math_extract_final_answer(const std::string& response);

// A number parsed from answer text: an exact rational (GMP, canonical: reduced, den > 0) of any
// size. Every accepted form (integer, decimal, scientific notation, fraction) is a rational, so
// there is no tolerance anywhere: 0.333 is not 1/3, and two 23-digit integers that differ by 1 differ.
struct MathNumber {
  mpq_class value;
};

// The first number in the answer text after the last '=' and after normalisation (unicode minus,
// $, %, \text{}, \left/\right, LaTeX spacing, thousands separators): integers, decimals,
// scientific notation, a/b and \frac{a}{b} (\dfrac, \tfrac, \frac12), with a sign. nullopt if
// there is no number.
std::optional<MathNumber> math_parse_number(const std::string& text);

// Whether two numbers are equal (exact rational equality).
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
