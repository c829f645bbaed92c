// What `mariana report` reads: a run directory (metrics.jsonl, summary.json, the newest
// checkpoint's phase, passkey grids saved beside them), passkey grid JSON files and the pipeline's
// accuracy table. Every error names the file, and the line or field, and what was expected.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "report/chart.h"

namespace mariana::report {

// The numbers of one metrics.jsonl, by field: top-level numbers ("loss", "reward") and the numbers
// one object down, joined with a dot ("max_vio.3", "reward_parts.math"). A null (the trainer writes
// NaN as null) is a NaN point, a gap; a field a line lacks has no point there (val_loss, say).
struct Metrics {
  std::string x_field;              // "step" (training) or "iteration" (GRPO); "" for an empty file
  std::map<std::string, std::vector<Point>> series;
  int64_t lines = 0;                // lines read
  int64_t last_x = 0;               // the step (iteration) of the last line read
  std::string torn;                 // a warning when a torn last line (no newline, not JSON) was dropped
  bool has(const std::string& name) const { return series.count(name) > 0; }
  // The last finite value of a field, NaN if none.
  double last(const std::string& name) const;
};

// Parses the text of a metrics.jsonl; `path` names it in errors ("PATH:LINE: ..."). Each line must
// be a JSON object with an integer "iteration" when the first line has one (GRPO), else "step"; the fields
// that the report plots must be numbers or null, and max_vio / reward_parts objects of them. Blank
// lines are skipped; a last line without its newline that is not JSON (a writer killed mid-line) is
// dropped with a warning in `torn`.
Result<Metrics> parse_metrics(const std::string& text, const std::string& path);

// A passkey grid as `mariana eval --task passkey --json` prints it (train/eval.h passkey_json).
struct PasskeyFile {
  std::string source;  // the file
  std::vector<int64_t> lengths;
  std::vector<double> depths;
  std::vector<std::vector<double>> accuracy;  // [length][depth]; NaN for null
  int64_t samples = 0;                        // per cell, 0 when the file does not say
};
// Checks "task" (when present) is "passkey", "lengths" integers, "depths" numbers and "accuracy"
// one array per length of one number in [0, 1] (or null) per depth.
Result<PasskeyFile> parse_passkey(const nlohmann::json& j, const std::string& path);
Result<PasskeyFile> load_passkey(const std::string& path);
// The heatmap of a grid: depths across, lengths down.
Heatmap passkey_heatmap(const std::vector<int64_t>& lengths, const std::vector<double>& depths,
                        const std::vector<std::vector<double>>& accuracy, const std::string& title);

// A table printed as aligned text (scripts/pipeline.sh's runs/pipeline-accuracy.txt): a header
// line whose column names are separated by two or more spaces, then one line per row. A row splits
// at runs of two or more spaces when that gives the header's number of cells, else at the columns
// where the header's names start (printf-aligned text whose cells hold single spaces).
struct TextTable {
  std::string source;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};
Result<TextTable> parse_text_table(const std::string& text, const std::string& path);
Result<TextTable> load_text_table(const std::string& path);

// One run directory.
struct RunData {
  std::string label;       // the path as given, without a trailing '/'
  std::string dir;
  std::string phase;       // pretrain, extend, sft, rm, rl, ... or "unknown"
  std::string phase_from;  // where the phase was read: a state file, "metrics.jsonl" or "the directory name"
  bool rl = false;         // a GRPO run: per-iteration metrics, checkpoints/iter-N
  std::string checkpoint;  // the newest checkpoint's directory (relative to dir), "" if none
  Metrics metrics;
  nlohmann::json summary;  // summary.json, null when absent
  std::vector<PasskeyFile> passkey;  // the run's top-level passkey*.json files, by name
};
// NotFound naming the directory when it does not exist, or its metrics.jsonl when that is missing.
// The phase comes from the newest checkpoint's trainer_state.json / rl_state.json "phase", else
// from the metrics (iterations: rl), else from a phase word in the directory's name.
Result<RunData> load_run(const std::string& dir);

}  // namespace mariana::report
