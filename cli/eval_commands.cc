// `mariana eval --task passkey --checkpoint DIR --lengths L,... --depths D,... [--samples N]
//  [--tokenizer T] [--json] [--svg F]`.
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/file_util.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "rl/arithmetic_task.h"
#include "train/eval.h"
#include "train/tokenizer.h"
#include "train/run_checkpoints.h"

namespace mariana::cli {

namespace {

template <typename T>
Result<std::vector<T>> parse_list(const std::string& flag, const std::string& text) {
  std::vector<T> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      const double v = std::stod(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      out.push_back(static_cast<T>(v));
    } catch (const std::exception&) {
      return InvalidArgument("--" + flag + ": '" + item + "' is not a number");
    }
  }
  if (out.empty()) return InvalidArgument("--" + flag + ": expected a comma-separated list");
  return out;
}

int eval_arithmetic_main(const cxxopts::ParseResult& r, const Model<float>& model, const Tokenizer& tok,
                         const std::string& ck_dir) {
  rl::ArithmeticEvalOptions opt;
  opt.problems = r["problems"].as<int64_t>();
  if (r.count("seed")) opt.seed = r["seed"].as<uint64_t>();  // else the task's default, as RL jobs use
  opt.max_new_tokens = r["max-new-tokens"].as<int64_t>();
  auto digits = parse_list<int>("digits", r["digits"].as<std::string>());
  if (!digits.ok()) return report(digits.status());
  if (digits.value().size() != 2 || digits.value()[0] < 1 || digits.value()[0] > digits.value()[1] ||
      digits.value()[1] > 9)
    return report(InvalidArgument("--digits: expected MIN,MAX with 1 <= MIN <= MAX <= 9"));
  opt.arithmetic.min_digits = digits.value()[0];
  opt.arithmetic.max_digits = digits.value()[1];
  opt.arithmetic.ops = r["ops"].as<std::string>();
  if (opt.arithmetic.ops.empty() || opt.arithmetic.ops.find_first_not_of("+-*") != std::string::npos)
    return report(InvalidArgument("--ops: expected operators from \"+-*\""));
  auto fmt = rl::prompt_format_parse(r["format"].as<std::string>());
  if (!fmt.ok()) return report(InvalidArgument("--format: " + fmt.status().message()));
  opt.format = fmt.value();
  if (opt.problems <= 0) return report(InvalidArgument("--problems: expected > 0"));
  opt.samples = r["responses"].as<int64_t>();
  opt.temperature = r["temperature"].as<double>();
  opt.sample_seed = r["sample-seed"].as<uint64_t>();
  if (opt.samples <= 0) return report(InvalidArgument("--responses: expected > 0"));
  if (opt.temperature < 0) return report(InvalidArgument("--temperature: expected >= 0"));
  if (opt.samples > 1 && opt.temperature == 0)
    return report(InvalidArgument("--responses " + std::to_string(opt.samples) + " needs --temperature > 0"));
  opt.keep_responses = r.count("responses-out") > 0;
  cpu::set_num_threads(r["threads"].as<int>());
  auto res = rl::eval_arithmetic(model, tok, opt);
  if (!res.ok()) return report(res.status());
  if (opt.keep_responses) {  // every judged response, for debugging a model or a reward
    std::string lines;
    for (const rl::ArithmeticEvalResponse& x : res.value().responses)
      lines += nlohmann::json({{"question", x.question}, {"answer", x.answer}, {"response", x.response},
                               {"correct", x.correct}}).dump() + "\n";
    const std::string path = r["responses-out"].as<std::string>();
    if (Status st = write_file_atomic(path, lines); !st.ok()) return report(st);
  }
  const rl::ArithmeticEvalResult& e = res.value();
  if (r.count("json")) {
    nlohmann::json by_op = nlohmann::json::object();
    for (const auto& [op, cell] : e.by_op)
      by_op[op] = {{"correct", cell.first}, {"total", cell.second},
                   {"accuracy", static_cast<double>(cell.first) / static_cast<double>(cell.second)}};
    nlohmann::json j = {{"task", "arithmetic"}, {"checkpoint", ck_dir}, {"split", "held-out"},
                        {"problems", e.problems}, {"correct", e.correct}, {"accuracy", e.accuracy},
                        {"by_op", by_op}, {"seconds", e.seconds}, {"format", r["format"].as<std::string>()},
                        {"responses_per_problem", e.samples}, {"temperature", opt.temperature},
                        {"pass_at_k", e.pass_at_k}, {"solved", e.solved}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    if (e.samples == 1 && opt.temperature == 0) {
      std::printf("arithmetic, held-out split, %s: %lld / %lld correct = %.1f%%\n", ck_dir.c_str(),
                  (long long)e.correct, (long long)e.problems, 100.0 * e.accuracy);
    } else {
      std::printf("arithmetic, held-out split, %s, %lld responses per problem at T = %g: %lld / %lld correct = "
                  "%.1f%% (pass@1), pass@%lld %.1f%% (%lld / %lld problems)\n",
                  ck_dir.c_str(), (long long)e.samples, opt.temperature, (long long)e.correct,
                  (long long)(e.problems * e.samples), 100.0 * e.accuracy, (long long)e.samples, 100.0 * e.pass_at_k,
                  (long long)e.solved, (long long)e.problems);
    }
    for (const auto& [op, cell] : e.by_op)
      std::printf("  %s  %lld / %lld\n", op.c_str(), (long long)cell.first, (long long)cell.second);
    if (r.count("verbose"))
      for (const std::string& x : e.examples) std::fprintf(stderr, "%s\n", x.c_str());
  }
  return kExitOk;
}

}  // namespace

int eval_main(int argc, char** argv) {
  cxxopts::Options o("mariana eval", "Evaluate a checkpoint");
  o.add_options()("task", "passkey | arithmetic", cxxopts::value<std::string>())(
      "checkpoint", "checkpoint directory, or a run directory (its newest valid checkpoint)", cxxopts::value<std::string>())(
      "tokenizer", "tokenizer.json (default: the checkpoint's)", cxxopts::value<std::string>())(
      "no-verify", kNoVerifyHelp)(
      "lengths", "prompt lengths in tokens", cxxopts::value<std::string>()->default_value("64,128,256"))(
      "depths", "passkey depths in [0,1]", cxxopts::value<std::string>()->default_value("0,0.25,0.5,0.75,1"))(
      "samples", "prompts per cell", cxxopts::value<int64_t>()->default_value("10"))(
      "seed", "seed", cxxopts::value<uint64_t>()->default_value("123"))(
      "threads", "CPU threads (0: all)", cxxopts::value<int>()->default_value("0"))(
      "problems", "arithmetic: held-out problems", cxxopts::value<int64_t>()->default_value("200"))(
      "digits", "arithmetic: operand digits MIN,MAX", cxxopts::value<std::string>()->default_value("1,2"))(
      "ops", "arithmetic: operators", cxxopts::value<std::string>()->default_value("+-"))(
      "format", "arithmetic prompts: chat (SFT/RL models) or raw (pretrained)", cxxopts::value<std::string>()->default_value("chat"))(
      "max-new-tokens", "arithmetic: tokens per answer at most", cxxopts::value<int64_t>()->default_value("160"))(
      "responses", "arithmetic: responses sampled per problem (pass@k)", cxxopts::value<int64_t>()->default_value("1"))(
      "temperature", "arithmetic: sampling temperature (0: greedy)", cxxopts::value<double>()->default_value("0"))(
      "sample-seed", "arithmetic: sampling seed", cxxopts::value<uint64_t>()->default_value("1"))(
      "responses-out", "arithmetic: write every response as JSONL {question, answer, response, correct}",
      cxxopts::value<std::string>())(
      "json", "print the grid as JSON")("verbose", "print each cell's first answer and generation")("svg", "write an SVG heatmap here", cxxopts::value<std::string>())(
      "h,help", "help");
  try {
    auto r = o.parse(argc, argv);
    if (r.count("help")) {
      std::printf("%s\n", o.help().c_str());
      return kExitOk;
    }
    if (!r.count("task") || !r.count("checkpoint")) return report(InvalidArgument("eval: --task and --checkpoint are required"));
    const std::string task = r["task"].as<std::string>();
    if (task != "passkey" && task != "arithmetic")
      return report(InvalidArgument("eval: --task: expected passkey or arithmetic, got '" + task + "'"));
    auto resolved = resolve_checkpoint(r["checkpoint"].as<std::string>());  // a checkpoint or a run directory
    if (!resolved.ok()) return report(resolved.status());
    const std::string ck_dir = resolved.value();
    auto ck = checkpoint_load<float>(ck_dir, {.verify_manifest = !r.count("no-verify")});
    if (!ck.ok()) return report(ck.status());
    const std::string tok_path = r.count("tokenizer") ? r["tokenizer"].as<std::string>()
                                                      : (std::filesystem::path(ck_dir) / "tokenizer.json").string();
    auto tok = Tokenizer::load(tok_path);
    if (!tok.ok()) return report(tok.status());
    if (task == "arithmetic") return eval_arithmetic_main(r, ck.value().model, tok.value(), ck_dir);
    auto lengths = parse_list<int64_t>("lengths", r["lengths"].as<std::string>());
    if (!lengths.ok()) return report(lengths.status());
    auto depths = parse_list<double>("depths", r["depths"].as<std::string>());
    if (!depths.ok()) return report(depths.status());
    for (double d : depths.value())
      if (d < 0 || d > 1) return report(InvalidArgument("--depths: each depth must be in [0, 1]"));
    for (int64_t l : lengths.value())
      if (l < 16) return report(InvalidArgument("--lengths: each length must be >= 16 tokens"));
    const int64_t samples = r["samples"].as<int64_t>();
    if (samples <= 0) return report(InvalidArgument("--samples: expected > 0"));
    cpu::set_num_threads(r["threads"].as<int>());
    auto grid = eval_passkey(ck.value().model, tok.value(), lengths.value(), depths.value(), samples,
                             r["seed"].as<uint64_t>());
    if (!grid.ok()) return report(grid.status());
    if (r.count("svg")) {
      Status st = write_file_atomic(r["svg"].as<std::string>(), passkey_svg(grid.value(), "passkey retrieval: " + ck_dir));
      if (!st.ok()) return report(st);
    }
    if (r.count("verbose"))
      for (const std::string& e : grid.value().examples) std::fprintf(stderr, "%s\n", e.c_str());
    if (r.count("json")) {
      std::printf("%s\n", passkey_json(grid.value()).dump().c_str());
    } else {
      std::printf("passkey retrieval accuracy, %s (%lld samples per cell)\n%s", ck_dir.c_str(), (long long)samples,
                  passkey_table(grid.value()).c_str());
    }
    return kExitOk;
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("eval: ") + e.what()));
  }
}

}  // namespace mariana::cli
