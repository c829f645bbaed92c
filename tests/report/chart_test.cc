// The SVG builders of report/chart.h: escaping, number labels, ticks, line charts (points, gaps,
// a lone point, no data, log scale, legends) and heatmaps.
#include "report/chart.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <string>
#include <vector>

#include "tests/report/count_of.h"

namespace mariana::report {
namespace {

using ::mariana::testing::count_of;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// The coordinate pairs of each polyline, in order.
std::vector<int> polyline_sizes(const std::string& svg) {
  std::vector<int> out;
  const std::regex re("<polyline[^>]* points=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it) {
    const std::string pts = (*it)[1].str();
    out.push_back(pts.empty() ? 0 : count_of(pts, " ") + 1);
  }
  return out;
}

// The texts of the <text> elements.
std::vector<std::string> texts(const std::string& svg) {
  std::vector<std::string> out;
  const std::regex re("<text[^>]*>([^<]*)</text>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    out.push_back((*it)[1].str());
  return out;
}

bool has_text(const std::string& svg, const std::string& t) {
  for (const std::string& x : texts(svg))
    if (x == t) return true;
  return false;
}

// Tick values equal to the wanted ones up to rounding.
void expect_ticks(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size()) << ::testing::PrintToString(got);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12 * std::max(1.0, std::fabs(want[i]))) << i;
}

Series line(const std::string& name, std::vector<double> ys, double x0 = 1) {
  Series s{name, {}};
  for (size_t i = 0; i < ys.size(); ++i) s.points.push_back({x0 + static_cast<double>(i), ys[i]});
  return s;
}

ChartOptions opts(const std::string& title) {
  ChartOptions o;
  o.title = title;
  o.x_label = "step";
  o.y_label = "loss";
  return o;
}

TEST(HtmlEscape, EscapesMarkupAndQuotes) {
  EXPECT_EQ(html_escape("<a href=\"x\">Tom & Jerry's</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;");
  EXPECT_EQ(html_escape("plain text 1.5"), "plain text 1.5");
}

TEST(FormatNumber, ShortLabels) {
  EXPECT_EQ(format_number(0), "0");
  EXPECT_EQ(format_number(0.001), "0.001");
  EXPECT_EQ(format_number(2.5e-5), "2.5e-05");
  EXPECT_EQ(format_number(1200), "1200");
  EXPECT_EQ(format_number(-0.5), "-0.5");
  EXPECT_EQ(format_number(0.1 + 0.2), "0.3");
  EXPECT_EQ(format_number(3.14159265), "3.142");
  EXPECT_EQ(format_number(NAN), "nan");
  EXPECT_EQ(format_number(-INFINITY), "-inf");
}

TEST(Ticks, LinearTicksAreNiceAndCoverTheRange) {
  expect_ticks(linear_ticks(0, 2400, 6, 1), {0, 500, 1000, 1500, 2000, 2500});
  expect_ticks(linear_ticks(2.1, 9.0, 5), {2, 4, 6, 8, 10});
  expect_ticks(linear_ticks(-0.3, 0.25, 5), {-0.4, -0.2, 0, 0.2, 0.4});
  expect_ticks(linear_ticks(0, 0.003, 5), {0, 0.001, 0.002, 0.003});
  // One value: a range around it; whole numbers when asked.
  expect_ticks(linear_ticks(5, 5, 6, 1), {4, 5, 6});
  const std::vector<double> flat = linear_ticks(0.25, 0.25, 5);
  ASSERT_GE(flat.size(), 2u);
  EXPECT_LT(flat.front(), 0.25);
  EXPECT_GT(flat.back(), 0.25);
  expect_ticks(linear_ticks(NAN, 1, 5), {0, 1});
  // Extremes end in the range's ends, not in a loop that never ends.
  expect_ticks(linear_ticks(-1e308, 1e308, 5), {-1e308, 1e308});
  for (double lo : {1e20, 1e22}) {  // steps below a double's spacing at 1e22: k + 1 == k
    const std::vector<double> big = linear_ticks(lo, lo + 4194304, 5);
    EXPECT_GE(big.size(), 2u);
    EXPECT_LE(big.size(), 1001u);
  }
}

TEST(Ticks, LogTicks) {
  expect_ticks(log_ticks(0.5, 60), {0.5, 1, 2, 5, 10, 20, 50});
  expect_ticks(log_ticks(1e-6, 1e3), {1e-6, 1e-4, 1e-2, 1, 1e2});  // many decades: every other power
  expect_ticks(log_ticks(1e-3, 1e2), {1e-3, 1e-2, 1e-1, 1, 10, 100});  // too many 1-2-5s: powers only
  const std::vector<double> narrow = log_ticks(2.1, 2.9);  // less than a decade: evenly spaced inside
  ASSERT_GE(narrow.size(), 2u);
  for (double t : narrow) EXPECT_TRUE(t >= 2.1 && t <= 2.9) << t;
  EXPECT_TRUE(log_ticks(0, 10).empty());
}

TEST(Ticks, AutoScaleIsLogOnlyForPositiveValuesOverADecade) {
  EXPECT_TRUE(use_log_scale({line("a", {10, 3, 0.9})}));
  EXPECT_FALSE(use_log_scale({line("a", {10, 3, 1.5})}));         // less than a decade
  EXPECT_FALSE(use_log_scale({line("a", {10, 3, 0})}));           // a zero
  EXPECT_FALSE(use_log_scale({line("a", {10}), line("b", {})}));  // one value
  EXPECT_TRUE(use_log_scale({line("a", {10, NAN, 0.5})}));        // gaps do not count
}

TEST(LineChart, OneSeriesIsOnePolylineWithItsPointsAxesAndTitle) {
  const std::string svg = line_chart_svg({line("loss", {9, 8, 6, 5, 4.5})}, opts("pretrain: loss"));
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_THAT(polyline_sizes(svg), ElementsAre(5));
  EXPECT_TRUE(has_text(svg, "pretrain: loss"));
  EXPECT_THAT(svg, HasSubstr("<title>pretrain: loss</title>"));
  for (const char* x : {"1", "2", "3", "4", "5"}) EXPECT_TRUE(has_text(svg, x)) << "x tick " << x;
  for (const char* y : {"4", "6", "7", "9"}) EXPECT_TRUE(has_text(svg, y)) << "y tick " << y;
  EXPECT_TRUE(has_text(svg, "step"));
  EXPECT_TRUE(has_text(svg, "loss"));  // the y label
  EXPECT_EQ(count_of(svg, "stroke-width=\"3\""), 0) << "no legend for one series";
  EXPECT_THAT(svg, Not(HasSubstr("http")));  // inline: no xmlns
  EXPECT_EQ(count_of(svg, "<svg"), 1);
  EXPECT_EQ(count_of(svg, "</svg>"), 1);
}

TEST(LineChart, PointsLandOnTheirTicks) {
  // x 0..10 and y 0..10 map onto the plot corners: the first point is at the bottom-left.
  ChartOptions o = opts("t");
  const std::string svg = line_chart_svg({{"s", {{0, 0}, {10, 10}}}}, o);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, std::regex("points=\"([0-9.]+),([0-9.]+) ([0-9.]+),([0-9.]+)\"")));
  EXPECT_LT(std::stod(m[1]), std::stod(m[3]));  // x grows to the right
  EXPECT_GT(std::stod(m[2]), std::stod(m[4]));  // y grows upwards
  EXPECT_EQ(std::stod(m[3]) - std::stod(m[1]), 640 - 66 - 16);  // the whole plot width
}

TEST(LineChart, NaNsBreakTheLineAndLonePointsGetMarkers) {
  Series s = line("loss", {3, 2.5, NAN, 2, 1.8, 1.7, NAN, 1.6});
  const std::string svg = line_chart_svg({s}, opts("gaps"));
  EXPECT_THAT(polyline_sizes(svg), ElementsAre(2, 3));
  EXPECT_EQ(count_of(svg, "<circle"), 6);  // few points: every finite point is marked
}

TEST(LineChart, ASinglePointIsAMarkerWithAxes) {
  const std::string svg = line_chart_svg({line("loss", {4.2}, 7)}, opts("one point"));
  EXPECT_TRUE(polyline_sizes(svg).empty());
  EXPECT_EQ(count_of(svg, "<circle"), 1);
  for (const char* x : {"6", "7", "8"}) EXPECT_TRUE(has_text(svg, x)) << "x tick " << x;
  EXPECT_GE(count_of(svg, "<line"), 4);  // grid lines on both axes
}

TEST(LineChart, NoFiniteValueSaysSo) {
  for (const std::vector<Series>& series :
       {std::vector<Series>{}, std::vector<Series>{line("loss", {NAN, NAN})}, std::vector<Series>{line("loss", {})}}) {
    const std::string svg = line_chart_svg(series, opts("empty"));
    EXPECT_THAT(svg, HasSubstr("no finite values to plot"));
    EXPECT_TRUE(polyline_sizes(svg).empty());
    EXPECT_THAT(svg, HasSubstr("</svg>"));
  }
}

TEST(LineChart, LogScaleForLossesOverDecades) {
  ChartOptions o = opts("loss");
  o.y_scale = YScale::kAuto;
  const std::string svg = line_chart_svg({line("loss", {100, 30, 10, 3, 1, 0.3, 0.1})}, o);
  EXPECT_TRUE(has_text(svg, "loss (log scale)"));
  for (const char* y : {"0.1", "1", "10", "100"}) EXPECT_TRUE(has_text(svg, y)) << "y tick " << y;
  // Equal ratios are equal distances: 100 -> 10 and 10 -> 1 span the same height.
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, std::regex("points=\"([^\"]*)\"")));
  std::vector<double> ys;
  const std::string pts = m[1];
  const std::regex pair("[0-9.]+,([0-9.]+)");
  for (auto it = std::sregex_iterator(pts.begin(), pts.end(), pair); it != std::sregex_iterator(); ++it)
    ys.push_back(std::stod((*it)[1]));
  ASSERT_EQ(ys.size(), 7u);
  EXPECT_NEAR(ys[2] - ys[0], ys[4] - ys[2], 0.2);
  // A zero cannot go on a log axis: the auto scale stays linear.
  const std::string lin = line_chart_svg({line("kl", {0, 0.01, 0.5})}, o);
  EXPECT_FALSE(has_text(lin, "loss (log scale)"));
  EXPECT_THAT(polyline_sizes(lin), ElementsAre(3));
}

TEST(LineChart, ForcedLogScaleDropsNonPositivePoints) {
  ChartOptions o = opts("log");
  o.y_scale = YScale::kLog;
  EXPECT_THAT(polyline_sizes(line_chart_svg({line("a", {1, 10, 0, 100, 1000})}, o)), ElementsAre(2, 2));
  EXPECT_THAT(line_chart_svg({line("a", {0, -1})}, o), HasSubstr("no positive finite values to plot"));
}

TEST(LineChart, LegendNamesEverySeriesAndIsEscaped) {
  const std::string svg = line_chart_svg(
      {line("loss_main", {3, 2}), line("val <loss> & \"more\"", {3.5, 2.5}), line("loss_mtp", {3.2, 2.2})},
      opts("a <b> & 'c'"));
  EXPECT_EQ(count_of(svg, "stroke-width=\"3\""), 3);
  EXPECT_TRUE(has_text(svg, "loss_main"));
  EXPECT_TRUE(has_text(svg, "val &lt;loss&gt; &amp; &quot;more&quot;"));
  EXPECT_TRUE(has_text(svg, "a &lt;b&gt; &amp; &#39;c&#39;"));
  EXPECT_THAT(svg, Not(HasSubstr("<b>")));
  EXPECT_THAT(svg, Not(HasSubstr("<loss>")));
  EXPECT_THAT(polyline_sizes(svg), ElementsAre(2, 2, 2));
}

TEST(LineChart, ManyLegendEntriesWrapIntoRowsInsideTheChart) {
  std::vector<Series> layers;
  for (int l = 0; l < 30; ++l) layers.push_back(line("layer " + std::to_string(l), {1, 2}));
  const std::string few = line_chart_svg({line("a", {1, 2}), line("b", {1, 2})}, opts("t"));
  const std::string many = line_chart_svg(layers, opts("t"));
  std::smatch a, b;
  ASSERT_TRUE(std::regex_search(few, a, std::regex("height=\"([0-9]+)\"")));
  ASSERT_TRUE(std::regex_search(many, b, std::regex("height=\"([0-9]+)\"")));
  EXPECT_GT(std::stoi(b[1]), std::stoi(a[1]) + 3 * 18);  // several legend rows
  const std::regex x_of("<text x=\"([0-9.]+)\"");
  for (auto it = std::sregex_iterator(many.begin(), many.end(), x_of); it != std::sregex_iterator(); ++it)
    EXPECT_LE(std::stod((*it)[1]), 640.0);
}

TEST(LineChart, ExtremeValuesStillDraw) {
  const std::string svg = line_chart_svg({line("loss", {1e300, -1e300, 1e20, 5e-324})}, opts("extreme"));
  EXPECT_THAT(polyline_sizes(svg), ElementsAre(4));
  EXPECT_THAT(svg, Not(HasSubstr("nan")));
  EXPECT_THAT(svg, Not(HasSubstr("inf")));
}

TEST(LineChart, LongSeriesAreThinnedButKeepTheirGaps) {
  Series s{"loss", {}};
  for (int i = 1; i <= 10000; ++i) s.points.push_back({static_cast<double>(i), i == 5001 ? NAN : 1.0 / i});
  const std::string svg = line_chart_svg({s}, opts("long"));
  const std::vector<int> sizes = polyline_sizes(svg);
  ASSERT_EQ(sizes.size(), 2u) << "the NaN at step 5001 still breaks the line";
  EXPECT_LE(sizes[0] + sizes[1], 2100);
  EXPECT_GE(sizes[0] + sizes[1], 1900);
  EXPECT_EQ(count_of(svg, "<circle"), 0);
}

TEST(Heatmap, CellsColouredAndLabelled) {
  Heatmap h;
  h.title = "passkey <grid>";
  h.x_label = "passkey depth";
  h.y_label = "context length (tokens)";
  h.col_labels = {"0.00", "0.50", "1.00"};
  h.row_labels = {"64", "128"};
  h.values = {{1.0, 0.5, 0.0}, {NAN, 0.25}};  // a NaN cell and a short row
  const std::string svg = heatmap_svg(h);
  EXPECT_EQ(count_of(svg, "fill=\"rgb("), 4);
  EXPECT_EQ(count_of(svg, "fill=\"#bbbbbb\""), 2);
  EXPECT_THAT(svg, HasSubstr("fill=\"rgb(30,170,80)\""));   // 1: green
  EXPECT_THAT(svg, HasSubstr("fill=\"rgb(220,60,60)\""));   // 0: red
  for (const char* t : {"1.00", "0.50", "0.00", "0.25", "\u2013", "64", "128", "passkey depth",
                        "context length (tokens)", "passkey &lt;grid&gt;"})
    EXPECT_TRUE(has_text(svg, t)) << t;
  EXPECT_THAT(svg, Not(HasSubstr("http")));
  h.standalone = true;
  EXPECT_THAT(heatmap_svg(h), HasSubstr("<svg xmlns=\"http://www.w3.org/2000/svg\""));
}

TEST(Heatmap, WideEnoughForItsTitle) {
  Heatmap h;
  h.title = std::string(80, 'x');
  h.col_labels = {"0.00"};
  h.row_labels = {"64"};
  h.values = {{0.5}};
  std::smatch m;
  const std::string svg = heatmap_svg(h);
  ASSERT_TRUE(std::regex_search(svg, m, std::regex("width=\"([0-9]+)\"")));
  EXPECT_GE(std::stoi(m[1]), 90 + 80 * 7);
}

}  // namespace
}  // namespace mariana::report
