// `mariana reward score`: scores JSONL samples with one reward scorer (rl/rewards/) and prints one
// JSON result per line — how users debug their reward functions. Every line is read and checked
// before anything is scored, so bad input prints nothing but the error.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/json_util.h"
#include "rl/model_scorer.h"
#include "rl/rewards/reward.h"

namespace mariana::cli {
namespace {

int reward_score_cmd(int argc, char** argv) {
  cxxopts::Options o("mariana reward score",
                     "Score JSONL samples with one reward scorer and print one JSON result per line:\n"
                     "  {\"reward\": R, \"ok\": B, \"reason\": \"correct\" | \"wrong answer\" | \"no answer\" |\n"
                     "   \"bad format\" | \"timeout\" | \"memory\" | \"sandbox violation\" | \"runtime error\" |\n"
                     "   \"output limit\", \"detail\": \"...\"}\n"
                     "Input lines: {\"prompt\": ..., \"response\": ..., \"answer\": ...} (math) or\n"
                     "{\"response\": ..., \"tests\": [{\"stdin\": ..., \"stdout\": ...}]} (code); blank lines are\n"
                     "skipped, other fields ignored. The forms each scorer accepts: rl/rewards/README.md.");
  o.add_options()("scorer", "math | math_verify | format | code | model", cxxopts::value<std::string>())(
      "input", "JSONL file (default: stdin)", cxxopts::value<std::string>()->default_value("-"))(
      "timeout-s", "code: wall-clock limit per test in seconds (default 2); math_verify: per sample (default 20)",
      cxxopts::value<double>())(
      "venv", "math_verify: the Python venv with math-verify (default $MARIANA_MATH_VERIFY_VENV or "
      "build/pyenv-math-verify; created by scripts/setup.sh)", cxxopts::value<std::string>())(
      "workers", "math_verify: worker processes (default 1)", cxxopts::value<int64_t>())(
      "memory-mb", "code: memory bound of the whole run in MiB (its cgroup leaf; default 512)", cxxopts::value<int64_t>())(
      "python", "code: the Python 3 interpreter (default /usr/bin/python3)", cxxopts::value<std::string>())(
      "answer-regex", "format: regex the final answer line must match (default \"#### N\")",
      cxxopts::value<std::string>())(
      "checkpoint", "model: the reward model's checkpoint directory", cxxopts::value<std::string>())(
      "h,help", "help");
  cxxopts::ParseResult r;
  try {
    r = o.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("reward score: ") + e.what()));
  }
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (!r.count("scorer"))
    return report(InvalidArgument("reward score: --scorer is required (math, math_verify, format, code, model)"));
  const std::string name = r["scorer"].as<std::string>();

  // Flags that belong to some scorers only.
  struct Flag {
    const char* flag;
    std::vector<std::string> scorers;
    const char* option;
  };
  const Flag flags[] = {{"timeout-s", {"code", "math_verify"}, "timeout_s"}, {"memory-mb", {"code"}, "memory_mb"},
                        {"python", {"code"}, "python"},
                        {"answer-regex", {"format"}, "answer_regex"},
                        {"checkpoint", {"model"}, "checkpoint"},
                        {"venv", {"math_verify"}, "venv"},
                        {"workers", {"math_verify"}, "workers"}};
  nlohmann::json options = nlohmann::json::object();
  for (const Flag& f : flags) {
    if (!r.count(f.flag)) continue;
    if (std::find(f.scorers.begin(), f.scorers.end(), name) == f.scorers.end()) {
      std::string list;
      for (const std::string& s : f.scorers) list += (list.empty() ? "" : " or ") + s;
      return report(InvalidArgument(std::string("reward score: --") + f.flag + " applies to --scorer " + list + " only"));
    }
    const std::string flag = f.flag;
    if (flag == "timeout-s")
      options[f.option] = r[f.flag].as<double>();
    else if (flag == "memory-mb" || flag == "workers")
      options[f.option] = r[f.flag].as<int64_t>();
    else
      options[f.option] = r[f.flag].as<std::string>();
  }
  rl::ScorerRegistry registry = rl::ScorerRegistry::with_builtins();
  if (Status st = rl::register_model_scorer(&registry); !st.ok()) return report(st);
  if (name == "model" && !registry.has("model")) {
    if (!r.count("checkpoint")) return report(InvalidArgument("reward score: --scorer model needs --checkpoint DIR"));
    return report(Unimplemented("reward score: the model scorer is not built in this binary yet"));
  }
  auto scorer = registry.make(name, options);
  if (!scorer.ok()) return report(scorer.status());

  // Read and check every line first.
  const std::string input = r["input"].as<std::string>();
  const std::string label = input == "-" ? "<stdin>" : input;
  std::ifstream file;
  if (input != "-") {
    file.open(input);
    if (!file) return report(NotFound("reward score: cannot open --input " + input));
  }
  std::istream& in = input == "-" ? std::cin : file;
  std::vector<rl::RewardSample> samples;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = label + ":" + std::to_string(n);
    auto s = rl::reward_sample_parse(line, where);
    if (!s.ok()) return report(s.status());
    Status st = (*scorer)->validate(*s);
    if (!st.ok()) return report(Status(st.code(), where + ": " + st.message()));
    samples.push_back(std::move(s).value());
  }
  if (in.bad()) return report(Unavailable("reward score: reading " + label + " failed"));

  for (const rl::RewardSample& s : samples) {
    auto res = (*scorer)->score(s);
    if (!res.ok()) return report(res.status());
    const std::string out =
        rl::reward_result_to_json(*res).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::printf("%s\n", out.c_str());
    std::fflush(stdout);
  }
  return kExitOk;
}

}  // namespace

int reward_main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "score") return reward_score_cmd(argc - 1, argv + 1);
  std::fprintf(stderr, "usage: mariana reward score --scorer math|math_verify|format|code|model [--input F.jsonl] ...\n");
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) return kExitOk;
  return report(InvalidArgument(argc < 2 ? "reward: missing subcommand (score)"
                                         : "reward: unknown subcommand '" + std::string(argv[1]) + "' (score)"));
}

}  // namespace mariana::cli
