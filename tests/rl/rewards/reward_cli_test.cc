// `mariana reward score` as a user runs it: the real binary on small JSONL files, its exit codes,
// one JSON result per line, and errors that name file:line and the field.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/cli/cli_test_util.h"
#include "tests/rl/rewards/math_verify_test_venv.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

struct Cmd {
  int code = -1;
  std::string out, err;
};

// `mariana <args>` with stdout and stderr apart (stderr through a file in `dir`).
Cmd run(const std::string& args, const fs::path& dir) {
  const std::string errf = (dir / "stderr.txt").string();
  const testing::CmdResult r = testing::run_mariana(args + " 2>" + errf, /*stderr_too=*/false);
  std::ifstream e(errf);
  std::stringstream ss;
  ss << e.rdbuf();
  return {r.code, r.out, ss.str()};
}

std::vector<nlohmann::json> lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line));
  return v;
}

class RewardCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mariana_reward_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  fs::path dir_;
};

TEST_F(RewardCli, MathScoresEachLine) {
  const std::string in = write("math.jsonl",
                               "{\"prompt\": \"Q: 347 + 85 = ?\", \"response\": \"347 + 85 = 432\\n#### 432\", \"answer\": \"432\"}\n"
                               "\n"
                               "{\"prompt\": \"p\", \"response\": \"so \\\\boxed{\\\\frac{1}{2}}\", \"answer\": 0.5}\n"
                               "{\"prompt\": \"p\", \"response\": \"#### 1,000\", \"answer\": \"999\"}\n"
                               "{\"prompt\": \"p\", \"response\": \"no idea\", \"answer\": \"7\"}\n");
  const Cmd r = run("reward score --scorer math --input " + in, dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto res = lines(r.out);
  ASSERT_EQ(res.size(), 4u) << r.out;
  EXPECT_EQ(res[0]["reward"], 1.0);
  EXPECT_EQ(res[0]["ok"], true);
  EXPECT_EQ(res[0]["reason"], "correct");
  EXPECT_EQ(res[1]["reward"], 1.0);
  EXPECT_EQ(res[2]["reward"], 0.0);
  EXPECT_EQ(res[2]["reason"], "wrong answer");
  EXPECT_EQ(res[3]["reason"], "no answer");
  for (const auto& j : res) EXPECT_TRUE(j.contains("detail"));
}

TEST_F(RewardCli, MathVerifyScoresSymbolicAnswers) {
  const std::string in = write("mv.jsonl",
                               "{\"response\": \"\\\\boxed{2\\\\sqrt{2}}\", \"answer\": \"\\\\sqrt{8}\"}\n"
                               "{\"response\": \"\\\\boxed{x^2+3}\", \"answer\": \"x^2+1\"}\n");
  const std::string venv = rl::math_verify_test_venv();
  Cmd r = run("reward score --scorer math_verify --workers 2 --timeout-s 30 --venv " + venv + " --input " + in, dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto res = lines(r.out);
  ASSERT_EQ(res.size(), 2u) << r.out;
  EXPECT_EQ(res[0]["reward"], 1.0) << res[0].dump();
  EXPECT_EQ(res[1]["reward"], 0.0);
  EXPECT_EQ(res[1]["reason"], "wrong answer");
  // Without a venv: exit 2, nothing scored, the path and the command that creates it.
  r = run("reward score --scorer math_verify --venv " + (dir_ / "no-venv").string() + " --input " + in, dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("scripts/pyenv.sh " + (dir_ / "no-venv").string()), std::string::npos) << r.err;
}

TEST_F(RewardCli, CodeAndFormatFromStdin) {
  const std::string code = write(
      "code.jsonl",
      "{\"prompt\": \"sum\", \"response\": \"```python\\na, b = map(int, input().split())\\nprint(a + b)\\n```\", "
      "\"tests\": [{\"stdin\": \"1 2\\n\", \"stdout\": \"3\\n\"}, {\"stdin\": \"5 5\", \"stdout\": \"10\"}]}\n"
      "{\"prompt\": \"loop\", \"response\": \"while True: pass\", \"tests\": [{\"stdin\": \"\", \"stdout\": \"1\"}]}\n");
  Cmd r = run("reward score --scorer code --timeout-s 2 --memory-mb 256 < " + code, dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  auto res = lines(r.out);
  ASSERT_EQ(res.size(), 2u) << r.out;
  EXPECT_EQ(res[0]["reward"], 1.0);
  EXPECT_EQ(res[1]["reward"], 0.0);
  EXPECT_EQ(res[1]["reason"], "timeout");

  const std::string fmt = write("fmt.jsonl", "{\"prompt\": \"p\", \"response\": \"work\\n#### 5\"}\n"
                                             "{\"prompt\": \"p\", \"response\": \"#### 5\\nmore\"}\n");
  r = run("reward score --scorer format --input " + fmt, dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  res = lines(r.out);
  ASSERT_EQ(res.size(), 2u);
  EXPECT_EQ(res[0]["ok"], true);
  EXPECT_EQ(res[1]["reason"], "bad format");
}

TEST_F(RewardCli, BadLineNamesFileLineAndField) {
  const std::string in = write("bad.jsonl", "{\"prompt\": \"p\", \"response\": \"#### 1\", \"answer\": \"1\"}\n"
                                            "{\"prompt\": \"p\", \"answer\": \"1\"}\n");
  Cmd r = run("reward score --scorer math --input " + in, dir_);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_EQ(r.out, "");  // nothing scored before the input is known to be good
  EXPECT_NE(r.err.find("bad.jsonl:2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'response'"), std::string::npos) << r.err;

  write("noanswer.jsonl", "{\"prompt\": \"p\", \"response\": \"#### 1\"}\n");
  r = run("reward score --scorer math --input " + (dir_ / "noanswer.jsonl").string(), dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("noanswer.jsonl:1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'answer'"), std::string::npos) << r.err;

  write("badjson.jsonl", "{\"prompt\": \n");
  r = run("reward score --scorer math --input " + (dir_ / "badjson.jsonl").string(), dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("badjson.jsonl:1: invalid JSON"), std::string::npos) << r.err;

  write("badtests.jsonl", "{\"response\": \"print(1)\", \"tests\": [{\"stdin\": \"\", \"stdout\": 1}]}\n");
  r = run("reward score --scorer code --input " + (dir_ / "badtests.jsonl").string(), dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("tests[0].stdout"), std::string::npos) << r.err;
}

TEST_F(RewardCli, BadFlagsAndScorers) {
  Cmd r = run("reward score --scorer poetry --input /dev/null", dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("known: code, composite, format, math, math_verify, model"), std::string::npos) << r.err;
  r = run("reward score --scorer model --checkpoint " + dir_.string() + " --input /dev/null", dir_);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("no checkpoint under"), std::string::npos) << r.err;  // not a reward model's directory
  r = run("reward score --scorer math --timeout-s 1 --input /dev/null", dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--timeout-s applies to --scorer code or math_verify only"), std::string::npos) << r.err;
  r = run("reward score --scorer math --venv /x --input /dev/null", dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--venv applies to --scorer math_verify only"), std::string::npos) << r.err;
  r = run("reward score --scorer math --input " + (dir_ / "missing.jsonl").string(), dir_);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("missing.jsonl"), std::string::npos) << r.err;
  r = run("reward frobnicate", dir_);
  EXPECT_EQ(r.code, 2);
}

}  // namespace
}  // namespace mariana
