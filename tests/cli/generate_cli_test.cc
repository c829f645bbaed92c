// `mariana generate` as a user runs it: a checkpoint from `model init` plus a trained tokenizer;
// JSON output per request, plain and speculative greedy agree, bad input is refused clearly.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/cli/cli_test_util.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;
using testing::run_mariana;

class GenerateCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = fs::temp_directory_path() / ("mariana_generate_cli_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const std::string src = MARIANA_SOURCE_DIR;
    std::ofstream(dir_ / "text.txt") << "Q: 12 + 7 = ?\nA: Add the digits from the right.\n#### 19\n";
    auto r = run_mariana("model init --config " + src + "/configs/models/tiny.json --seed 3 --out " + ck());
    ASSERT_EQ(r.code, 0) << r.out;
    r = run_mariana("tokenizer train --vocab-size 300 --input " + (dir_ / "text.txt").string() + " --out " + ck() +
                    "/tokenizer.json");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static std::string ck() { return (dir_ / "ck").string(); }
  static fs::path dir_;
};
fs::path GenerateCli::dir_;

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> v;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) v.push_back(nlohmann::json::parse(line));
  return v;
}

TEST_F(GenerateCli, JsonPerRequestAndSpeculativeGreedyEqualsPlain) {
  const std::string input = (dir_ / "prompts.jsonl").string();
  std::ofstream(input) << "{\"prompt\": \"Q: 3 + 4 = ?\"}\n"
                       << "{\"messages\": [{\"role\": \"user\", \"content\": \"12 + 7 = ?\"}]}\n";
  const auto plain = run_mariana("generate --checkpoint " + ck() + " --input " + input + " --max-new-tokens 12 --json",
                                 /*stderr_too=*/false);
  ASSERT_EQ(plain.code, 0) << plain.out;
  const auto spec = run_mariana("generate --checkpoint " + ck() + " --input " + input +
                                    " --max-new-tokens 12 --json --speculative",
                                /*stderr_too=*/false);
  ASSERT_EQ(spec.code, 0) << spec.out;
  const auto a = json_lines(plain.out), b = json_lines(spec.out);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a[i]["token_ids"], b[i]["token_ids"]);
    EXPECT_EQ(a[i]["text"], b[i]["text"]);
    EXPECT_GT(a[i]["stats"]["prompt_tokens"].get<int>(), 0);
    EXPECT_EQ(a[i]["stats"]["generated_tokens"].get<size_t>(), a[i]["token_ids"].size());
    EXPECT_GT(b[i]["stats"]["drafted"].get<int>(), 0);
  }
  // The chat prompt is longer than its text: [BOS] [USER] ... [ASSISTANT].
  EXPECT_GT(a[1]["stats"]["prompt_tokens"].get<int>(), 3);
}

TEST_F(GenerateCli, SameSeedSameTextAcrossThreadCounts) {
  const std::string args = "generate --checkpoint " + ck() +
                           " --prompt 'Q: 5 + 5' --max-new-tokens 16 --temperature 1 --top-p 0.9 --seed 4 --json";
  const auto one = run_mariana(args + " --threads 1", false), two = run_mariana(args + " --threads 2", false);
  ASSERT_EQ(one.code, 0) << one.out;
  ASSERT_EQ(two.code, 0) << two.out;
  EXPECT_EQ(json_lines(one.out)[0]["token_ids"], json_lines(two.out)[0]["token_ids"]);
}

TEST_F(GenerateCli, BadInputNamesTheLineAndField) {
  const std::string input = (dir_ / "bad.jsonl").string();
  std::ofstream(input) << "{\"prompt\": \"ok\"}\n{\"text\": \"no prompt\"}\n";
  auto r = run_mariana("generate --checkpoint " + ck() + " --input " + input);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("bad.jsonl:2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prompt"), std::string::npos) << r.out;
  r = run_mariana("generate --checkpoint " + ck() + " --prompt hi --top-p 0");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("top_p"), std::string::npos) << r.out;
  r = run_mariana("generate --checkpoint " + (dir_ / "missing").string() + " --prompt hi");
  EXPECT_EQ(r.code, 2) << r.out;
}

}  // namespace
}  // namespace mariana
