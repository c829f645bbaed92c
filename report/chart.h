// Self-contained SVG charts for the HTML report (`mariana report`) and the passkey heatmap of
// `mariana eval --svg`: line charts with axes, tick labels, a title and a legend, and heatmaps.
// Plain functions of their inputs (no I/O); every text they insert is escaped. The SVG carries no
// URL unless `standalone` asks for the xmlns attribute a separate .svg file needs; inline in HTML
// it needs none, so a report holds no network reference at all.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mariana::report {

// Text safe inside HTML/SVG elements and double- or single-quoted attributes: & < > " ' escaped.
std::string html_escape(std::string_view text);

// A number as a tick or table label: at most 4 significant digits, no trailing zeros ("0.001",
// "2.5e-05", "1200", "-0.5"); "nan" / "inf" / "-inf" for the non-finite.
std::string format_number(double v);

// One point of a series; a non-finite y is a gap (the line breaks there).
struct Point {
  double x = 0, y = 0;
};

struct Series {
  std::string name;
  std::vector<Point> points;  // drawn in x order
};

enum class YScale {
  kLinear,
  kLog,
  kAuto,  // log when every finite value is > 0 and they span a factor of 10 or more, else linear
};

struct ChartOptions {
  std::string title, x_label, y_label;
  YScale y_scale = YScale::kLinear;
  bool integer_x = true;  // x ticks at whole numbers (steps, iterations)
  int width = 640;
  int plot_height = 220;  // the plot area; title, axes and legend add to the height
  bool standalone = false;  // add xmlns (a separate .svg file)
};

// Axis ticks. linear_ticks: evenly spaced "nice" values (1, 2 or 5 × 10^k apart) covering
// [lo, hi], about `target` of them; the first is <= lo and the last >= hi. With min_step > 0 the
// spacing is at least min_step. lo == hi gets a range around it.
std::vector<double> linear_ticks(double lo, double hi, int target = 5, double min_step = 0);
// 1, 2 and 5 × 10^k within [lo, hi] (lo > 0); only powers of ten when that gives too many, and
// every other power when the range spans many decades.
std::vector<double> log_ticks(double lo, double hi);
// What kAuto picks for these series.
bool use_log_scale(const std::vector<Series>& series);

// A line chart: one polyline per unbroken run of two or more points of a series (a point alone,
// or a series of few points, also gets circle markers), grid lines and tick labels on both axes,
// the title on top, the axis labels, and a legend below the plot when there is more than one
// series. A chart with no finite point says so inside its frame. Never fails.
std::string line_chart_svg(const std::vector<Series>& series, const ChartOptions& opt);

// A grid of values in [0, 1] coloured red (0) to green (1), each cell labelled with its value;
// a non-finite value is a grey cell marked "–". Rows are drawn top to bottom.
struct Heatmap {
  std::string title, x_label, y_label;
  std::vector<std::string> col_labels, row_labels;
  std::vector<std::vector<double>> values;  // [row][col]; a short row leaves its last cells empty
  bool standalone = false;  // add xmlns (a separate .svg file)
};
std::string heatmap_svg(const Heatmap& h);

}  // namespace mariana::report
