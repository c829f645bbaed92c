// `mariana generate --checkpoint DIR (--prompt TEXT | --input F.jsonl) [--chat] [--speculative]
//  [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--json]`.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/inference/generate.h"
#include "sft/chat_template.h"
#include "train/tokenizer.h"
#include "train/run_checkpoints.h"

namespace mariana::cli {

namespace {

// One prompt: plain text ([BOS] + text) or a chat ([BOS] [USER] ... [ASSISTANT]).
struct PromptSpec {
  std::string text;
  std::vector<ChatMessage> messages;  // non-empty: a chat prompt
};

Result<std::vector<PromptSpec>> read_prompts(const std::string& path, bool chat) {
  std::ifstream in(path);
  if (!in) return NotFound(path + ": cannot open");
  std::vector<PromptSpec> out;
  std::string line;
  for (int64_t ln = 1; std::getline(in, line); ++ln) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(ln);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      return InvalidArgument(where + ": invalid JSON: " + e.what());
    }
    if (!j.is_object()) return InvalidArgument(where + ": expected an object");
    PromptSpec p;
    if (j.contains("messages")) {
      if (!j["messages"].is_array()) return InvalidArgument(where + ": field 'messages': expected an array");
      for (size_t i = 0; i < j["messages"].size(); ++i) {
        const auto& m = j["messages"][i];
        if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
            !m["content"].is_string())
          return InvalidArgument(where + ": field 'messages[" + std::to_string(i) +
                                 "]': expected {\"role\": string, \"content\": string}");
        p.messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
      const Status st = chat_validate(p.messages, /*for_generation=*/true);
      if (!st.ok()) return InvalidArgument(where + ": " + st.message());
    } else if (j.contains("prompt") && j["prompt"].is_string()) {
      p.text = j["prompt"].get<std::string>();
      if (chat) p.messages.push_back({"user", p.text});
    } else {
      return InvalidArgument(where + ": missing field 'prompt' (a string) or 'messages'");
    }
    out.push_back(std::move(p));
  }
  if (out.empty()) return InvalidArgument(path + ": no prompts");
  return out;
}

}  // namespace

int generate_main(int argc, char** argv) {
  cxxopts::Options o("mariana generate", "Generate text from a checkpoint");
  o.add_options()("checkpoint", "checkpoint directory, or a run directory (its newest valid checkpoint)", cxxopts::value<std::string>())(
      "tokenizer", "tokenizer.json (default: the checkpoint's)", cxxopts::value<std::string>())(
      "no-verify", kNoVerifyHelp)(
      "prompt", "prompt text", cxxopts::value<std::string>())(
      "input", "JSONL of {\"prompt\": ...} or {\"messages\": [...]} per line", cxxopts::value<std::string>())(
      "chat", "wrap plain prompts in the chat template as a user turn")(
      "speculative", "MTP speculative decoding")(
      "max-new-tokens", "tokens to generate at most", cxxopts::value<int64_t>()->default_value("64"))(
      "temperature", "0: greedy", cxxopts::value<double>()->default_value("0"))(
      "top-k", "0: off", cxxopts::value<int64_t>()->default_value("0"))(
      "top-p", "1: off", cxxopts::value<double>()->default_value("1"))(
      "seed", "sampling seed", cxxopts::value<uint64_t>()->default_value("0"))(
      "threads", "CPU threads (0: all)", cxxopts::value<int>()->default_value("0"))(
      "json", "one JSON object per request: text, token ids, stats")("h,help", "help");
  try {
    auto r = o.parse(argc, argv);
    if (r.count("help")) {
      std::printf("%s\n", o.help().c_str());
      return kExitOk;
    }
    if (!r.count("checkpoint")) return report(InvalidArgument("generate: --checkpoint is required"));
    if (r.count("prompt") == r.count("input"))
      return report(InvalidArgument("generate: give exactly one of --prompt and --input"));
    const bool chat = r.count("chat") > 0;
    std::vector<PromptSpec> prompts;
    if (r.count("prompt")) {
      PromptSpec p;
      p.text = r["prompt"].as<std::string>();
      if (chat) p.messages.push_back({"user", p.text});
      prompts.push_back(p);
    } else {
      auto read = read_prompts(r["input"].as<std::string>(), chat);
      if (!read.ok()) return report(read.status());
      prompts = std::move(read).value();
    }
    auto resolved = resolve_checkpoint(r["checkpoint"].as<std::string>());  // a checkpoint or a run directory
    if (!resolved.ok()) return report(resolved.status());
    const std::string ck_dir = resolved.value();
    const std::string tok_path = r.count("tokenizer") ? r["tokenizer"].as<std::string>()
                                                      : (std::filesystem::path(ck_dir) / "tokenizer.json").string();
    auto tok = Tokenizer::load(tok_path);
    if (!tok.ok()) return report(tok.status());
    auto ck = checkpoint_load<float>(ck_dir, {.verify_manifest = !r.count("no-verify")});
    if (!ck.ok()) return report(ck.status());
    if (tok.value().vocab_size() > ck.value().model.config().vocab_size)
      return report(InvalidArgument(tok_path + ": tokenizer has " + std::to_string(tok.value().vocab_size()) +
                                    " ids, more than the model's vocab_size"));
    cpu::set_num_threads(r["threads"].as<int>());
    std::vector<GenerateRequest> requests;
    for (const PromptSpec& p : prompts) {
      GenerateRequest q;
      if (!p.messages.empty()) {
        q.prompt = encode_generation_prompt(tok.value(), p.messages);
      } else {
        q.prompt = {tok.value().bos_id()};
        const auto ids = tok.value().encode(p.text);
        q.prompt.insert(q.prompt.end(), ids.begin(), ids.end());
      }
      q.max_new_tokens = r["max-new-tokens"].as<int64_t>();
      q.sampling.temperature = r["temperature"].as<double>();
      q.sampling.top_k = r["top-k"].as<int64_t>();
      q.sampling.top_p = r["top-p"].as<double>();
      q.sampling.seed = r["seed"].as<uint64_t>();
      q.stop_tokens = {tok.value().eos_id()};
      requests.push_back(std::move(q));
    }
    InferenceEngine<float> engine(ck.value().model);
    GenerateOptions go;
    go.speculative = r.count("speculative") > 0;
    auto res = generate(engine, requests, go);
    if (!res.ok()) return report(res.status());
    for (size_t i = 0; i < res.value().size(); ++i) {
      const GenerateResult& g = res.value()[i];
      const std::string text = tok.value().decode(g.tokens);
      if (r.count("json")) {
        nlohmann::json j;
        j["index"] = i;
        j["text"] = nlohmann::json(text);
        j["token_ids"] = g.tokens;
        j["finish"] = g.finish;
        j["stats"] = {{"prompt_tokens", g.stats.prompt_tokens},
                      {"generated_tokens", g.stats.generated_tokens},
                      {"seconds", g.stats.seconds},
                      {"tokens_per_s", g.stats.tokens_per_s},
                      {"main_steps", g.stats.main_steps},
                      {"drafted", g.stats.drafted},
                      {"accepted", g.stats.accepted},
                      {"acceptance_rate", g.stats.acceptance_rate}};
        std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      } else {
        std::printf("%s\n", text.c_str());
        std::fprintf(stderr, "[%zu] %lld prompt + %lld generated tokens, %.1f tokens/s%s (%s)\n", i,
                     (long long)g.stats.prompt_tokens, (long long)g.stats.generated_tokens, g.stats.tokens_per_s,
                     go.speculative ? (", acceptance " + std::to_string(g.stats.acceptance_rate)).c_str() : "",
                     g.finish.c_str());
      }
    }
    return kExitOk;
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("generate: ") + e.what()));
  }
}

}  // namespace mariana::cli
