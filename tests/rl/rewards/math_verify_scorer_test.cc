// The math_verify scorer with the real math-verify library in a venv (math_verify_test_venv.h:
// created on first use; the tests FAIL if it cannot be): symbolic answers, the worker pool surviving a killed worker and a stuck one, and a
// clear error when the venv is missing.
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "rl/rewards/math_verify_scorer.h"
#include "rl/rewards/reward.h"
#include "rl/rewards/worker_pool.h"
#include "tests/rl/rewards/math_verify_test_venv.h"

namespace mariana::rl {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<RewardScorer> make(int workers = 1) {
  auto s = make_scorer("math_verify", {{"venv", math_verify_test_venv()}, {"workers", workers}});
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(s).value() : nullptr;
}

RewardSample sample(const std::string& response, const std::string& answer) {
  RewardSample s;
  s.response = response;
  s.answer = answer;
  return s;
}

struct Case {
  const char* response;
  const char* answer;
  bool correct;
};

TEST(MathVerifyScorer, SymbolicAnswers) {
  auto scorer = make();
  ASSERT_NE(scorer, nullptr);
  const Case cases[] = {
      {"So the side is \\boxed{2\\sqrt{2}}.", "\\sqrt{8}", true},
      {"\\boxed{\\sqrt{8}}", "2\\sqrt{2}", true},
      {"\\boxed{3\\sqrt{2}}", "\\sqrt{8}", false},
      {"\\boxed{1+x^2}", "x^2+1", true},
      {"The answer is $x^2 + 1$.", "1+x^2", true},
      {"\\boxed{x^2+3}", "x^2+1", false},
      {"\\boxed{\\{2,1\\}}", "\\{1,2\\}", true},
      {"\\boxed{\\{2,3\\}}", "\\{1,2\\}", false},
      {"\\boxed{\\frac{1}{2}}", "0.5", true},
      {"\\boxed{12345678901234567890123}", "12345678901234567890124", false},
      {"347 + 85 = 432\n#### 432", "432", true},
      {"#### 431", "432", false},
  };
  for (const Case& c : cases) {
    auto r = scorer->score(sample(c.response, c.answer));
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->reward, c.correct ? 1.0 : 0.0) << c.response << " vs " << c.answer << ": " << r->reason << " "
                                                  << r->detail;
    EXPECT_EQ(r->ok, c.correct);
    EXPECT_EQ(r->reason, c.correct ? "correct" : "wrong answer") << c.response << ": " << r->detail;
  }
  auto none = scorer->score(sample("I do not know.", "5"));
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->reason, "no answer");
  auto bad = scorer->score(RewardSample{});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("field 'answer'"), std::string::npos) << bad.status().to_string();
}

TEST(MathVerifyScorer, PoolSurvivesAKilledWorker) {
  auto scorer = make(2);
  ASSERT_NE(scorer, nullptr);
  JsonLineWorkerPool& pool = static_cast<MathVerifyScorer&>(*scorer).pool();
  const std::vector<pid_t> before = pool.pids();
  ASSERT_EQ(before.size(), 2u);
  for (pid_t p : before) ASSERT_EQ(::kill(p, SIGKILL), 0);
  for (int i = 0; i < 4; ++i) {
    auto r = scorer->score(sample("\\boxed{2\\sqrt{2}}", "\\sqrt{8}"));
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->reward, 1.0) << r->reason << " " << r->detail;
  }
  // Calls from several threads share the two workers.
  std::vector<std::thread> threads;
  std::vector<double> rewards(6, -1);
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      auto r = scorer->score(sample("\\boxed{" + std::to_string(t) + "}", std::to_string(t)));
      rewards[t] = r.ok() ? r->reward : -2;
    });
  for (auto& th : threads) th.join();
  for (double r : rewards) EXPECT_EQ(r, 1.0);
  const std::vector<pid_t> after = pool.pids();
  for (size_t i = 0; i < after.size(); ++i) EXPECT_NE(after[i], before[i]);
  EXPECT_GE(pool.restarts(), 1);
}

TEST(MathVerifyScorer, MissingVenvNamesThePathAndTheCommand) {
  const std::string missing = "/nonexistent/mariana-venv";
  auto s = make_scorer("math_verify", {{"venv", missing}});
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find(missing), std::string::npos) << s.status().to_string();
  EXPECT_NE(s.status().message().find("scripts/pyenv.sh " + missing + " math-verify==0.9.0 math_verify"),
            std::string::npos)
      << s.status().to_string();

  // A venv whose python lacks the library: the worker's import error, the path and the command.
  const fs::path fake = fs::temp_directory_path() / ("mariana_fake_venv_" + std::to_string(::getpid()));
  fs::create_directories(fake / "bin");
  fs::create_symlink("/usr/bin/python3", fake / "bin" / "python");
  s = make_scorer("math_verify", {{"venv", fake.string()}});
  fs::remove_all(fake);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("cannot import math_verify"), std::string::npos) << s.status().to_string();
  EXPECT_NE(s.status().message().find("scripts/pyenv.sh " + fake.string()), std::string::npos);

  s = make_scorer("math_verify", {{"venv", math_verify_test_venv()}, {"bogus", 1}});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("bogus"), std::string::npos);
}

// The pool on its own, with a Python worker that echoes and can be told to hang or to die.
TEST(JsonLineWorkerPool, TimeoutAndCrashRestartTheWorker) {
  const char* script =
      "import json, os, sys, time\n"
      "print(json.dumps({'ready': True}), flush=True)\n"
      "for line in sys.stdin:\n"
      "    req = json.loads(line)\n"
      "    if req.get('hang'): time.sleep(60)\n"
      "    if req.get('die'): os._exit(1)\n"
      "    print(json.dumps({'echo': req['x'], 'pid': os.getpid()}), flush=True)\n";
  JsonLineWorkerPool::Options o;
  o.name = "echo";
  o.argv = {"/usr/bin/python3", "-u", "-c", script};
  o.timeout_s = 1.0;
  auto pool = JsonLineWorkerPool::start(o);
  ASSERT_TRUE(pool.ok()) << pool.status().to_string();
  auto r = (*pool)->call({{"x", 1}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*r)["echo"], 1);
  const pid_t first = (*pool)->pids()[0];

  r = (*pool)->call({{"x", 2}, {"hang", true}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().to_string();
  EXPECT_NE((*pool)->pids()[0], first);
  r = (*pool)->call({{"x", 3}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*r)["echo"], 3);

  // A request that kills its worker twice (first try and the retry) is Unavailable; the pool goes on.
  r = (*pool)->call({{"x", 4}, {"die", true}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().to_string();
  EXPECT_NE(r.status().message().find("exited with status 1"), std::string::npos) << r.status().to_string();
  r = (*pool)->call({{"x", 5}});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ((*r)["echo"], 5);
  EXPECT_GE((*pool)->restarts(), 3);

  // A program that never says hello.
  o.argv = {"/usr/bin/python3", "-c", "import sys; sys.exit(4)"};
  auto dead = JsonLineWorkerPool::start(o);
  ASSERT_FALSE(dead.ok());
  EXPECT_EQ(dead.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(dead.status().message().find("exited with status 4"), std::string::npos) << dead.status().to_string();
}

}  // namespace
}  // namespace mariana::rl
