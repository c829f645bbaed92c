// Text generation over the inference engine: batched prefill and decode of requests with
// different prompt lengths, sampling (temperature, top-k, top-p, seed), stop tokens, max new
// tokens, and MTP speculative decoding: the MTP module drafts the token after next, the main
// model verifies both in one step. With greedy sampling the output equals plain decoding; with
// sampling, the draft is accepted with probability min(1, p(d)/q(d)) and a rejection resamples
// from norm(max(0, p − q)), so the output distribution is the main model's.
//
// Reproducibility: the uniform behind each draw is Philox(seed, stream) at a counter fixed by the
// token's position, the stream being the request's index in the call unless SamplingParams::stream
// names one, so the same seed gives the same text on any thread count and in any batch (and, with
// an explicit stream, whichever call or process draws it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/inference/engine.h"

namespace mariana {

struct SamplingParams {
  double temperature = 0;  // 0: greedy (argmax, lowest id on ties)
  int64_t top_k = 0;       // 0: off
  double top_p = 1.0;      // 1: off
  uint64_t seed = 0;
  int64_t stream = -1;     // the Philox stream; −1: the request's index in the generate() call
};

// The distribution a draw uses: softmax(logits / temperature) restricted to the top_k most likely
// ids and then to the smallest set whose mass reaches top_p, renormalised; one-hot at the argmax
// when temperature is 0. InvalidArgument-free: params are validated by generate().
template <typename F>
void sampling_distribution(const F* logits, int64_t V, const SamplingParams& p, std::vector<double>* probs);
// Inverse CDF at u in [0, 1): the first id whose cumulative mass exceeds u·total.
int32_t sample_index(const std::vector<double>& probs, double u);

struct GenerateRequest {
  std::vector<int32_t> prompt;   // at least one token
  int64_t max_new_tokens = 64;
  SamplingParams sampling;
  std::vector<int32_t> stop_tokens;  // generation ends after one of these (not included in tokens)
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  int64_t main_steps = 0;   // decode steps of the main model after prefill
  int64_t drafted = 0, accepted = 0;
  double seconds = 0, tokens_per_s = 0, acceptance_rate = 0;
};

struct GenerateResult {
  std::vector<int32_t> tokens;    // generated ids (without the stop token)
  std::string finish;             // "stop" | "length"
  GenerateStats stats;
};

struct GenerateOptions {
  bool speculative = false;  // MTP speculative decoding (needs an MTP module with weights)
};

template <typename F>
Result<std::vector<GenerateResult>> generate(InferenceEngine<F>& engine, const std::vector<GenerateRequest>& requests,
                                             const GenerateOptions& opt);

}  // namespace mariana
