// `mariana --help` and `--version`: every verb and subverb the help lists answers --help with exit 0
// and its usage (the list is read from the help text itself, so a listed command that is missing
// fails here), and --version prints the version and the commit.
#include <gtest/gtest.h>

#include <cctype>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "tests/cli/cli_test_util.h"

namespace mariana {
namespace {

using testing::run_mariana;

TEST(HelpCli, EveryListedCommandTakesHelp) {
  const auto top = run_mariana("--help", false);
  ASSERT_EQ(top.code, 0) << top.out;
  // "  verb [subverb] args...": the subverb is a lowercase word (not a flag, path or placeholder).
  const std::regex line(R"(^  ([a-z]+)(?: ([a-z][a-z-]*)(?= |$))?)");
  std::set<std::string> commands;
  std::istringstream in(top.out);
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    if (!std::regex_search(l, m, line)) continue;
    commands.insert(m[1].str());
    if (m[2].matched) commands.insert(m[1].str() + " " + m[2].str());
  }
  for (const char* expected : {"model init", "model info", "model logits", "tokenizer train", "data gen", "bench model",
                               "bench decode", "bench actors", "bench comm", "train", "eval", "report", "generate", "reward score",
                               "controller start", "agent start", "submit", "jobs list", "status", "run", "top"})
    EXPECT_TRUE(commands.count(expected)) << "`mariana --help` does not list " << expected << "\n" << top.out;
  for (const std::string& c : commands) {
    const auto r = run_mariana(c + " --help");
    EXPECT_EQ(r.code, 0) << "mariana " << c << " --help:\n" << r.out;
    std::string lower = r.out;
    for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    EXPECT_NE(lower.find("usage"), std::string::npos) << "mariana " << c << " --help:\n" << r.out;
  }
}

TEST(HelpCli, HelpTellsEvalTasksAndDetach) {
  const auto top = run_mariana("--help", false);
  for (const char* needle : {"passkey|arithmetic", "--detach", "|model", "arithmetic-chat", "--version", "--overwrite"})
    EXPECT_NE(top.out.find(needle), std::string::npos) << needle << "\n" << top.out;
}

TEST(HelpCli, VersionPrintsVersionAndCommit) {
  const auto r = run_mariana("--version", false);
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(^mariana [0-9]+\.[0-9]+\.[0-9]+ \(commit ([0-9a-f]{4,}|unknown)\)\n$)")))
      << r.out;
}

}  // namespace
}  // namespace mariana
