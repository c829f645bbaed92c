// The `mariana` binary: dispatches to the verb's entry point.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>

#include "cli/cli.h"
#include "cli/version.h"

namespace mariana::cli {

int report(const Status& st) {
  if (st.ok()) return kExitOk;
  std::fprintf(stderr, "mariana: %s\n", st.to_string().c_str());
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
    case StatusCode::kDataLoss:
    case StatusCode::kOutOfRange:
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
      return kExitBadInput;
    default:
      return kExitFailure;
  }
}

Status check_out_dir(const std::string& out, bool overwrite, const std::string& what) {
  std::error_code ec;
  if (overwrite || !std::filesystem::exists(out, ec) ||
      (std::filesystem::is_directory(out, ec) && std::filesystem::is_empty(out, ec)))
    return Status::Ok();
  return AlreadyExists(what + ": " + out + " already exists; pass --overwrite to replace it");
}

Result<std::vector<int32_t>> parse_token_ids(const std::string& flag, const std::string& text, int64_t vocab) {
  std::string spaced = text;
  for (char& c : spaced)
    if (c == ',') c = ' ';
  std::istringstream in(spaced);
  std::vector<int32_t> out;
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size()) return InvalidArgument(flag + ": '" + word + "' is not an integer");
    if (v < 0 || v >= vocab)
      return InvalidArgument(flag + ": id " + word + " is out of range [0, " + std::to_string(vocab) + ")");
    out.push_back(static_cast<int32_t>(v));
  }
  return out;
}

Result<std::vector<std::string>> take_set_flags(int& argc, char** argv) {
  std::vector<std::string> sets;
  int kept = 0;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--set") {
      if (i + 1 >= argc) return InvalidArgument("--set: expected key=value after it");
      sets.push_back(argv[++i]);
    } else if (a.rfind("--set=", 0) == 0) {
      sets.push_back(a.substr(6));
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  return sets;
}

}  // namespace mariana::cli

namespace {

// One line of `mariana --help`: the verb, its subverb ("" when none) and the rest. `mariana VERB
// --help` prints the lines of VERB; tests/cli/help_cli_test.cc runs `--help` on every one listed.
struct UsageLine {
  const char* verb;
  const char* sub;
  const char* text;
};

constexpr UsageLine kUsage[] = {
    {"model", "init", "--config C --seed S --out DIR [--overwrite]   initialise a model, write an HF checkpoint"},
    {"model", "info", "DIR|CONFIG                       parameters, FLOPs, KV-cache sizes"},
    {"model", "logits", "--checkpoint DIR --tokens \"3 17 ...\" --out F.npy"},
    {"checkpoint", "export", "RUN_OR_CHECKPOINT --out DIR [--dtype f32|bf16] [--max-shard-bytes N]   plain HF directory"},
    {"tokenizer", "train", "--vocab-size N --input FILES... --out T.json"},
    {"tokenizer", "encode", "--tokenizer T (--text S | --input F)"},
    {"tokenizer", "decode", "--tokenizer T --ids \"3 17 ...\""},
    {"data", "prepare", "--tokenizer T --input FILES... --out DIR [--skip-bad]"},
    {"data", "gen", "--task arithmetic|passkey|mix|arithmetic-chat|arithmetic-preference --n N --seed S --out F.jsonl"},
    {"bench", "model", "--config C --batch B --seq S --threads N [--json]"},
    {"bench", "decode", "[--config C] [--contexts L,...] [--checkpoint DIR]   latent vs naive KV cache; speculative"},
    {"bench", "actors", "[--json]                      actor-call and placement benchmarks"},
    {"bench", "comm", "[--ranks N] [--max-bytes B] [--json]   Gloo collectives between local processes"},
    {"train", "", "JOB.toml [--set key=value]... [--run-dir DIR] [--resume | --overwrite] [--nproc N]"},
    {"generate", "", "--checkpoint DIR (--prompt T | --input F.jsonl) [--chat] [--speculative] [--json]"},
    {"reward", "score", "--scorer math|math_verify|format|code|model [--input F.jsonl] [--timeout-s S --memory-mb M]"},
    {"eval", "", "--task passkey|arithmetic --checkpoint DIR [--lengths L,... --depths D,...] [--json] [--svg F]"},
    {"report", "", "RUN... --out F.html [--accuracy F.txt] [--passkey F.json]... [--title T]   one HTML page of charts"},
    {"controller", "start", "--listen tcp://127.0.0.1:PORT --state-dir DIR [--metrics-port 7766] [--detach]"},
    {"controller", "stop", "--state-dir DIR [--timeout-s S]"},
    {"controller", "add-client", "--state-dir DIR --out CREDENTIALS [--name N]"},
    {"controller", "repair", "--state-dir DIR"},
    {"agent", "start", "--controller ADDR --token-file F [--cpus N --gpus N]"},
    {"agent", "stop", "--state-dir DIR [--node-id N] [--timeout-s S]"},
    {"stop", "", "--state-dir DIR [--timeout-s S]      stop the cluster's agents, then its controller"},
    {"submit", "", "JOB.toml [--set key=value]... [--wait] [--json]"},
    {"jobs", "list", "| show ID | stop ID | resume ID | metrics ID | logs ID [-f] [--json]"},
    {"status", "", "[--json]                          nodes, resources, jobs and actors by state"},
    {"nodes", "", "[--json]"},
    {"actors", "list", "| show ID [--json]"},
    {"top", "", "[--once]"},
    {"run", "", "JOB.toml [--set key=value]... [--state-dir DIR] [--resume | --fresh]   embedded controller + agent"},
};

void usage(FILE* out, const std::string& verb = "") {
  std::fprintf(out, "usage: mariana <verb> [args]\n\n%s:\n", verb.empty() ? "verbs" : verb.c_str());
  for (const UsageLine& u : kUsage) {
    if (!verb.empty() && verb != u.verb) continue;
    std::string head = std::string(u.verb) + (*u.sub ? std::string(" ") + u.sub : "");
    std::fprintf(out, "  %s %s\n", head.c_str(), u.text);
  }
  if (verb.empty())
    std::fprintf(out,
                 "  (client verbs: --controller ADDR --token-file F, or --state-dir DIR)\n\n"
                 "--set values are TOML (3, 1e-3, true, [1.0, 0.1], \"x\"; other text is a string).\n"
                 "Run `mariana <verb> [<subverb>] --help` for the flags of one command; `mariana --version`.\n");
}

bool is_help(const char* a) { return std::strcmp(a, "--help") == 0 || std::strcmp(a, "-h") == 0; }

// A verb with subverbs ("model", "controller", ...): `mariana VERB --help` prints its lines.
bool has_subverbs(const std::string& verb) {
  for (const UsageLine& u : kUsage)
    if (verb == u.verb && *u.sub) return true;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || is_help(argv[1])) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? mariana::cli::kExitBadInput : 0;
  }
  if (std::strcmp(argv[1], "--version") == 0) {
    std::printf("mariana %s (commit %s)\n", MARIANA_VERSION, MARIANA_GIT_COMMIT);
    return 0;
  }
  const std::string verb = argv[1];
  if (argc == 3 && is_help(argv[2]) && has_subverbs(verb)) {
    usage(stdout, verb);
    return 0;
  }
  if (verb == "model") return mariana::cli::model_main(argc - 1, argv + 1);
  if (verb == "checkpoint") return mariana::cli::checkpoint_main(argc - 1, argv + 1);
  if (verb == "tokenizer") return mariana::cli::tokenizer_main(argc - 1, argv + 1);
  if (verb == "data") return mariana::cli::data_main(argc - 1, argv + 1);
  if (verb == "bench" && argc > 2 && std::strcmp(argv[2], "actors") == 0)
    return mariana::cli::bench_actors_main(argc - 2, argv + 2);
  if (verb == "bench" && argc > 2 && std::strcmp(argv[2], "comm") == 0)
    return mariana::cli::bench_comm_main(argc - 2, argv + 2);
  if (verb == "bench") return mariana::cli::bench_main(argc - 1, argv + 1);
  if (verb == "train") return mariana::cli::train_main(argc - 1, argv + 1);
  if (verb == "generate") return mariana::cli::generate_main(argc - 1, argv + 1);
  if (verb == "eval") return mariana::cli::eval_main(argc - 1, argv + 1);
  if (verb == "report") return mariana::cli::report_main(argc - 1, argv + 1);
  if (verb == "controller") return mariana::cli::controller_main(argc - 1, argv + 1);
  if (verb == "agent") return mariana::cli::agent_main(argc - 1, argv + 1);
  if (verb == "worker") return mariana::cli::worker_main(argc - 1, argv + 1);
  if (verb == "submit") return mariana::cli::submit_main(argc - 1, argv + 1);
  if (verb == "jobs") return mariana::cli::jobs_main(argc - 1, argv + 1);
  if (verb == "status") return mariana::cli::status_main(argc - 1, argv + 1);
  if (verb == "nodes") return mariana::cli::nodes_main(argc - 1, argv + 1);
  if (verb == "actors") return mariana::cli::actors_main(argc - 1, argv + 1);
  if (verb == "reward") return mariana::cli::reward_main(argc - 1, argv + 1);
  if (verb == "run") return mariana::cli::run_main(argc - 1, argv + 1);
  if (verb == "top") return mariana::cli::top_main(argc - 1, argv + 1);
  if (verb == "stop") return mariana::cli::stop_main(argc - 1, argv + 1);
  std::fprintf(stderr, "mariana: unknown verb '%s'\n", verb.c_str());
  usage(stderr);
  return mariana::cli::kExitBadInput;
}
