// `mariana train JOB.toml [--set key=value]... [--run-dir DIR] [--resume]`.
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "cli/cli.h"
#include "core/toml_util.h"
#include "rl/grpo.h"
#include "sft/reward_model.h"
#include "sft/sft_data.h"
#include "train/job_spec.h"
#include "train/trainer.h"

namespace mariana::cli {

namespace {

// The job file's [job] phase ("" when unreadable: the full loader reports the error).
std::string job_phase(const std::string& path) {
  auto f = TomlFields::load(path);
  if (!f.ok() || !f.value().has("job")) return "";
  auto job = f.value().get_object("job");
  if (!job.ok()) return "";
  auto phase = job.value().get_string_or("phase", "");
  return phase.ok() ? phase.value() : "";
}

int rl_main(const std::string& path, const std::vector<std::string>& sets, std::string run_dir, bool quiet) {
  auto spec = rl::rl_spec_load(path, sets);
  if (!spec.ok()) return report(spec.status());
  rl::RlOptions opt;
  opt.spec = spec.value();
  opt.run_dir = run_dir.empty() ? "runs/" + opt.spec.name : run_dir;
  opt.quiet = quiet;
  std::printf("train %s: phase rl (GRPO), %lld iterations of %lld prompts x %lld samples, run dir %s\n",
              opt.spec.name.c_str(), (long long)opt.spec.iterations, (long long)opt.spec.prompts,
              (long long)opt.spec.group_size, opt.run_dir.c_str());
  auto res = rl::grpo_run(opt);
  if (!res.ok()) return report(res.status());
  std::printf("done: %lld iterations, held-out accuracy %.3f -> %.3f, final checkpoint %s\n",
              (long long)res.value().iterations, res.value().eval_before, res.value().eval_after,
              res.value().final_checkpoint.c_str());
  return kExitOk;
}

}  // namespace

int train_main(int argc, char** argv) {
  cxxopts::Options o("mariana train", "Run a training job (phases: pretrain, extend, sft, rm, rl)");
  o.add_options()("job", "job file (TOML)", cxxopts::value<std::string>())(
      "set", "override a job field: key=value (repeatable)", cxxopts::value<std::vector<std::string>>())(
      "run-dir", "run directory (default runs/<job.name>)", cxxopts::value<std::string>())(
      "resume", "continue from the newest valid checkpoint in the run directory")(
      "quiet", "no per-step lines")("h,help", "help");
  o.parse_positional({"job"});
  o.positional_help("JOB.toml");
  try {
    auto r = o.parse(argc, argv);
    if (r.count("help")) {
      std::printf("%s\n", o.help().c_str());
      return kExitOk;
    }
    if (!r.count("job")) return report(InvalidArgument("train: expected a job file (JOB.toml)"));
    std::vector<std::string> sets;
    if (r.count("set")) sets = r["set"].as<std::vector<std::string>>();
    if (job_phase(r["job"].as<std::string>()) == "rl") {
      const int code = rl_main(r["job"].as<std::string>(), sets,
                               r.count("run-dir") ? r["run-dir"].as<std::string>() : "", r.count("quiet") > 0);
      return code;
    }
    auto spec = job_spec_load(r["job"].as<std::string>(), sets);
    if (!spec.ok()) return report(spec.status());
    TrainOptions opt;
    opt.spec = spec.value();
    opt.run_dir = r.count("run-dir") ? r["run-dir"].as<std::string>() : "runs/" + opt.spec.name;
    opt.resume = r.count("resume") > 0;
    opt.progress = ::isatty(STDERR_FILENO) && !r.count("quiet");
    opt.quiet = r.count("quiet") > 0;
    const std::string length = opt.spec.epochs > 0 ? std::to_string(opt.spec.epochs) + " epoch(s)"
                                                   : std::to_string(opt.spec.steps) + " steps";
    std::printf("train %s: phase %s, %s, run dir %s\n", opt.spec.name.c_str(), opt.spec.phase.c_str(), length.c_str(),
                opt.run_dir.c_str());
    auto res = opt.spec.phase == "sft" ? sft_train_run(opt) : opt.spec.phase == "rm" ? rm_train_run(opt) : train_run(opt);
    if (!res.ok()) return report(res.status());
    const TrainSummary& s = res.value();
    std::printf("done: step %lld, loss %.4f (main %.4f), final checkpoint %s\n", (long long)s.steps_done, s.last.loss,
                s.last.loss_main, s.final_checkpoint.c_str());
    std::fputs(train_summary_text(s).c_str(), stdout);  // also in <run dir>/summary.json
    return kExitOk;
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("train: ") + e.what()));
  }
}

}  // namespace mariana::cli
