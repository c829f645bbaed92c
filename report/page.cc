// The report page (report/page.h).
#include "report/page.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

namespace mariana::report {

namespace {

constexpr const char* kStyle =
    "body{font-family:sans-serif;color:#222;max-width:1340px;margin:24px auto;padding:0 16px}"
    "h1{font-size:22px;margin-bottom:4px}"
    "h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}"
    "table{border-collapse:collapse;margin:8px 0}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px;vertical-align:top}"
    "th{background:#f2f2f2}"
    ".charts{display:flex;flex-wrap:wrap;gap:12px}"
    "svg.chart{border:1px solid #e0e0e0}"
    "figure{margin:0}figcaption{font-size:12px;color:#555;max-width:640px}"
    ".note{color:#666;font-size:13px}.warn{color:#a33;font-size:13px}";

std::string esc(const std::string& s) { return html_escape(s); }

bool is_integer(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string number_or_dash(double v) { return std::isfinite(v) ? format_number(v) : "\u2013"; }

std::string table_html(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::string s = "<table>\n<tr>";
  for (const std::string& h : header) s += "<th>" + esc(h) + "</th>";
  s += "</tr>\n";
  for (const auto& r : rows) {
    s += "<tr>";
    for (const std::string& c : r) s += "<td>" + esc(c) + "</td>";
    s += "</tr>\n";
  }
  return s + "</table>\n";
}

// A summary.json number, NaN when absent or null.
double summary_number(const RunData& r, const char* key) {
  if (!r.summary.is_object()) return NAN;
  auto it = r.summary.find(key);
  return it != r.summary.end() && it->is_number() ? it->get<double>() : NAN;
}

std::vector<std::string> run_row(const RunData& r) {
  const Metrics& m = r.metrics;
  const std::string unit = r.rl ? " iterations" : " steps";
  std::string progress = m.lines == 0 ? "no" + unit + " recorded" : "";
  if (m.lines > 0) {
    progress = std::to_string(m.last_x);
    if (double total = summary_number(r, "total_steps"); std::isfinite(total)) progress += "/" + format_number(total);
    progress += unit;
  }
  std::string last, eval;
  if (r.rl) {
    last = "reward " + number_or_dash(m.last("reward")) + ", accuracy " + number_or_dash(m.last("accuracy"));
    eval = m.has("eval_accuracy") ? "held-out accuracy " + number_or_dash(m.last("eval_accuracy")) : "\u2013";
  } else {
    last = "loss " + number_or_dash(m.last("loss"));
    const double best = summary_number(r, "best_val_loss");
    if (m.has("val_loss")) {
      eval = "val_loss " + number_or_dash(m.last("val_loss"));
      if (std::isfinite(best))
        eval += " (best " + format_number(best) + " at step " + number_or_dash(summary_number(r, "best_val_step")) + ")";
    } else {
      eval = "\u2013";
    }
  }
  const std::string phase = r.phase + (r.phase_from.empty() ? "" : " (from " + r.phase_from + ")");
  return {r.label, phase, progress, last, eval, r.checkpoint.empty() ? "(none)" : r.checkpoint};
}

// The name of a run in its charts' titles: its directory's name with the phase, or the phase
// alone when the directory is named after it ("pipeline-sft-clean (sft)", "pretrain").
std::string run_name(const RunData& r) {
  const std::string base = std::filesystem::path(r.label).filename().string();
  return base.empty() || base == r.phase ? r.phase : base + " (" + r.phase + ")";
}

std::string figure(const std::string& svg, const std::string& caption = "") {
  return "<figure>\n" + svg + (caption.empty() ? "" : "<figcaption>" + esc(caption) + "</figcaption>\n") +
         "</figure>\n";
}

std::string passkey_figure(const PasskeyFile& g) {
  std::string caption = g.source;
  if (g.samples > 0) caption += ", " + std::to_string(g.samples) + " samples per cell";
  return figure(heatmap_svg(passkey_heatmap(g.lengths, g.depths, g.accuracy, "passkey retrieval accuracy")), caption);
}

}  // namespace

const std::vector<ChartSpec>& training_charts() {
  static const std::vector<ChartSpec> k = {
      {"loss", "cross-entropy", YScale::kAuto, {"loss", "loss_main", "loss_mtp", "val_loss"}, "", ""},
      {"learning rate", "lr", YScale::kLinear, {"lr"}, "", ""},
      {"gradient norm", "norm", YScale::kAuto, {"grad_norm"}, "", ""},
      {"MaxVio per MoE layer", "MaxVio_batch", YScale::kLinear, {}, "max_vio", ""},
      {"throughput", "tokens/s", YScale::kLinear, {"tokens_per_s"}, "", ""},
  };
  return k;
}

const std::vector<ChartSpec>& rl_charts() {
  static const std::vector<ChartSpec> k = {
      {"reward", "mean reward", YScale::kLinear, {"reward"}, "reward_parts", ""},
      {"accuracy", "fraction correct", YScale::kLinear, {"accuracy", "eval_accuracy"}, "", ""},
      {"KL to the reference", "KL", YScale::kAuto, {"kl"}, "", ""},
      {"clip fraction", "fraction", YScale::kLinear, {"clip_frac"}, "", ""},
      {"entropy", "nats per token", YScale::kLinear, {"entropy"}, "", ""},
      {"response length", "tokens", YScale::kLinear, {"response_len"}, "", ""},
      {"zero-variance groups", "groups", YScale::kLinear, {"zero_variance_groups"}, "", ""},
      {"dynamic sampling", "per iteration", YScale::kLinear, {"prompts_sampled", "dropped_groups", "sample_rounds"}, "", ""},
      {"staleness", "policy versions", YScale::kLinear, {}, "", "stale"},
  };
  return k;
}

std::vector<Series> chart_series(const ChartSpec& spec, const Metrics& m) {
  std::vector<Series> out;
  std::vector<std::string> taken;
  auto add = [&](const std::string& key, const std::string& name) {
    if (std::find(taken.begin(), taken.end(), key) != taken.end()) return;
    taken.push_back(key);
    out.push_back({name, m.series.at(key)});
  };
  for (const std::string& f : spec.fields)
    if (m.has(f)) add(f, f);
  if (!spec.group.empty()) {
    const std::string prefix = spec.group + ".";
    std::vector<std::string> subs;
    for (const auto& [key, pts] : m.series)
      if (key.rfind(prefix, 0) == 0) subs.push_back(key.substr(prefix.size()));
    if (std::all_of(subs.begin(), subs.end(), is_integer))
      std::sort(subs.begin(), subs.end(), [](const std::string& a, const std::string& b) {
        return std::strtoll(a.c_str(), nullptr, 10) < std::strtoll(b.c_str(), nullptr, 10);
      });
    for (const std::string& sub : subs) add(prefix + sub, spec.group == "max_vio" ? "layer " + sub : sub);
  }
  if (!spec.containing.empty())
    for (const auto& [key, pts] : m.series)
      if (key.find(spec.containing) != std::string::npos) add(key, key);
  return out;
}

std::string report_html(const ReportInput& in, int* charts) {
  int n_charts = 0;
  auto chart = [&](const std::vector<Series>& series, const ChartOptions& opt) {
    ++n_charts;
    return line_chart_svg(series, opt);
  };
  std::vector<const RunData*> training;
  for (const RunData& r : in.runs)
    if (!r.rl) training.push_back(&r);
  size_t grids = in.passkey.size();
  for (const RunData& r : in.runs) grids += r.passkey.size();

  std::string s = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" + esc(in.title) +
                  "</title>\n<style>" + kStyle + "</style>\n</head>\n<body>\n<h1>" + esc(in.title) + "</h1>\n";
  s += "<p class=\"note\">Written by " + esc(in.generator.empty() ? "mariana report" : in.generator) + " from " +
       std::to_string(in.runs.size()) + " run director" + (in.runs.size() == 1 ? "y" : "ies") + ".</p>\n";

  // Contents.
  s += "<ul class=\"note\">\n";
  if (!in.runs.empty()) s += "<li><a href=\"#runs\">Runs</a></li>\n";
  if (in.accuracy) s += "<li><a href=\"#accuracy\">Held-out accuracy</a></li>\n";
  if (training.size() > 1) s += "<li><a href=\"#loss-by-phase\">Training loss by phase</a></li>\n";
  for (size_t i = 0; i < in.runs.size(); ++i)
    s += "<li><a href=\"#run-" + std::to_string(i + 1) + "\">" + esc(in.runs[i].label) + " (" +
         esc(in.runs[i].phase) + ")</a></li>\n";
  if (grids > 0) s += "<li><a href=\"#passkey\">Passkey retrieval</a></li>\n";
  s += "</ul>\n";

  if (!in.runs.empty()) {
    std::vector<std::vector<std::string>> rows;
    for (const RunData& r : in.runs) rows.push_back(run_row(r));
    s += "<h2 id=\"runs\">Runs</h2>\n" +
         table_html({"run", "phase", "progress", "last", "evaluation", "newest checkpoint"}, rows);
  }
  if (in.accuracy) {
    s += "<h2 id=\"accuracy\">Held-out accuracy</h2>\n<p class=\"note\">" + esc(in.accuracy->source) + "</p>\n" +
         table_html(in.accuracy->header, in.accuracy->rows);
  }
  if (training.size() > 1) {
    std::vector<Series> losses;
    for (const RunData* r : training)
      if (r->metrics.has("loss")) losses.push_back({r->label + " (" + r->phase + ")", r->metrics.series.at("loss")});
    ChartOptions o;
    o.title = "training loss by phase";
    o.x_label = "step (of each run)";
    o.y_label = "loss";
    o.y_scale = YScale::kAuto;
    o.width = 900;
    s += "<h2 id=\"loss-by-phase\">Training loss by phase</h2>\n" + figure(chart(losses, o));
  }

  for (size_t i = 0; i < in.runs.size(); ++i) {
    const RunData& r = in.runs[i];
    s += "<h2 id=\"run-" + std::to_string(i + 1) + "\">" + esc(r.label) + " (" + esc(r.phase) + ")</h2>\n";
    if (!r.metrics.torn.empty()) s += "<p class=\"warn\">" + esc(r.metrics.torn) + "</p>\n";
    if (r.metrics.lines == 0) {
      s += "<p class=\"note\">metrics.jsonl has no " + std::string(r.rl ? "iterations" : "steps") + " yet.</p>\n";
      continue;
    }
    s += "<div class=\"charts\">\n";
    for (const ChartSpec& spec : r.rl ? rl_charts() : training_charts()) {
      std::vector<Series> series = chart_series(spec, r.metrics);
      if (series.empty()) continue;
      ChartOptions o;
      o.title = run_name(r) + ": " + spec.title;
      o.x_label = r.metrics.x_field;
      o.y_label = spec.y_label;
      o.y_scale = spec.scale;
      s += figure(chart(series, o));
    }
    s += "</div>\n";
  }

  if (grids > 0) {
    s += "<h2 id=\"passkey\">Passkey retrieval</h2>\n<div class=\"charts\">\n";
    for (const RunData& r : in.runs)
      for (const PasskeyFile& g : r.passkey) s += passkey_figure(g), ++n_charts;
    for (const PasskeyFile& g : in.passkey) s += passkey_figure(g), ++n_charts;
    s += "</div>\n";
  }
  s += "</body>\n</html>\n";
  if (charts != nullptr) *charts = n_charts;
  return s;
}

}  // namespace mariana::report
