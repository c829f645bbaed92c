// The DeepSeek-V3 model for training on the CPU: embedding → blocks (MLA + dense MLP or
// DeepSeekMoE) → RMSNorm → head, plus D multi-token-prediction modules, and the loss
// main CE + λ·mean(MTP CE) + α·sequence-wise balance. Parameters and gradients each live in one
// arena laid out by ParamTable. Model<float> trains; Model<double> is the finite-difference oracle.
//
// Threading: a Model is used by one thread at a time; its kernels are OpenMP-parallel inside.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "model/config.h"
#include "model/moe.h"
#include "model/params.h"

namespace mariana {

// B rows of S tokens. targets[b, i] is the token to predict at (b, i) (−1: no loss there);
// doc_start[b, i] is the position where (b, i)'s document begins in its row (packed documents
// never attend to each other; RoPE positions restart at each document).
struct Batch {
  int64_t B = 0, S = 0;
  std::vector<int32_t> tokens, targets, doc_start;  // [B, S] each
  // A batch of B rows of S tokens with one document per row, targets = next token (−1 at the end).
  static Batch from_rows(int64_t B, int64_t S, const std::vector<int32_t>& tokens);
};

struct LossWeights {
  double mtp_weight = 0.3;         // λ; 0 skips the MTP modules entirely (no MTP logits or loss)
  double balance_alpha = 0.0001;   // α
  // Data parallelism: when the batch is one rank's part of a global batch, the means are taken
  // over the global batch's counts (set_global_denominators), so that the ranks' losses and
  // gradients add up to the global batch's. −1 / empty: this batch's own counts.
  int64_t global_targets = -1;              // main CE: positions with a target
  std::vector<int64_t> global_mtp_targets;  // [D] MTP module k's positions with a target
  int64_t global_rows = -1;                 // the balance loss's mean over sequences
};
// InvalidArgument naming the row and position when a batch does not fit the model (token or
// target out of range, inconsistent doc_start, a position past max_position_embeddings): what
// forward() checks first. A parallel step checks the whole global batch, so every rank agrees.
Status batch_validate(const Batch& batch, const ModelConfig& config);

// Sets w's global denominators to the counts of `global` (the whole batch of a step) for a model
// with `mtp_modules` MTP modules.
void set_global_denominators(const Batch& global, int64_t mtp_modules, LossWeights* w);

// How this model runs as one rank of a parallel job (train/parallel.h builds it).
struct ModelParallel {
  // Expert parallelism: the ep group (null: every routed expert is computed here). Rank r of a
  // group of P holds experts [r·E/P, (r+1)·E/P) of every MoE layer.
  comm::Communicator* ep = nullptr;
  // Node-limited routing: the experts lie on n_nodes nodes in equal contiguous blocks; each token
  // uses at most max_nodes of them (0: no limit). Applies with or without ep (a single process
  // reproduces a parallel layout's routing).
  int64_t n_nodes = 1, max_nodes = 0;
};

struct ForwardResult {
  double loss = 0;          // loss_main + λ·loss_mtp + α·loss_balance
  double loss_main = 0;     // mean CE over tokens with a target
  double loss_mtp = 0;      // mean over the D modules of their mean CE
  std::vector<double> loss_mtp_k;
  double loss_balance = 0;  // Σ over MoE layers (main and MTP) of the mean-over-rows Σ_i f_i·P_i
  int64_t target_tokens = 0;
  // Per MoE layer (main layers in order, then the MTP modules'), tokens routed to each expert.
  std::vector<int64_t> moe_layers;                   // HF layer index of each entry
  std::vector<std::vector<int32_t>> expert_counts;   // [n_moe_layers][E]
};

// Wall-clock seconds per part of the step, accumulated until reset (for `mariana bench model`).
struct StepProfile {
  std::map<std::string, double> seconds;
  void reset() { seconds.clear(); }
};

template <typename F>
class Model {
 public:
  // The full model, or the part `shard` selects (ParamTable): an expert-parallel rank holds only
  // its routed experts; the others' views are null and must never be used.
  explicit Model(ModelConfig config, const ShardFilter& shard = {});
  ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  const ModelConfig& config() const { return config_; }
  const ParamTable& table() const { return table_; }
  F* params() { return params_.data(); }
  const F* params() const { return params_.data(); }
  F* grads() { return grads_.data(); }
  F* param(const std::string& name) { return params_.data() + table_.at(name).offset; }
  const F* param(const std::string& name) const { return params_.data() + table_.at(name).offset; }
  F* grad(const std::string& name) { return grads_.data() + table_.at(name).offset; }

  // Matrices and embedding ~ N(0, initializer_range) from Philox(seed) with one stream per
  // tensor (thread-count independent); norms 1; gate biases 0.
  void init_weights(uint64_t seed);
  void zero_grads();

  // Runs the forward pass and the losses. InvalidArgument for a malformed batch (token out of
  // range, inconsistent doc_start, S > max_position_embeddings...). With reuse_routing, every MoE
  // layer keeps the expert selection of the previous forward on the same batch shape.
  Status forward(const Batch& batch, const LossWeights& w, ForwardResult* out,
                 bool reuse_routing = false);
  // grads += d(loss)/d(params) for the last forward.
  void backward();
  // grads += d(loss + U)/d(params) for a user loss U on the last forward's outputs, given
  // dU/d(logits) [T, V] and/or dU/d(final_hidden) [T, C] (either may be null). With every
  // target −1 and mtp_weight 0, only U contributes (GRPO's surrogate, the reward model's head).
  void backward_custom(const F* dlogits, const F* dhidden);

  int64_t tokens() const;                 // T of the last forward
  const F* logits() const;                // [T, V] main head
  const F* final_hidden() const;          // [T, C] model.norm(h_L), the head's input
  const F* mtp_logits(int64_t k) const;   // [T, V] MTP module k (0-based)
  const int32_t* routing(int64_t moe_entry) const;  // [T, K] selection of ForwardResult entry
  StepProfile& profile();
  // Runs the MoE layers expert-parallel and/or node-limited (ModelParallel). The communicator must
  // outlive the model's use of it.
  void set_parallel(const ModelParallel& parallel);
  // The first failed collective of the expert-parallel layers since set_parallel (forward returns
  // it too; backward, which returns nothing, leaves it here for the caller to check).
  Status parallel_status() const;
  // Expert parallelism: the (token, expert) rows the last forward sent to and received from the
  // other ranks of the ep group, over all MoE layers (backward moves the same again).
  int64_t expert_rows_exchanged() const;
  // Bytes of the saved activations and scratch that forward() (and backward()) allocate for a
  // batch of B rows of S tokens, computed without allocating them.
  int64_t activation_bytes(int64_t B, int64_t S) const;

  // ---- Passes, for schedules that hold many micro-batches (pipeline stages, accumulation) ----
  // One micro-batch's saved activations: forward fills them, backward reads them. Buffers are
  // sized by the first forward of a batch shape and reused; nothing else allocates per step
  // (backward's scratch is shared and sized once for the largest batch). forward()/backward()
  // above use one the model holds.
  class Activations;
  struct ActivationsDeleter {
    void operator()(Activations* a) const;
  };
  using ActivationsPtr = std::unique_ptr<Activations, ActivationsDeleter>;
  ActivationsPtr make_activations() const;
  // forward = forward_begin + forward_embed + forward_blocks(0, L) + forward_head.
  Status forward(Activations& a, const Batch& batch, const LossWeights& w, ForwardResult* out,
                 bool reuse_routing = false);
  // Validates the batch and takes its tokens, targets and positions (no computation).
  Status forward_begin(Activations& a, const Batch& batch, const LossWeights& w, bool reuse_routing = false);
  void forward_embed(Activations& a);                               // embedding → hidden(a, 0)
  void forward_blocks(Activations& a, int64_t begin, int64_t end);  // main layers [begin, end)
  // model.norm → head → CE, the MTP modules and the loss; `out` gets the losses and the expert
  // loads of every MoE layer run on `a` since forward_begin.
  Status forward_head(Activations& a, ForwardResult* out);
  // backward = backward_head + backward_blocks(0, L) + backward_embed; gradients accumulate.
  void backward(Activations& a, const F* dlogits = nullptr, const F* dhidden = nullptr);
  // The losses (and the MTP modules): leaves d(loss)/d(hidden(a, L)) in hidden_grad(a).
  void backward_head(Activations& a, const F* dlogits, const F* dhidden);
  // Main layers end−1 down to begin: takes d/d(hidden(a, end)) from hidden_grad(a) and leaves
  // d/d(hidden(a, begin)) there.
  void backward_blocks(Activations& a, int64_t begin, int64_t end);
  void backward_embed(Activations& a);  // hidden_grad(a) into the embedding's gradient
  // The B/W split (model/weight_grads.h): while deferring, the backward passes on `a` compute the
  // input gradients and the norms' and embedding's gradients (B) but leave every linear layer's
  // weight gradient queued in `a`; backward_weights(a) computes the queued ones (W) in the order
  // they were left, so B then W accumulates what the fused passes would, bit for bit.
  void set_defer_weight_grads(Activations& a, bool defer);
  void backward_weights(Activations& a);
  int64_t pending_weight_grads(const Activations& a) const;
  // The residual stream entering main layer l (l = L: after the last) [T, C], and the gradient
  // the backward passes hand down it [T, C]: what pipeline stages send and receive.
  F* hidden(Activations& a, int64_t l);
  F* hidden_grad(Activations& a);

 private:
  struct State;
  // Sizes every buffer of `a` for B rows of S tokens (from its pools).
  void allocate(Activations& a, int64_t B, int64_t S) const;
  void run_block(Activations& a, int64_t l, const F* h_in, F* h_out);
  void block_backward(Activations& a, int64_t l, const F* h_in, F* dh_in, const F* dh_out);
  ModelConfig config_;
  ParamTable table_;
  std::vector<F> params_, grads_;
  std::unique_ptr<State> st_;
};

extern template class Model<float>;
extern template class Model<double>;

}  // namespace mariana
