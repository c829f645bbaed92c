// The code scorer end to end: extraction, comparison, and every hostile program reported as a
// failed sample with its reason — never a crash or an error.
#include <gtest/gtest.h>

#include "rl/rewards/code_scorer.h"

namespace mariana::rl {
namespace {

std::unique_ptr<RewardScorer> scorer() {
  auto s = CodeScorer::create({{"timeout_s", 2}, {"memory_mb", 256}, {"max_processes", 16}});
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return std::move(s).value();
}

RewardSample sample(const std::string& response, std::vector<CodeTest> tests) {
  RewardSample s;
  s.prompt = "Read two integers and print their sum.";
  s.response = response;
  s.tests = std::move(tests);
  return s;
}

const std::vector<CodeTest> kSumTests = {{"1 2\n", "3\n"}, {"10 -4\n", "6"}, {"0 0", "0\n"}};

TEST(CodeExtract, FencedBlockOrWholeResponse) {
  EXPECT_EQ(code_extract_program("Here:\n```python\nprint(1)\n```\ndone"), "print(1)\n");
  EXPECT_EQ(code_extract_program("```py\nA\n```\n```python3\nB\n```"), "B\n");  // the last block
  EXPECT_EQ(code_extract_program("```python\nprint(2)"), "print(2)");          // unterminated
  EXPECT_EQ(code_extract_program("print(3)\n"), "print(3)\n");
  EXPECT_EQ(code_extract_program("```pyth\nx\n```"), "```pyth\nx\n```");  // not a python fence
}

TEST(CodeCompare, TrailingWhitespaceAndLineEndings) {
  EXPECT_TRUE(code_outputs_match("3\n", "3"));
  EXPECT_TRUE(code_outputs_match("a  \r\nb\n\n\n", "a\nb"));
  EXPECT_FALSE(code_outputs_match("3 4", "3  4"));
  EXPECT_FALSE(code_outputs_match("\n3", "3"));
}

TEST(CodeScorer, CorrectProgramPasses) {
  auto s = scorer();
  auto r = s->score(sample("```python\na, b = map(int, input().split())\nprint(a + b)\n```", kSumTests));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->reward, 1.0);
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->reason, "correct");
}

TEST(CodeScorer, WrongProgramGetsTheFractionPassed) {
  auto s = scorer();
  // Right only when b is 0 or positive... i.e. prints a + abs(b).
  auto r = s->score(sample("a, b = map(int, input().split())\nprint(a + abs(b))\n", kSumTests));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_NEAR(r->reward, 2.0 / 3.0, 1e-12);
  EXPECT_FALSE(r->ok);
  EXPECT_EQ(r->reason, "wrong answer");
  EXPECT_NE(r->detail.find("test 2/3"), std::string::npos) << r->detail;
}

struct Hostile {
  const char* name;
  const char* program;
  const char* reason;
};

TEST(CodeScorer, HostileProgramsAreFailedSamplesWithTheirReason) {
  auto s = scorer();
  const Hostile cases[] = {
      {"infinite loop", "while True:\n    pass\n", "timeout"},
      {"memory bomb", "a = []\nwhile True:\n    a.append(bytearray(10**7))\n", "memory"},
      {"network connect", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\n",
       "sandbox violation"},
      {"write outside", "open('/tmp/mariana-escape-code-scorer', 'w').write('x')\n", "sandbox violation"},
      {"exception", "raise ValueError('boom')\n", "runtime error"},
      {"syntax error", "print(\n", "runtime error"},
      {"exit code", "import sys\nsys.exit(3)\n", "runtime error"},
  };
  for (const Hostile& h : cases) {
    auto r = s->score(sample(h.program, {{"1 2\n", "3\n"}}));
    ASSERT_TRUE(r.ok()) << h.name << ": " << r.status().to_string();
    EXPECT_EQ(r->reward, 0.0) << h.name;
    EXPECT_FALSE(r->ok) << h.name;
    EXPECT_EQ(r->reason, h.reason) << h.name << ": " << r->detail;
  }
  EXPECT_FALSE(std::filesystem::exists("/tmp/mariana-escape-code-scorer"));
}

TEST(CodeScorer, ForkBombIsAFailedSample) {
  auto s = scorer();
  auto r = s->score(sample("import os\nwhile True:\n    os.fork()\n", {{"", "3\n"}}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->reward, 0.0);
  EXPECT_TRUE(r->reason == "sandbox violation" || r->reason == "timeout") << r->reason << ": " << r->detail;
}

TEST(CodeScorer, NeedsTestsAndGoodOptions) {
  auto s = scorer();
  auto r = s->score(sample("print(1)", {}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("tests"), std::string::npos);
  auto bad = CodeScorer::create({{"timeout_s", "fast"}});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("timeout_s"), std::string::npos) << bad.status().message();
  auto unknown = CodeScorer::create({{"timeout", 1}});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("'timeout'"), std::string::npos) << unknown.status().message();
}

}  // namespace
}  // namespace mariana::rl
