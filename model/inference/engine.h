// The inference engine: prefill and decode for many sequences of different lengths over one
// model's weights, with a per-sequence KV cache. The default cache keeps only MLA's latent —
// c_kv = kv_a_layernorm(kv_a(x))[:r] and the rotated shared key k_pe — per token and layer, and
// absorbs kv_b_proj's two halves into the query (W_UK) and the output (W_UV), as in DeepSeek-V3's
// `absorb` mode (docs/numerics.md#absorbed-decode-with-the-latent-cache): (r + dr) values per token
// and layer instead of H·(dqk + dv). The naive cache (full per-head K and V) is kept for comparison
// (`mariana bench decode`).
//
// The MTP module 0 has its own cache stream per sequence: position p of it holds the block input
// eh_proj([enorm(emb(x_{p+1})) ; hnorm(h_p)]), so it can draft the token after next.
//
// Threading: one engine is used by one thread at a time; its kernels are OpenMP-parallel.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "model/model.h"

namespace mariana {

enum class KvCacheKind { kLatent, kNaive };

// Rows produced by one extend: for each sequence in call order, one row per new token.
template <typename F>
struct EngineOutput {
  int64_t rows = 0;
  std::vector<F> logits;  // [rows, V]
  std::vector<F> hidden;  // [rows, C] model.norm(h_L) (main) or shared_head.norm of the MTP block (mtp_extend)
};

template <typename F>
class InferenceEngine {
 public:
  // The model must outlive the engine; its weights are read, never written.
  explicit InferenceEngine(const Model<F>& model, KvCacheKind kind = KvCacheKind::kLatent);
  ~InferenceEngine();

  const ModelConfig& config() const;
  KvCacheKind cache_kind() const;

  // A new empty sequence; its id stays valid until release().
  int64_t add_sequence();
  void release(int64_t seq);
  int64_t length(int64_t seq) const;      // tokens in the main cache
  int64_t mtp_length(int64_t seq) const;  // positions in the MTP cache
  // Drops cached positions >= len (speculative rejection); len <= length(seq).
  void truncate(int64_t seq, int64_t len);
  void truncate_mtp(int64_t seq, int64_t len);

  // Appends tokens[i] to sequence seqs[i] (each non-empty; a sequence at most once per call) and
  // runs the main model over all new tokens in one batch: each attends to its own sequence's
  // cache up to itself. InvalidArgument on a bad id, token or a position past
  // max_position_embeddings.
  Status extend(const std::vector<int64_t>& seqs, const std::vector<std::vector<int32_t>>& tokens,
                EngineOutput<F>* out);
  // The MTP module 0 over new positions of each sequence's MTP stream: next_tokens[i][j] is the
  // token after position mtp_length + j, hidden[i] holds the main model's final hidden rows
  // [n_i, C] at those positions. Logits predict the token after next. FailedPrecondition without
  // an MTP module.
  Status mtp_extend(const std::vector<int64_t>& seqs, const std::vector<std::vector<int32_t>>& next_tokens,
                    const std::vector<std::vector<F>>& hidden, EngineOutput<F>* out);

  // Bytes the main cache holds per token: (r + dr)·L·sizeof(F) latent, H·(dqk + dv)·L·sizeof(F)
  // naive. cache_bytes(seq) is what sequence seq holds now (main cache only).
  int64_t cache_bytes_per_token() const;
  int64_t cache_bytes(int64_t seq) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

extern template class InferenceEngine<float>;
extern template class InferenceEngine<double>;

}  // namespace mariana
