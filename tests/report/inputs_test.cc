// What the report reads (report/inputs.h): metrics.jsonl of training and GRPO runs, passkey grids,
// text tables and run directories, and the errors that name the file, the line or field and what
// was expected.
#include "report/inputs.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/core/temp_dir.h"

namespace mariana::report {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

const char* kTraining =
    R"({"step":1,"loss":9.0,"loss_main":6.9,"lr":0.0015,"grad_norm":1.4,"max_vio":{"1":0.7,"2":0.4},"data":{"epoch":0}})"
    "\n"
    R"({"step":2,"loss":8.5,"loss_main":6.5,"lr":0.003,"grad_norm":null,"max_vio":{"1":0.5,"2":0.6},"val_loss":6.6})"
    "\n"
    R"({"step":3,"loss":8.1,"loss_main":6.2,"lr":0.003,"grad_norm":2.0,"max_vio":{"1":0.3,"2":0.2},"comm":"x"})"
    "\n";

const char* kRl =
    R"({"iteration":1,"reward":0.1,"reward_parts":{"math":0.1,"format":0.0},"accuracy":0.1,"kl":0.0})"
    "\n"
    R"({"iteration":2,"reward":0.3,"reward_parts":{"math":0.25,"format":0.5},"accuracy":0.25,"kl":0.01,"eval_accuracy":0.2})"
    "\n";

std::vector<double> ys(const Metrics& m, const std::string& name) {
  std::vector<double> out;
  for (const Point& p : m.series.at(name)) out.push_back(p.y);
  return out;
}
std::vector<double> xs(const Metrics& m, const std::string& name) {
  std::vector<double> out;
  for (const Point& p : m.series.at(name)) out.push_back(p.x);
  return out;
}

void write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

TEST(ParseMetrics, TrainingLines) {
  auto m = parse_metrics(kTraining, "run/metrics.jsonl");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->x_field, "step");
  EXPECT_EQ(m->lines, 3);
  EXPECT_THAT(ys(*m, "loss"), ElementsAre(9.0, 8.5, 8.1));
  EXPECT_THAT(xs(*m, "loss"), ElementsAre(1, 2, 3));
  EXPECT_THAT(ys(*m, "max_vio.2"), ElementsAre(0.4, 0.6, 0.2));
  EXPECT_THAT(xs(*m, "val_loss"), ElementsAre(2));  // only where a line has it
  const std::vector<double> g = ys(*m, "grad_norm");
  ASSERT_EQ(g.size(), 3u);
  EXPECT_TRUE(std::isnan(g[1]));  // null (a NaN the trainer wrote) is a gap
  EXPECT_TRUE(m->has("data.epoch"));
  EXPECT_FALSE(m->has("comm"));  // strings are not numbers to plot
  EXPECT_DOUBLE_EQ(m->last("loss"), 8.1);
  EXPECT_DOUBLE_EQ(m->last("grad_norm"), 2.0);
  EXPECT_TRUE(std::isnan(m->last("absent")));
  EXPECT_TRUE(m->torn.empty());
}

TEST(ParseMetrics, GrpoLinesByIteration) {
  auto m = parse_metrics(kRl, "rl/metrics.jsonl");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->x_field, "iteration");
  EXPECT_THAT(ys(*m, "reward_parts.format"), ElementsAre(0.0, 0.5));
  EXPECT_THAT(xs(*m, "eval_accuracy"), ElementsAre(2));
}

TEST(ParseMetrics, IterationWinsOverAStepInGrpoLines) {
  auto m = parse_metrics(R"({"iteration":1,"step":1,"reward":0.5})"
                         "\n"
                         R"({"iteration":2,"step":1,"reward":0.7})"
                         "\n",
                         "rl/metrics.jsonl");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->x_field, "iteration");
  EXPECT_THAT(xs(*m, "reward"), ElementsAre(1, 2));
  EXPECT_EQ(m->last_x, 2);
}

TEST(ParseMetrics, EmptyFileHasNoLines) {
  auto m = parse_metrics("", "run/metrics.jsonl");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->lines, 0);
  EXPECT_EQ(m->x_field, "");
  EXPECT_TRUE(parse_metrics("\n\n", "run/metrics.jsonl").ok());
}

TEST(ParseMetrics, ErrorsNameFileLineFieldAndExpectation) {
  const std::string ok = R"({"step":1,"loss":2.0})"
                         "\n";
  struct Case {
    std::string text, want;
  };
  for (const Case& c : std::vector<Case>{
           {ok + "{\"step\":2,\"loss\":\n" + ok, "run/metrics.jsonl:2: invalid JSON"},
           {ok + "[1, 2]\n", "run/metrics.jsonl:2: expected a JSON object, got array"},
           {ok + "{\"loss\":2.0}\n", "run/metrics.jsonl:2: missing field 'step'"},
           {ok + "{\"step\":\"3\"}\n", "run/metrics.jsonl:2: field 'step': expected an integer, got string \"3\""},
           {ok + "{\"step\":2.5}\n", "run/metrics.jsonl:2: field 'step': expected an integer, got number 2.5"},
           {ok + "\n" + "{\"step\":3,\"loss\":\"low\"}\n",
            "run/metrics.jsonl:3: field 'loss': expected a number or null, got string \"low\""},
           {ok + "{\"step\":2,\"max_vio\":[0.5]}\n",
            "run/metrics.jsonl:2: field 'max_vio': expected an object of numbers (one per MoE layer), got array"},
           {ok + "{\"step\":2,\"max_vio\":{\"1\":\"hi\"}}\n",
            "run/metrics.jsonl:2: field 'max_vio.1': expected a number or null, got string \"hi\""},
           {ok + "{\"step\":2,\"reward\":true}\n", "run/metrics.jsonl:2: field 'reward': expected a number or null"},
       }) {
    auto m = parse_metrics(c.text, "run/metrics.jsonl");
    ASSERT_FALSE(m.ok()) << c.text;
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(m.status().message(), HasSubstr(c.want)) << c.text;
  }
}

TEST(ParseMetrics, TornLastLineIsDroppedWithAWarningButNotATornMiddleLine) {
  const std::string text = std::string(kTraining) + R"({"step":4,"loss":7.)";
  auto m = parse_metrics(text, "run/metrics.jsonl");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->lines, 3);
  EXPECT_THAT(m->torn, HasSubstr("run/metrics.jsonl:4: the last line is cut short"));
  // A complete last line without its newline is read.
  auto whole = parse_metrics(std::string(kTraining) + R"({"step":4,"loss":7.5})", "run/metrics.jsonl");
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->lines, 4);
  EXPECT_TRUE(whole->torn.empty());
  // The same cut line followed by a newline is an error.
  EXPECT_FALSE(parse_metrics(text + "\n", "run/metrics.jsonl").ok());
}

TEST(ParsePasskey, ReadsTheGridOfEvalJson) {
  const auto j = nlohmann::json::parse(
      R"({"task":"passkey","lengths":[64,128],"depths":[0.0,0.5,1.0],"samples_per_cell":10,)"
      R"("accuracy":[[1.0,0.9,1.0],[0.5,null,0.25]],"mean_accuracy_per_length":{"64":0.97,"128":0.4}})");
  auto g = parse_passkey(j, "run/passkey.json");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_THAT(g->lengths, ElementsAre(64, 128));
  EXPECT_THAT(g->depths, ElementsAre(0.0, 0.5, 1.0));
  EXPECT_EQ(g->samples, 10);
  EXPECT_DOUBLE_EQ(g->accuracy[1][2], 0.25);
  EXPECT_TRUE(std::isnan(g->accuracy[1][1]));
  const Heatmap h = passkey_heatmap(g->lengths, g->depths, g->accuracy, "t");
  EXPECT_THAT(h.col_labels, ElementsAre("0.00", "0.50", "1.00"));
  EXPECT_THAT(h.row_labels, ElementsAre("64", "128"));
}

TEST(ParsePasskey, ErrorsNameTheField) {
  struct Case {
    std::string json, want;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"task":"arithmetic","lengths":[64],"depths":[0],"accuracy":[[1]]})", "field 'task': expected \"passkey\""},
           {R"({"lengths":[64],"depths":[0]})", "missing field 'accuracy'"},
           {R"({"lengths":["64"],"depths":[0],"accuracy":[[1]]})", "field 'lengths[0]'"},
           {R"({"lengths":[64,128],"depths":[0],"accuracy":[[1]]})",
            "field 'accuracy': expected an array of 2 rows (one per length), got 1 rows"},
           {R"({"lengths":[64],"depths":[0,1],"accuracy":[[1]]})",
            "field 'accuracy[0]': expected an array of 2 numbers (one per depth), got 1 values"},
           {R"({"lengths":[64],"depths":[0],"accuracy":[[1.5]]})",
            "field 'accuracy[0][0]': expected a fraction in [0, 1] or null, got number 1.5"},
           {R"({"lengths":[],"depths":[0],"accuracy":[]})", "expected at least one value each"},
           {R"([1])", "expected a JSON object (a passkey grid), got array"},
       }) {
    auto g = parse_passkey(nlohmann::json::parse(c.json), "grid.json");
    ASSERT_FALSE(g.ok()) << c.json;
    EXPECT_THAT(g.status().message(), HasSubstr("grid.json")) << c.json;
    EXPECT_THAT(g.status().message(), HasSubstr(c.want)) << c.json;
  }
}

// scripts/pipeline.sh's table: printf-aligned, cells with single spaces inside.
const char* kAccuracy =
    "phase      prompts  held-out accuracy  checkpoint\n"
    "pretrain   raw       0.0% (0/500)      runs/pipeline-pretrain/checkpoints/step-00002400\n"
    "sft-clean  chat     97.2% (486/500)    runs/pipeline-sft-clean/checkpoints/step-00000460\n"
    "rl         chat     100.0% (500/500)   runs/pipeline-rl/checkpoints/iter-000060\n";

TEST(ParseTextTable, PipelineAccuracyTable) {
  auto t = parse_text_table(kAccuracy, "runs/pipeline-accuracy.txt");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_THAT(t->header, ElementsAre("phase", "prompts", "held-out accuracy", "checkpoint"));
  ASSERT_EQ(t->rows.size(), 3u);
  EXPECT_THAT(t->rows[0], ElementsAre("pretrain", "raw", "0.0% (0/500)", "runs/pipeline-pretrain/checkpoints/step-00002400"));
  EXPECT_THAT(t->rows[2], ElementsAre("rl", "chat", "100.0% (500/500)", "runs/pipeline-rl/checkpoints/iter-000060"));
}

TEST(ParseTextTable, SingleSpacedCellsSplitAtTheHeaderColumns) {
  // A ten-letter phase leaves one space before the next cell: the header's columns cut it.
  const std::string text =
      "phase      prompts  held-out accuracy  checkpoint\n"
      "sft-longer chat     97.2% (486/500)    runs/x\n";
  auto t = parse_text_table(text, "acc.txt");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_THAT(t->rows[0], ElementsAre("sft-longer", "chat", "97.2% (486/500)", "runs/x"));
}

TEST(ParseTextTable, Errors) {
  auto empty = parse_text_table("\n  \n", "acc.txt");
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("acc.txt: empty; expected a header line"));
  auto ragged = parse_text_table("phase  accuracy  checkpoint\npretrain 12% x\n", "acc.txt");
  ASSERT_FALSE(ragged.ok());
  EXPECT_THAT(ragged.status().message(), HasSubstr("acc.txt:2: expected 3 cells under the header's columns"));
}

TEST(LoadRun, TrainingRunWithCheckpointSummaryAndPasskey) {
  TempDir tmp;
  const std::string run = tmp.file("my-run");
  write(run + "/metrics.jsonl", kTraining);
  write(run + "/checkpoints/step-00000002/trainer_state.json", R"({"step":2,"phase":"extend"})");
  write(run + "/checkpoints/step-00000003/trainer_state.json", R"({"step":3,"phase":"sft"})");
  write(run + "/checkpoints/.step-00000004.tmp-1/trainer_state.json", R"({"phase":"rm"})");  // being written
  write(run + "/summary.json", R"({"steps":3,"total_steps":3,"best_val_loss":6.6})");
  write(run + "/passkey-b.json", R"({"lengths":[64],"depths":[0],"accuracy":[[1]]})");
  write(run + "/passkey-a.json", R"({"lengths":[32],"depths":[0],"accuracy":[[0.5]]})");
  write(run + "/other.json", "not json");
  auto r = load_run(run + "/");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->label, run);
  EXPECT_EQ(r->phase, "sft");
  EXPECT_EQ(r->phase_from, "checkpoints/step-00000003/trainer_state.json");
  EXPECT_EQ(r->checkpoint, "checkpoints/step-00000003");
  EXPECT_FALSE(r->rl);
  EXPECT_EQ(r->metrics.lines, 3);
  EXPECT_EQ(r->summary["total_steps"], 3);
  ASSERT_EQ(r->passkey.size(), 2u);
  EXPECT_THAT(r->passkey[0].source, HasSubstr("passkey-a.json"));
}

TEST(LoadRun, PhaseFromIterationsOrTheDirectoryName) {
  TempDir tmp;
  write(tmp.file("anything/metrics.jsonl"), kRl);
  auto rl = load_run(tmp.file("anything"));
  ASSERT_TRUE(rl.ok()) << rl.status().to_string();
  EXPECT_TRUE(rl->rl);
  EXPECT_EQ(rl->phase, "rl");
  EXPECT_EQ(rl->phase_from, "metrics.jsonl");
  EXPECT_TRUE(rl->summary.is_null());

  write(tmp.file("pipeline-sft-clean/metrics.jsonl"), kTraining);
  auto named = load_run(tmp.file("pipeline-sft-clean"));
  ASSERT_TRUE(named.ok());
  EXPECT_EQ(named->phase, "sft");
  EXPECT_EQ(named->phase_from, "the directory name");

  write(tmp.file("mystery/metrics.jsonl"), "");
  auto unknown = load_run(tmp.file("mystery"));
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->phase, "unknown");
  EXPECT_EQ(unknown->checkpoint, "");
}

TEST(LoadRun, Errors) {
  TempDir tmp;
  auto missing = load_run(tmp.file("nope"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("run directory " + tmp.file("nope") + " does not exist"));

  std::filesystem::create_directories(tmp.file("empty"));
  auto no_metrics = load_run(tmp.file("empty"));
  ASSERT_FALSE(no_metrics.ok());
  EXPECT_THAT(no_metrics.status().message(), HasSubstr(tmp.file("empty") + ": no metrics.jsonl"));

  write(tmp.file("file"), "x");
  EXPECT_THAT(load_run(tmp.file("file")).status().message(), HasSubstr("expected a run directory, got a file"));

  write(tmp.file("bad-state/metrics.jsonl"), kTraining);
  write(tmp.file("bad-state/checkpoints/step-00000003/trainer_state.json"), "{\"phase\": ");
  auto bad_state = load_run(tmp.file("bad-state"));
  ASSERT_FALSE(bad_state.ok());
  EXPECT_THAT(bad_state.status().message(), HasSubstr("step-00000003/trainer_state.json:1:"));

  write(tmp.file("bad-summary/metrics.jsonl"), kTraining);
  write(tmp.file("bad-summary/summary.json"), "[1]");
  EXPECT_THAT(load_run(tmp.file("bad-summary")).status().message(),
              HasSubstr("summary.json: expected a JSON object, got array"));

  write(tmp.file("bad-grid/metrics.jsonl"), kTraining);
  write(tmp.file("bad-grid/passkey.json"), R"({"lengths":[64],"depths":[0],"accuracy":[[2]]})");
  EXPECT_THAT(load_run(tmp.file("bad-grid")).status().message(), HasSubstr("passkey.json: field 'accuracy[0][0]'"));
}

}  // namespace
}  // namespace mariana::report
