// `mariana report`: the real binary on small run directories written here (a training run with a
// checkpoint's phase and a passkey grid, a GRPO run, an accuracy table) and on a real short
// `mariana train` run; bad input exits 2 naming the file and line, and leaves no output file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tests/cli/cli_test_util.h"
#include "tests/report/count_of.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;
using testing::CliTest;
using testing::count_of;
using testing::run_mariana;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

const char* kTrainMetrics =
    R"({"step":1,"loss":9.0,"loss_main":6.9,"loss_mtp":6.9,"lr":0.0015,"grad_norm":1.4,"tokens_per_s":1000,"max_vio":{"1":0.7,"2":0.4}})"
    "\n"
    R"({"step":2,"loss":8.5,"loss_main":6.5,"loss_mtp":6.6,"lr":0.003,"grad_norm":null,"tokens_per_s":1100,"max_vio":{"1":0.5,"2":0.6},"val_loss":6.6})"
    "\n"
    R"({"step":3,"loss":8.1,"loss_main":6.2,"loss_mtp":6.3,"lr":0.003,"grad_norm":2.0,"tokens_per_s":1050,"max_vio":{"1":0.3,"2":0.2}})"
    "\n";
const char* kRlMetrics =
    R"({"iteration":1,"reward":0.1,"reward_parts":{"math":0.1,"format":0.0},"accuracy":0.1,"kl":0.0,"clip_frac":0,"entropy":2.0,"response_len":40,"zero_variance_groups":3})"
    "\n";

class ReportCli : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    fs::create_directories(p("ext/checkpoints/step-00000003"));
    write("ext/metrics.jsonl", kTrainMetrics);
    write("ext/checkpoints/step-00000003/trainer_state.json", R"({"step":3,"phase":"extend"})");
    write("ext/summary.json", R"({"steps":3,"total_steps":3,"best_val_loss":6.6,"best_val_step":2})");
    write("ext/passkey.json",
          R"({"task":"passkey","lengths":[64,128],"depths":[0.0,1.0],"samples_per_cell":2,"accuracy":[[1.0,0.5],[0.0,0.5]]})");
    fs::create_directories(p("rl"));
    write("rl/metrics.jsonl", kRlMetrics);
    write("acc.txt",
          "phase      prompts  held-out accuracy  checkpoint\n"
          "extend     raw       3.0% (15/500)     ext/checkpoints/step-00000003\n"
          "rl         chat     91.8% (459/500)    rl/checkpoints/iter-000060\n");
  }
  // No output file, and no temporary file of it, in the test's directory.
  void expect_no_output() const {
    EXPECT_FALSE(fs::exists(p("out.html")));
    for (const auto& e : fs::directory_iterator(dir_))
      EXPECT_EQ(e.path().filename().string().find("out.html"), std::string::npos) << e.path();
  }
};

TEST_F(ReportCli, WritesOnePageWithEveryChart) {
  const auto r = run_mariana("report " + p("ext") + " " + p("rl") + " --accuracy " + p("acc.txt") + " --out " +
                             p("out.html"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("wrote " + p("out.html") + ": 2 runs, 13 charts"), std::string::npos) << r.out;
  ASSERT_TRUE(fs::exists(p("out.html")));
  const std::string html = slurp(p("out.html"));
  // Training: loss, LR, gradient norm, MaxVio, throughput; GRPO: reward, accuracy, KL, clip
  // fraction, entropy, response length, zero-variance groups (no staleness field); the heatmap.
  EXPECT_EQ(count_of(html, "<svg"), 5 + 7 + 1);  // one training run: no loss-by-phase overview
  for (const char* title : {"ext (extend): loss", "ext (extend): learning rate", "ext (extend): gradient norm",
                            "ext (extend): MaxVio per MoE layer", "ext (extend): throughput", "rl: reward", "rl: accuracy",
                            "rl: KL to the reference", "rl: clip fraction", "rl: entropy", "rl: response length",
                            "rl: zero-variance groups", "passkey retrieval accuracy"})
    EXPECT_NE(html.find("<title>" + std::string(title) + "</title>"), std::string::npos) << title;
  EXPECT_NE(html.find("extend (from checkpoints/step-00000003/trainer_state.json)"), std::string::npos);
  EXPECT_NE(html.find("<td>91.8% (459/500)</td>"), std::string::npos);
  EXPECT_NE(html.find(">layer 2</text>"), std::string::npos);
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

TEST_F(ReportCli, CountsChartsOfTwoTrainingRunsAndExplicitPasskey) {
  fs::create_directories(p("pretrain"));
  write("pretrain/metrics.jsonl", std::string(kTrainMetrics) + R"({"step":4,"loss":7.9})");  // no newline: read
  write("grid.json", R"({"lengths":[32],"depths":[0.5],"accuracy":[[0.75]]})");
  const auto r = run_mariana("report " + p("pretrain/") + " " + p("ext") + " --passkey " + p("grid.json") +
                             " --title 'a <title>' --out " + p("out.html"));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string html = slurp(p("out.html"));
  EXPECT_EQ(count_of(html, "<svg"), 1 + 5 + 5 + 2);  // loss by phase, two runs, two heatmaps
  EXPECT_NE(html.find("<h1>a &lt;title&gt;</h1>"), std::string::npos);
  EXPECT_NE(html.find(p("pretrain") + " (pretrain)"), std::string::npos) << "phase from the directory name";
}

TEST_F(ReportCli, MalformedMetricsLineNamesFileAndLineAndWritesNothing) {
  write("ext/metrics.jsonl", std::string(kTrainMetrics) + "{\"step\":4,\"loss\":}\n" + kTrainMetrics);
  const auto r = run_mariana("report " + p("ext") + " " + p("rl") + " --out " + p("out.html"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(p("ext/metrics.jsonl") + ":4: invalid JSON"), std::string::npos) << r.out;
  expect_no_output();
}

TEST_F(ReportCli, WrongFieldTypeNamesTheField) {
  write("rl/metrics.jsonl", std::string(kRlMetrics) + R"({"iteration":2,"kl":"big"})" + "\n");
  const auto r = run_mariana("report " + p("rl") + " --out " + p("out.html"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(p("rl/metrics.jsonl") + ":2: field 'kl': expected a number or null, got string \"big\""),
            std::string::npos)
      << r.out;
  expect_no_output();
}

TEST_F(ReportCli, MissingRunDirectoryIsRefusedByName) {
  const auto r = run_mariana("report " + p("ext") + " " + p("no-such-run") + " --out " + p("out.html"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("run directory " + p("no-such-run") + " does not exist"), std::string::npos) << r.out;
  expect_no_output();
  fs::create_directories(p("not-a-run"));
  const auto empty = run_mariana("report " + p("not-a-run") + " --out " + p("out.html"));
  EXPECT_EQ(empty.code, 2) << empty.out;
  EXPECT_NE(empty.out.find(p("not-a-run") + ": no metrics.jsonl"), std::string::npos) << empty.out;
  expect_no_output();
}

TEST_F(ReportCli, BadAccuracyAndPasskeyFilesAreNamed) {
  write("ragged.txt", "phase  accuracy  checkpoint\nrl 90% x\n");
  auto r = run_mariana("report " + p("ext") + " --accuracy " + p("ragged.txt") + " --out " + p("out.html"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--accuracy: " + p("ragged.txt") + ":2: expected 3 cells"), std::string::npos) << r.out;
  r = run_mariana("report " + p("ext") + " --accuracy " + p("missing.txt") + " --out " + p("out.html"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(p("missing.txt")), std::string::npos) << r.out;
  write("grid.json", R"({"lengths":[32],"depths":[0.5],"accuracy":[[0.75, 1]]})");
  r = run_mariana("report --passkey " + p("grid.json") + " --out " + p("out.html"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(p("grid.json") + ": field 'accuracy[0]': expected an array of 1 numbers"), std::string::npos)
      << r.out;
  expect_no_output();
}

TEST_F(ReportCli, FlagsAreChecked) {
  auto r = run_mariana("report " + p("ext"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("expected --out FILE.html"), std::string::npos) << r.out;
  r = run_mariana("report --out " + p("out.html"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("expected run directories"), std::string::npos) << r.out;
  r = run_mariana("report " + p("ext") + " --out " + p("no-dir/out.html"));
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find(p("no-dir/out.html")), std::string::npos) << r.out;
  expect_no_output();
}

TEST_F(ReportCli, ReplacesAnOldReport) {
  write("out.html", "old");
  const auto r = run_mariana("report " + p("ext") + " --out " + p("out.html"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(slurp(p("out.html")).rfind("<!DOCTYPE html>", 0), 0u);
}

// A real run: 6 steps of the tiny model (well under a second), a passkey grid from `mariana eval`
// saved beside it (and its --svg heatmap), then the report.
TEST_F(ReportCli, RealTrainingRun) {
  const auto t = run_mariana("train " + src("configs/jobs/pretrain-tiny.toml") + " --run-dir " + p("run") +
                             " --quiet --set train.steps=6 --set data.documents=150 --set train.seq_len=32"
                             " --set batch.rows=4 --set batch.rows_start=4 --set train.threads=1"
                             " --set optimizer.warmup_steps=2 --set eval.every=3 --set train.checkpoint_every=3");
  ASSERT_EQ(t.code, 0) << t.out;
  const auto e = run_mariana("eval --task passkey --checkpoint " + p("run") +
                                 " --lengths 16,32 --depths 0,1 --samples 1 --threads 1 --json --svg " + p("pk.svg") +
                                 " > " + p("run/passkey.json"),
                             false);
  ASSERT_EQ(e.code, 0) << e.out;
  // eval's own heatmap, a file of its own: the same drawing with the xmlns a .svg file needs.
  const std::string svg = slurp(p("pk.svg"));
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u) << svg.substr(0, 200);
  EXPECT_NE(svg.find(">passkey depth</text>"), std::string::npos);
  EXPECT_EQ(count_of(svg, "<rect"), 1 + 2 * 2);
  const auto r = run_mariana("report " + p("run") + " --out " + p("out.html"));
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string html = slurp(p("out.html"));
  EXPECT_EQ(count_of(html, "<svg"), 5 + 1);
  EXPECT_NE(html.find("pretrain (from checkpoints/step-00000006/trainer_state.json)"), std::string::npos);
  EXPECT_NE(html.find("<td>6/6 steps</td>"), std::string::npos);
  EXPECT_NE(html.find("<title>run (pretrain): loss</title>"), std::string::npos);
  EXPECT_NE(html.find(">val_loss</text>"), std::string::npos);  // the loss chart's legend
  EXPECT_NE(html.find(">layer 3</text>"), std::string::npos);   // tiny: MoE layers 1..3
  EXPECT_EQ(html.find("http://"), std::string::npos);
  EXPECT_EQ(html.find("https://"), std::string::npos);
}

}  // namespace
}  // namespace mariana
