// The one table of parameters: {HF name, shape, kind, place in the model} for every tensor of a
// DeepSeek-V3 model, in a fixed order that lays out the parameter and gradient arenas. Arena views
// (model/weights.h), sizes, safetensors import/export, initialisation and test names are all
// driven by it; a ShardFilter selects the part of it one rank holds.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <unordered_map>
#include <vector>

#include "model/config.h"

namespace mariana {

enum class ParamKind : uint8_t {
  kMatrix,     // a Linear weight [out, in]: drawn N(0, initializer_range), weight-decayed
  kEmbedding,  // [V, C]: drawn N(0, initializer_range)
  kNorm,       // RMSNorm weight: ones, no weight decay
  kGateBias,   // e_score_correction_bias: zeros, never trained by gradient (bias balancing updates it)
};

// What a tensor is within its layer (or the model), so that views never spell HF names again.
enum class ParamSlot : uint8_t {
  kEmbed, kFinalNorm, kLmHead,                                   // model-wide (layer −1)
  kInputNorm, kPostNorm,                                         // every block
  kQaProj, kQaNorm, kQbProj, kQProj, kKvaProj, kKvaNorm, kKvbProj, kOProj,  // MLA
  kMlpGate, kMlpUp, kMlpDown,                                    // dense MLP
  kRouter, kRouterBias,                                          // MoE gate and its bias
  kExpertGate, kExpertUp, kExpertDown,                           // routed expert `expert`
  kSharedGate, kSharedUp, kSharedDown,                           // shared experts
  kEnorm, kHnorm, kEhProj, kHeadNorm,                            // MTP module's own tensors
};

struct ParamSpec {
  std::string name;             // HF name, e.g. "model.layers.3.mlp.experts.7.up_proj.weight"
  std::vector<int64_t> shape;
  ParamKind kind;
  ParamSlot slot;
  int64_t layer = -1;           // HF layer index (MTP module k: L + k); −1 for the model-wide tensors
  int64_t expert = -1;          // routed expert index; −1 for every other tensor
  int64_t offset = 0;           // into the arena, in elements (64-byte aligned)
  int64_t index = 0;            // position in the full model's table (a shard's table keeps it)
  int64_t numel() const;
};

// The part of the model one rank holds: the HF layers [layer_begin, layer_end) (MTP module k is
// layer L + k) and, of their MoE layers, the routed experts [expert_begin, expert_end). The
// embedding goes with layer 0, model.norm and lm_head with layer L − 1, and all three with any MTP
// module (it embeds its shifted tokens, takes model.norm's output and shares the head). The
// default selects everything: the full model.
struct ShardFilter {
  static constexpr int64_t kAll = std::numeric_limits<int64_t>::max();
  int64_t layer_begin = 0, layer_end = kAll;
  int64_t expert_begin = 0, expert_end = kAll;
  // L = num_hidden_layers; HF layers [L, num_blocks) are the MTP modules.
  bool selects(const ParamSpec& spec, int64_t num_hidden_layers, int64_t num_blocks) const;
};

class ParamTable {
 public:
  // The table of the tensors `shard` selects, laid out in one arena in the full table's order (the
  // default: the full model). A rank that holds a shard allocates only its tensors.
  explicit ParamTable(const ModelConfig& config, const ShardFilter& shard = {});
  const std::vector<ParamSpec>& specs() const { return specs_; }
  const ParamSpec* find(const std::string& name) const;  // nullptr if absent
  const ParamSpec& at(const std::string& name) const;     // aborts if absent (a bug)
  int64_t arena_size() const { return arena_size_; }      // elements, including alignment padding
  int64_t num_params() const { return num_params_; }
  int64_t num_hidden_layers() const { return num_hidden_layers_; }  // L
  int64_t num_blocks() const { return num_blocks_; }                // L + MTP modules
  // The specs `filter` selects, in table order.
  std::vector<const ParamSpec*> select(const ShardFilter& filter) const;

 private:
  void add(std::string name, std::vector<int64_t> shape, ParamKind kind, ParamSlot slot, int64_t layer = -1,
           int64_t expert = -1);
  std::vector<ParamSpec> specs_;
  std::unordered_map<std::string, size_t> index_;
  ShardFilter shard_;
  int64_t added_ = 0;  // tensors of the full table seen so far
  int64_t arena_size_ = 0;
  int64_t num_params_ = 0;
  int64_t num_hidden_layers_ = 0, num_blocks_ = 0;
};

// "model.layers.{i}." for main layer i, or the MTP module k (0-based) at HF index L + k.
std::string layer_prefix(int64_t hf_layer);

}  // namespace mariana
