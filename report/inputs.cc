// Reading run directories, passkey grids and text tables for the report (report/inputs.h).
#include "report/inputs.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/file_util.h"
#include "core/json_util.h"

namespace mariana::report {

namespace {

namespace fs = std::filesystem;

// Fields the report plots: each must be a number or null when present.
constexpr const char* kPlottedNumbers[] = {
    "loss", "loss_main", "loss_mtp", "val_loss", "lr", "grad_norm", "tokens_per_s",
    "reward", "accuracy", "eval_accuracy", "kl", "clip_frac", "entropy", "response_len", "zero_variance_groups"};
// Fields the report plots per key: each must be an object of numbers or null.
constexpr const char* kPlottedGroups[] = {"max_vio", "reward_parts"};

bool is_plotted(const std::string& name) {
  for (const char* f : kPlottedNumbers)
    if (name == f) return true;
  return false;
}
bool is_plotted_group(const std::string& name) {
  for (const char* f : kPlottedGroups)
    if (name == f) return true;
  return false;
}

double number_of(const nlohmann::json& v) { return v.is_null() ? NAN : v.get<double>(); }

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r") - a + 1);
}

// The lines of a text file: without their '\n' (or "\r\n"), numbered from 1; `terminated` is false
// for a last line without its newline.
struct Line {
  std::string text;
  int64_t no = 0;
  bool terminated = true;
};
std::vector<Line> split_lines(const std::string& text) {
  std::vector<Line> out;
  for (size_t start = 0; start < text.size();) {
    const size_t end = std::min(text.find('\n', start), text.size());
    Line l{text.substr(start, end - start), static_cast<int64_t>(out.size()) + 1, end < text.size()};
    if (!l.text.empty() && l.text.back() == '\r') l.text.pop_back();
    out.push_back(std::move(l));
    start = end + 1;
  }
  return out;
}

// Splits at runs of two or more spaces (tabs count as such a run); cells trimmed, none empty.
std::vector<std::string> split_wide(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  size_t i = 0;
  while (i < line.size()) {
    size_t j = i;
    while (j < line.size() && (line[j] == ' ' || line[j] == '\t')) ++j;
    const bool gap = j - i >= 2 || (j > i && line[i] == '\t');
    if (j > i && gap) {
      if (!trim(cur).empty()) out.push_back(trim(cur));
      cur.clear();
      i = j;
    } else if (j > i) {
      cur += line.substr(i, j - i);
      i = j;
    } else {
      cur += line[i++];
    }
  }
  if (!trim(cur).empty()) out.push_back(trim(cur));
  return out;
}

// A phase word in a directory name: "pipeline-sft-clean" -> sft.
std::string phase_from_name(const std::string& name) {
  std::vector<std::string> words;
  std::string w;
  for (char c : name + "-") {
    if (c == '-' || c == '_' || c == '.') {
      if (!w.empty()) words.push_back(w);
      w.clear();
    } else {
      w += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
  }
  for (const char* phase : {"pretrain", "extend", "sft", "rm", "rl", "grpo"})
    for (const std::string& x : words)
      if (x == phase) return x == "grpo" ? "rl" : x;
  return "";
}

}  // namespace

double Metrics::last(const std::string& name) const {
  auto it = series.find(name);
  if (it == series.end()) return NAN;
  for (auto p = it->second.rbegin(); p != it->second.rend(); ++p)
    if (std::isfinite(p->y)) return p->y;
  return NAN;
}

Result<Metrics> parse_metrics(const std::string& text, const std::string& path) {
  Metrics m;
  for (const Line& line : split_lines(text)) {
    if (trim(line.text).empty()) continue;
    const std::string where = path + ":" + std::to_string(line.no);
    auto parsed = JsonFields::parse_object(line.text, where);
    if (!parsed.ok()) {
      if (!line.terminated && parsed.status().message().find("invalid JSON") != std::string::npos) {
        m.torn = where + ": the last line is cut short (no newline, not JSON); left out";
        break;
      }
      return parsed.status();
    }
    const nlohmann::json& j = parsed.value().json();
    if (m.x_field.empty()) m.x_field = j.contains("iteration") ? "iteration" : "step";  // GRPO lines may hold a step too
    auto x = j.find(m.x_field);
    if (x == j.end())
      return InvalidArgument(where + ": missing field '" + m.x_field + "' (each line of a training run's metrics.jsonl " +
                             "has an integer 'step', each of a GRPO run's an 'iteration')");
    if (!x->is_number_integer())
      return InvalidArgument(where + ": field '" + m.x_field + "': expected an integer, got " + json_describe(*x));
    m.last_x = x->get<int64_t>();
    const double xv = static_cast<double>(m.last_x);
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& key = it.key();
      const nlohmann::json& v = it.value();
      if (key == m.x_field) continue;
      if (v.is_number() || v.is_null()) {
        m.series[key].push_back({xv, number_of(v)});
        continue;
      }
      if (is_plotted(key))
        return InvalidArgument(where + ": field '" + key + "': expected a number or null, got " + json_describe(v));
      if (v.is_object()) {
        for (auto c = v.begin(); c != v.end(); ++c) {
          if (c.value().is_number() || c.value().is_null()) {
            m.series[key + "." + c.key()].push_back({xv, number_of(c.value())});
          } else if (is_plotted_group(key)) {
            return InvalidArgument(where + ": field '" + key + "." + c.key() + "': expected a number or null, got " +
                                   json_describe(c.value()));
          }
        }
      } else if (is_plotted_group(key)) {
        return InvalidArgument(where + ": field '" + key + "': expected an object of numbers (one per " +
                               (key == "max_vio" ? "MoE layer" : "part") + "), got " + json_describe(v));
      }
    }
    ++m.lines;
  }
  return m;
}

Result<PasskeyFile> parse_passkey(const nlohmann::json& j, const std::string& path) {
  if (!j.is_object()) return InvalidArgument(path + ": expected a JSON object (a passkey grid), got " + json_describe(j));
  JsonFields f(j, path);
  PasskeyFile g;
  g.source = path;
  MARIANA_ASSIGN_OR_RETURN(std::string task, f.get_string_or("task", "passkey"));
  if (task != "passkey")
    return InvalidArgument(path + ": field 'task': expected \"passkey\" (a grid of mariana eval --task passkey --json), got \"" +
                           task + "\"");
  MARIANA_ASSIGN_OR_RETURN(g.lengths, f.get_int_array("lengths"));
  MARIANA_ASSIGN_OR_RETURN(g.depths, f.get_double_array("depths"));
  MARIANA_ASSIGN_OR_RETURN(g.samples, f.get_int_or("samples_per_cell", 0));
  if (g.lengths.empty() || g.depths.empty())
    return InvalidArgument(path + ": fields 'lengths' and 'depths': expected at least one value each");
  const auto acc = j.find("accuracy");
  if (acc == j.end()) return InvalidArgument(path + ": missing field 'accuracy'");
  if (!acc->is_array() || acc->size() != g.lengths.size())
    return InvalidArgument(path + ": field 'accuracy': expected an array of " + std::to_string(g.lengths.size()) +
                           " rows (one per length), got " +
                           (acc->is_array() ? std::to_string(acc->size()) + " rows" : json_describe(*acc)));
  for (size_t i = 0; i < acc->size(); ++i) {
    const nlohmann::json& r = (*acc)[i];
    const std::string field = "accuracy[" + std::to_string(i) + "]";
    if (!r.is_array() || r.size() != g.depths.size())
      return InvalidArgument(path + ": field '" + field + "': expected an array of " + std::to_string(g.depths.size()) +
                             " numbers (one per depth), got " +
                             (r.is_array() ? std::to_string(r.size()) + " values" : json_describe(r)));
    std::vector<double> row;
    for (size_t k = 0; k < r.size(); ++k) {
      const nlohmann::json& v = r[k];
      if (!(v.is_null() || (v.is_number() && v.get<double>() >= 0 && v.get<double>() <= 1)))
        return InvalidArgument(path + ": field '" + field + "[" + std::to_string(k) +
                               "]': expected a fraction in [0, 1] or null, got " + json_describe(v));
      row.push_back(number_of(v));
    }
    g.accuracy.push_back(std::move(row));
  }
  return g;
}

Result<PasskeyFile> load_passkey(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(nlohmann::json j, json_load_file(path));
  return parse_passkey(j, path);
}

Heatmap passkey_heatmap(const std::vector<int64_t>& lengths, const std::vector<double>& depths,
                        const std::vector<std::vector<double>>& accuracy, const std::string& title) {
  Heatmap h;
  h.title = title;
  h.x_label = "passkey depth";
  h.y_label = "context length (tokens)";
  char buf[32];
  for (double d : depths) {
    std::snprintf(buf, sizeof(buf), "%.2f", d);
    h.col_labels.push_back(buf);
  }
  for (int64_t l : lengths) h.row_labels.push_back(std::to_string(l));
  h.values = accuracy;
  return h;
}

Result<TextTable> parse_text_table(const std::string& text, const std::string& path) {
  TextTable t;
  t.source = path;
  std::vector<size_t> starts;  // where each header name starts
  for (const Line& l : split_lines(text)) {
    const std::string& line = l.text;
    if (trim(line).empty()) continue;
    if (t.header.empty()) {
      t.header = split_wide(line);
      for (const std::string& name : t.header) starts.push_back(line.find(name, starts.empty() ? 0 : starts.back() + 1));
      continue;
    }
    std::vector<std::string> cells = split_wide(line);
    if (cells.size() != t.header.size()) {  // cells with single spaces: cut at the header's columns
      cells.clear();
      bool aligned = line.size() > starts.back();
      for (size_t c = 0; c < starts.size() && aligned; ++c) {
        if (starts[c] > 0 && line[starts[c] - 1] != ' ') aligned = false;
        const size_t to = c + 1 < starts.size() ? starts[c + 1] : line.size();
        cells.push_back(trim(line.substr(starts[c], to - starts[c])));
      }
      if (!aligned)
        return InvalidArgument(path + ":" + std::to_string(l.no) + ": expected " + std::to_string(t.header.size()) +
                               " cells under the header's columns (" + std::to_string(starts.size()) +
                               " names separated by two or more spaces), got " + std::to_string(split_wide(line).size()));
    }
    t.rows.push_back(std::move(cells));
  }
  if (t.header.empty()) return InvalidArgument(path + ": empty; expected a header line, then one line per row");
  return t;
}

Result<TextTable> load_text_table(const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(path));
  return parse_text_table(text, path);
}

Result<RunData> load_run(const std::string& dir) {
  RunData r;
  r.label = dir;
  while (r.label.size() > 1 && r.label.back() == '/') r.label.pop_back();
  r.dir = r.label;
  std::error_code ec;
  if (!fs::exists(r.dir, ec)) return NotFound("run directory " + r.dir + " does not exist");
  if (!fs::is_directory(r.dir, ec)) return InvalidArgument(r.dir + ": expected a run directory, got a file");
  const std::string metrics_path = (fs::path(r.dir) / "metrics.jsonl").string();
  if (!fs::exists(metrics_path, ec))
    return NotFound(r.dir + ": no metrics.jsonl (expected a run directory of mariana train, or of a GRPO job)");
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(metrics_path));
  MARIANA_ASSIGN_OR_RETURN(r.metrics, parse_metrics(text, metrics_path));

  // The newest checkpoint (zero-padded names: name order is age order) and its phase.
  const fs::path ck_root = fs::path(r.dir) / "checkpoints";
  std::string newest;
  if (fs::is_directory(ck_root, ec)) {
    for (const auto& e : fs::directory_iterator(ck_root, ec)) {
      const std::string name = e.path().filename().string();
      if (e.is_directory() && (name.rfind("step-", 0) == 0 || name.rfind("iter-", 0) == 0) && name > newest)
        newest = name;
    }
  }
  r.rl = r.metrics.x_field == "iteration" || newest.rfind("iter-", 0) == 0;
  if (!newest.empty()) {
    r.checkpoint = "checkpoints/" + newest;
    for (const char* state : {"trainer_state.json", "rl_state.json"}) {
      const fs::path p = ck_root / newest / state;
      if (!fs::exists(p, ec)) continue;
      MARIANA_ASSIGN_OR_RETURN(JsonFields f, JsonFields::load(p.string()));
      MARIANA_ASSIGN_OR_RETURN(r.phase, f.get_string_or("phase", ""));
      if (!r.phase.empty()) r.phase_from = r.checkpoint + "/" + state;
      break;
    }
  }
  if (r.phase.empty() && r.metrics.x_field == "iteration") {
    r.phase = "rl";
    r.phase_from = "metrics.jsonl";
  }
  if (r.phase.empty()) {
    r.phase = phase_from_name(fs::path(r.dir).filename().string());
    r.phase_from = r.phase.empty() ? "" : "the directory name";
  }
  if (r.phase.empty()) r.phase = "unknown";

  const fs::path summary = fs::path(r.dir) / "summary.json";
  if (fs::exists(summary, ec)) {
    MARIANA_ASSIGN_OR_RETURN(r.summary, json_load_file(summary.string()));
    if (!r.summary.is_object())
      return InvalidArgument(summary.string() + ": expected a JSON object, got " + json_describe(r.summary));
  }

  std::vector<std::string> grids;
  for (const auto& e : fs::directory_iterator(r.dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name.rfind("passkey", 0) == 0 && e.path().extension() == ".json")
      grids.push_back(e.path().string());
  }
  std::sort(grids.begin(), grids.end());
  for (const std::string& g : grids) {
    MARIANA_ASSIGN_OR_RETURN(PasskeyFile grid, load_passkey(g));
    r.passkey.push_back(std::move(grid));
  }
  return r;
}

}  // namespace mariana::report
