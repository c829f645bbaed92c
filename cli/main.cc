// The `mariana` binary: dispatches to the verb's entry point.
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>

#include "cli/cli.h"

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

}  // namespace mariana::cli

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: mariana <verb> [args]\n\n"
               "verbs:\n"
               "  model init --config C --seed S --out DIR   initialise a model, write an HF checkpoint\n"
               "  model info DIR|CONFIG                       parameters, FLOPs, KV-cache sizes\n"
               "  model logits --checkpoint DIR --tokens \"3 17 ...\" --out F.npy\n"
               "  tokenizer train --vocab-size N --input FILES... --out T.json | encode | decode\n"
               "  data prepare --tokenizer T --input FILES... --out DIR [--skip-bad]\n"
               "  data gen --task arithmetic|passkey|mix --n N --seed S --out F.jsonl\n"
               "  bench model --config C --batch B --seq S --threads N [--json]\n"
               "  train JOB.toml [--set key=value]... [--run-dir DIR] [--resume]\n"
               "  generate --checkpoint DIR (--prompt T | --input F.jsonl) [--chat] [--speculative] [--json]\n"
               "  reward score --scorer math|math_verify|format|code [--input F.jsonl] [--timeout-s S --memory-mb M]\n"
               "  eval --task passkey --checkpoint DIR --lengths L,... --depths D,... [--json] [--svg F]\n"
               "  controller start --listen tcp://127.0.0.1:PORT --state-dir DIR\n"
               "  agent start --controller ADDR --token-file F [--cpus N --gpus N]\n"
               "  stop --state-dir DIR | controller stop | agent stop   end a cluster's processes\n"
               "  submit JOB.toml [--set key=value]... [--wait] [--json]\n"
               "  jobs list|show ID|stop ID|metrics ID|logs ID [-f] [--json]\n"
               "  status | nodes | actors list|show ID [--json] | top [--once]\n"
               "  run JOB.toml [--set key=value]... [--state-dir DIR]   embedded controller + agent\n"
               "  bench actors [--json]                      actor-call and placement benchmarks\n"
               "  (client verbs: --controller ADDR --token-file F, or --state-dir DIR)\n\n"
               "Run `mariana <verb> <subverb> --help` for the flags of one command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? mariana::cli::kExitBadInput : 0;
  }
  const std::string verb = argv[1];
  if (verb == "model") return mariana::cli::model_main(argc - 1, argv + 1);
  if (verb == "tokenizer") return mariana::cli::tokenizer_main(argc - 1, argv + 1);
  if (verb == "data") return mariana::cli::data_main(argc - 1, argv + 1);
  if (verb == "bench" && argc > 2 && std::strcmp(argv[2], "actors") == 0)
    return mariana::cli::bench_actors_main(argc - 2, argv + 2);
  if (verb == "bench") return mariana::cli::bench_main(argc - 1, argv + 1);
  if (verb == "train") return mariana::cli::train_main(argc - 1, argv + 1);
  if (verb == "generate") return mariana::cli::generate_main(argc - 1, argv + 1);
  if (verb == "eval") return mariana::cli::eval_main(argc - 1, argv + 1);
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
