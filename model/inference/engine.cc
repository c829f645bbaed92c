// InferenceEngine: absorbed MLA over a latent cache (or a naive K/V cache), the dense MLP and
// DeepSeekMoE layers of model/moe.h, the head, and the MTP module 0.
#include "model/inference/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <unordered_map>

#include "kernels/ops.h"
#include "model/moe.h"
#include "model/weights.h"

namespace mariana {

namespace {

template <typename F>
struct BlockView {
  bool moe = false;
  const F* w_in = nullptr;
  const F* w_post = nullptr;
  const F *q_a = nullptr, *q_a_norm = nullptr, *q_b = nullptr, *q = nullptr;
  const F *kv_a = nullptr, *kv_a_norm = nullptr, *kv_b = nullptr, *o = nullptr;
  MlpParams<F> mlp;
  std::vector<MlpParams<F>> experts;
  MoeParams<F> moe_p;
};

}  // namespace

template <typename F>
struct InferenceEngine<F>::Impl {
  struct Seq {
    int64_t len = 0, mtp_len = 0;
    std::vector<std::vector<F>> main;  // [L] caches, len rows each
    std::vector<F> mtp;                // MTP module 0's cache, mtp_len rows
  };

  const Model<F>& model;
  const ModelConfig& c;
  KvCacheKind kind;
  std::vector<BlockView<F>> blocks;  // L main blocks, then the MTP module's (if any)
  const F *embed = nullptr, *norm = nullptr, *head = nullptr;
  const F *enorm = nullptr, *hnorm = nullptr, *eh_proj = nullptr, *head_norm = nullptr;
  std::vector<F> inv_freq;
  std::unordered_map<int64_t, Seq> seqs;
  int64_t next_id = 0;

  Impl(const Model<F>& m, KvCacheKind k) : model(m), c(m.config()), kind(k) {
    inv_freq.resize(static_cast<size_t>(c.qk_rope_head_dim / 2));
    RopeParams rp;
    rp.rope_dim = static_cast<int>(c.qk_rope_head_dim);
    rp.theta = c.rope_theta;
    if (c.yarn.enabled) {
      rp.factor = c.yarn.factor;
      rp.original_max_position = static_cast<int>(c.yarn.original_max_position);
      rp.beta_fast = c.yarn.beta_fast;
      rp.beta_slow = c.yarn.beta_slow;
    }
    cpu::rope_inv_freq(inv_freq.data(), rp);
    const ModelWeights<const F*> w = model_weights<const F*>(m.table(), m.params());
    const int64_t n_blocks = c.num_hidden_layers + std::min<int64_t>(c.num_nextn_predict_layers, 1);
    blocks.resize(static_cast<size_t>(n_blocks));
    for (int64_t l = 0; l < n_blocks; ++l) {
      BlockView<F>& b = blocks[l];
      const BlockWeights<const F*>& bw = w.blocks[l];
      b.moe = bw.moe;
      b.w_in = bw.input_layernorm;
      b.w_post = bw.post_attention_layernorm;
      b.q_a = bw.attn.q_a_proj;
      b.q_a_norm = bw.attn.q_a_layernorm;
      b.q_b = bw.attn.q_b_proj;
      b.q = bw.attn.q_proj;
      b.kv_a = bw.attn.kv_a_proj;
      b.kv_a_norm = bw.attn.kv_a_layernorm;
      b.kv_b = bw.attn.kv_b_proj;
      b.o = bw.attn.o_proj;
      if (!b.moe) {
        b.mlp = bw.mlp;
        continue;
      }
      b.experts = bw.experts;
      b.moe_p.gate = bw.router;
      b.moe_p.bias = bw.router_bias;
      b.moe_p.experts = b.experts.data();
      b.moe_p.shared = bw.shared;
    }
    embed = w.embed;
    norm = w.norm;
    head = w.lm_head;
    if (c.num_nextn_predict_layers > 0) {
      enorm = w.mtp[0].enorm;
      hnorm = w.mtp[0].hnorm;
      eh_proj = w.mtp[0].eh_proj;
      head_norm = w.mtp[0].head_norm;
    }
  }

  int64_t row_size() const {
    const int64_t H = c.num_attention_heads;
    return kind == KvCacheKind::kLatent ? c.kv_lora_rank + c.qk_rope_head_dim
                                        : H * (c.qk_head_dim() + c.v_head_dim);
  }

  Seq* find(int64_t id) {
    auto it = seqs.find(id);
    return it == seqs.end() ? nullptr : &it->second;
  }

  // One row of a batched call: which cache it appends to and its position there.
  struct Row {
    std::vector<F>* cache;
    int32_t pos;
  };

  // MLA over the rows: appends each row's cache entry, then attends to the cache up to itself.
  // n1 [T, C] is the normed block input; out [T, C].
  void attention(const BlockView<F>& b, const std::vector<Row>& rows, const std::vector<int32_t>& pos,
                 const F* n1, F* out) {
    const int64_t T = static_cast<int64_t>(rows.size()), C = c.hidden_size, H = c.num_attention_heads;
    const int64_t r = c.kv_lora_rank, dr = c.qk_rope_head_dim, dn = c.qk_nope_head_dim;
    const int64_t dv = c.v_head_dim, dqk = c.qk_head_dim(), qr = c.q_lora_rank;
    const F eps = static_cast<F>(c.rms_norm_eps);
    const F mscale = static_cast<F>(c.rope_mscale());
    const F scale = static_cast<F>(c.softmax_scale());
    std::vector<F> q(static_cast<size_t>(T * H * dqk)), rstd(static_cast<size_t>(T));
    if (qr > 0) {
      std::vector<F> qa(static_cast<size_t>(T * qr)), qan(static_cast<size_t>(T * qr));
      cpu::linear_forward(qa.data(), n1, b.q_a, T, C, qr);
      cpu::rmsnorm_forward(qan.data(), rstd.data(), qa.data(), b.q_a_norm, T, qr, eps);
      cpu::linear_forward(q.data(), qan.data(), b.q_b, T, qr, H * dqk);
    } else {
      cpu::linear_forward(q.data(), n1, b.q, T, C, H * dqk);
    }
    cpu::rope_forward(q.data() + dn, pos.data(), inv_freq.data(), T, H, dr, H * dqk, dqk);
    std::vector<F> kva(static_cast<size_t>(T * (r + dr))), ckv_in(static_cast<size_t>(T * r));
    std::vector<F> ckv(static_cast<size_t>(T * r));
    cpu::linear_forward(kva.data(), n1, b.kv_a, T, C, r + dr);
    cpu::rope_forward(kva.data() + r, pos.data(), inv_freq.data(), T, 1, dr, r + dr, 0);
    cpu::rope_scale(q.data() + dn, T, H, dr, H * dqk, dqk, mscale);
    cpu::rope_scale(kva.data() + r, T, 1, dr, r + dr, 0, mscale);
    cpu::copy_strided(ckv_in.data(), kva.data(), T, r, r, r + dr);
    cpu::rmsnorm_forward(ckv.data(), rstd.data(), ckv_in.data(), b.kv_a_norm, T, r, eps);

    // Append the cache entries (in row order: a sequence's rows are consecutive and in order).
    const int64_t rs = row_size();
    if (kind == KvCacheKind::kLatent) {
      for (int64_t t = 0; t < T; ++t) {
        std::vector<F>& cache = *rows[t].cache;
        cache.insert(cache.end(), ckv.begin() + t * r, ckv.begin() + (t + 1) * r);
        cache.insert(cache.end(), kva.begin() + t * (r + dr) + r, kva.begin() + (t + 1) * (r + dr));
      }
    } else {
      std::vector<F> kv(static_cast<size_t>(T * H * (dn + dv)));
      cpu::linear_forward(kv.data(), ckv.data(), b.kv_b, T, r, H * (dn + dv));
      std::vector<F> entry(static_cast<size_t>(rs));
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t h = 0; h < H; ++h) {
          const F* kvh = kv.data() + (t * H + h) * (dn + dv);
          std::memcpy(entry.data() + h * dqk, kvh, dn * sizeof(F));
          std::memcpy(entry.data() + h * dqk + dn, kva.data() + t * (r + dr) + r, dr * sizeof(F));
          std::memcpy(entry.data() + H * dqk + h * dv, kvh + dn, dv * sizeof(F));
        }
        rows[t].cache->insert(rows[t].cache->end(), entry.begin(), entry.end());
      }
    }

    std::vector<F> o(static_cast<size_t>(T * H * dv));
    if (kind == KvCacheKind::kLatent) {
      // qcat[t, h] = [q_nope[t, h]·W_UK[h] ; q_pe[t, h]], W_UK[h] = kv_b rows h·(dn+dv) .. +dn.
      std::vector<F> qcat(static_cast<size_t>(T * H * (r + dr))), olat(static_cast<size_t>(T * H * r));
      for (int64_t h = 0; h < H; ++h) {
        cpu::gemm(false, false, T, r, dn, F(1), q.data() + h * dqk, H * dqk, b.kv_b + h * (dn + dv) * r, r,
                  F(0), qcat.data() + h * (r + dr), H * (r + dr));
      }
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h)
          std::memcpy(qcat.data() + (t * H + h) * (r + dr) + r, q.data() + (t * H + h) * dqk + dn, dr * sizeof(F));
#pragma omp parallel
      {
        std::vector<F> s;
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < T; ++t) {
          const int64_t len = rows[t].pos + 1;
          const F* cache = rows[t].cache->data();
          s.resize(static_cast<size_t>(H * len));
          cpu::gemm(false, true, H, len, r + dr, scale, qcat.data() + t * H * (r + dr), r + dr, cache, r + dr,
                    F(0), s.data(), len);
          softmax_rows(s.data(), H, len);
          cpu::gemm(false, false, H, r, len, F(1), s.data(), len, cache, r + dr, F(0), olat.data() + t * H * r, r);
        }
      }
      // o[t, h] = olat[t, h]·W_UV[h]ᵀ, W_UV[h] = kv_b rows h·(dn+dv)+dn .. +dv.
      for (int64_t h = 0; h < H; ++h) {
        cpu::gemm(false, true, T, dv, r, F(1), olat.data() + h * r, H * r, b.kv_b + (h * (dn + dv) + dn) * r, r,
                  F(0), o.data() + h * dv, H * dv);
      }
    } else {
#pragma omp parallel
      {
        std::vector<F> s;
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < T; ++t) {
          const int64_t len = rows[t].pos + 1;
          const F* cache = rows[t].cache->data();
          s.resize(static_cast<size_t>(len));
          for (int64_t h = 0; h < H; ++h) {
            cpu::gemm(false, true, 1, len, dqk, scale, q.data() + (t * H + h) * dqk, dqk, cache + h * dqk, rs,
                      F(0), s.data(), len);
            softmax_rows(s.data(), 1, len);
            cpu::gemm(false, false, 1, dv, len, F(1), s.data(), len, cache + H * dqk + h * dv, rs, F(0),
                      o.data() + (t * H + h) * dv, dv);
          }
        }
      }
    }
    cpu::linear_forward(out, o.data(), b.o, T, H * dv, C);
  }

  static void softmax_rows(F* s, int64_t rows, int64_t n) {
    for (int64_t i = 0; i < rows; ++i) {
      F* x = s + i * n;
      F mx = -std::numeric_limits<F>::infinity();
      for (int64_t j = 0; j < n; ++j) mx = std::max(mx, x[j]);
      F sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        x[j] = std::exp(x[j] - mx);
        sum += x[j];
      }
      const F inv = F(1) / sum;
      for (int64_t j = 0; j < n; ++j) x[j] *= inv;
    }
  }

  // One block over T rows: h (in/out) [T, C].
  void block(const BlockView<F>& b, const std::vector<Row>& rows, const std::vector<int32_t>& pos, F* h) {
    const int64_t T = static_cast<int64_t>(rows.size()), C = c.hidden_size;
    const F eps = static_cast<F>(c.rms_norm_eps);
    std::vector<F> n(static_cast<size_t>(T * C)), a(static_cast<size_t>(T * C)), x(static_cast<size_t>(T * C));
    std::vector<F> rstd(static_cast<size_t>(T));
    cpu::rmsnorm_forward(n.data(), rstd.data(), h, b.w_in, T, C, eps);
    attention(b, rows, pos, n.data(), a.data());
    cpu::add(x.data(), h, a.data(), T * C);
    cpu::rmsnorm_forward(n.data(), rstd.data(), x.data(), b.w_post, T, C, eps);
    if (!b.moe) {
      const int64_t I = c.intermediate_size;
      std::vector<F> g(static_cast<size_t>(T * I)), u(g.size()), act(g.size());
      mlp_forward(a.data(), MlpSaved<F>{g.data(), u.data(), act.data()}, n.data(), b.mlp, MlpDims{T, C, I});
    } else {
      moe(b, T, n.data(), a.data());
    }
    cpu::add(h, x.data(), a.data(), T * C);
  }

  void moe(const BlockView<F>& b, int64_t T, const F* x, F* out) {
    const MoeDims d = moe_dims_for(c, 1, T);
    const int64_t E = d.E, K = d.K, C = d.C, Fm = d.Fm, Fs = std::max<int64_t>(d.Fs, 1);
    std::vector<F> logits(T * E), scores(T * E), weights(T * K), x_perm(T * K * C), y_perm(T * K * C);
    std::vector<F> eg(T * K * Fm), eu(T * K * Fm), ea(T * K * Fm), sg(T * Fs), su(T * Fs), sa(T * Fs);
    std::vector<F> shared_out(T * C), balance_f(E);
    std::vector<int32_t> indices(T * K), counts(E), offsets(E + 1), row_of(T * K);
    MoeSaved<F> s;
    s.logits = logits.data();
    s.scores = scores.data();
    s.weights = weights.data();
    s.indices = indices.data();
    s.counts = counts.data();
    s.offsets = offsets.data();
    s.row_of = row_of.data();
    s.x_perm = x_perm.data();
    s.expert = {eg.data(), eu.data(), ea.data()};
    s.y_perm = y_perm.data();
    s.shared = {sg.data(), su.data(), sa.data()};
    s.shared_out = shared_out.data();
    s.balance_f = balance_f.data();
    moe_forward(out, s, x, b.moe_p, d, /*reuse_routing=*/false);
  }

  // model.norm / a head norm, then lm_head: hidden [T, C] (normed, kept), logits [T, V].
  void head_out(const F* h, const F* norm_w, int64_t T, EngineOutput<F>* out) {
    const int64_t C = c.hidden_size, V = c.vocab_size;
    std::vector<F> rstd(static_cast<size_t>(T));
    out->rows = T;
    out->hidden.resize(static_cast<size_t>(T * C));
    out->logits.resize(static_cast<size_t>(T * V));
    cpu::rmsnorm_forward(out->hidden.data(), rstd.data(), h, norm_w, T, C, static_cast<F>(c.rms_norm_eps));
    cpu::linear_forward(out->logits.data(), out->hidden.data(), head, T, C, V);
  }

  Status check_tokens(const std::vector<int64_t>& ids, const std::vector<std::vector<int32_t>>& tokens,
                      bool mtp) {
    if (ids.size() != tokens.size()) return InvalidArgument("engine: one token list per sequence expected");
    std::vector<int64_t> sorted = ids;
    std::sort(sorted.begin(), sorted.end());
    if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
      return InvalidArgument("engine: a sequence appears twice in one call");
    for (size_t i = 0; i < ids.size(); ++i) {
      Seq* s = find(ids[i]);
      if (s == nullptr) return InvalidArgument("engine: unknown sequence " + std::to_string(ids[i]));
      if (tokens[i].empty()) return InvalidArgument("engine: no tokens for sequence " + std::to_string(ids[i]));
      for (int32_t t : tokens[i])
        if (t < 0 || t >= c.vocab_size)
          return InvalidArgument("engine: token " + std::to_string(t) + " outside [0, " +
                                 std::to_string(c.vocab_size) + ")");
      const int64_t end = (mtp ? s->mtp_len : s->len) + static_cast<int64_t>(tokens[i].size());
      if (end > c.max_position_embeddings)
        return InvalidArgument("engine: sequence " + std::to_string(ids[i]) + " would reach " +
                               std::to_string(end) + " tokens, past max_position_embeddings " +
                               std::to_string(c.max_position_embeddings));
    }
    return Status::Ok();
  }
};

template <typename F>
InferenceEngine<F>::InferenceEngine(const Model<F>& model, KvCacheKind kind)
    : impl_(std::make_unique<Impl>(model, kind)) {}
template <typename F>
InferenceEngine<F>::~InferenceEngine() = default;

template <typename F>
const ModelConfig& InferenceEngine<F>::config() const { return impl_->c; }
template <typename F>
KvCacheKind InferenceEngine<F>::cache_kind() const { return impl_->kind; }

template <typename F>
int64_t InferenceEngine<F>::add_sequence() {
  const int64_t id = impl_->next_id++;
  auto& s = impl_->seqs[id];
  s.main.resize(static_cast<size_t>(impl_->c.num_hidden_layers));
  return id;
}

template <typename F>
void InferenceEngine<F>::release(int64_t seq) { impl_->seqs.erase(seq); }

template <typename F>
int64_t InferenceEngine<F>::length(int64_t seq) const {
  auto* s = impl_->find(seq);
  MARIANA_CHECK(s != nullptr);
  return s->len;
}

template <typename F>
int64_t InferenceEngine<F>::mtp_length(int64_t seq) const {
  auto* s = impl_->find(seq);
  MARIANA_CHECK(s != nullptr);
  return s->mtp_len;
}

template <typename F>
void InferenceEngine<F>::truncate(int64_t seq, int64_t len) {
  auto* s = impl_->find(seq);
  MARIANA_CHECK(s != nullptr && len >= 0 && len <= s->len);
  for (auto& layer : s->main) layer.resize(static_cast<size_t>(len * impl_->row_size()));
  s->len = len;
}

template <typename F>
void InferenceEngine<F>::truncate_mtp(int64_t seq, int64_t len) {
  auto* s = impl_->find(seq);
  MARIANA_CHECK(s != nullptr && len >= 0 && len <= s->mtp_len);
  s->mtp.resize(static_cast<size_t>(len * impl_->row_size()));
  s->mtp_len = len;
}

template <typename F>
int64_t InferenceEngine<F>::cache_bytes_per_token() const {
  return impl_->row_size() * impl_->c.num_hidden_layers * static_cast<int64_t>(sizeof(F));
}

template <typename F>
int64_t InferenceEngine<F>::cache_bytes(int64_t seq) const {
  auto* s = impl_->find(seq);
  MARIANA_CHECK(s != nullptr);
  int64_t n = 0;
  for (const auto& layer : s->main) n += static_cast<int64_t>(layer.size() * sizeof(F));
  return n;
}

template <typename F>
Status InferenceEngine<F>::extend(const std::vector<int64_t>& seqs,
                                  const std::vector<std::vector<int32_t>>& tokens, EngineOutput<F>* out) {
  Impl& m = *impl_;
  MARIANA_RETURN_IF_ERROR(m.check_tokens(seqs, tokens, /*mtp=*/false));
  const ModelConfig& c = m.c;
  const int64_t C = c.hidden_size;
  std::vector<int32_t> flat, pos;
  std::vector<typename Impl::Seq*> row_seq;
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto* s = m.find(seqs[i]);
    for (size_t j = 0; j < tokens[i].size(); ++j) {
      flat.push_back(tokens[i][j]);
      pos.push_back(static_cast<int32_t>(s->len + static_cast<int64_t>(j)));
      row_seq.push_back(s);
    }
  }
  const int64_t T = static_cast<int64_t>(flat.size());
  std::vector<F> h(static_cast<size_t>(T * C));
  cpu::embedding_forward(h.data(), flat.data(), m.embed, T, C);
  std::vector<typename Impl::Row> rows(static_cast<size_t>(T));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (int64_t t = 0; t < T; ++t) rows[t] = {&row_seq[t]->main[l], pos[t]};
    m.block(m.blocks[l], rows, pos, h.data());
  }
  for (size_t i = 0; i < seqs.size(); ++i) m.find(seqs[i])->len += static_cast<int64_t>(tokens[i].size());
  m.head_out(h.data(), m.norm, T, out);
  return Status::Ok();
}

template <typename F>
Status InferenceEngine<F>::mtp_extend(const std::vector<int64_t>& seqs,
                                      const std::vector<std::vector<int32_t>>& next_tokens,
                                      const std::vector<std::vector<F>>& hidden, EngineOutput<F>* out) {
  Impl& m = *impl_;
  const ModelConfig& c = m.c;
  MARIANA_RETURN_IF_ERROR(c.require_mtp("engine: mtp_extend"));
  MARIANA_RETURN_IF_ERROR(m.check_tokens(seqs, next_tokens, /*mtp=*/true));
  const int64_t C = c.hidden_size;
  if (hidden.size() != seqs.size()) return InvalidArgument("engine: one hidden block per sequence expected");
  std::vector<int32_t> flat, pos;
  std::vector<F> hp;
  std::vector<typename Impl::Row> rows;
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto* s = m.find(seqs[i]);
    if (hidden[i].size() != next_tokens[i].size() * static_cast<size_t>(C))
      return InvalidArgument("engine: hidden rows do not match the MTP tokens");
    for (size_t j = 0; j < next_tokens[i].size(); ++j) {
      flat.push_back(next_tokens[i][j]);
      pos.push_back(static_cast<int32_t>(s->mtp_len + static_cast<int64_t>(j)));
      rows.push_back({&s->mtp, pos.back()});
    }
    hp.insert(hp.end(), hidden[i].begin(), hidden[i].end());
  }
  const int64_t T = static_cast<int64_t>(flat.size());
  const F eps = static_cast<F>(c.rms_norm_eps);
  std::vector<F> e(static_cast<size_t>(T * C)), en(e.size()), hn(e.size()), rstd(static_cast<size_t>(T));
  std::vector<F> cat(static_cast<size_t>(T * 2 * C)), x(e.size());
  cpu::embedding_forward(e.data(), flat.data(), m.embed, T, C);
  cpu::rmsnorm_forward(en.data(), rstd.data(), e.data(), m.enorm, T, C, eps);
  cpu::rmsnorm_forward(hn.data(), rstd.data(), hp.data(), m.hnorm, T, C, eps);
  cpu::copy_strided(cat.data(), en.data(), T, C, 2 * C, C);
  cpu::copy_strided(cat.data() + C, hn.data(), T, C, 2 * C, C);
  cpu::linear_forward(x.data(), cat.data(), m.eh_proj, T, 2 * C, C);
  m.block(m.blocks[c.num_hidden_layers], rows, pos, x.data());
  for (size_t i = 0; i < seqs.size(); ++i) m.find(seqs[i])->mtp_len += static_cast<int64_t>(next_tokens[i].size());
  m.head_out(x.data(), m.head_norm, T, out);
  return Status::Ok();
}

template class InferenceEngine<float>;
template class InferenceEngine<double>;

}  // namespace mariana
