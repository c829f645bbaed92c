// SVG line charts and heatmaps (report/chart.h).
#include "report/chart.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>

namespace mariana::report {

namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr size_t kPaletteSize = sizeof(kPalette) / sizeof(kPalette[0]);
// Series with at most this many finite points get a marker on every point.
constexpr size_t kMarkAllBelow = 40;
// Longer series are thinned to about this many points (non-finite points, the gaps, are all kept).
constexpr size_t kMaxDrawn = 2000;

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  const int n = std::vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return std::string(buf, static_cast<size_t>(std::clamp(n, 0, static_cast<int>(sizeof(buf)) - 1)));
}

// `<svg ...><title>..</title>` with a white background.
std::string svg_open(int width, int height, const std::string& title, bool standalone) {
  std::string s = "<svg";
  if (standalone) s += " xmlns=\"http://www.w3.org/2000/svg\"";
  s += fmt(" class=\"chart\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
           "font-size=\"11\" role=\"img\">\n",
           width, height, width, height);
  s += "<title>" + html_escape(title) + "</title>\n";
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  return s;
}

std::string text_at(double x, double y, const char* anchor, const std::string& text, const char* extra = "") {
  return fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>", x, y, anchor, extra) + html_escape(text) +
         "</text>\n";
}

// The y label, rotated along the left edge.
std::string y_label_at(double x, double y, const std::string& text) {
  return fmt("<text x=\"%.1f\" y=\"%.1f\" transform=\"rotate(-90 %.1f %.1f)\" text-anchor=\"middle\">", x, y, x, y) +
         html_escape(text) + "</text>\n";
}

// About how wide a text is at the charts' 11 px sans-serif (no font metrics at hand).
int text_width(const std::string& text) { return static_cast<int>(text.size() * 13 / 2); }

bool drawable(const Point& p, bool log) { return std::isfinite(p.x) && std::isfinite(p.y) && (!log || p.y > 0); }

// The series' points in x order, thinned to about kMaxDrawn (gaps kept).
std::vector<Point> drawn_points(const Series& s) {
  std::vector<Point> pts = s.points;
  std::stable_sort(pts.begin(), pts.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
  if (pts.size() <= kMaxDrawn) return pts;
  const size_t stride = (pts.size() + kMaxDrawn - 1) / kMaxDrawn;
  std::vector<Point> out;
  for (size_t i = 0; i < pts.size(); ++i)
    if (i % stride == 0 || i + 1 == pts.size() || !std::isfinite(pts[i].y)) out.push_back(pts[i]);
  return out;
}

}  // namespace

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string format_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1 && a < 1e6 && v == std::floor(v)) return fmt("%.0f", v);
  return fmt("%.4g", v);
}

std::vector<double> linear_ticks(double lo, double hi, int target, double min_step) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {0, 1};
  if (lo > hi) std::swap(lo, hi);
  if (!(hi > lo)) {
    const double d = std::max(lo == 0 ? 1.0 : std::fabs(lo) * 0.1, min_step / 2);
    lo -= d;
    hi += d;
  }
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  double step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  if (min_step > 0 && step < min_step) step = min_step;
  const double first = std::floor(lo / step), last = std::ceil(hi / step);
  // A range too wide for a double, or too narrow for its magnitude (1e20 and its next doubles):
  // just the ends.
  if (!std::isfinite(step) || !(step > 0) || !(last - first >= 1) || last - first > 1000) return {lo, hi};
  std::vector<double> ticks;
  for (int64_t i = 0; i <= static_cast<int64_t>(last - first); ++i) {
    const double t = (first + static_cast<double>(i)) * step;
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

std::vector<double> log_ticks(double lo, double hi) {
  if (!(lo > 0) || !std::isfinite(lo) || !std::isfinite(hi) || hi < lo) return {};
  const int kmin = static_cast<int>(std::floor(std::log10(lo))), kmax = static_cast<int>(std::ceil(std::log10(hi)));
  const double eps = 1e-9;
  auto within = [&](double t) { return t >= lo * (1 - eps) && t <= hi * (1 + eps); };
  std::vector<double> all, powers;
  for (int k = kmin; k <= kmax; ++k) {
    const double p = std::pow(10.0, k);
    for (double m : {1.0, 2.0, 5.0})
      if (within(m * p)) all.push_back(m * p);
    if (within(p)) powers.push_back(p);
  }
  if (all.size() <= 10 && all.size() >= 2) return all;
  if (powers.size() > 8) {  // many decades: every n-th power of ten
    const size_t every = (powers.size() + 7) / 8;
    std::vector<double> some;
    for (size_t i = 0; i < powers.size(); i += every) some.push_back(powers[i]);
    return some;
  }
  if (powers.size() >= 2) return powers;
  // Less than a decade: evenly spaced ticks inside the range.
  std::vector<double> lin;
  for (double t : linear_ticks(lo, hi, 4))
    if (within(t)) lin.push_back(t);
  return lin;
}

bool use_log_scale(const std::vector<Series>& series) {
  double lo = INFINITY, hi = -INFINITY;
  size_t n = 0;
  for (const Series& s : series)
    for (const Point& p : s.points) {
      if (!std::isfinite(p.y)) continue;
      if (p.y <= 0) return false;
      lo = std::min(lo, p.y);
      hi = std::max(hi, p.y);
      ++n;
    }
  return n >= 2 && hi >= 10 * lo;
}

std::string line_chart_svg(const std::vector<Series>& series, const ChartOptions& opt) {
  const int left = 66, right = 16, top = 34, below = 42, row = 18;
  const int plot_w = std::max(100, opt.width - left - right), plot_h = std::max(60, opt.plot_height);
  const bool legend = series.size() > 1;
  // Legend entries flow left to right and wrap at the plot's width; *where: each entry's offset.
  std::vector<std::pair<int, int>> where;
  int legend_rows = 0;
  if (legend) {
    int x = 0;
    legend_rows = 1;
    for (const Series& se : series) {
      const int w = 24 + text_width(se.name) + 18;
      if (x > 0 && x + w > plot_w) {
        x = 0;
        ++legend_rows;
      }
      where.push_back({x, (legend_rows - 1) * row});
      x += w;
    }
  }
  const int legend_h = legend ? legend_rows * row + 6 : 0;
  const int width = left + plot_w + right, height = top + plot_h + below + legend_h;
  const bool log = opt.y_scale == YScale::kLog || (opt.y_scale == YScale::kAuto && use_log_scale(series));

  std::string s = svg_open(width, height, opt.title, opt.standalone);
  s += text_at(width / 2.0, 20, "middle", opt.title, " font-size=\"13\" font-weight=\"bold\"");

  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const Series& se : series)
    for (const Point& p : se.points)
      if (drawable(p, log)) {
        xmin = std::min(xmin, p.x);
        xmax = std::max(xmax, p.x);
        ymin = std::min(ymin, p.y);
        ymax = std::max(ymax, p.y);
      }
  s += fmt("<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", left, top, plot_w,
           plot_h);
  if (!(xmin <= xmax)) {
    s += text_at(left + plot_w / 2.0, top + plot_h / 2.0, "middle",
                 log ? "no positive finite values to plot" : "no finite values to plot", " fill=\"#666\"");
    return s + "</svg>\n";
  }

  const std::vector<double> xt = linear_ticks(xmin, xmax, 6, opt.integer_x ? 1 : 0);
  const double x0 = xt.front(), x1 = xt.back();
  std::vector<double> yt;
  double y0, y1;
  if (log) {
    const double pad = ymax > ymin ? std::pow(ymax / ymin, 0.04) : 2.0;
    y0 = ymin / pad;
    y1 = ymax * pad;
    yt = log_ticks(y0, y1);
  } else {
    yt = linear_ticks(ymin, ymax, 5);
    y0 = yt.front();
    y1 = yt.back();
  }
  auto fy = [&](double y) { return log ? std::log10(y) : y; };
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * plot_w; };
  auto Y = [&](double y) { return top + plot_h - (fy(y) - fy(y0)) / (fy(y1) - fy(y0)) * plot_h; };

  // Grid lines and tick labels.
  for (double t : xt) {
    const double px = X(t);
    s += fmt("<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#e4e4e4\"/>\n", px, top, px, top + plot_h);
    s += text_at(px, top + plot_h + 14, "middle", format_number(t));
  }
  for (double t : yt) {
    const double py = Y(t);
    s += fmt("<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", left, py, left + plot_w, py);
    s += text_at(left - 5, py + 4, "end", format_number(t));
  }
  s += text_at(left + plot_w / 2.0, top + plot_h + 32, "middle", opt.x_label);
  if (!opt.y_label.empty() || log)
    s += y_label_at(13, top + plot_h / 2.0, opt.y_label + (log ? (opt.y_label.empty() ? "log scale" : " (log scale)") : ""));

  // The series.
  for (size_t i = 0; i < series.size(); ++i) {
    const char* color = kPalette[i % kPaletteSize];
    const std::vector<Point> pts = drawn_points(series[i]);
    size_t finite = 0;
    for (const Point& p : pts) finite += drawable(p, log);
    std::string markers;
    for (size_t a = 0; a < pts.size();) {
      if (!drawable(pts[a], log)) {
        ++a;
        continue;
      }
      size_t b = a;
      while (b < pts.size() && drawable(pts[b], log)) ++b;
      if (b - a >= 2) {
        s += fmt("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
        for (size_t k = a; k < b; ++k) s += fmt("%s%.1f,%.1f", k == a ? "" : " ", X(pts[k].x), Y(pts[k].y));
        s += "\"/>\n";
      }
      if (b - a == 1 || finite <= kMarkAllBelow)
        for (size_t k = a; k < b; ++k)
          markers += fmt("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", X(pts[k].x), Y(pts[k].y), color);
      a = b;
    }
    s += markers;
  }

  if (legend) {
    const int ly = top + plot_h + below + 4;
    for (size_t i = 0; i < series.size(); ++i) {
      const int cx = left + where[i].first, cy = ly + where[i].second + 9;
      s += fmt("<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/>\n", cx, cy - 4,
               cx + 18, cy - 4, kPalette[i % kPaletteSize]);
      s += text_at(cx + 24, cy, "start", series[i].name);
    }
  }
  return s + "</svg>\n";
}

std::string heatmap_svg(const Heatmap& h) {
  const int cell = 48, left = 90, top = 50;
  const int nx = static_cast<int>(h.col_labels.size()), ny = static_cast<int>(h.row_labels.size());
  const int width = std::max(left + nx * cell + 30, left + text_width(h.title) * 14 / 11 + 10);  // title: 14 px
  const int height = top + ny * cell + 60;
  std::string s = svg_open(width, height, h.title, h.standalone);
  s += text_at(left, 22, "start", h.title, " font-size=\"14\"");
  for (int y = 0; y < ny; ++y) {
    s += text_at(left - 8, top + y * cell + cell / 2 + 4, "end", h.row_labels[y]);
    for (int x = 0; x < nx; ++x) {
      const double a = y < static_cast<int>(h.values.size()) && x < static_cast<int>(h.values[y].size())
                           ? h.values[y][x]
                           : NAN;
      std::string fill = "#bbbbbb";
      if (std::isfinite(a)) {
        const double c = std::clamp(a, 0.0, 1.0);  // red (0) to green (1)
        fill = fmt("rgb(%ld,%ld,%ld)", std::lround(220 * (1 - c) + 30 * c), std::lround(60 * (1 - c) + 170 * c),
                   std::lround(60 * (1 - c) + 80 * c));
      }
      s += fmt("<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" stroke=\"white\"/>", left + x * cell,
               top + y * cell, cell, cell, fill.c_str());
      s += text_at(left + x * cell + cell / 2.0, top + y * cell + cell / 2.0 + 4, "middle",
                   std::isfinite(a) ? fmt("%.2f", a) : "\u2013", " fill=\"white\"");
    }
  }
  for (int x = 0; x < nx; ++x) s += text_at(left + x * cell + cell / 2.0, top + ny * cell + 18, "middle", h.col_labels[x]);
  s += text_at(left + nx * cell / 2.0, top + ny * cell + 40, "middle", h.x_label);
  s += y_label_at(14, top + ny * cell / 2.0, h.y_label);
  return s + "</svg>\n";
}

}  // namespace mariana::report
