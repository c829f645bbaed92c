// The report page of `mariana report`: one self-contained HTML file (inline CSS and SVG, no
// script, no URL) summarising run directories: a table of the runs, the accuracy table, the
// training loss of every phase side by side, then per run its charts — loss, LR, gradient norm,
// MaxVio per MoE layer and throughput for training; reward, accuracy, KL, clip fraction, entropy,
// response length, zero-variance groups, dynamic sampling and staleness for GRPO — and the passkey
// heatmaps.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "report/chart.h"
#include "report/inputs.h"

namespace mariana::report {

struct ReportInput {
  std::string title = "Mariana report";
  std::string generator;  // "mariana 0.1.0 (commit abc1234)", shown in the page's header
  std::vector<RunData> runs;
  std::vector<PasskeyFile> passkey;  // grids named on the command line (the runs' own are in runs)
  std::optional<TextTable> accuracy;
};

// One chart of a run: its title, y label and scale, and the metrics it plots: the named fields in
// this order, then every field of `group` ("max_vio" -> "max_vio.0", "max_vio.1", ... in numeric
// order), then every field whose name contains `containing`.
struct ChartSpec {
  std::string title, y_label;
  YScale scale = YScale::kLinear;
  std::vector<std::string> fields;
  std::string group, containing;
};
// The charts of a training run and of a GRPO run.
const std::vector<ChartSpec>& training_charts();
const std::vector<ChartSpec>& rl_charts();
// The series of `spec` that the metrics have (possibly none): legend names drop the group's
// prefix ("max_vio.3" -> "layer 3", "reward_parts.math" -> "math").
std::vector<Series> chart_series(const ChartSpec& spec, const Metrics& m);

// The page. *charts (when given): how many charts it holds.
std::string report_html(const ReportInput& in, int* charts = nullptr);

}  // namespace mariana::report
