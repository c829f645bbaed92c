// `mariana data gen --task arithmetic-chat|arithmetic-preference` and `mariana train` on sft and rm
// jobs, as a user runs them: the files written, exit codes, errors naming file, line and field.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/file_util.h"
#include "tests/cli/cli_test_util.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

using testing::CmdResult;
CmdResult run(const std::string& args) { return testing::run_mariana(args); }

class SftCli : public testing::CliTest {
 protected:
  std::vector<nlohmann::json> lines(const std::string& rel) const {
    std::vector<nlohmann::json> out;
    std::istringstream in(read_file(p(rel)).value());
    for (std::string l; std::getline(in, l);) out.push_back(nlohmann::json::parse(l));
    return out;
  }
  // A starting checkpoint: the tiny model at initialisation plus a tokenizer trained on chat data.
  void make_base() {
    ASSERT_EQ(run("data gen --task arithmetic-chat --n 50 --seed 9 --out " + p("chat.jsonl")).code, 0);
    ASSERT_EQ(run("data gen --task arithmetic --n 200 --seed 9 --out " + p("text.jsonl")).code, 0);
    ASSERT_EQ(run("model init --config " + src("configs/models/tiny.json") + " --out " + p("base")).code, 0);
    const CmdResult t = run("tokenizer train --vocab-size 400 --input " + p("text.jsonl") + " --out " + p("base/tokenizer.json"));
    ASSERT_EQ(t.code, 0) << t.out;
  }
};

TEST_F(SftCli, DataGenWritesChatAndPreferenceSets) {
  CmdResult r = run("data gen --task arithmetic-chat --n 5 --seed 2 --digits 2 --ops + --out " + p("c.jsonl"));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto chats = lines("c.jsonl");
  ASSERT_EQ(chats.size(), 5u);
  for (const auto& c : chats) {
    ASSERT_EQ(c["messages"].size(), 2u);
    EXPECT_EQ(c["messages"][0]["role"], "user");
    EXPECT_NE(c["messages"][0]["content"].get<std::string>().find(" + "), std::string::npos);
    EXPECT_EQ(c["messages"][1]["role"], "assistant");
    EXPECT_NE(c["messages"][1]["content"].get<std::string>().find("\n#### "), std::string::npos);
  }
  r = run("data gen --task arithmetic-preference --n 3 --seed 2 --out " + p("p.jsonl"));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto prefs = lines("p.jsonl");
  ASSERT_EQ(prefs.size(), 3u);
  for (const auto& q : prefs) EXPECT_NE(q["chosen"], q["rejected"]);
}

// --teacher-slip: the same problems, and with slip 1 every carry or borrow that matters is forgotten
// (the answer line then disagrees with the question); out of range or with preference pairs: exit 2.
TEST_F(SftCli, DataGenTeacherSlip) {
  const std::string base = "data gen --task arithmetic-chat --n 40 --seed 4 --digits 2 --ops +- --out ";
  ASSERT_EQ(run(base + p("clean.jsonl")).code, 0);
  CmdResult r = run(base + p("slip.jsonl") + " --teacher-slip 1");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto clean = lines("clean.jsonl"), slip = lines("slip.jsonl");
  ASSERT_EQ(clean.size(), slip.size());
  int changed = 0;
  for (size_t i = 0; i < clean.size(); ++i) {
    EXPECT_EQ(clean[i]["messages"][0], slip[i]["messages"][0]);
    const std::string c = clean[i]["messages"][1]["content"], s = slip[i]["messages"][1]["content"];
    const bool carries = c.find("carry 1") != std::string::npos || c.find("borrow 1") != std::string::npos;
    if (s != c) {
      ++changed;
      EXPECT_TRUE(carries) << c;
      EXPECT_NE(c.substr(c.rfind("#### ")), s.substr(s.rfind("#### "))) << s;
    }
  }
  EXPECT_GT(changed, 8);
  r = run(base + p("bad.jsonl") + " --teacher-slip 1.5");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("teacher_slip must be in [0, 1]"), std::string::npos) << r.out;
  r = run("data gen --task arithmetic-preference --n 4 --seed 4 --teacher-slip 0.5 --out " + p("bad.jsonl"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("teacher_slip must be 0"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("bad.jsonl")));
}

TEST_F(SftCli, TrainSftAndRmJobs) {
  make_base();
  const std::string head = "[job]\nname = \"s\"\nphase = \"sft\"\n[model]\ninit_from = \"" + p("base") + "\"\n";
  write("bad.jsonl", read_file(p("chat.jsonl")).value().substr(0, read_file(p("chat.jsonl")).value().find('\n') + 1) +
                         "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", \"content\": \"b\"}]}\n");
  write("bad.toml", head + "[data]\nchat = \"" + p("bad.jsonl") + "\"\n[train]\nsteps = 2\nseq_len = 128\n");
  CmdResult r = run("train " + p("bad.toml") + " --run-dir " + p("run-bad") + " --quiet");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(p("bad.jsonl") + ":2: field 'messages[1].role'"), std::string::npos) << r.out;

  write("sft.toml", head + "[data]\nchat = \"" + p("chat.jsonl") + "\"\n[train]\nepochs = 1\nseq_len = 128\n" +
                        "threads = 1\n[batch]\nrows = 8\n");
  r = run("train " + p("sft.toml") + " --run-dir " + p("run-sft") + " --quiet");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("phase sft, 1 epoch(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("done: step "), std::string::npos) << r.out;
  const auto metrics = lines("run-sft/metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  EXPECT_GT(metrics[0]["loss_tokens"].get<int64_t>(), 0);
  EXPECT_EQ(metrics.back()["data"]["samples_done"], 50);
  EXPECT_NE(r.out.find("summary: "), std::string::npos) << r.out;  // the end-of-run summary
  EXPECT_TRUE(fs::exists(p("run-sft/summary.json")));
  r = run("train " + p("sft.toml") + " --run-dir " + p("run-sft-eval") +
          " --set train.epochs=0 --set train.steps=2 --set eval.every=1 --set eval.held_out=0.2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("step 2/2 val_loss "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  val loss "), std::string::npos) << r.out;
  EXPECT_TRUE(lines("run-sft-eval/metrics.jsonl")[0].contains("val_loss"));

  write("rm.toml", "[job]\nname = \"r\"\nphase = \"rm\"\n[model]\ninit_from = \"" + p("run-sft") +
                       "\"\n[data]\nbuiltin = \"arithmetic-preference\"\ndocuments = 8\n[train]\nsteps = 2\n" +
                       "seq_len = 256\nthreads = 1\n[batch]\nrows = 2\n");
  r = run("train " + p("rm.toml") + " --run-dir " + p("run-rm") + " --quiet");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(p("run-rm/checkpoints/step-00000002/reward_head.safetensors")));
  write("score.jsonl", "{\"prompt\": \"1 + 2 = ?\", \"response\": \"#### 3\"}\n");
  r = run("reward score --scorer model --checkpoint " + p("run-rm") + " --input " + p("score.jsonl"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"reward\":"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace mariana
