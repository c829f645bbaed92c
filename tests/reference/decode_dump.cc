// decode_dump: the C++ side of the PyTorch check of the inference engine's decode path. Loads a
// checkpoint, feeds each --seq through an InferenceEngine — one batched prefill of every
// sequence's first --prefill tokens, then one token per sequence per call (teacher forcing, all
// unfinished sequences in one call), after each call the MTP module 0 over the new positions
// whose next token is known (fed the main call's hidden rows, as speculative decoding does) —
// and writes every row's logits, for the latent (absorbed MLA) and the naive K/V cache, in float
// and double, to OUT (safetensors) for check_decode.py:
//   tokens.S I32 [n_S]; logits.KIND_DT.S F32/F64 [n_S, V] (KIND latent|naive, DT f32|f64);
//   mtp_logits.KIND_DT.S [n_S - 1, V] (with an MTP module; row p predicts token p + 2);
//   cache_bytes.KIND_DT.S I64 scalar: the engine's main-cache bytes after the last token.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "model/checkpoint.h"
#include "model/inference/engine.h"

using namespace mariana;

namespace {

int fail(const Status& st) {
  std::fprintf(stderr, "decode_dump: %s\n", st.to_string().c_str());
  return 2;
}

Result<std::vector<int32_t>> parse_ids(const std::string& s) {
  std::istringstream in(s);
  std::vector<int32_t> out;
  std::string w;
  while (in >> w) {
    char* end = nullptr;
    const long v = std::strtol(w.c_str(), &end, 10);
    if (*end != '\0' || v < 0 || v > INT32_MAX) return InvalidArgument("--seq: '" + w + "' is not a token id");
    out.push_back(static_cast<int32_t>(v));
  }
  if (out.empty()) return InvalidArgument("--seq: expected at least one token id");
  return out;
}

template <typename F>
Tensor rows_tensor(const std::vector<F>& v, int64_t V) {
  Tensor t = Tensor::zeros(sizeof(F) == 4 ? DType::kF32 : DType::kF64, {static_cast<int64_t>(v.size()) / V, V});
  std::copy(v.begin(), v.end(), t.data_as<F>());
  return t;
}

// Runs the schedule on one engine; appends logits.NAME.S and cache_bytes.NAME.S to items.
template <typename F>
Status run(const Model<F>& model, KvCacheKind kind, const std::string& name,
           const std::vector<std::vector<int32_t>>& seqs, const std::vector<int64_t>& prefill,
           std::vector<std::pair<std::string, Tensor>>* items) {
  InferenceEngine<F> engine(model, kind);
  const int64_t V = model.config().vocab_size, C = model.config().hidden_size;
  const bool mtp = model.config().num_nextn_predict_layers > 0;
  const size_t n = seqs.size();
  std::vector<int64_t> ids(n);
  std::vector<std::vector<F>> logits(n), mtp_logits(n);
  for (size_t s = 0; s < n; ++s) ids[s] = engine.add_sequence();
  // Appends the rows of `out` (toks[i].size() rows for sequence which[i], in order) to `dst`.
  auto collect = [&](const std::vector<size_t>& which, const std::vector<std::vector<int32_t>>& toks,
                     const EngineOutput<F>& out, std::vector<std::vector<F>>* dst) {
    int64_t row = 0;
    for (size_t i = 0; i < which.size(); ++i) {
      const auto first = out.logits.begin() + row * V;
      row += static_cast<int64_t>(toks[i].size());
      (*dst)[which[i]].insert((*dst)[which[i]].end(), first, out.logits.begin() + row * V);
    }
  };
  // One main call with the given rows of each listed sequence, then (with an MTP module) one MTP
  // call over the new positions whose next token is known, fed the main call's hidden rows.
  auto step = [&](const std::vector<size_t>& which, const std::vector<std::vector<int32_t>>& toks) -> Status {
    std::vector<int64_t> call_ids;
    for (size_t s : which) call_ids.push_back(ids[s]);
    EngineOutput<F> out;
    MARIANA_RETURN_IF_ERROR(engine.extend(call_ids, toks, &out));
    collect(which, toks, out, &logits);
    if (!mtp) return Status::Ok();
    std::vector<size_t> m_which;
    std::vector<int64_t> m_ids;
    std::vector<std::vector<int32_t>> m_next;
    std::vector<std::vector<F>> m_hidden;
    int64_t row = 0;
    for (size_t i = 0; i < which.size(); ++i) {
      const size_t s = which[i];
      const int64_t count = static_cast<int64_t>(toks[i].size()), first_pos = engine.length(ids[s]) - count;
      std::vector<int32_t> next;
      std::vector<F> hidden;
      for (int64_t j = 0; j < count && first_pos + j + 1 < static_cast<int64_t>(seqs[s].size()); ++j) {
        next.push_back(seqs[s][first_pos + j + 1]);
        hidden.insert(hidden.end(), out.hidden.begin() + (row + j) * C, out.hidden.begin() + (row + j + 1) * C);
      }
      row += count;
      if (next.empty()) continue;
      m_which.push_back(s);
      m_ids.push_back(ids[s]);
      m_next.push_back(std::move(next));
      m_hidden.push_back(std::move(hidden));
    }
    if (m_ids.empty()) return Status::Ok();
    EngineOutput<F> m_out;
    MARIANA_RETURN_IF_ERROR(engine.mtp_extend(m_ids, m_next, m_hidden, &m_out));
    collect(m_which, m_next, m_out, &mtp_logits);
    return Status::Ok();
  };
  std::vector<size_t> all;
  std::vector<std::vector<int32_t>> first;
  for (size_t s = 0; s < n; ++s) {
    all.push_back(s);
    first.emplace_back(seqs[s].begin(), seqs[s].begin() + prefill[s]);
  }
  MARIANA_RETURN_IF_ERROR(step(all, first));
  for (size_t pos = 0;; ++pos) {
    std::vector<size_t> which;
    std::vector<std::vector<int32_t>> toks;
    for (size_t s = 0; s < n; ++s) {
      const size_t at = static_cast<size_t>(prefill[s]) + pos;
      if (at < seqs[s].size()) {
        which.push_back(s);
        toks.push_back({seqs[s][at]});
      }
    }
    if (which.empty()) break;
    MARIANA_RETURN_IF_ERROR(step(which, toks));
  }
  for (size_t s = 0; s < n; ++s) {
    items->emplace_back("logits." + name + "." + std::to_string(s), rows_tensor(logits[s], V));
    if (mtp) items->emplace_back("mtp_logits." + name + "." + std::to_string(s), rows_tensor(mtp_logits[s], V));
    Tensor b = Tensor::zeros(DType::kI64, {});
    *b.data_as<int64_t>() = engine.cache_bytes(ids[s]);
    items->emplace_back("cache_bytes." + name + "." + std::to_string(s), std::move(b));
  }
  return Status::Ok();
}

template <typename F>
Status run_both(const std::string& ckpt, const char* dt, const std::vector<std::vector<int32_t>>& seqs,
                const std::vector<int64_t>& prefill, std::vector<std::pair<std::string, Tensor>>* items) {
  auto ck = checkpoint_load<F>(ckpt);
  if (!ck.ok()) return ck.status();
  const Model<F>& model = ck.value().model;
  for (const auto& s : seqs)
    for (int32_t t : s)
      if (t >= model.config().vocab_size)
        return InvalidArgument("--seq: token " + std::to_string(t) + " is not below vocab_size " +
                               std::to_string(model.config().vocab_size));
  MARIANA_RETURN_IF_ERROR(run(model, KvCacheKind::kLatent, std::string("latent_") + dt, seqs, prefill, items));
  return run(model, KvCacheKind::kNaive, std::string("naive_") + dt, seqs, prefill, items);
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options o("decode_dump", "Dump the inference engine's prefill + decode logits for the PyTorch check");
  o.add_options()("checkpoint", "checkpoint directory", cxxopts::value<std::string>())(
      "seq", "a sequence's token ids, space separated (repeat per sequence)",
      cxxopts::value<std::vector<std::string>>())(
      "prefill", "tokens of each sequence in the first call (comma separated, one per --seq)",
      cxxopts::value<std::vector<int64_t>>())("out", "output .safetensors", cxxopts::value<std::string>());
  cxxopts::ParseResult r;
  try {
    r = o.parse(argc, argv);
  } catch (const std::exception& e) {
    return fail(InvalidArgument(e.what()));
  }
  if (!r.count("checkpoint") || !r.count("seq") || !r.count("prefill") || !r.count("out"))
    return fail(InvalidArgument("--checkpoint, --seq, --prefill and --out are required"));
  std::vector<std::vector<int32_t>> seqs;
  for (const std::string& s : r["seq"].as<std::vector<std::string>>()) {
    auto ids = parse_ids(s);
    if (!ids.ok()) return fail(ids.status());
    seqs.push_back(std::move(ids).value());
  }
  const auto prefill = r["prefill"].as<std::vector<int64_t>>();
  if (prefill.size() != seqs.size()) return fail(InvalidArgument("--prefill: expected one length per --seq"));
  for (size_t s = 0; s < seqs.size(); ++s)
    if (prefill[s] < 1 || prefill[s] > static_cast<int64_t>(seqs[s].size()))
      return fail(InvalidArgument("--prefill: length " + std::to_string(prefill[s]) + " of sequence " +
                                  std::to_string(s) + " is not in [1, " + std::to_string(seqs[s].size()) + "]"));
  std::vector<std::pair<std::string, Tensor>> items;
  for (size_t s = 0; s < seqs.size(); ++s) {
    Tensor t = Tensor::zeros(DType::kI32, {static_cast<int64_t>(seqs[s].size())});
    std::copy(seqs[s].begin(), seqs[s].end(), t.data_as<int32_t>());
    items.emplace_back("tokens." + std::to_string(s), std::move(t));
  }
  const std::string ckpt = r["checkpoint"].as<std::string>();
  Status st = run_both<float>(ckpt, "f32", seqs, prefill, &items);
  if (st.ok()) st = run_both<double>(ckpt, "f64", seqs, prefill, &items);
  if (!st.ok()) return fail(st);
  std::string pf;
  for (int64_t p : prefill) pf += (pf.empty() ? "" : " ") + std::to_string(p);
  const std::string out = r["out"].as<std::string>();
  st = safetensors_write(out, items, {{"prefill", pf}});
  if (!st.ok()) return fail(st);
  std::printf("decode_dump: %zu sequences, prefill %s -> %s\n", seqs.size(), pf.c_str(), out.c_str());
  return 0;
}
