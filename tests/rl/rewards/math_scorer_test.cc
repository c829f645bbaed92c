// The rule-based math checker: one table row (or more) per accepted form of rl/rewards/README.md,
// equal and not equal, then final-answer extraction and the scorer's rewards and reasons.
#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "rl/rewards/math_scorer.h"

namespace mariana::rl {
namespace {

struct Pair {
  const char* answer;
  const char* reference;
  bool equal;
};

// U+2212 MINUS SIGN, as a model may print it.
#define UMINUS "\xE2\x88\x92"

const Pair kPairs[] = {
    // integers and signs
    {"42", "42", true}, {"42", "43", false}, {"-7", "-7", true}, {"-7", "7", false}, {"+7", "7", true},
    {"007", "7", true}, {UMINUS "5", "-5", true}, {UMINUS "5", "5", false}, {"0", "-0", true},
    {"- 3", "-3", true},
    // decimals
    {"3.14", "3.14", true}, {"3.140", "3.14", true}, {"3.14", "3.15", false}, {".5", "0.5", true},
    {"2.0", "2", true}, {"0.0", "0", true}, {"0.1", "0.10000000001", false},
    // fractions, exact against decimals
    {"0.5", "1/2", true}, {"1/2", "2/4", true}, {"1 / 2", "0.5", true}, {"3/4", "4/3", false},
    {"0.333", "1/3", false}, {"-6/4", "-1.5", true}, {"1/0", "1", false},
    {"\\frac{1}{2}", "0.5", true}, {"\\dfrac{3}{4}", "0.75", true}, {"\\tfrac{3}{4}", "3/4", true},
    {"\\frac12", "1/2", true}, {"-\\frac{1}{2}", "-0.5", true}, {"\\frac{-1}{2}", "-1/2", true},
    {"\\frac{1}{3}", "0.3333333333", false}, {"\\frac{2.5}{5}", "1/2", true}, {"\\frac{1}{2}", "\\frac{2}{3}", false},
    // thousands separators
    {"1,234", "1234", true}, {"1,234,567", "1234567", true}, {"1,234.5", "1234.5", true},
    {"1{,}234", "1234", true}, {"1\\,234", "1234", true}, {"1,234", "1235", false}, {"12,34", "1234", false},
    // surrounding text, units, $, %, trailing period
    {"42 apples", "42", true}, {"x = 5", "5", true}, {"$5", "5", true}, {"\\$5.00", "5", true},
    {"50%", "50", true}, {"50\\%", "50", true}, {"12 \\text{ cm}", "12", true}, {"\\text{12 cm}", "12", true},
    {"42.", "42", true}, {"The total is 42.", "42", true}, {"$\\frac{7}{2}$", "3.5", true},
    {"\\left(5\\right)", "5", true}, {"\\textbf{17}", "17", true}, {"about 41 apples", "42", false},
    {"12 + 30 = 42", "42", true}, {"5 = 4", "5", false},
    // scientific notation
    {"1e3", "1000", true}, {"1.5e-3", "0.0015", true}, {"2e3", "200", false}, {"3E2", "300", true},
    // beyond 18 digits: exact rationals, no tolerance
    {"3.14159265358979323846", "3.14159265358979323846", true},
    {"3.14159265358979323846", "3.14159265358979323847", false},
    {"12345678901234567890", "12345678901234567891", false},
    {"12345678901234567890123", "12345678901234567890124", false},
    {"12345678901234567890123", "12345678901234567890123", true},
    {"12,345,678,901,234,567,890,123", "12345678901234567890123", true},
    {"+12345678901234567890123", "12345678901234567890123", true},
    {"1.2345678901234567890123e22", "12345678901234567890123", true},
    {"1.2345678901234567890124e22", "12345678901234567890123", false},
    {"-12345678901234567890123", "12345678901234567890123", false},
    {"\\frac{24691357802469135780246}{2}", "12345678901234567890123", true},
    {"1e30", "1.1e30", false}, {"1e30", "1000000000000000000000000000000", true},
    {"1e-30", "0.000000000000000000000000000001", true}, {"1e-30", "1e-31", false},
    // the reference as a full solution
    {"72", "She sold 48 + 24 = 72 clips.\n#### 72", true}, {"72", "\\boxed{72}", true},
    {"71", "#### 72", false},
    // non-numeric references: normalised text
    {"A", "A", true}, {"\\text{B}", "b", true}, {"A", "B", false}, {"x^2+1", "x^2 + 1", true},
    {"x^2+3", "x^2+1", false}, {"(1, 2)", "(1,2)", true},
    {"five", "5", false},
};

TEST(MathAnswers, TableOfPairs) {
  EXPECT_GE(sizeof(kPairs) / sizeof(kPairs[0]), 50u);
  for (const Pair& p : kPairs)
    EXPECT_EQ(math_answers_match(p.answer, p.reference), p.equal)
        << "answer '" << p.answer << "' vs reference '" << p.reference << "'";
}

TEST(MathAnswers, ParsesExactRationals) {
  auto n = math_parse_number("\\frac{6}{-4}");
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(n->value, mpq_class(-3, 2));
  auto big = math_parse_number("123456789012345678901");
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(n->value.get_den(), 2);
  EXPECT_EQ(big->value, mpq_class("123456789012345678901"));
  auto dec = math_parse_number("-1,234.5e-2");
  ASSERT_TRUE(dec.has_value());
  EXPECT_EQ(dec->value, mpq_class(-2469, 200));  // -12.345, reduced
  EXPECT_FALSE(math_parse_number("no digits here").has_value());
}

struct Extract {
  const char* response;
  std::optional<std::string> expected;
};

TEST(MathAnswers, ExtractsTheFinalAnswer) {
  const Extract cases[] = {
      {"Q: 347 + 85 = ?\nA: Add the digits.\n347 + 85 = 432\n#### 432\n", "432"},
      {"so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"},
      {"\\boxed{{1}+{2}}", "{1}+{2}"},
      {"first \\boxed{1}, then \\boxed{2}", "2"},
      {"\\boxed{3}\n#### 4", "3"},  // a \boxed{} wins over markers
      {"\\boxed{12", std::nullopt},   // unbalanced and no marker
      {"\\boxed{12\nThe answer is 13", "13"},
      {"The answer is 7.", "7."},
      {"the ANSWER IS: 8", ": 8"},
      {"Answer: 12", "12"},
      {"Final answer:\n\n 9 \n", "9"},
      {"#### 1\nmore text\n#### 2", "2"},
      {"no answer here, only 5 and 6", std::nullopt},
      {"#### ", std::nullopt},
      {"\\fbox{5}", "5"},
  };
  for (const Extract& c : cases) EXPECT_EQ(math_extract_final_answer(c.response), c.expected) << c.response;
}

TEST(MathScorer, RewardsAndReasons) {
  MathScorer s;
  RewardSample sample;
  sample.response = "347 + 85 = 432\n#### 432";
  sample.answer = "432";
  auto r = s.score(sample);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->reward, 1.0);
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->reason, "correct");

  sample.response = "#### 431";
  r = s.score(sample);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->reward, 0.0);
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->reason, "wrong answer");
  EXPECT_NE(r->detail.find("431"), std::string::npos) << r->detail;

  sample.response = "I think it is 432";
  r = s.score(sample);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->reward, 0.0);
  EXPECT_EQ(r->reason, "no answer");

  sample.answer.reset();
  r = s.score(sample);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("answer"), std::string::npos);
}

}  // namespace
}  // namespace mariana::rl
