// generate(): batched prefill + decode, sampling, and MTP speculative decoding.
#include "model/inference/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/philox.h"

namespace mariana {

namespace {

using Clock = std::chrono::steady_clock;

// The uniform for a draw at sequence position `pos`, slot 0 (the token), 1 (a draft), 2 (an
// acceptance test).
double uniform_at(const SamplingParams& p, uint64_t request_index, int64_t pos, int slot) {
  PhiloxStream rng(p.seed, p.stream >= 0 ? static_cast<uint64_t>(p.stream) : request_index);
  rng.seek(2 * (static_cast<uint64_t>(pos) * 4 + static_cast<uint64_t>(slot)));
  return rng.next_uniform();
}

template <typename F>
int32_t argmax(const F* x, int64_t n) {
  return static_cast<int32_t>(std::max_element(x, x + n) - x);
}

Status validate(const GenerateRequest& r, size_t i, int64_t vocab) {
  const std::string where = "request " + std::to_string(i) + ": ";
  if (r.prompt.empty()) return InvalidArgument(where + "empty prompt");
  for (int32_t t : r.prompt)
    if (t < 0 || t >= vocab) return InvalidArgument(where + "prompt token " + std::to_string(t) + " out of range");
  if (r.max_new_tokens < 0) return InvalidArgument(where + "max_new_tokens must be >= 0");
  const SamplingParams& s = r.sampling;
  if (!(s.temperature >= 0)) return InvalidArgument(where + "temperature must be >= 0");
  if (s.top_k < 0) return InvalidArgument(where + "top_k must be >= 0");
  if (!(s.top_p > 0 && s.top_p <= 1)) return InvalidArgument(where + "top_p must be in (0, 1]");
  return Status::Ok();
}

}  // namespace

template <typename F>
void sampling_distribution(const F* logits, int64_t V, const SamplingParams& p, std::vector<double>* probs) {
  probs->assign(static_cast<size_t>(V), 0.0);
  if (p.temperature == 0) {
    (*probs)[static_cast<size_t>(argmax(logits, V))] = 1.0;
    return;
  }
  const double mx = static_cast<double>(*std::max_element(logits, logits + V));
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) {
    (*probs)[i] = std::exp((static_cast<double>(logits[i]) - mx) / p.temperature);
    sum += (*probs)[i];
  }
  for (double& v : *probs) v /= sum;
  if (p.top_k == 0 && p.top_p >= 1) return;
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return (*probs)[a] > (*probs)[b]; });
  int64_t keep = p.top_k > 0 ? std::min<int64_t>(p.top_k, V) : V;
  double mass = 0, kept_total = 0;
  for (int64_t k = 0; k < keep; ++k) kept_total += (*probs)[order[k]];
  if (p.top_p < 1) {
    for (int64_t k = 0; k < keep; ++k) {
      mass += (*probs)[order[k]] / kept_total;
      if (mass >= p.top_p) {
        keep = k + 1;
        break;
      }
    }
  }
  double total = 0;
  for (int64_t k = 0; k < keep; ++k) total += (*probs)[order[k]];
  for (int64_t k = keep; k < V; ++k) (*probs)[order[k]] = 0;
  for (int64_t k = 0; k < keep; ++k) (*probs)[order[k]] /= total;
}

int32_t sample_index(const std::vector<double>& probs, double u) {
  const double total = std::accumulate(probs.begin(), probs.end(), 0.0);
  const double target = u * total;
  double c = 0;
  int32_t last = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    c += probs[i];
    last = static_cast<int32_t>(i);
    if (c > target) return last;
  }
  return last;
}

template <typename F>
Result<std::vector<GenerateResult>> generate(InferenceEngine<F>& engine, const std::vector<GenerateRequest>& requests,
                                             const GenerateOptions& opt) {
  const ModelConfig& c = engine.config();
  const int64_t V = c.vocab_size, C = c.hidden_size;
  if (opt.speculative) MARIANA_RETURN_IF_ERROR(c.require_mtp("speculative decoding"));
  for (size_t i = 0; i < requests.size(); ++i) MARIANA_RETURN_IF_ERROR(validate(requests[i], i, V));

  struct Active {
    size_t idx = 0;
    int64_t seq = 0;
    int32_t next = 0;                // emitted, not yet fed to the main model
    std::vector<int32_t> mtp_tok;    // MTP positions not yet run: token after the position...
    std::vector<F> mtp_hid;          // ...and the main model's final hidden there
    bool done = false;
  };
  std::vector<GenerateResult> results(requests.size());
  std::vector<Active> act;
  const auto t0 = Clock::now();
  auto finish = [&](Active& a, const char* why) {
    a.done = true;
    GenerateResult& r = results[a.idx];
    r.finish = why;
    r.stats.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    engine.release(a.seq);
  };
  // Emits a token; returns false when the request has finished.
  auto emit = [&](Active& a, int32_t tok) {
    const GenerateRequest& rq = requests[a.idx];
    GenerateResult& r = results[a.idx];
    if (std::find(rq.stop_tokens.begin(), rq.stop_tokens.end(), tok) != rq.stop_tokens.end()) {
      finish(a, "stop");
      return false;
    }
    r.tokens.push_back(tok);
    if (static_cast<int64_t>(r.tokens.size()) >= rq.max_new_tokens) {
      finish(a, "length");
      return false;
    }
    return true;
  };
  std::vector<double> probs, q;

  // Prefill every prompt in one batch.
  {
    std::vector<int64_t> seqs;
    std::vector<std::vector<int32_t>> toks;
    for (size_t i = 0; i < requests.size(); ++i) {
      results[i].stats.prompt_tokens = static_cast<int64_t>(requests[i].prompt.size());
      Active a;
      a.idx = i;
      a.seq = engine.add_sequence();
      act.push_back(a);
      seqs.push_back(a.seq);
      toks.push_back(requests[i].prompt);
    }
    EngineOutput<F> out;
    if (!seqs.empty()) {
      const Status st = engine.extend(seqs, toks, &out);
      if (!st.ok()) {
        for (auto& a : act) engine.release(a.seq);
        return st;
      }
    }
    int64_t row = 0;
    for (auto& a : act) {
      const GenerateRequest& rq = requests[a.idx];
      const int64_t P = static_cast<int64_t>(rq.prompt.size());
      const F* lg = out.logits.data() + (row + P - 1) * V;
      if (rq.max_new_tokens == 0) {
        finish(a, "length");
      } else {
        sampling_distribution(lg, V, rq.sampling, &probs);
        a.next = sample_index(probs, uniform_at(rq.sampling, a.idx, P, 0));
        if (emit(a, a.next) && opt.speculative) {
          a.mtp_tok.assign(rq.prompt.begin() + 1, rq.prompt.end());
          a.mtp_tok.push_back(a.next);
          a.mtp_hid.assign(out.hidden.begin() + row * C, out.hidden.begin() + (row + P) * C);
        }
      }
      row += P;
    }
  }

  for (;;) {
    std::vector<Active*> live;
    for (auto& a : act) {
      if (a.done) continue;
      if (engine.length(a.seq) + 2 > c.max_position_embeddings) {
        finish(a, "length");  // the context is full
        continue;
      }
      live.push_back(&a);
    }
    if (live.empty()) break;
    std::vector<int64_t> seqs;
    for (auto* a : live) seqs.push_back(a->seq);
    std::vector<std::vector<int32_t>> toks(live.size());
    std::vector<int32_t> drafts(live.size());
    EngineOutput<F> mtp_out;
    std::vector<std::vector<double>> qdist(live.size());
    if (opt.speculative) {
      std::vector<std::vector<int32_t>> mt(live.size());
      std::vector<std::vector<F>> mh(live.size());
      for (size_t i = 0; i < live.size(); ++i) {
        mt[i] = std::move(live[i]->mtp_tok);
        mh[i] = std::move(live[i]->mtp_hid);
        live[i]->mtp_tok.clear();
        live[i]->mtp_hid.clear();
      }
      MARIANA_RETURN_IF_ERROR(engine.mtp_extend(seqs, mt, mh, &mtp_out));
      int64_t row = 0;
      for (size_t i = 0; i < live.size(); ++i) {
        row += static_cast<int64_t>(mt[i].size());
        const SamplingParams& sp = requests[live[i]->idx].sampling;
        const int64_t pos_d = engine.length(live[i]->seq) + 1;
        sampling_distribution(mtp_out.logits.data() + (row - 1) * V, V, sp, &qdist[i]);
        drafts[i] = sample_index(qdist[i], uniform_at(sp, live[i]->idx, pos_d, 1));
        toks[i] = {live[i]->next, drafts[i]};
      }
    } else {
      for (size_t i = 0; i < live.size(); ++i) toks[i] = {live[i]->next};
    }
    std::vector<int64_t> len0(live.size());
    for (size_t i = 0; i < live.size(); ++i) len0[i] = engine.length(live[i]->seq);
    EngineOutput<F> out;
    MARIANA_RETURN_IF_ERROR(engine.extend(seqs, toks, &out));
    int64_t row = 0;
    for (size_t i = 0; i < live.size(); ++i) {
      Active& a = *live[i];
      const GenerateRequest& rq = requests[a.idx];
      const SamplingParams& sp = rq.sampling;
      GenerateStats& st = results[a.idx].stats;
      ++st.main_steps;
      const int64_t n = len0[i];  // position of a.next
      const F* l1 = out.logits.data() + row * V;
      const F* h1 = out.hidden.data() + row * C;
      if (!opt.speculative) {
        sampling_distribution(l1, V, sp, &probs);
        a.next = sample_index(probs, uniform_at(sp, a.idx, n + 1, 0));
        emit(a, a.next);
        row += 1;
        continue;
      }
      const F* l2 = l1 + V;
      const int32_t d = drafts[i];
      sampling_distribution(l1, V, sp, &probs);
      ++st.drafted;
      bool accept;
      if (sp.temperature == 0) {
        accept = probs[d] == 1.0;
      } else {
        const double ratio = qdist[i][d] > 0 ? probs[d] / qdist[i][d] : 0.0;
        accept = uniform_at(sp, a.idx, n + 1, 2) < std::min(1.0, ratio);
      }
      if (accept) {
        ++st.accepted;
        if (emit(a, d)) {
          sampling_distribution(l2, V, sp, &probs);
          a.next = sample_index(probs, uniform_at(sp, a.idx, n + 2, 0));
          if (emit(a, a.next)) {
            a.mtp_tok = {d, a.next};
            a.mtp_hid.assign(h1, h1 + 2 * C);
          }
        }
      } else {
        engine.truncate(a.seq, n + 1);
        if (sp.temperature != 0) {
          for (int64_t v = 0; v < V; ++v) probs[v] = std::max(0.0, probs[v] - qdist[i][v]);
          if (std::accumulate(probs.begin(), probs.end(), 0.0) <= 0) sampling_distribution(l1, V, sp, &probs);
        }
        a.next = sample_index(probs, uniform_at(sp, a.idx, n + 1, 0));
        if (emit(a, a.next)) {
          a.mtp_tok = {a.next};
          a.mtp_hid.assign(h1, h1 + C);
        }
      }
      row += 2;
    }
  }
  for (auto& r : results) {
    r.stats.generated_tokens = static_cast<int64_t>(r.tokens.size());
    r.stats.tokens_per_s = r.stats.seconds > 0 ? static_cast<double>(r.stats.generated_tokens) / r.stats.seconds : 0;
    r.stats.acceptance_rate =
        r.stats.drafted > 0 ? static_cast<double>(r.stats.accepted) / static_cast<double>(r.stats.drafted) : 0;
  }
  return results;
}

template void sampling_distribution<float>(const float*, int64_t, const SamplingParams&, std::vector<double>*);
template void sampling_distribution<double>(const double*, int64_t, const SamplingParams&, std::vector<double>*);
template Result<std::vector<GenerateResult>> generate<float>(InferenceEngine<float>&, const std::vector<GenerateRequest>&,
                                                             const GenerateOptions&);
template Result<std::vector<GenerateResult>> generate<double>(InferenceEngine<double>&,
                                                              const std::vector<GenerateRequest>&,
                                                              const GenerateOptions&);

}  // namespace mariana
