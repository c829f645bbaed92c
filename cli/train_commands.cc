// `mariana train JOB.toml [--set key=value]... [--run-dir DIR] [--resume | --overwrite]`.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "cli/cli.h"
#include "comm/store.h"
#include "core/toml_util.h"
#include "rl/grpo.h"
#include "sft/reward_model.h"
#include "sft/sft_data.h"
#include "train/job_spec.h"
#include "train/parallel.h"
#include "train/run_checkpoints.h"
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

// Ctrl-C / SIGTERM: the trainer finishes its step and checkpoints (TrainOptions::interrupt). The
// handler resets itself, so a second Ctrl-C ends the process at once.
std::atomic<bool> g_interrupt{false};
void on_interrupt(int) { g_interrupt.store(true); }

void watch_interrupts() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

// A run directory holding anything (an earlier run) is refused unless --resume continues it or
// --overwrite replaces it: a fresh run over an old one would keep the old, higher-numbered
// checkpoints, which eval, generate and init_from would then pick. --overwrite first renames the
// old directory aside (one atomic rename) and then deletes it, so a crash leaves the old run beside
// the new one (DIR.overwritten-PID), never mixed into it.
Status prepare_run_dir(const std::string& run_dir, bool resume, bool overwrite) {
  namespace fs = std::filesystem;
  if (resume && overwrite) return InvalidArgument("train: --resume and --overwrite exclude each other");
  std::error_code ec;
  if (!fs::exists(run_dir, ec) || (fs::is_directory(run_dir, ec) && fs::is_empty(run_dir, ec)) || resume)
    return Status::Ok();
  if (!overwrite)
    return InvalidArgument("train: run directory " + run_dir + " holds an earlier run; pass --resume to continue it, "
                           "--overwrite to delete it and start fresh, or --run-dir for another directory");
  const std::string aside = run_dir + ".overwritten-" + std::to_string(::getpid());
  fs::rename(run_dir, aside, ec);
  if (ec) return Unavailable(run_dir + ": cannot move the earlier run aside to " + aside + ": " + ec.message());
  fs::remove_all(aside, ec);
  if (ec) return Unavailable(aside + ": cannot delete the earlier run: " + ec.message());
  std::printf("train: --overwrite: deleted the earlier run in %s\n", run_dir.c_str());
  return Status::Ok();
}

// Exit code of a run stopped by Ctrl-C / SIGTERM after its checkpoint, as a shell reports a process
// ended by SIGINT.
constexpr int kExitInterrupted = 130;

// An rl job in this process (one learner, or rank `opt.parallel`'s of a data-parallel one) and how it ended.
int rl_run_and_report(const rl::RlOptions& opt) {
  auto res = rl::grpo_run(opt);
  if (!res.ok()) return report(res.status());
  const rl::RlSummary& s = res.value();
  if (s.interrupted) {
    if (!opt.quiet)
      std::fprintf(stderr, "\ntrain: interrupted at iteration %lld; checkpoint %s; continue with --resume\n",
                   (long long)s.iterations, s.final_checkpoint.c_str());
    return kExitInterrupted;
  }
  if (opt.quiet && opt.parallel != nullptr && opt.parallel->world().rank() != 0) return kExitOk;
  if (s.iterations == 0 && s.resumed_from > 0) {
    std::printf("run already finished at iteration %lld, checkpoint %s\n", (long long)s.resumed_from,
                s.final_checkpoint.c_str());
    return kExitOk;
  }
  std::printf("done: %lld iterations, held-out accuracy %.3f -> %.3f, final checkpoint %s\n", (long long)s.iterations,
              s.eval_before, s.eval_after, s.final_checkpoint.c_str());
  return kExitOk;
}

int run_local_ranks(const std::string& run_dir, int64_t n, const JobSpec& layout,
                    const std::function<int(ParallelGroups*, int64_t)>& body);

int rl_main(const std::string& path, const std::vector<std::string>& sets, std::string run_dir, bool quiet,
            bool resume, bool overwrite, int64_t nproc) {
  auto spec = rl::rl_spec_load(path, sets);
  if (!spec.ok()) return report(spec.status());
  rl::RlOptions opt;
  opt.spec = spec.value();
  opt.run_dir = run_dir.empty() ? "runs/" + opt.spec.name : run_dir;
  opt.quiet = quiet;
  opt.resume = resume;
  if (nproc != opt.spec.dp)
    return report(InvalidArgument(opt.spec.source + ": field 'parallel.dp': the job has " + std::to_string(opt.spec.dp) +
                                  " learner rank(s); " +
                                  (nproc != 1 ? "--nproc " + std::to_string(nproc) + " does not match it"
                                              : "run it with --nproc " + std::to_string(opt.spec.dp))));
  if (Status st = prepare_run_dir(opt.run_dir, resume, overwrite); !st.ok()) return report(st);
  std::printf("train %s: phase rl (GRPO), %lld iterations of %lld prompts x %lld samples%s, run dir %s\n",
              opt.spec.name.c_str(), (long long)opt.spec.iterations, (long long)opt.spec.prompts,
              (long long)opt.spec.group_size,
              opt.spec.dp > 1 ? (", " + std::to_string(opt.spec.dp) + " learner ranks").c_str() : "",
              opt.run_dir.c_str());
  opt.interrupt = &g_interrupt;
  watch_interrupts();
  if (opt.spec.dp == 1) return rl_run_and_report(opt);
  std::filesystem::create_directories(opt.run_dir);
  return run_local_ranks(opt.run_dir, opt.spec.dp, rl::rl_parallel_layout(opt.spec),
                         [&](ParallelGroups* groups, int64_t r) {
                           rl::RlOptions mine = opt;
                           mine.parallel = groups;
                           if (r != 0) mine.quiet = true;
                           return rl_run_and_report(mine);
                         });
}

// Runs the job in this process (one rank, or rank `opt.parallel`'s) and prints how it ended.
int run_and_report(const TrainOptions& opt) {
  auto res = opt.spec.phase == "sft" ? sft_train_run(opt) : opt.spec.phase == "rm" ? rm_train_run(opt) : train_run(opt);
  if (!res.ok()) return report(res.status());
  if (opt.parallel != nullptr && opt.parallel->layout().rank != 0) return kExitOk;  // rank 0 speaks for the job
  const TrainSummary& s = res.value();
  if (s.interrupted) {
    std::fprintf(stderr, "\ntrain: interrupted at step %lld; checkpoint %s; continue with --resume\n",
                 (long long)s.steps_done, s.final_checkpoint.c_str());
    return kExitInterrupted;
  }
  if (s.final_checkpoint.empty() && opt.resume && s.resumed_from > 0) {  // nothing left to run
    auto last = latest_valid_checkpoint(opt.run_dir);
    std::printf("run already finished at step %lld, checkpoint %s\n", (long long)s.resumed_from,
                last.ok() ? last.value().c_str() : "(none valid)");
    return kExitOk;
  }
  std::printf("done: step %lld, loss %.4f (main %.4f), final checkpoint %s\n", (long long)s.steps_done, s.last.loss,
              s.last.loss_main, s.final_checkpoint.c_str());
  std::fputs(train_summary_text(s).c_str(), stdout);  // also in <run dir>/summary.json
  return kExitOk;
}

// `--nproc N`: the job's dp·ep ranks (an rl job's dp learner ranks) as N processes on this
// machine, joined through a file store in the run directory (removed at the end), each running
// `body` with its groups. Rank 0 prints and writes the run's files. When a
// rank fails, the others are killed (their collectives would fail within parallel.timeout_s
// anyway) and the first failure's exit code is returned. Ctrl-C reaches every rank; they agree on
// it at the next step, checkpoint together and exit.
int run_local_ranks(const std::string& run_dir, int64_t n, const JobSpec& layout,
                    const std::function<int(ParallelGroups*, int64_t)>& body) {
  namespace fs = std::filesystem;
  const std::string store_dir = run_dir + "/.rendezvous-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(store_dir, ec);
  fs::create_directories(store_dir, ec);
  if (ec) return report(Unavailable(store_dir + ": cannot create the rendezvous directory: " + ec.message()));
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids;
  for (int64_t r = 0; r < n; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) {
      for (pid_t p : pids) ::kill(p, SIGKILL);
      return report(Unavailable(std::string("train: fork failed: ") + std::strerror(errno)));
    }
    if (pid == 0) {
      auto store = comm::FileStore::open(store_dir);
      if (!store.ok()) ::_exit(report(store.status()));
      auto groups = ParallelGroups::connect(std::shared_ptr<comm::Store>(std::move(store).value()), layout, r);
      if (!groups.ok()) ::_exit(report(groups.status()));
      const int code = body(groups.value().get(), r);
      std::fflush(stdout);
      std::fflush(stderr);
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  // The parent waits through Ctrl-C (the ranks handle it) and reports the first failure.
  ::signal(SIGINT, SIG_IGN);
  ::signal(SIGTERM, SIG_IGN);
  int code = kExitOk, failed_rank = -1;
  for (size_t left = pids.size(); left > 0; --left) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) break;
    const size_t r = static_cast<size_t>(std::find(pids.begin(), pids.end(), pid) - pids.begin());
    const int c = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (c == kExitInterrupted) {  // rank 0 after an interrupt every rank agreed on: the others end too
      if (code == kExitOk) code = c;
      continue;
    }
    if (c != kExitOk && failed_rank < 0) {
      failed_rank = static_cast<int>(r);
      code = c;
      std::fprintf(stderr, "train: rank %zu of %lld %s %d; stopping the other ranks\n", r, (long long)n,
                   WIFEXITED(status) ? "exited with" : "was killed by signal",
                   WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
      for (pid_t p : pids)
        if (p != pid) ::kill(p, SIGKILL);
    }
  }
  fs::remove_all(store_dir, ec);
  return code;
}

}  // namespace

int train_main(int argc, char** argv) {
  cxxopts::Options o("mariana train", "Run a training job (phases: pretrain, extend, sft, rm, rl)");
  o.add_options()("job", "job file (TOML)", cxxopts::value<std::string>())(
      "set", kSetHelp, cxxopts::value<std::vector<std::string>>())(
      "run-dir", "run directory (default runs/<job.name>)", cxxopts::value<std::string>())(
      "resume", "continue from the newest valid checkpoint in the run directory")(
      "overwrite", "delete an earlier run in the run directory first (without this or --resume, a run "
                   "directory that is not empty is refused)")(
      "nproc", "run a parallel job's dp·ep ranks as N processes on this machine (N must equal parallel.dp × "
               "parallel.ep)", cxxopts::value<int64_t>())(
      "quiet", "no per-step lines")("h,help", "help");
  o.parse_positional({"job"});
  o.positional_help("JOB.toml");
  auto taken = take_set_flags(argc, argv);
  if (!taken.ok()) return report(taken.status());
  const std::vector<std::string> sets = taken.value();
  try {
    auto r = o.parse(argc, argv);
    if (r.count("help")) {
      std::printf("%s\n", o.help().c_str());
      return kExitOk;
    }
    if (!r.count("job")) return report(InvalidArgument("train: expected a job file (JOB.toml)"));
    if (job_phase(r["job"].as<std::string>()) == "rl")
      return rl_main(r["job"].as<std::string>(), sets, r.count("run-dir") ? r["run-dir"].as<std::string>() : "",
                     r.count("quiet") > 0, r.count("resume") > 0, r.count("overwrite") > 0,
                     r.count("nproc") ? r["nproc"].as<int64_t>() : 1);
    auto spec = job_spec_load(r["job"].as<std::string>(), sets);
    if (!spec.ok()) return report(spec.status());
    TrainOptions opt;
    opt.spec = spec.value();
    opt.run_dir = r.count("run-dir") ? r["run-dir"].as<std::string>() : "runs/" + opt.spec.name;
    opt.resume = r.count("resume") > 0;
    opt.progress = ::isatty(STDERR_FILENO) && !r.count("quiet");
    opt.quiet = r.count("quiet") > 0;
    if (Status st = prepare_run_dir(opt.run_dir, opt.resume, r.count("overwrite") > 0); !st.ok()) return report(st);
    const std::string length = opt.spec.epochs > 0 ? std::to_string(opt.spec.epochs) + " epoch(s)"
                                                   : std::to_string(opt.spec.steps) + " steps";
    std::printf("train %s: phase %s, %s, run dir %s\n", opt.spec.name.c_str(), opt.spec.phase.c_str(), length.c_str(),
                opt.run_dir.c_str());
    opt.interrupt = &g_interrupt;
    watch_interrupts();
    const int64_t world = opt.spec.world();
    const int64_t nproc = r.count("nproc") ? r["nproc"].as<int64_t>() : 1;
    if (nproc != world) {
      return report(InvalidArgument(opt.spec.source + ": field 'parallel.dp': the job has parallel.dp × parallel.ep = " +
                                    std::to_string(world) + " rank(s); " +
                                    (r.count("nproc") ? "--nproc " + std::to_string(nproc) + " does not match it"
                                                      : "run it with --nproc " + std::to_string(world))));
    }
    if (world > 1) {
      std::filesystem::create_directories(opt.run_dir);
      return run_local_ranks(opt.run_dir, world, opt.spec, [&](ParallelGroups* groups, int64_t r) {
        TrainOptions mine = opt;
        mine.parallel = groups;
        if (r != 0) {
          mine.quiet = true;
          mine.progress = false;
        }
        return run_and_report(mine);
      });
    }
    return run_and_report(opt);
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("train: ") + e.what()));
  }
}

}  // namespace mariana::cli
