// `mariana report RUN... --out report.html [--accuracy FILE] [--passkey FILE]... [--title T]`: one
// self-contained HTML page (inline CSS and SVG charts, no script, no URL) summarising run
// directories — loss, LR and MaxVio per MoE layer of training runs, reward, accuracy, KL and the
// rest of GRPO runs, passkey heatmaps and the pipeline's accuracy table (report/page.h). Every
// input is read and checked before anything is written; the page is written atomically.
#include <cstdio>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "cli/cli.h"
#include "cli/version.h"
#include "core/file_util.h"
#include "report/page.h"

namespace mariana::cli {

namespace {

int report_command(int argc, char** argv) {
  cxxopts::Options o("mariana report", "Write one self-contained HTML page summarising run directories");
  o.add_options()("runs", "run directories (mariana train or GRPO): metrics.jsonl, summary.json, checkpoints/, "
                          "passkey*.json",
                  cxxopts::value<std::vector<std::string>>())(
      "out", "the HTML file to write (replaced atomically)", cxxopts::value<std::string>())(
      "accuracy", "an accuracy table as text (scripts/pipeline.sh's runs/pipeline-accuracy.txt)",
      cxxopts::value<std::string>())(
      "passkey", "a passkey grid (`mariana eval --task passkey --json` output) to draw as a heatmap; repeatable",
      cxxopts::value<std::vector<std::string>>())(
      "title", "the page's title", cxxopts::value<std::string>()->default_value("Mariana report"))("h,help", "help");
  o.parse_positional({"runs"});
  o.positional_help("RUN...");
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (!r.count("out")) return report(InvalidArgument("report: expected --out FILE.html"));
  if (!r.count("runs") && !r.count("accuracy") && !r.count("passkey"))
    return report(InvalidArgument("report: expected run directories, --accuracy FILE or --passkey FILE"));
  report::ReportInput in;
  in.title = r["title"].as<std::string>();
  in.generator = std::string("mariana report ") + MARIANA_VERSION + " (commit " + MARIANA_GIT_COMMIT + ")";
  if (r.count("runs"))
    for (const std::string& dir : r["runs"].as<std::vector<std::string>>()) {
      auto run = report::load_run(dir);
      if (!run.ok()) return report(Status(run.status().code(), "report: " + run.status().message()));
      if (!run.value().metrics.torn.empty()) std::fprintf(stderr, "mariana: warning: %s\n", run.value().metrics.torn.c_str());
      in.runs.push_back(std::move(run).value());
    }
  if (r.count("passkey"))
    for (const std::string& f : r["passkey"].as<std::vector<std::string>>()) {
      auto grid = report::load_passkey(f);
      if (!grid.ok()) return report(Status(grid.status().code(), "report: --passkey: " + grid.status().message()));
      in.passkey.push_back(std::move(grid).value());
    }
  if (r.count("accuracy")) {
    auto table = report::load_text_table(r["accuracy"].as<std::string>());
    if (!table.ok()) return report(Status(table.status().code(), "report: --accuracy: " + table.status().message()));
    in.accuracy = std::move(table).value();
  }
  int charts = 0;
  const std::string html = report::report_html(in, &charts);
  const std::string out = r["out"].as<std::string>();
  if (Status st = write_file_atomic(out, html); !st.ok()) return report(st);
  std::printf("wrote %s: %zu run%s, %d chart%s, %zu bytes\n", out.c_str(), in.runs.size(),
              in.runs.size() == 1 ? "" : "s", charts, charts == 1 ? "" : "s", html.size());
  return kExitOk;
}

}  // namespace

int report_main(int argc, char** argv) {
  try {
    return report_command(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("report: ") + e.what()));
  }
}

}  // namespace mariana::cli
