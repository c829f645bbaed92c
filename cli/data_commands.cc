// `mariana data prepare|gen`: tokenize text/JSONL into shards (train/shard_format.md), and write
// the built-in corpora (train/corpora.h) as JSONL.
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "cli/cli.h"
#include "sft/reward_model.h"
#include "sft/sft_data.h"
#include "train/corpora.h"
#include "train/data.h"
#include "train/tokenizer.h"

namespace mariana::cli {

namespace {

int data_prepare_cmd(int argc, char** argv) {
  cxxopts::Options o("mariana data prepare",
                     "Tokenize inputs into memory-mapped token shards plus index.json (train/shard_format.md).\n"
                     "Inputs: .txt (the whole file is one document) or .jsonl ({\"text\": ...} per line).\n"
                     "Bad data (invalid JSON line, missing or non-string \"text\", empty file, unreadable file)\n"
                     "is an error naming file and line, or with --skip-bad is skipped and counted.\n"
                     "The output directory appears atomically; nothing is written on failure.");
  o.add_options()("tokenizer", "tokenizer.json", cxxopts::value<std::string>())(
      "input", "input files (.txt / .jsonl); also accepted as extra arguments",
      cxxopts::value<std::vector<std::string>>())("out", "output data directory", cxxopts::value<std::string>())(
      "skip-bad", "skip and count bad lines and files instead of failing")(
      "shard-tokens", "tokens per shard file", cxxopts::value<int64_t>()->default_value(std::to_string(int64_t{1} << 24)))(
      "h,help", "help");
  o.parse_positional({"input"});  // --input a.txt b.jsonl
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (!r.count("tokenizer") || !r.count("input") || !r.count("out"))
    return report(InvalidArgument("data prepare: --tokenizer, --input and --out are required"));
  auto tok = Tokenizer::load(r["tokenizer"].as<std::string>());
  if (!tok.ok()) return report(tok.status());
  PrepareOptions opt;
  opt.inputs = r["input"].as<std::vector<std::string>>();
  opt.out_dir = r["out"].as<std::string>();
  opt.skip_bad = r.count("skip-bad") > 0;
  opt.shard_tokens = r["shard-tokens"].as<int64_t>();
  auto rep = data_prepare(*tok, opt);
  if (!rep.ok()) return report(rep.status());
  for (const std::string& w : rep->skipped_where) std::fprintf(stderr, "mariana: skipped %s\n", w.c_str());
  if (rep->skipped > static_cast<int64_t>(rep->skipped_where.size()))
    std::fprintf(stderr, "mariana: ... and %lld more skipped\n",
                 static_cast<long long>(rep->skipped - static_cast<int64_t>(rep->skipped_where.size())));
  std::printf("documents: %lld\ntokens: %lld\nskipped: %lld\nshards: %lld\nwrote %s\n",
              static_cast<long long>(rep->documents), static_cast<long long>(rep->tokens),
              static_cast<long long>(rep->skipped), static_cast<long long>(rep->shards), opt.out_dir.c_str());
  return kExitOk;
}

// "0.5,0.2,0.3" → three proportions.
Status parse_mix(const std::string& s, CorpusOptions* opt) {
  std::vector<double> v;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) {
    size_t used = 0;
    double x = 0;
    try {
      x = std::stod(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != part.size()) return InvalidArgument("data gen: --mix: '" + part + "' is not a number");
    v.push_back(x);
  }
  if (v.size() != 3) return InvalidArgument("data gen: --mix: expected three proportions A,P,F, got '" + s + "'");
  opt->mix_arithmetic = v[0];
  opt->mix_passkey = v[1];
  opt->mix_prose = v[2];
  return Status::Ok();
}

// --task arithmetic-chat | arithmetic-preference: the training split's problems as SFT chat JSONL
// (sft/sft_data.h) or reward-model preference pairs (sft/reward_model.h).
int data_gen_chat(const cxxopts::ParseResult& r, const ArithmeticOptions& ao) {
  const std::string task = r["task"].as<std::string>();
  const int64_t n = r["num"].as<int64_t>();
  const uint64_t seed = r["seed"].as<uint64_t>();
  const std::string out = r["out"].as<std::string>();
  const Status st = task == "arithmetic-chat" ? write_arithmetic_chat_jsonl(n, seed, ao, out)
                                              : write_arithmetic_preference_jsonl(n, seed, ao, out);
  if (!st.ok()) return report(st.code() == StatusCode::kInvalidArgument ? InvalidArgument("data gen: " + st.message()) : st);
  std::printf("wrote %s: %lld %s samples, seed %llu\n", out.c_str(), static_cast<long long>(n), task.c_str(),
              static_cast<unsigned long long>(seed));
  return kExitOk;
}

int data_gen_cmd(int argc, char** argv) {
  cxxopts::Options o("mariana data gen",
                     "Write a built-in corpus as JSONL ({\"text\": ...} per line); document i depends only on\n"
                     "(task, seed, i, options), so the same flags always give the same file.\n\n"
                     "Tasks:\n"
                     "  arithmetic  one + - * problem per document, worked digit by digit, ending in\n"
                     "              \"a op b = r\" and the marked answer line \"#### r\"\n"
                     "  passkey     filler sentences (--length characters) hiding \"The pass key is NNNNN.\n"
                     "              Remember it. NNNNN is the pass key.\" at --depth, then\n"
                     "              \"What is the pass key? The pass key is NNNNN\"\n"
                     "  mix         arithmetic, passkey and template prose in the --mix proportions\n"
                     "  arithmetic-chat  the arithmetic problems as SFT chat samples ({\"messages\": [user:\n"
                     "              \"a op b = ?\", assistant: the worked answer ending \"#### r\"]})\n"
                     "  arithmetic-preference  reward-model pairs {\"prompt\", \"chosen\": the worked answer,\n"
                     "              \"rejected\": the same work with a wrong result}");
  o.add_options()("task", "arithmetic | passkey | mix | arithmetic-chat | arithmetic-preference", cxxopts::value<std::string>())(
      "n,num", "number of documents (--n N works too)", cxxopts::value<int64_t>())(
      "seed", "seed", cxxopts::value<uint64_t>()->default_value("0"))(
      "out", "JSONL file to write (atomically)", cxxopts::value<std::string>())(
      "digits", "arithmetic: operands have 1..D digits (D <= 9)", cxxopts::value<int>()->default_value("3"))(
      "ops", "arithmetic: operators to draw from", cxxopts::value<std::string>()->default_value("+-*"))(
      "teacher-slip", "arithmetic: fraction of + and - problems whose worked text forgets every carry and borrow "
      "(an imperfect teacher; the text then ends in a wrong answer where one mattered)",
      cxxopts::value<double>()->default_value("0"))(
      "length", "passkey: filler characters per document", cxxopts::value<int64_t>()->default_value("1000"))(
      "depth", "passkey: relative depth of the key in [0, 1] (default: uniform per document)",
      cxxopts::value<double>())(
      "prose-chars", "mix: characters per prose document", cxxopts::value<int64_t>()->default_value("400"))(
      "mix", "mix: proportions arithmetic,passkey,prose", cxxopts::value<std::string>()->default_value("0.5,0.2,0.3"))(
      "h,help", "help");
  // cxxopts wants long names of two characters or more: accept the documented `--n N` as `--num N`.
  std::vector<std::string> args(argv, argv + argc);
  for (std::string& a : args) {
    if (a == "--n") a = "--num";
    else if (a.rfind("--n=", 0) == 0) a = "--num=" + a.substr(4);
  }
  std::vector<char*> ptrs;
  for (std::string& a : args) ptrs.push_back(a.data());
  auto r = o.parse(static_cast<int>(ptrs.size()), ptrs.data());
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (!r.count("task") || !r.count("num") || !r.count("out"))
    return report(InvalidArgument("data gen: --task, --n and --out are required"));
  CorpusOptions opt;
  opt.arithmetic.max_digits = r["digits"].as<int>();
  opt.arithmetic.ops = r["ops"].as<std::string>();
  opt.arithmetic.teacher_slip = r["teacher-slip"].as<double>();
  if (r["task"].as<std::string>() == "arithmetic-chat" || r["task"].as<std::string>() == "arithmetic-preference")
    return data_gen_chat(r, opt.arithmetic);
  auto task = corpus_task_parse(r["task"].as<std::string>());
  if (!task.ok()) return report(InvalidArgument("data gen: --task: " + task.status().message()));
  opt.passkey_chars = r["length"].as<int64_t>();
  if (r.count("depth")) {
    opt.passkey_depth = r["depth"].as<double>();
    if (!(opt.passkey_depth >= 0 && opt.passkey_depth <= 1))
      return report(InvalidArgument("data gen: --depth must be in [0, 1], got " + std::to_string(opt.passkey_depth)));
  }
  opt.prose_chars = r["prose-chars"].as<int64_t>();
  if (Status st = parse_mix(r["mix"].as<std::string>(), &opt); !st.ok()) return report(st);
  const int64_t n = r["num"].as<int64_t>();
  const uint64_t seed = r["seed"].as<uint64_t>();
  const std::string out = r["out"].as<std::string>();
  if (Status st = write_corpus_jsonl(*task, n, seed, opt, out); !st.ok()) {
    return report(st.code() == StatusCode::kInvalidArgument ? InvalidArgument("data gen: " + st.message()) : st);
  }
  std::printf("wrote %s: %lld %s documents, seed %llu\n", out.c_str(), static_cast<long long>(n),
              corpus_task_name(*task), static_cast<unsigned long long>(seed));
  return kExitOk;
}

}  // namespace

int data_main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mariana data prepare|gen ... (--help for flags)\n");
    return kExitBadInput;
  }
  const std::string sub = argv[1];
  try {
    if (sub == "prepare") return data_prepare_cmd(argc - 1, argv + 1);
    if (sub == "gen") return data_gen_cmd(argc - 1, argv + 1);
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("data ") + sub + ": " + e.what()));
  }
  std::fprintf(stderr, "mariana data: unknown subcommand '%s' (prepare, gen)\n", sub.c_str());
  return kExitBadInput;
}

}  // namespace mariana::cli
