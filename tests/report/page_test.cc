// The report page (report/page.h): which charts a training and a GRPO run get, their series, the
// tables, the passkey heatmaps, escaping, and a page with no URL and no script.
#include "report/page.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tests/report/count_of.h"

namespace mariana::report {
namespace {

using ::mariana::testing::count_of;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

RunData run(const std::string& label, const std::string& phase, const std::string& metrics) {
  RunData r;
  r.label = r.dir = label;
  r.phase = phase;
  auto m = parse_metrics(metrics, label + "/metrics.jsonl");
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  r.metrics = m.value();
  r.rl = r.metrics.x_field == "iteration";
  return r;
}

const char* kPretrain =
    R"({"step":1,"loss":9.0,"loss_main":6.9,"loss_mtp":6.9,"lr":0.001,"grad_norm":1.4,"tokens_per_s":1000,"max_vio":{"1":0.7,"10":0.2,"2":0.4}})"
    "\n"
    R"({"step":2,"loss":8.0,"loss_main":6.1,"loss_mtp":6.2,"lr":0.002,"grad_norm":1.1,"tokens_per_s":1100,"max_vio":{"1":0.5,"10":0.1,"2":0.3},"val_loss":6.0})"
    "\n";
const char* kRl =
    R"({"iteration":1,"reward":0.1,"reward_parts":{"math":0.1,"format":0.0},"accuracy":0.1,"kl":0.0,"clip_frac":0,"entropy":2.0,"response_len":40,"zero_variance_groups":3,"staleness":0})"
    "\n"
    R"({"iteration":2,"reward":0.3,"reward_parts":{"math":0.25,"format":0.5},"accuracy":0.25,"kl":0.01,"clip_frac":0.1,"entropy":1.9,"response_len":38,"zero_variance_groups":2,"staleness":1,"eval_accuracy":0.2})"
    "\n";

std::vector<std::string> names(const std::vector<Series>& s) {
  std::vector<std::string> out;
  for (const Series& x : s) out.push_back(x.name);
  return out;
}

TEST(ChartSeries, FieldsThenGroupInNumericOrder) {
  const RunData r = run("p", "pretrain", kPretrain);
  EXPECT_THAT(names(chart_series(training_charts()[0], r.metrics)), ElementsAre("loss", "loss_main", "loss_mtp", "val_loss"));
  EXPECT_THAT(names(chart_series(training_charts()[3], r.metrics)), ElementsAre("layer 1", "layer 2", "layer 10"));
  const RunData rl = run("r", "rl", kRl);
  EXPECT_THAT(names(chart_series(rl_charts()[0], rl.metrics)), ElementsAre("reward", "format", "math"));
  EXPECT_THAT(names(chart_series(rl_charts()[1], rl.metrics)), ElementsAre("accuracy", "eval_accuracy"));
  EXPECT_THAT(names(chart_series(rl_charts().back(), rl.metrics)), ElementsAre("staleness"));
  EXPECT_TRUE(chart_series(rl_charts()[0], r.metrics).empty());
  const RunData dyn = run("d", "rl", R"({"iteration":1,"step":1,"dropped_groups":5,"prompts_sampled":64,"sample_rounds":4})"
                                     "\n");
  const ChartSpec& sampling = rl_charts()[rl_charts().size() - 2];
  EXPECT_EQ(sampling.title, "dynamic sampling");
  EXPECT_THAT(names(chart_series(sampling, dyn.metrics)), ElementsAre("prompts_sampled", "dropped_groups", "sample_rounds"));
}

TEST(ReportHtml, ChartsOfEveryRunTablesAndHeatmaps) {
  ReportInput in;
  in.title = "pipeline <report>";
  in.generator = "mariana report test";
  in.runs.push_back(run("runs/pretrain", "pretrain", kPretrain));
  in.runs.push_back(run("runs/extend", "extend", kPretrain));
  in.runs.push_back(run("runs/rl", "rl", kRl));
  in.runs[0].summary = {{"total_steps", 2}, {"best_val_loss", 6.0}, {"best_val_step", 2}};
  in.runs[0].checkpoint = "checkpoints/step-00000002";
  PasskeyFile g;
  g.source = "eval/passkey.json";
  g.lengths = {64, 128};
  g.depths = {0, 1};
  g.accuracy = {{1, 0.5}, {0.25, 0}};
  g.samples = 4;
  in.passkey.push_back(g);
  in.runs[1].passkey.push_back(g);
  TextTable t;
  t.source = "runs/pipeline-accuracy.txt";
  t.header = {"phase", "held-out accuracy"};
  t.rows = {{"rl", "91.8% (459/500)"}, {"<sft>", "60.0% (300/500)"}};
  in.accuracy = t;

  int charts = 0;
  const std::string html = report_html(in, &charts);
  // 1 loss-by-phase + 5 per training run + 8 for GRPO + 2 heatmaps.
  EXPECT_EQ(charts, 1 + 5 + 5 + 8 + 2);
  EXPECT_EQ(count_of(html, "<svg"), charts);
  EXPECT_EQ(count_of(html, "</svg>"), charts);
  for (const char* title : {"training loss by phase", "pretrain: loss", "pretrain: learning rate",
                            "pretrain: gradient norm", "pretrain: MaxVio per MoE layer", "pretrain: throughput",
                            "extend: loss", "rl: reward", "rl: accuracy", "rl: KL to the reference",
                            "rl: clip fraction", "rl: entropy", "rl: response length", "rl: zero-variance groups",
                            "rl: staleness", "passkey retrieval accuracy"})
    EXPECT_THAT(html, HasSubstr("<title>" + std::string(title) + "</title>")) << title;
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_THAT(html, HasSubstr("<title>pipeline &lt;report&gt;</title>"));
  EXPECT_THAT(html, HasSubstr("<td>&lt;sft&gt;</td>"));
  EXPECT_THAT(html, HasSubstr("<td>91.8% (459/500)</td>"));
  EXPECT_THAT(html, HasSubstr("<td>2/2 steps</td>"));
  EXPECT_THAT(html, HasSubstr("<td>val_loss 6 (best 6 at step 2)</td>"));
  EXPECT_THAT(html, HasSubstr("<td>reward 0.3, accuracy 0.25</td>"));
  EXPECT_THAT(html, HasSubstr("<td>held-out accuracy 0.2</td>"));
  EXPECT_THAT(html, HasSubstr("eval/passkey.json, 4 samples per cell"));
  EXPECT_THAT(html, Not(HasSubstr("<sft>")));
  EXPECT_THAT(html, Not(HasSubstr("http://")));
  EXPECT_THAT(html, Not(HasSubstr("https://")));
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("<link")));
  EXPECT_THAT(html, Not(HasSubstr("url(")));
}

TEST(ReportHtml, RunsWithoutStepsOrWithFewFieldsStillRender) {
  ReportInput in;
  in.runs.push_back(run("runs/new", "pretrain", ""));
  in.runs.push_back(run("runs/lossonly", "sft", R"({"step":7,"loss":null})"
                                                "\n"));
  int charts = 0;
  const std::string html = report_html(in, &charts);
  EXPECT_THAT(html, HasSubstr("metrics.jsonl has no steps yet."));
  EXPECT_THAT(html, HasSubstr("<td>no steps recorded</td>"));
  EXPECT_THAT(html, HasSubstr("<td>7 steps</td>"));
  EXPECT_THAT(html, HasSubstr("no finite values to plot"));
  // The overview and one loss chart; nothing else has data.
  EXPECT_EQ(charts, 2);
  EXPECT_EQ(count_of(html, "<svg"), 2);
}

TEST(ReportHtml, AccuracyOrPasskeyAlone) {
  ReportInput in;
  TextTable t;
  t.source = "acc.txt";
  t.header = {"phase", "accuracy"};
  t.rows = {{"rl", "90%"}};
  in.accuracy = t;
  int charts = -1;
  const std::string html = report_html(in, &charts);
  EXPECT_EQ(charts, 0);
  EXPECT_THAT(html, HasSubstr("<th>accuracy</th>"));
  EXPECT_THAT(html, Not(HasSubstr("id=\"runs\"")));
  EXPECT_THAT(html, HasSubstr("from 0 run directories"));
}

}  // namespace
}  // namespace mariana::report
