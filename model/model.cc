// Model<F>: activation buffers, the block composition, MTP modules and the losses.
#include "model/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "comm/communicator.h"
#include "core/philox.h"
#include "kernels/ops.h"
#include "model/attention.h"
#include "model/moe.h"
#include "model/weights.h"

namespace mariana {

Batch Batch::from_rows(int64_t B, int64_t S, const std::vector<int32_t>& tokens) {
  Batch b;
  b.B = B;
  b.S = S;
  b.tokens = tokens;
  b.targets.assign(static_cast<size_t>(B * S), -1);
  b.doc_start.assign(static_cast<size_t>(B * S), 0);
  for (int64_t r = 0; r < B; ++r)
    for (int64_t i = 0; i + 1 < S; ++i) b.targets[r * S + i] = tokens[r * S + i + 1];
  return b;
}

namespace {

// Owns many buffers; pointers stay valid until clear(). A counting pool allocates nothing: take()
// adds up the bytes and returns null (Model::activation_bytes).
template <typename T>
class BufferPool {
 public:
  explicit BufferPool(bool counting = false) : counting_(counting) {}
  T* take(int64_t n) {
    n = std::max<int64_t>(n, 1);
    bytes_ += n * static_cast<int64_t>(sizeof(T));
    if (counting_) return nullptr;
    store_.emplace_back(static_cast<size_t>(n), T(0));
    return store_.back().data();
  }
  void clear() {
    store_.clear();
    bytes_ = 0;
  }
  int64_t bytes() const { return bytes_; }

 private:
  bool counting_ = false;
  int64_t bytes_ = 0;
  std::vector<std::vector<T>> store_;
};

class ScopedTimer {
 public:
  ScopedTimer(StepProfile& p, const char* name)
      : p_(p), name_(name), t0_(std::chrono::steady_clock::now()) {}
  ~ScopedTimer() {
    p_.seconds[name_] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  StepProfile& p_;
  const char* name_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace

// One transformer block's parameters, gradients and saved activations.
template <typename F>
struct BlockState {
  int64_t hf_layer = 0;
  bool moe = false;
  const F* w_in = nullptr;    // input_layernorm [C]
  const F* w_post = nullptr;  // post_attention_layernorm [C]
  F* g_in = nullptr;
  F* g_post = nullptr;
  MlaParams<F> attn;
  MlaGrads<F> attn_g;
  MlpParams<F> mlp;
  MlpGrads<F> mlp_g;
  std::vector<MlpParams<F>> experts;
  std::vector<MlpGrads<F>> experts_g;
  MoeParams<F> moe_p;
  MoeGrads<F> moe_g;
};

// One block's saved activations for one micro-batch.
template <typename F>
struct BlockSaved {
  F* n1 = nullptr;      // [T, C]
  F* rstd1 = nullptr;   // [T]
  MlaSaved<F> attn_s;
  F* attn_out = nullptr;  // [T, C]
  F* x = nullptr;       // [T, C] h_in + attn_out
  F* n2 = nullptr;      // [T, C]
  F* rstd2 = nullptr;   // [T]
  MlpSaved<F> mlp_s;
  MoeSaved<F> moe_s;
  F* mlp_out = nullptr;   // [T, C]
};

template <typename F>
struct MtpState {
  const F* enorm = nullptr;
  const F* hnorm = nullptr;
  const F* eh_proj = nullptr;
  const F* head_norm = nullptr;
  F* g_enorm = nullptr;
  F* g_hnorm = nullptr;
  F* g_eh_proj = nullptr;
  F* g_head_norm = nullptr;
};

// An MTP module's saved activations for one micro-batch.
template <typename F>
struct MtpSaved {
  std::vector<int32_t> tokens, targets;  // [T]
  int64_t n_targets = 0;
  F* e = nullptr;        // [T, C] embedding of tokens
  F* en = nullptr;       // [T, C]
  F* en_rstd = nullptr;  // [T]
  F* hp_rstd = nullptr;  // [T]
  F* cat = nullptr;      // [T, 2C] [enorm(e) ; hnorm(h_prev)]
  F* hp = nullptr;       // [T, C] hnorm(h_prev) (contiguous copy is cat's right half)
  F* x0 = nullptr;       // [T, C] eh_proj(cat)
  F* out = nullptr;      // [T, C] block output
  F* sn = nullptr;       // [T, C] shared_head.norm(out)
  F* sn_rstd = nullptr;  // [T]
  F* logits = nullptr;   // [T, V]
  F* losses = nullptr;   // [T]
  F* lse = nullptr;      // [T]
};

// One micro-batch's saved activations (Model::Activations): everything forward writes that
// backward reads, in pools sized by the first forward of a batch shape.
template <typename F>
class Model<F>::Activations {
 public:
  int64_t B = -1, S = -1, T = 0;
  BufferPool<F> pool;
  BufferPool<int32_t> ipool;
  std::vector<BlockSaved<F>> blocks;  // main blocks, then one per MTP module
  std::vector<MtpSaved<F>> mtp;
  std::vector<std::unique_ptr<MoeEpSaved>> ep_saved;  // per MoE block, with expert parallelism
  std::vector<int32_t> tokens, targets, pos, doc_start;
  int64_t n_targets = 0;
  std::vector<F*> h;       // [L + 1] residual stream [T, C]
  F* hn = nullptr;         // [T, C] model.norm(h[L])
  F* hn_rstd = nullptr;
  F* logits = nullptr;     // [T, V]
  F* losses = nullptr;     // [T]
  F* lse = nullptr;        // [T]
  F* dh = nullptr;         // [T, C] the gradient flowing down the residual stream between passes
  F* dh_next = nullptr;    // [T, C] its partner while a block's backward runs
  LossWeights weights;
  bool reuse_routing = false;
  bool have_forward = false;
  // The forward in progress: the balance loss and expert loads of the blocks run so far.
  double balance = 0;
  std::vector<int64_t> moe_layers;
  std::vector<std::vector<int32_t>> expert_counts;
  // The B/W split: while defer_weight_grads, backward passes leave linear weight gradients here.
  bool defer_weight_grads = false;
  WeightGradQueue<F> weight_grads;
};

// Backward scratch shared by every micro-batch's backward (sized for the largest T seen).
template <typename F>
struct BackwardScratch {
  int64_t T = -1;
  BufferPool<F> pool;
  MlaScratch<F> mla_sc;
  MoeScratch<F> moe_sc;
  MlpScratch<F> mlp_sc;
  F *dx = nullptr, *dn1 = nullptr, *dn2 = nullptr, *dlogits = nullptr;
  WeightGradQueue<F>* defer = nullptr;  // the micro-batch's queue while its weight gradients wait
  F *dloss = nullptr, *dhn = nullptr, *dcat = nullptr, *dtmp = nullptr, *de = nullptr, *dmtp_block = nullptr;
  std::vector<F*> dmtp_out;  // [D] [T, C]
};

// Points every scratch of `sc` at a's weight-gradient queue when it defers them, else at none.
template <typename F>
void bind_weight_grads(BackwardScratch<F>& sc, typename Model<F>::Activations& a) {
  WeightGradQueue<F>* q = a.defer_weight_grads ? &a.weight_grads : nullptr;
  sc.defer = q;
  sc.mla_sc.defer = q;
  sc.mlp_sc.defer = q;
  sc.moe_sc.defer = q;
  sc.moe_sc.expert.defer = q;
  sc.moe_sc.shared.defer = q;
}

template <typename F>
struct Model<F>::State {
  std::vector<BlockState<F>> blocks;  // main blocks, then one per MTP module
  std::vector<MtpState<F>> mtp;
  ModelWeights<const F*> w;  // views of the parameter arena
  ModelWeights<F*> g;        // and of the gradient arena
  std::vector<F> inv_freq;
  BackwardScratch<F> scratch;
  std::unique_ptr<Activations> act;  // the one forward() and backward() use
  StepProfile profile;
  ModelParallel parallel;
  MoeExpertGroup ep_group;
};

template <typename F>
Model<F>::Model(ModelConfig config, const ShardFilter& shard)
    : config_(std::move(config)), table_(config_, shard), st_(std::make_unique<State>()) {
  params_.assign(static_cast<size_t>(table_.arena_size()), F(0));
  grads_.assign(static_cast<size_t>(table_.arena_size()), F(0));
  const ModelConfig& c = config_;
  // RoPE frequencies once.
  st_->inv_freq.resize(static_cast<size_t>(c.qk_rope_head_dim / 2));
  RopeParams rp;
  rp.rope_dim = static_cast<int>(c.qk_rope_head_dim);
  rp.theta = c.rope_theta;
  if (c.yarn.enabled) {
    rp.factor = c.yarn.factor;
    rp.original_max_position = static_cast<int>(c.yarn.original_max_position);
    rp.beta_fast = c.yarn.beta_fast;
    rp.beta_slow = c.yarn.beta_slow;
  }
  cpu::rope_inv_freq(st_->inv_freq.data(), rp);

  // Parameter and gradient views per block, from the table.
  st_->w = model_weights<const F*>(table_, params_.data());
  st_->g = model_weights<F*>(table_, grads_.data());
  const int64_t n_blocks = c.num_hidden_layers + c.num_nextn_predict_layers;
  st_->blocks.resize(static_cast<size_t>(n_blocks));
  for (int64_t l = 0; l < n_blocks; ++l) {
    BlockState<F>& b = st_->blocks[l];
    const BlockWeights<const F*>& w = st_->w.blocks[l];
    const BlockWeights<F*>& g = st_->g.blocks[l];
    b.hf_layer = l;
    b.moe = w.moe;
    b.w_in = w.input_layernorm;
    b.g_in = g.input_layernorm;
    b.w_post = w.post_attention_layernorm;
    b.g_post = g.post_attention_layernorm;
    b.attn = w.attn;
    b.attn_g = g.attn;
    if (!b.moe) {
      b.mlp = w.mlp;
      b.mlp_g = g.mlp;
      continue;
    }
    b.experts = w.experts;
    b.experts_g = g.experts;
    b.moe_p.gate = w.router;
    b.moe_p.bias = w.router_bias;
    b.moe_p.experts = b.experts.data();
    b.moe_g.gate = g.router;
    b.moe_g.experts = b.experts_g.data();
    b.moe_p.shared = w.shared;
    b.moe_g.shared = g.shared;
  }
  st_->mtp.resize(static_cast<size_t>(c.num_nextn_predict_layers));
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    MtpState<F>& m = st_->mtp[k];
    const MtpWeights<const F*>& w = st_->w.mtp[k];
    const MtpWeights<F*>& g = st_->g.mtp[k];
    m.enorm = w.enorm;
    m.hnorm = w.hnorm;
    m.eh_proj = w.eh_proj;
    m.head_norm = w.head_norm;
    m.g_enorm = g.enorm;
    m.g_hnorm = g.hnorm;
    m.g_eh_proj = g.eh_proj;
    m.g_head_norm = g.head_norm;
  }
  st_->act = std::make_unique<Activations>();
}

template <typename F>
Model<F>::~Model() = default;
template <typename F>
Model<F>::Model(Model&&) noexcept = default;
template <typename F>
Model<F>& Model<F>::operator=(Model&&) noexcept = default;

template <typename F>
void Model<F>::init_weights(uint64_t seed) {
  for (const ParamSpec& s : table_.specs()) {
    F* p = params_.data() + s.offset;
    switch (s.kind) {
      case ParamKind::kMatrix:
      case ParamKind::kEmbedding:
        // One stream per tensor of the full table: a shard draws exactly the full model's values.
        philox_fill_normal(p, s.numel(), seed, /*stream=*/static_cast<uint64_t>(s.index), F(0),
                           static_cast<F>(config_.initializer_range));
        break;
      case ParamKind::kNorm:
        std::fill_n(p, s.numel(), F(1));
        break;
      case ParamKind::kGateBias:
        std::fill_n(p, s.numel(), F(0));
        break;
    }
  }
}

template <typename F>
void Model<F>::zero_grads() {
  std::fill(grads_.begin(), grads_.end(), F(0));
}

template <typename F>
void Model<F>::set_parallel(const ModelParallel& parallel) {
  State& s = *st_;
  s.parallel = parallel;
  s.ep_group = MoeExpertGroup{};
  s.ep_group.comm = parallel.ep;
  if (parallel.ep != nullptr) {
    MARIANA_CHECK(config_.n_routed_experts % parallel.ep->size() == 0);
  }
  s.act = std::make_unique<Activations>();  // sized (with its expert-parallel buffers) at the next forward
}

template <typename F>
Status Model<F>::parallel_status() const {
  return st_->ep_group.status;
}

template <typename F>
int64_t Model<F>::expert_rows_exchanged() const {
  const State& s = *st_;
  if (s.parallel.ep == nullptr) return 0;
  const size_t me = static_cast<size_t>(s.parallel.ep->rank());
  int64_t rows = 0;
  for (const auto& e : s.act->ep_saved)
    for (size_t q = 0; q < e->send_rows.size(); ++q)
      if (q != me) rows += e->send_rows[q] + e->recv_rows[q];
  return rows;
}

template <typename F>
typename Model<F>::ActivationsPtr Model<F>::make_activations() const {
  return ActivationsPtr(new Activations());
}

template <typename F>
void Model<F>::ActivationsDeleter::operator()(Activations* a) const {
  delete a;
}

template <typename F>
int64_t Model<F>::tokens() const { return st_->act->T; }
template <typename F>
const F* Model<F>::logits() const { return st_->act->logits; }
template <typename F>
const F* Model<F>::final_hidden() const { return st_->act->hn; }
template <typename F>
const F* Model<F>::mtp_logits(int64_t k) const { return st_->act->mtp.at(static_cast<size_t>(k)).logits; }
template <typename F>
StepProfile& Model<F>::profile() { return st_->profile; }
template <typename F>
const int32_t* Model<F>::routing(int64_t moe_entry) const {
  int64_t i = 0;
  for (size_t l = 0; l < st_->blocks.size(); ++l) {
    if (!st_->blocks[l].moe) continue;
    if (i++ == moe_entry) return st_->act->blocks[l].moe_s.indices;
  }
  return nullptr;
}
template <typename F>
F* Model<F>::hidden(Activations& a, int64_t l) {
  return a.h.at(static_cast<size_t>(l));
}
template <typename F>
F* Model<F>::hidden_grad(Activations& a) {
  return a.dh;
}

namespace {

template <typename F>
void allocate_block(BlockSaved<F>& b, bool moe, bool expert_parallel, BufferPool<F>& pool, BufferPool<int32_t>& ipool,
                    const ModelConfig& c, int64_t B, int64_t T) {
  const int64_t C = c.hidden_size, H = c.num_attention_heads, r = c.kv_lora_rank;
  const int64_t dqk = c.qk_head_dim(), dr = c.qk_rope_head_dim, dn = c.qk_nope_head_dim, dv = c.v_head_dim;
  b.n1 = pool.take(T * C);
  b.rstd1 = pool.take(T);
  MlaSaved<F>& a = b.attn_s;
  if (c.q_lora_rank > 0) {
    a.qa = pool.take(T * c.q_lora_rank);
    a.qa_rstd = pool.take(T);
    a.qan = pool.take(T * c.q_lora_rank);
  }
  a.q = pool.take(T * H * dqk);
  a.kva = pool.take(T * (r + dr));
  a.ckv_in = pool.take(T * r);
  a.ckv_rstd = pool.take(T);
  a.ckv = pool.take(T * r);
  a.kv = pool.take(T * H * (dn + dv));
  a.k = pool.take(T * H * dqk);
  a.v = pool.take(T * H * dv);
  a.o = pool.take(T * H * dv);
  a.lse = pool.take(T * H);
  b.attn_out = pool.take(T * C);
  b.x = pool.take(T * C);
  b.n2 = pool.take(T * C);
  b.rstd2 = pool.take(T);
  b.mlp_out = pool.take(T * C);
  if (!moe) {
    const int64_t I = c.intermediate_size;
    b.mlp_s = {pool.take(T * I), pool.take(T * I), pool.take(T * I)};
    return;
  }
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok, Fm = c.moe_intermediate_size;
  const int64_t Fs = c.shared_intermediate();
  MoeSaved<F>& m = b.moe_s;
  m.logits = pool.take(T * E);
  m.scores = pool.take(T * E);
  m.weights = pool.take(T * K);
  m.indices = ipool.take(T * K);
  m.counts = ipool.take(E);
  m.offsets = ipool.take(E + 1);
  m.row_of = ipool.take(T * K);
  m.x_perm = pool.take(T * K * C);
  // Expert parallelism runs the experts on the rows it receives, in MoeEpSaved's buffers.
  if (!expert_parallel) m.expert = {pool.take(T * K * Fm), pool.take(T * K * Fm), pool.take(T * K * Fm)};
  m.y_perm = pool.take(T * K * C);
  if (Fs > 0) m.shared = {pool.take(T * Fs), pool.take(T * Fs), pool.take(T * Fs)};
  m.shared_out = pool.take(T * C);
  m.balance_f = pool.take(B * E);
}

// The MoE dims of a batch, with the parallel layout's routing and the global balance denominator.
MoeDims moe_dims_parallel(const ModelConfig& c, int64_t B, int64_t S, const LossWeights& w, const ModelParallel& par,
                          MoeExpertGroup* ep) {
  MoeDims d = moe_dims_for(c, B, S);
  d.n_nodes = par.n_nodes;
  d.max_nodes = par.max_nodes;
  d.balance_rows = w.global_rows > 0 ? w.global_rows : 0;
  d.ep = par.ep != nullptr ? ep : nullptr;
  return d;
}

MlaDims mla_dims(const ModelConfig& c, int64_t B, int64_t S) {
  MlaDims d;
  d.B = B;
  d.S = S;
  d.T = B * S;
  d.C = c.hidden_size;
  d.H = c.num_attention_heads;
  d.qr = c.q_lora_rank;
  d.r = c.kv_lora_rank;
  d.dn = c.qk_nope_head_dim;
  d.dr = c.qk_rope_head_dim;
  d.dv = c.v_head_dim;
  d.eps = c.rms_norm_eps;
  d.softmax_scale = c.softmax_scale();
  d.rope_mscale = c.rope_mscale();
  return d;
}

Status validate_batch(const Batch& b, const ModelConfig& c) {
  const int64_t n = b.B * b.S;
  if (b.B <= 0 || b.S <= 0) return InvalidArgument("batch: expected B > 0 and S > 0");
  if (static_cast<int64_t>(b.tokens.size()) != n || static_cast<int64_t>(b.targets.size()) != n ||
      static_cast<int64_t>(b.doc_start.size()) != n) {
    return InvalidArgument("batch: tokens, targets and doc_start must each hold B·S = " +
                           std::to_string(n) + " entries");
  }
  for (int64_t r = 0; r < b.B; ++r) {
    for (int64_t i = 0; i < b.S; ++i) {
      const int64_t t = r * b.S + i;
      const std::string where = "batch row " + std::to_string(r) + " position " + std::to_string(i);
      if (b.tokens[t] < 0 || b.tokens[t] >= c.vocab_size)
        return InvalidArgument(where + ": token " + std::to_string(b.tokens[t]) + " outside [0, " +
                               std::to_string(c.vocab_size) + ")");
      if (b.targets[t] < -1 || b.targets[t] >= c.vocab_size)
        return InvalidArgument(where + ": target " + std::to_string(b.targets[t]) + " outside [-1, " +
                               std::to_string(c.vocab_size) + ")");
      const int32_t ds = b.doc_start[t];
      const bool ok = i == 0 ? ds == 0 : (ds == i || ds == b.doc_start[t - 1]);
      if (!ok) return InvalidArgument(where + ": doc_start " + std::to_string(ds) + " is not this position or the previous token's document start");
      if (i - ds >= c.max_position_embeddings)
        return InvalidArgument(where + ": position " + std::to_string(i - ds) + " exceeds max_position_embeddings " +
                               std::to_string(c.max_position_embeddings));
    }
  }
  return Status::Ok();
}

// Mean of losses over rows with target >= 0 (divided by `denominator` when it is >= 0: the
// global batch's count), and this batch's count.
template <typename F>
double masked_mean(const F* losses, const int32_t* targets, int64_t T, int64_t denominator, int64_t* count) {
  double s = 0;
  int64_t n = 0;
  for (int64_t t = 0; t < T; ++t)
    if (targets[t] >= 0) {
      s += losses[t];
      ++n;
    }
  *count = n;
  const int64_t d = denominator >= 0 ? denominator : n;
  return d > 0 ? s / static_cast<double>(d) : 0.0;
}

// The target MTP module k (predicting `shift` = k + 1 tokens further) has at row t: the target
// `shift` positions on, when that position is in the same row and document; else −1.
int32_t mtp_target_at(const int32_t* targets, const int32_t* doc_start, int64_t S, int64_t t, int64_t shift) {
  const int64_t i = t % S;
  if (i + shift >= S || doc_start[t + shift] != doc_start[t]) return -1;
  return targets[t + shift];
}

}  // namespace

Status batch_validate(const Batch& batch, const ModelConfig& config) { return validate_batch(batch, config); }

void set_global_denominators(const Batch& global, int64_t mtp_modules, LossWeights* w) {
  const int64_t T = global.B * global.S;
  w->global_rows = global.B;
  w->global_targets = 0;
  for (int64_t t = 0; t < T; ++t) w->global_targets += global.targets[t] >= 0;
  w->global_mtp_targets.assign(static_cast<size_t>(mtp_modules), 0);
  for (int64_t k = 0; k < mtp_modules; ++k)
    for (int64_t t = 0; t < T; ++t)
      w->global_mtp_targets[k] += mtp_target_at(global.targets.data(), global.doc_start.data(), global.S, t, k + 1) >= 0;
}

template <typename F>
void Model<F>::allocate(Activations& a, int64_t B, int64_t S) const {
  const ModelConfig& c = config_;
  const int64_t T = B * S, C = c.hidden_size, V = c.vocab_size;
  const int64_t L = c.num_hidden_layers;
  a.pool.clear();
  a.ipool.clear();
  a.B = B;
  a.S = S;
  a.T = T;
  a.blocks.assign(st_->blocks.size(), BlockSaved<F>{});
  a.mtp.resize(st_->mtp.size());
  a.ep_saved.clear();
  for (size_t l = 0; l < a.blocks.size(); ++l) {
    allocate_block(a.blocks[l], st_->blocks[l].moe, st_->parallel.ep != nullptr, a.pool, a.ipool, c, B, T);
    if (st_->blocks[l].moe && st_->parallel.ep != nullptr) {
      a.ep_saved.push_back(std::make_unique<MoeEpSaved>());
      a.blocks[l].moe_s.ep = a.ep_saved.back().get();
    }
  }
  a.h.assign(static_cast<size_t>(L + 1), nullptr);
  for (auto& p : a.h) p = a.pool.take(T * C);
  a.hn = a.pool.take(T * C);
  a.hn_rstd = a.pool.take(T);
  a.logits = a.pool.take(T * V);
  a.losses = a.pool.take(T);
  a.lse = a.pool.take(T);
  a.dh = a.pool.take(T * C);
  a.dh_next = a.pool.take(T * C);
  for (auto& m : a.mtp) {
    m.e = a.pool.take(T * C);
    m.en = a.pool.take(T * C);
    m.en_rstd = a.pool.take(T);
    m.hp_rstd = a.pool.take(T);
    m.cat = a.pool.take(T * 2 * C);
    m.hp = a.pool.take(T * C);
    m.x0 = a.pool.take(T * C);
    m.out = a.pool.take(T * C);
    m.sn = a.pool.take(T * C);
    m.sn_rstd = a.pool.take(T);
    m.logits = a.pool.take(T * V);
    m.losses = a.pool.take(T);
    m.lse = a.pool.take(T);
  }
}

// Backward scratch for T tokens (shared by all blocks and micro-batches).
template <typename F>
void allocate_scratch(BackwardScratch<F>& s, const ModelConfig& c, int64_t T, bool expert_parallel) {
  const int64_t C = c.hidden_size, V = c.vocab_size, D = c.num_nextn_predict_layers;
  s.pool.clear();
  s.T = T;
  const int64_t H = c.num_attention_heads, r = c.kv_lora_rank, dqk = c.qk_head_dim();
  const int64_t dv = c.v_head_dim, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim;
  const int64_t qr = std::max<int64_t>(c.q_lora_rank, 1);
  s.mla_sc = {s.pool.take(T * qr), s.pool.take(T * qr), s.pool.take(T * H * dqk),
              s.pool.take(T * (r + dr)), s.pool.take(T * r), s.pool.take(T * r),
              s.pool.take(T * H * (dn + dv)), s.pool.take(T * H * dqk), s.pool.take(T * H * dv),
              s.pool.take(T * H * dv)};
  const int64_t K = c.num_experts_per_tok, E = c.n_routed_experts, Fm = c.moe_intermediate_size;
  const int64_t Fs = std::max<int64_t>(c.shared_intermediate(), 1), I = c.intermediate_size;
  s.moe_sc.dy_perm = s.pool.take(T * K * C);
  s.moe_sc.dx_perm = s.pool.take(T * K * C);
  s.moe_sc.dweights = s.pool.take(T * K);
  s.moe_sc.dlogits = s.pool.take(T * E);
  if (!expert_parallel)
    s.moe_sc.expert = {s.pool.take(T * K * Fm), s.pool.take(T * K * Fm), s.pool.take(T * K * Fm)};
  s.moe_sc.shared = {s.pool.take(T * Fs), s.pool.take(T * Fs), s.pool.take(T * Fs)};
  s.mlp_sc = {s.pool.take(T * I), s.pool.take(T * I), s.pool.take(T * I)};
  s.dx = s.pool.take(T * C);
  s.dn1 = s.pool.take(T * C);
  s.dn2 = s.pool.take(T * C);
  s.dlogits = s.pool.take(T * V);
  s.dloss = s.pool.take(T);
  s.dhn = s.pool.take(T * C);
  s.dcat = s.pool.take(T * 2 * C);
  s.dtmp = s.pool.take(T * C);
  s.de = s.pool.take(T * C);
  s.dmtp_block = s.pool.take(T * C);
  s.dmtp_out.assign(static_cast<size_t>(D), nullptr);
  for (auto& p : s.dmtp_out) p = s.pool.take(T * C);
}

template <typename F>
int64_t Model<F>::activation_bytes(int64_t B, int64_t S) const {
  Activations a;
  a.pool = BufferPool<F>(true);
  a.ipool = BufferPool<int32_t>(true);
  allocate(a, B, S);
  BackwardScratch<F> sc;
  sc.pool = BufferPool<F>(true);
  allocate_scratch(sc, config_, B * S, st_->parallel.ep != nullptr);
  int64_t ep_bytes = 0;
  if (st_->parallel.ep != nullptr) {
    // MoeEpSaved grows with the rows a rank receives: counted at the balanced load (T·K rows per
    // MoE layer; a skewed routing takes more): wire, x, y, dy, dx [N, C] and g, u, a, da, dg, du [N, Fm].
    const int64_t N = B * S * config_.num_experts_per_tok;
    const int64_t per_layer = (5 * config_.hidden_size + 6 * config_.moe_intermediate_size) * N;
    ep_bytes = static_cast<int64_t>(a.ep_saved.size()) * per_layer * static_cast<int64_t>(sizeof(float));
  }
  return a.pool.bytes() + a.ipool.bytes() + sc.pool.bytes() + ep_bytes;
}

template <typename F>
Status Model<F>::forward(const Batch& batch, const LossWeights& w, ForwardResult* out, bool reuse_routing) {
  return forward(*st_->act, batch, w, out, reuse_routing);
}

template <typename F>
Status Model<F>::forward(Activations& a, const Batch& batch, const LossWeights& w, ForwardResult* out,
                         bool reuse_routing) {
  MARIANA_RETURN_IF_ERROR(forward_begin(a, batch, w, reuse_routing));
  forward_embed(a);
  forward_blocks(a, 0, config_.num_hidden_layers);
  return forward_head(a, out);
}

template <typename F>
Status Model<F>::forward_begin(Activations& a, const Batch& batch, const LossWeights& w, bool reuse_routing) {
  MARIANA_RETURN_IF_ERROR(validate_batch(batch, config_));
  const int64_t B = batch.B, S = batch.S, T = B * S;
  if (reuse_routing && (B != a.B || S != a.S || !a.have_forward)) {
    return FailedPrecondition("reuse_routing needs a previous forward on a batch of the same shape");
  }
  // Sized for this shape and for the model's parallel layout (set_parallel after make_activations).
  if (B != a.B || S != a.S || (st_->parallel.ep != nullptr) == a.ep_saved.empty()) allocate(a, B, S);
  a.weights = w;
  a.reuse_routing = reuse_routing;
  a.tokens = batch.tokens;
  a.targets = batch.targets;
  a.doc_start = batch.doc_start;
  a.pos.resize(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) a.pos[t] = static_cast<int32_t>(t % S) - batch.doc_start[t];
  a.have_forward = false;
  a.balance = 0;
  a.moe_layers.clear();
  a.expert_counts.clear();
  return Status::Ok();
}

template <typename F>
void Model<F>::forward_embed(Activations& a) {
  ScopedTimer tm(st_->profile, "embedding fwd");
  cpu::embedding_forward(a.h[0], a.tokens.data(), st_->w.embed, a.T, config_.hidden_size);
}

template <typename F>
void Model<F>::run_block(Activations& a, int64_t l, const F* h_in, F* h_out) {
  const ModelConfig& c = config_;
  State& s = *st_;
  const int64_t T = a.T, C = c.hidden_size;
  const MlaDims md = mla_dims(c, a.B, a.S);
  const MoeDims ed = moe_dims_parallel(c, a.B, a.S, a.weights, s.parallel, &s.ep_group);
  const F eps = static_cast<F>(c.rms_norm_eps);
  const BlockState<F>& b = s.blocks[static_cast<size_t>(l)];
  BlockSaved<F>& v = a.blocks[static_cast<size_t>(l)];
  {
    ScopedTimer tm(s.profile, "attention (MLA) fwd");
    cpu::rmsnorm_forward(v.n1, v.rstd1, h_in, b.w_in, T, C, eps);
    mla_forward(v.attn_out, v.attn_s, v.n1, a.pos.data(), a.doc_start.data(), s.inv_freq.data(), b.attn, md);
    cpu::add(v.x, h_in, v.attn_out, T * C);
    cpu::rmsnorm_forward(v.n2, v.rstd2, v.x, b.w_post, T, C, eps);
  }
  if (b.moe) {
    ScopedTimer tm(s.profile, "MoE fwd");
    a.balance += moe_forward(v.mlp_out, v.moe_s, v.n2, b.moe_p, ed, a.reuse_routing);
    a.moe_layers.push_back(b.hf_layer);
    a.expert_counts.emplace_back(v.moe_s.counts, v.moe_s.counts + c.n_routed_experts);
  } else {
    ScopedTimer tm(s.profile, "dense MLP fwd");
    mlp_forward(v.mlp_out, v.mlp_s, v.n2, b.mlp, MlpDims{T, C, c.intermediate_size});
  }
  cpu::add(h_out, v.x, v.mlp_out, T * C);
}

template <typename F>
void Model<F>::forward_blocks(Activations& a, int64_t begin, int64_t end) {
  for (int64_t l = begin; l < end; ++l) run_block(a, l, a.h[l], a.h[l + 1]);
}

template <typename F>
Status Model<F>::forward_head(Activations& a, ForwardResult* out) {
  const ModelConfig& c = config_;
  State& s = *st_;
  const LossWeights& w = a.weights;
  const int64_t T = a.T, S = a.S, C = c.hidden_size, V = c.vocab_size;
  const int64_t L = c.num_hidden_layers, D = c.num_nextn_predict_layers;
  const F eps = static_cast<F>(c.rms_norm_eps);
  ForwardResult res;
  const F* lm_head = s.w.lm_head;
  {
    ScopedTimer tm(s.profile, "head + CE fwd");
    cpu::rmsnorm_forward(a.hn, a.hn_rstd, a.h[L], s.w.norm, T, C, eps);
    cpu::linear_forward(a.logits, a.hn, lm_head, T, C, V);
    cpu::cross_entropy_forward(a.losses, a.lse, a.logits, a.targets.data(), T, V);
    res.loss_main = masked_mean(a.losses, a.targets.data(), T, w.global_targets, &a.n_targets);
    res.target_tokens = a.n_targets;
  }
  // MTP modules: module k predicts the token k+1 steps past the next one.
  const F* h_prev = a.hn;
  const int64_t D_run = w.mtp_weight != 0 ? D : 0;
  for (int64_t k = 0; k < D_run; ++k) {
    const MtpState<F>& mp = s.mtp[k];
    MtpSaved<F>& m = a.mtp[k];
    const int64_t shift = k + 1;
    m.tokens.assign(static_cast<size_t>(T), 0);
    m.targets.assign(static_cast<size_t>(T), -1);
    for (int64_t t = 0; t < T; ++t) {
      if (t % S + shift < S) m.tokens[t] = a.tokens[t + shift];
      m.targets[t] = mtp_target_at(a.targets.data(), a.doc_start.data(), S, t, shift);
    }
    {
      ScopedTimer tm(s.profile, "MTP input fwd");
      cpu::embedding_forward(m.e, m.tokens.data(), s.w.embed, T, C);
      cpu::rmsnorm_forward(m.en, m.en_rstd, m.e, mp.enorm, T, C, eps);
      cpu::rmsnorm_forward(m.hp, m.hp_rstd, h_prev, mp.hnorm, T, C, eps);
      cpu::copy_strided(m.cat, m.en, T, C, 2 * C, C);
      cpu::copy_strided(m.cat + C, m.hp, T, C, 2 * C, C);
      cpu::linear_forward(m.x0, m.cat, mp.eh_proj, T, 2 * C, C);
    }
    run_block(a, L + k, m.x0, m.out);
    {
      ScopedTimer tm(s.profile, "head + CE fwd");
      cpu::rmsnorm_forward(m.sn, m.sn_rstd, m.out, mp.head_norm, T, C, eps);
      cpu::linear_forward(m.logits, m.sn, lm_head, T, C, V);
      cpu::cross_entropy_forward(m.losses, m.lse, m.logits, m.targets.data(), T, V);
      const int64_t denom = k < static_cast<int64_t>(w.global_mtp_targets.size()) ? w.global_mtp_targets[k] : -1;
      const double lk = masked_mean(m.losses, m.targets.data(), T, denom, &m.n_targets);
      res.loss_mtp_k.push_back(lk);
      res.loss_mtp += lk / static_cast<double>(D);
    }
    h_prev = m.out;
  }
  res.loss_balance = a.balance;
  res.loss = res.loss_main + w.mtp_weight * res.loss_mtp + w.balance_alpha * res.loss_balance;
  res.moe_layers = std::move(a.moe_layers);  // the forward's own record; forward_begin starts the next
  res.expert_counts = std::move(a.expert_counts);
  a.have_forward = true;
  MARIANA_RETURN_IF_ERROR(s.ep_group.status);
  if (out != nullptr) *out = std::move(res);
  return Status::Ok();
}

template <typename F>
void Model<F>::backward() {
  backward(*st_->act, nullptr, nullptr);
}

template <typename F>
void Model<F>::backward_custom(const F* extra_dlogits, const F* extra_dhidden) {
  backward(*st_->act, extra_dlogits, extra_dhidden);
}

template <typename F>
void Model<F>::backward(Activations& a, const F* extra_dlogits, const F* extra_dhidden) {
  backward_head(a, extra_dlogits, extra_dhidden);
  backward_blocks(a, 0, config_.num_hidden_layers);
  backward_embed(a);
}

template <typename F>
void Model<F>::block_backward(Activations& a, int64_t l, const F* h_in, F* dh_in, const F* dh_out) {
  const ModelConfig& c = config_;
  State& s = *st_;
  BackwardScratch<F>& sc = s.scratch;
  const int64_t T = a.T, C = c.hidden_size;
  const MlaDims md = mla_dims(c, a.B, a.S);
  const MoeDims ed = moe_dims_parallel(c, a.B, a.S, a.weights, s.parallel, &s.ep_group);
  const BlockState<F>& b = s.blocks[static_cast<size_t>(l)];
  const BlockSaved<F>& v = a.blocks[static_cast<size_t>(l)];
  std::memcpy(sc.dx, dh_out, T * C * sizeof(F));
  std::fill_n(sc.dn2, T * C, F(0));
  if (b.moe) {
    ScopedTimer tm(s.profile, "MoE bwd");
    moe_backward(sc.dn2, b.moe_g, sc.moe_sc, dh_out, v.moe_s, v.n2, b.moe_p, ed, a.weights.balance_alpha);
  } else {
    ScopedTimer tm(s.profile, "dense MLP bwd");
    mlp_backward(sc.dn2, b.mlp_g, sc.mlp_sc, dh_out, v.mlp_s, v.n2, b.mlp, MlpDims{T, C, c.intermediate_size});
  }
  ScopedTimer tm(s.profile, "attention (MLA) bwd");
  cpu::rmsnorm_backward(sc.dx, b.g_post, sc.dn2, v.x, b.w_post, v.rstd2, T, C);
  std::fill_n(sc.dn1, T * C, F(0));
  mla_backward(sc.dn1, b.attn_g, sc.mla_sc, sc.dx, v.attn_s, v.n1, a.pos.data(), a.doc_start.data(),
               s.inv_freq.data(), b.attn, md);
  cpu::rmsnorm_backward(dh_in, b.g_in, sc.dn1, h_in, b.w_in, v.rstd1, T, C);
  cpu::add_inplace(dh_in, sc.dx, T * C);
}

template <typename F>
void Model<F>::backward_head(Activations& a, const F* extra_dlogits, const F* extra_dhidden) {
  State& s = *st_;
  MARIANA_CHECK(a.have_forward);
  if (s.scratch.T < a.T) allocate_scratch(s.scratch, config_, a.T, s.parallel.ep != nullptr);
  bind_weight_grads(s.scratch, a);
  BackwardScratch<F>& sc = s.scratch;
  const ModelConfig& c = config_;
  const int64_t T = a.T, C = c.hidden_size, V = c.vocab_size;
  const int64_t L = c.num_hidden_layers;
  const int64_t D = a.weights.mtp_weight != 0 ? c.num_nextn_predict_layers : 0;
  const F* lm_head = s.w.lm_head;
  F* g_lm_head = s.g.lm_head;
  F* g_embed = s.g.embed;

  std::fill_n(sc.dhn, T * C, F(0));
  for (auto* p : sc.dmtp_out) std::fill_n(p, T * C, F(0));
  // MTP modules, last first: module k's output also feeds module k+1's hnorm.
  for (int64_t k = D - 1; k >= 0; --k) {
    const MtpState<F>& mp = s.mtp[k];
    const MtpSaved<F>& m = a.mtp[k];
    {
      ScopedTimer tm(s.profile, "head + CE bwd");
      const int64_t n = k < static_cast<int64_t>(a.weights.global_mtp_targets.size()) ? a.weights.global_mtp_targets[k]
                                                                                       : m.n_targets;
      const F scale = n > 0 ? static_cast<F>(a.weights.mtp_weight / (static_cast<double>(D) * n)) : F(0);
      std::fill_n(sc.dloss, T, scale);
      std::fill_n(sc.dlogits, T * V, F(0));
      cpu::cross_entropy_backward(sc.dlogits, sc.dloss, m.logits, m.lse, m.targets.data(), T, V);
      std::fill_n(sc.dtmp, T * C, F(0));
      linear_backward_or_defer(sc.defer, sc.dtmp, g_lm_head, sc.dlogits, m.sn, lm_head, T, C, V);
      cpu::rmsnorm_backward(sc.dmtp_out[k], mp.g_head_norm, sc.dtmp, m.out, mp.head_norm, m.sn_rstd, T, C);
    }
    std::fill_n(sc.dmtp_block, T * C, F(0));
    block_backward(a, L + k, m.x0, sc.dmtp_block, sc.dmtp_out[k]);
    ScopedTimer tm(s.profile, "MTP input bwd");
    std::fill_n(sc.dcat, T * 2 * C, F(0));
    linear_backward_or_defer(sc.defer, sc.dcat, mp.g_eh_proj, sc.dmtp_block, m.cat, mp.eh_proj, T, 2 * C, C);
    cpu::copy_strided(sc.dtmp, sc.dcat, T, C, C, 2 * C);
    cpu::copy_strided(sc.dn1, sc.dcat + C, T, C, C, 2 * C);
    std::fill_n(sc.de, T * C, F(0));
    cpu::rmsnorm_backward(sc.de, mp.g_enorm, sc.dtmp, m.e, mp.enorm, m.en_rstd, T, C);
    cpu::embedding_backward(g_embed, sc.de, m.tokens.data(), T, C);
    const F* h_prev = k == 0 ? a.hn : a.mtp[k - 1].out;
    F* dh_prev = k == 0 ? sc.dhn : sc.dmtp_out[k - 1];
    cpu::rmsnorm_backward(dh_prev, mp.g_hnorm, sc.dn1, h_prev, mp.hnorm, m.hp_rstd, T, C);
  }
  // Main head: leaves d(loss)/d(h[L]) in a.dh.
  ScopedTimer tm(s.profile, "head + CE bwd");
  const int64_t n = a.weights.global_targets >= 0 ? a.weights.global_targets : a.n_targets;
  const F scale = n > 0 ? static_cast<F>(1.0 / static_cast<double>(n)) : F(0);
  std::fill_n(sc.dloss, T, scale);
  std::fill_n(sc.dlogits, T * V, F(0));
  cpu::cross_entropy_backward(sc.dlogits, sc.dloss, a.logits, a.lse, a.targets.data(), T, V);
  if (extra_dlogits != nullptr) cpu::add_inplace(sc.dlogits, extra_dlogits, T * V);
  if (extra_dhidden != nullptr) cpu::add_inplace(sc.dhn, extra_dhidden, T * C);
  linear_backward_or_defer(sc.defer, sc.dhn, g_lm_head, sc.dlogits, a.hn, lm_head, T, C, V);
  std::fill_n(a.dh, T * C, F(0));
  cpu::rmsnorm_backward(a.dh, s.g.norm, sc.dhn, a.h[L], s.w.norm, a.hn_rstd, T, C);
}

template <typename F>
void Model<F>::backward_blocks(Activations& a, int64_t begin, int64_t end) {
  State& s = *st_;
  if (s.scratch.T < a.T) allocate_scratch(s.scratch, config_, a.T, s.parallel.ep != nullptr);
  bind_weight_grads(s.scratch, a);
  const int64_t T = a.T, C = config_.hidden_size;
  for (int64_t l = end - 1; l >= begin; --l) {
    std::fill_n(a.dh_next, T * C, F(0));
    block_backward(a, l, a.h[l], a.dh_next, a.dh);
    std::swap(a.dh, a.dh_next);
  }
}

template <typename F>
void Model<F>::set_defer_weight_grads(Activations& a, bool defer) {
  a.defer_weight_grads = defer;
}

template <typename F>
void Model<F>::backward_weights(Activations& a) {
  ScopedTimer tm(st_->profile, "weight gradients (W)");
  a.weight_grads.run();
}

template <typename F>
int64_t Model<F>::pending_weight_grads(const Activations& a) const {
  return a.weight_grads.pending();
}

template <typename F>
void Model<F>::backward_embed(Activations& a) {
  ScopedTimer tm(st_->profile, "embedding bwd");
  cpu::embedding_backward(st_->g.embed, a.dh, a.tokens.data(), a.T, config_.hidden_size);
}

template class Model<float>;
template class Model<double>;

}  // namespace mariana
