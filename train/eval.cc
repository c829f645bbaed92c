// Passkey evaluation, its table, JSON and SVG heatmap.
#include "train/eval.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "report/inputs.h"
#include "train/corpora.h"

namespace mariana {

double PasskeyGrid::mean(size_t i) const {
  double s = 0;
  for (double a : accuracy.at(i)) s += a;
  return accuracy[i].empty() ? 0.0 : s / static_cast<double>(accuracy[i].size());
}

namespace {

// Greedy continuation of each prompt by `n_new` tokens. Prompts are left-padded: the padding is a
// document of its own, so the prompt never sees it and its positions start at 0.
Result<std::vector<std::vector<int32_t>>> greedy(Model<float>& model, const std::vector<std::vector<int32_t>>& prompts,
                                                 int32_t pad, int64_t n_new) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  const int64_t V = model.config().vocab_size;
  std::vector<std::vector<int32_t>> seqs = prompts;
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
  for (int64_t step = 0; step < n_new; ++step) {
    size_t S = 0;
    for (const auto& s : seqs) S = std::max(S, s.size());
    Batch b;
    b.B = B;
    b.S = static_cast<int64_t>(S);
    b.tokens.assign(static_cast<size_t>(B) * S, pad);
    b.targets.assign(static_cast<size_t>(B) * S, -1);
    b.doc_start.assign(static_cast<size_t>(B) * S, 0);
    for (int64_t r = 0; r < B; ++r) {
      const size_t off = S - seqs[r].size();
      for (size_t i = 0; i < seqs[r].size(); ++i) {
        b.tokens[r * S + off + i] = seqs[r][i];
        b.doc_start[r * S + off + i] = static_cast<int32_t>(off);
      }
    }
    MARIANA_RETURN_IF_ERROR(model.forward(b, LossWeights{}, nullptr));
    for (int64_t r = 0; r < B; ++r) {
      const float* row = model.logits() + (r * static_cast<int64_t>(S) + static_cast<int64_t>(S) - 1) * V;
      const int32_t next = static_cast<int32_t>(std::max_element(row, row + V) - row);
      seqs[r].push_back(next);
      out[r].push_back(next);
    }
  }
  return out;
}

std::string digits_of(const std::string& s) {
  std::string d;
  for (char c : s)
    if (c >= '0' && c <= '9') d += c;
  return d;
}

}  // namespace

Result<PasskeyGrid> eval_passkey(Model<float>& model, const Tokenizer& tok, const std::vector<int64_t>& lengths,
                                 const std::vector<double>& depths, int64_t samples, uint64_t seed) {
  PasskeyGrid g;
  g.lengths = lengths;
  g.depths = depths;
  g.samples = samples;
  // Characters per token of the filler, to size prompts in tokens.
  const PasskeySample probe = make_passkey(seed, 4000, 0.5);
  const double chars_per_token =
      static_cast<double>(probe.prompt.size()) / static_cast<double>(std::max<size_t>(tok.encode(probe.prompt).size(), 1));
  for (size_t li = 0; li < lengths.size(); ++li) {
    // A cell's length is the whole context, the answer included: the prompt gets L − 8 tokens.
    const int64_t L = lengths[li] - 8;
    if (lengths[li] > model.config().max_position_embeddings) {
      return InvalidArgument("eval: length " + std::to_string(lengths[li]) + " exceeds max_position_embeddings " +
                             std::to_string(model.config().max_position_embeddings));
    }
    g.accuracy.emplace_back();
    for (size_t di = 0; di < depths.size(); ++di) {
      std::vector<std::vector<int32_t>> prompts;
      std::vector<std::string> answers;
      for (int64_t s = 0; s < samples; ++s) {
        const uint64_t sseed = seed * 1000003ULL + li * 10007ULL + di * 101ULL + static_cast<uint64_t>(s);
        int64_t chars = static_cast<int64_t>(static_cast<double>(L - 1) * chars_per_token);
        PasskeySample p = make_passkey(sseed, chars, depths[di]);
        std::vector<int32_t> ids = tok.encode(p.prompt);
        // Shrink the filler until the prompt (with BOS) fits in L tokens.
        for (int tries = 0; static_cast<int64_t>(ids.size()) + 1 > L && tries < 8; ++tries) {
          chars = static_cast<int64_t>(static_cast<double>(chars) * static_cast<double>(L - 1) /
                                       static_cast<double>(ids.size()) * 0.98);
          p = make_passkey(sseed, chars, depths[di]);
          ids = tok.encode(p.prompt);
        }
        ids.insert(ids.begin(), tok.bos_id());
        if (static_cast<int64_t>(ids.size()) > L) ids.erase(ids.begin() + 1, ids.begin() + 1 + (ids.size() - L));
        prompts.push_back(std::move(ids));
        answers.push_back(digits_of(p.answer));
      }
      const int64_t n_new = static_cast<int64_t>(tok.encode(" " + answers.front()).size()) + 2;
      MARIANA_ASSIGN_OR_RETURN(auto outs, greedy(model, prompts, tok.pad_id(), n_new));
      int64_t right = 0;
      g.examples.push_back("length " + std::to_string(lengths[li]) + " depth " + std::to_string(depths[di]) + ": " +
                           answers[0] + " -> \"" + tok.decode(outs[0]) + "\"");
      for (int64_t s = 0; s < samples; ++s) {
        const std::string got = digits_of(tok.decode(outs[s]));
        if (got.rfind(answers[s], 0) == 0) ++right;
      }
      g.accuracy.back().push_back(static_cast<double>(right) / static_cast<double>(samples));
    }
  }
  return g;
}

std::string passkey_table(const PasskeyGrid& g) {
  std::string out = "length \\ depth";
  char buf[64];
  for (double d : g.depths) {
    std::snprintf(buf, sizeof(buf), "  %5.2f", d);
    out += buf;
  }
  out += "   mean\n";
  for (size_t i = 0; i < g.lengths.size(); ++i) {
    std::snprintf(buf, sizeof(buf), "%14lld", (long long)g.lengths[i]);
    out += buf;
    for (double a : g.accuracy[i]) {
      std::snprintf(buf, sizeof(buf), "  %5.2f", a);
      out += buf;
    }
    std::snprintf(buf, sizeof(buf), "  %5.2f\n", g.mean(i));
    out += buf;
  }
  return out;
}

nlohmann::ordered_json passkey_json(const PasskeyGrid& g) {
  nlohmann::ordered_json j;
  j["task"] = "passkey";
  j["lengths"] = g.lengths;
  j["depths"] = g.depths;
  j["samples_per_cell"] = g.samples;
  j["accuracy"] = g.accuracy;
  nlohmann::ordered_json means = nlohmann::ordered_json::object();
  for (size_t i = 0; i < g.lengths.size(); ++i) means[std::to_string(g.lengths[i])] = g.mean(i);
  j["mean_accuracy_per_length"] = means;
  return j;
}

std::string passkey_svg(const PasskeyGrid& g, const std::string& title) {
  report::Heatmap h = report::passkey_heatmap(g.lengths, g.depths, g.accuracy, title);
  h.standalone = true;  // a file of its own: with xmlns
  return report::heatmap_svg(h);
}

}  // namespace mariana
