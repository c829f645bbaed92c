// Shared pieces of the `mariana` command line: exit codes, error printing and the verb entry points.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace mariana::cli {

// Exit codes: 0 success, 1 internal failure, 2 bad input (config, checkpoint, flags, data).
constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitBadInput = 2;

// The help of --no-verify, the flag of every command that loads a checkpoint.
constexpr const char* kNoVerifyHelp =
    "skip the checksums of the checkpoint's manifest.json (weights are still checked to be finite)";

// Prints "mariana: <status>" to stderr and returns the exit code for it.
int report(const Status& st);
// AlreadyExists "<what>: <out> already exists; pass --overwrite to replace it" when `out` exists and
// is not an empty directory, unless overwrite (commands that write a directory of their own).
Status check_out_dir(const std::string& out, bool overwrite, const std::string& what);

// Token ids from a flag's text ("3 17 42" or "3,17,42"), each in [0, vocab). InvalidArgument naming
// the flag and the offending word otherwise. An empty text gives an empty list.
Result<std::vector<int32_t>> parse_token_ids(const std::string& flag, const std::string& text, int64_t vocab);

// The help of --set (train, submit, run).
constexpr const char* kSetHelp =
    "override a job field: key=value, the value in TOML syntax (3, 1e-3, true, [1.0, 0.1], \"x\"; "
    "other text is a string, commas included); a relative path given here resolves against the "
    "current directory; repeatable";

// Takes every `--set key=value` / `--set=key=value` out of argv (argc shrinks) and returns the
// values whole: cxxopts would cut a vector option's values at commas, so `--set "w=[1.0,0.1]"`
// and `--set "data.arithmetic_ops=+,-"` reach toml_set_override (core/toml_util.h) intact. Keep
// "set" among the cxxopts options for --help only. InvalidArgument when --set ends argv.
Result<std::vector<std::string>> take_set_flags(int& argc, char** argv);

int model_main(int argc, char** argv);  // mariana model init|info|logits
int checkpoint_main(int argc, char** argv);  // mariana checkpoint export
int bench_main(int argc, char** argv);  // mariana bench model
int tokenizer_main(int argc, char** argv);  // mariana tokenizer train|encode|decode
int train_main(int argc, char** argv);  // mariana train JOB.toml
int eval_main(int argc, char** argv);   // mariana eval --task passkey|arithmetic
int report_main(int argc, char** argv); // mariana report RUN... --out F.html (report_commands.cc)
int generate_main(int argc, char** argv);  // mariana generate
int data_main(int argc, char** argv);   // mariana data prepare|gen
// Control plane (cluster_commands.cc, bench_actors.cc).
int controller_main(int argc, char** argv);   // mariana controller start
int agent_main(int argc, char** argv);        // mariana agent start
int worker_main(int argc, char** argv);       // mariana worker (started by agents)
int submit_main(int argc, char** argv);       // mariana submit JOB.toml
int jobs_main(int argc, char** argv);         // mariana jobs list|show|stop|metrics
int status_main(int argc, char** argv);       // mariana status
int nodes_main(int argc, char** argv);        // mariana nodes
int actors_main(int argc, char** argv);       // mariana actors list|show
int bench_actors_main(int argc, char** argv); // mariana bench actors
int bench_comm_main(int argc, char** argv);   // mariana bench comm (bench_comm.cc)
int reward_main(int argc, char** argv);       // mariana reward score (rl/rewards)
int run_main(int argc, char** argv);          // mariana run JOB.toml (embedded controller + agent)
int top_main(int argc, char** argv);          // mariana top
int stop_main(int argc, char** argv);         // mariana stop --state-dir DIR (agents, then the controller)

}  // namespace mariana::cli
