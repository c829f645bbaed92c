// The format reward: reasoning, then exactly one answer line, nothing after it.
#include <gtest/gtest.h>

#include "rl/rewards/format_scorer.h"

namespace mariana::rl {
namespace {

struct Case {
  const char* response;
  bool ok;
  const char* detail_has;  // a substring of the detail when !ok
};

TEST(FormatScorer, DefaultTemplate) {
  auto s = FormatScorer::create(nlohmann::json::object());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const Case cases[] = {
      {"Q: 347 + 85 = ?\nA: 7 + 5 = 12, write 2, carry 1.\n347 + 85 = 432\n#### 432\n", true, ""},
      {"reasoning\n#### -12\n\n  \n", true, ""},
      {"reasoning\n#### 1,234.5", true, ""},
      {"reasoning\r\n#### 7\r\n", true, ""},
      {"reasoning\n#### \xE2\x88\x92" "3", true, ""},
      {"reasoning\n#### 432\nbye", false, "text after"},
      {"#### 432", false, "no reasoning"},
      {"\n\n#### 432", false, "no reasoning"},
      {"reasoning\nthe answer is 432", false, "no final answer line"},
      {"reasoning\n#### forty", false, "no final answer line"},
      {"reasoning\n#### 1\n#### 2", false, "2 answer lines"},
      {"", false, "empty"},
      {"reasoning\n   #### 5", false, "no final answer line"},  // the marker starts the line
  };
  for (const Case& c : cases) {
    RewardSample sample;
    sample.response = c.response;
    auto r = (*s)->score(sample);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->ok, c.ok) << c.response << " -> " << r->detail;
    EXPECT_EQ(r->reward, c.ok ? 1.0 : 0.0);
    EXPECT_EQ(r->reason, c.ok ? "correct" : "bad format") << c.response;
    if (!c.ok) {
      EXPECT_NE(r->detail.find(c.detail_has), std::string::npos) << c.response << " -> " << r->detail;
    }
  }
}

TEST(FormatScorer, ConfigurableRegexAndReasoning) {
  auto s = FormatScorer::create({{"answer_regex", "Answer: [A-D]"}, {"require_reasoning", false}});
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  RewardSample sample;
  sample.response = "Answer: C";
  EXPECT_TRUE((*s)->score(sample)->ok);
  sample.response = "Answer: E";
  EXPECT_FALSE((*s)->score(sample)->ok);
}

TEST(FormatScorer, BadOptionsAreErrors) {
  auto bad_regex = FormatScorer::create({{"answer_regex", "(unclosed"}});
  ASSERT_FALSE(bad_regex.ok());
  EXPECT_NE(bad_regex.status().message().find("answer_regex"), std::string::npos);
  auto unknown = FormatScorer::create({{"answer_rgx", "x"}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("answer_rgx"), std::string::npos);
  auto wrong_type = FormatScorer::create({{"require_reasoning", "yes"}});
  ASSERT_FALSE(wrong_type.ok());
  EXPECT_NE(wrong_type.status().message().find("require_reasoning"), std::string::npos);
}

}  // namespace
}  // namespace mariana::rl
