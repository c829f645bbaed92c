// `mariana tokenizer train|encode|decode`: train a byte-level BPE into an HF tokenizer.json, turn
// text into ids and ids back into bytes.
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/file_util.h"
#include "train/tokenizer.h"

namespace mariana::cli {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Encodes every text once and returns MB/s (1 MB = 1e6 bytes).
double encode_mb_per_s(const Tokenizer& tok, const std::vector<std::string>& texts, int64_t* tokens) {
  size_t bytes = 0;
  *tokens = 0;
  const auto t0 = Clock::now();
  for (const std::string& t : texts) {
    *tokens += static_cast<int64_t>(tok.encode(t).size());
    bytes += t.size();
  }
  const double s = seconds_since(t0);
  return s > 0 ? bytes / 1e6 / s : 0.0;
}

int tokenizer_train(int argc, char** argv) {
  cxxopts::Options o("mariana tokenizer train", "Train a byte-level BPE tokenizer; writes HF tokenizer.json");
  o.add_options()("vocab-size", "total vocabulary, byte tokens and special tokens included", cxxopts::value<int64_t>())(
      "input", "training files (.txt: whole file; .jsonl: the \"text\" field of each line)",
      cxxopts::value<std::vector<std::string>>())("out", "tokenizer.json to write", cxxopts::value<std::string>())(
      "min-frequency", "never merge a pair seen fewer times", cxxopts::value<int64_t>()->default_value("2"))(
      "h,help", "help");
  o.parse_positional({"input"});  // --input a.txt b.txt c.jsonl
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (!r.count("vocab-size") || !r.count("input") || !r.count("out")) {
    return report(InvalidArgument("tokenizer train: --vocab-size, --input and --out are required"));
  }
  TokenizerTrainOptions opt;
  opt.vocab_size = r["vocab-size"].as<int64_t>();
  opt.min_frequency = r["min-frequency"].as<int64_t>();
  if (opt.vocab_size < 256 + kNumSpecialTokens) {
    return report(InvalidArgument("tokenizer train: --vocab-size " + std::to_string(opt.vocab_size) +
                                  ": must hold the 256 byte tokens and the " + std::to_string(kNumSpecialTokens) +
                                  " special tokens (at least " + std::to_string(256 + kNumSpecialTokens) + ")"));
  }
  if (opt.min_frequency < 1) return report(InvalidArgument("tokenizer train: --min-frequency must be >= 1"));
  const auto files = r["input"].as<std::vector<std::string>>();
  auto texts = tokenizer_read_texts(files);
  if (!texts.ok()) return report(texts.status());
  size_t bytes = 0;
  for (const std::string& t : *texts) bytes += t.size();

  const auto t0 = Clock::now();
  auto tok = Tokenizer::train_from_texts(*texts, opt);
  if (!tok.ok()) return report(tok.status());
  const double train_s = seconds_since(t0);
  const std::string out = r["out"].as<std::string>();
  Status st = tok->save(out);
  if (!st.ok()) return report(st);

  int64_t tokens = 0;
  const double cold = encode_mb_per_s(*tok, *texts, &tokens);
  const double warm = encode_mb_per_s(*tok, *texts, &tokens);
  std::printf("wrote %s: vocab %lld (%lld merges + 256 bytes + %d special), trained on %.2f MB in %.2f s\n", out.c_str(),
              static_cast<long long>(tok->vocab_size()), static_cast<long long>(tok->num_merges()), kNumSpecialTokens,
              bytes / 1e6, train_s);
  std::printf("encode (1 thread, training corpus): %.1f MB/s cold cache, %.1f MB/s warm; %lld tokens, %.2f bytes/token\n",
              cold, warm, static_cast<long long>(tokens), tokens ? static_cast<double>(bytes) / tokens : 0.0);
  return kExitOk;
}

Result<Tokenizer> load_tokenizer_arg(const cxxopts::ParseResult& r, const char* verb) {
  if (!r.count("tokenizer")) return InvalidArgument(std::string("tokenizer ") + verb + ": --tokenizer is required");
  return Tokenizer::load(r["tokenizer"].as<std::string>());
}

int tokenizer_encode(int argc, char** argv) {
  cxxopts::Options o("mariana tokenizer encode",
                     "Text to token ids as HF's encode(text, add_special_tokens=False): added-token text becomes its id");
  o.add_options()("tokenizer", "tokenizer.json", cxxopts::value<std::string>())(
      "text", "the text to encode", cxxopts::value<std::string>())(
      "input", "a file whose bytes are encoded", cxxopts::value<std::string>())(
      "json", "print {\"ids\": [...], \"count\": N}")(
      "jsonl", "--input is JSONL: encode the \"text\" of each line, print one JSON array of ids per line")(
      "h,help", "help");
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (r.count("text") + r.count("input") != 1) return report(InvalidArgument("tokenizer encode: give exactly one of --text and --input"));
  if (r.count("jsonl") && (!r.count("input") || !r["input"].as<std::string>().ends_with(".jsonl"))) {
    return report(InvalidArgument("tokenizer encode: --jsonl needs --input FILE.jsonl"));
  }
  auto tok = load_tokenizer_arg(r, "encode");
  if (!tok.ok()) return report(tok.status());
  if (r.count("jsonl")) {
    auto texts = tokenizer_read_texts({r["input"].as<std::string>()});
    if (!texts.ok()) return report(texts.status());
    for (const std::string& t : *texts) std::printf("%s\n", nlohmann::json(tok->encode(t)).dump().c_str());
    return kExitOk;
  }
  std::string text;
  if (r.count("text")) {
    text = r["text"].as<std::string>();
  } else {
    auto bytes = read_file(r["input"].as<std::string>());
    if (!bytes.ok()) return report(bytes.status());
    text = std::move(bytes).value();
  }
  const std::vector<int32_t> ids = tok->encode(text);
  if (r.count("json")) {
    nlohmann::json j;
    j["ids"] = ids;
    j["count"] = ids.size();
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::string line;
    for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
    std::printf("%s\n", line.c_str());
  }
  return kExitOk;
}

// `decode --input`: each non-blank line a JSON array of ids in range.
int decode_lines(const Tokenizer& tok, const std::string& path) {
  auto bytes = read_file(path);
  if (!bytes.ok()) return report(bytes.status());
  std::istringstream in(*bytes);
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    std::vector<int32_t> ids;
    bool ok = j.is_array();
    for (size_t k = 0; ok && k < j.size(); ++k) {
      ok = j[k].is_number_integer() && j[k].get<int64_t>() >= 0 && j[k].get<int64_t>() < tok.vocab_size();
      if (ok) ids.push_back(j[k].get<int32_t>());
    }
    if (!ok) {
      return report(InvalidArgument(path + ":" + std::to_string(line_no) + ": expected a JSON array of ids in 0.." +
                                    std::to_string(tok.vocab_size() - 1)));
    }
    std::printf("%s\n", nlohmann::json(tok.decode(ids)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  }
  return kExitOk;
}

int tokenizer_decode(int argc, char** argv) {
  cxxopts::Options o("mariana tokenizer decode", "Token ids to raw bytes on stdout");
  o.add_options()("tokenizer", "tokenizer.json", cxxopts::value<std::string>())(
      "ids", "ids separated by spaces or commas, e.g. \"1 2 3\"", cxxopts::value<std::string>())(
      "input", "a file with one JSON array of ids per line: print each decoded text as a JSON string line "
               "(bytes that are not UTF-8 become U+FFFD)", cxxopts::value<std::string>())("h,help", "help");
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (r.count("ids") + r.count("input") != 1) return report(InvalidArgument("tokenizer decode: give exactly one of --ids and --input"));
  auto tok = load_tokenizer_arg(r, "decode");
  if (!tok.ok()) return report(tok.status());
  if (r.count("input")) return decode_lines(*tok, r["input"].as<std::string>());
  auto parsed = parse_token_ids("--ids", r["ids"].as<std::string>(), tok->vocab_size());
  if (!parsed.ok()) return report(InvalidArgument("tokenizer decode: " + parsed.status().message()));
  const std::vector<int32_t>& ids = parsed.value();
  const std::string bytes = tok->decode(ids);
  std::fwrite(bytes.data(), 1, bytes.size(), stdout);
  return kExitOk;
}

}  // namespace

int tokenizer_main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mariana tokenizer train|encode|decode ...\n");
    return kExitBadInput;
  }
  const std::string sub = argv[1];
  try {
    if (sub == "train") return tokenizer_train(argc - 1, argv + 1);
    if (sub == "encode") return tokenizer_encode(argc - 1, argv + 1);
    if (sub == "decode") return tokenizer_decode(argc - 1, argv + 1);
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("tokenizer ") + sub + ": " + e.what()));
  }
  std::fprintf(stderr, "mariana tokenizer: unknown subcommand '%s' (train, encode, decode)\n", sub.c_str());
  return kExitBadInput;
}

}  // namespace mariana::cli
