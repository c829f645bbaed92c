// Arithmetic prompts and held-out evaluation.
#include "rl/arithmetic_task.h"

#include <chrono>

#include "model/inference/generate.h"
#include "rl/rewards/math_scorer.h"
#include "sft/chat_template.h"
#include "sft/sft_data.h"

namespace mariana::rl {

Result<PromptFormat> prompt_format_parse(const std::string& name) {
  if (name == "chat") return PromptFormat::kChat;
  if (name == "raw") return PromptFormat::kRaw;
  return InvalidArgument("prompt format '" + name + "': expected chat or raw");
}

std::vector<int32_t> arithmetic_prompt(const Tokenizer& tok, const ArithmeticProblem& p, PromptFormat format) {
  if (format == PromptFormat::kChat) return encode_generation_prompt(tok, arithmetic_chat_question(p));
  std::vector<int32_t> ids = {tok.bos_id()};
  const auto body = tok.encode("Q: " + arithmetic_chat_question(p) + "\nA:");
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

Result<ArithmeticEvalResult> eval_arithmetic(const Model<float>& model, const Tokenizer& tok,
                                             const ArithmeticEvalOptions& opt) {
  if (opt.problems <= 0) return InvalidArgument("arithmetic eval: problems must be > 0");
  if (opt.batch <= 0) return InvalidArgument("arithmetic eval: batch must be > 0");
  if (opt.samples <= 0) return InvalidArgument("arithmetic eval: samples must be > 0");
  if (opt.temperature < 0) return InvalidArgument("arithmetic eval: temperature must be >= 0");
  if (opt.samples > 1 && opt.temperature == 0)
    return InvalidArgument("arithmetic eval: several samples per problem need a temperature > 0");
  const auto t0 = std::chrono::steady_clock::now();
  ArithmeticOptions ao = opt.arithmetic;
  ao.split = ArithmeticSplit::kHeldOut;
  MathScorer math;
  InferenceEngine<float> engine(model);
  ArithmeticEvalResult res;
  res.samples = opt.samples;
  const int64_t per_batch = std::max<int64_t>(1, opt.batch / opt.samples);  // problems per batch
  for (int64_t start = 0; start < opt.problems; start += per_batch) {
    const int64_t n = std::min(per_batch, opt.problems - start);
    std::vector<ArithmeticProblem> probs;
    std::vector<GenerateRequest> reqs;
    for (int64_t i = 0; i < n; ++i) {
      probs.push_back(make_arithmetic(opt.seed * 1000003ULL + static_cast<uint64_t>(start + i), ao));
      const std::vector<int32_t> prompt = arithmetic_prompt(tok, probs.back(), opt.format);
      for (int64_t k = 0; k < opt.samples; ++k) {
        GenerateRequest r;
        r.prompt = prompt;
        r.max_new_tokens = opt.max_new_tokens;
        r.stop_tokens = {tok.eos_id()};
        r.sampling.temperature = opt.temperature;
        r.sampling.seed = opt.sample_seed + static_cast<uint64_t>((start + i) * opt.samples + k);
        reqs.push_back(std::move(r));
      }
    }
    MARIANA_ASSIGN_OR_RETURN(std::vector<GenerateResult> out, generate(engine, reqs, GenerateOptions{}));
    for (int64_t i = 0; i < n; ++i) {
      bool any = false;
      for (int64_t k = 0; k < opt.samples; ++k) {
        RewardSample s;
        s.prompt = arithmetic_chat_question(probs[i]);
        s.response = tok.decode(out[static_cast<size_t>(i * opt.samples + k)].tokens);
        s.answer = std::to_string(probs[i].answer);
        MARIANA_ASSIGN_OR_RETURN(RewardResult rr, math.score(s));
        const bool ok = rr.reward >= 1.0;
        any = any || ok;
        res.correct += ok;
        auto& cell = res.by_op[std::string(1, probs[i].op)];
        cell.first += ok;
        cell.second += 1;
        if (opt.keep_responses) res.responses.push_back(ArithmeticEvalResponse{s.prompt, std::to_string(probs[i].answer), s.response, ok});
        if (static_cast<int64_t>(res.examples.size()) < opt.examples)
          res.examples.push_back(s.prompt + " -> " + s.response + (ok ? "  [correct]" : "  [" + rr.reason + "]"));
      }
      res.solved += any;
      ++res.problems;
    }
  }
  res.accuracy = static_cast<double>(res.correct) / static_cast<double>(res.problems * res.samples);
  res.pass_at_k = static_cast<double>(res.solved) / static_cast<double>(res.problems);
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

}  // namespace mariana::rl
