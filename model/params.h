// The one table of parameters: {HF name, shape, kind} for every tensor of a DeepSeek-V3 model, in a
// fixed order that lays out the parameter and gradient arenas. Arena views, sizes, safetensors
// import/export, initialisation and test names are all driven by it.
#pragma once

#include <cstdint>
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

struct ParamSpec {
  std::string name;             // HF name, e.g. "model.layers.3.mlp.experts.7.up_proj.weight"
  std::vector<int64_t> shape;
  ParamKind kind;
  int64_t offset = 0;           // into the arena, in elements (64-byte aligned)
  int64_t numel() const;
};

class ParamTable {
 public:
  explicit ParamTable(const ModelConfig& config);
  const std::vector<ParamSpec>& specs() const { return specs_; }
  const ParamSpec* find(const std::string& name) const;  // nullptr if absent
  const ParamSpec& at(const std::string& name) const;     // aborts if absent (a bug)
  int64_t arena_size() const { return arena_size_; }      // elements, including alignment padding
  int64_t num_params() const { return num_params_; }

 private:
  void add(std::string name, std::vector<int64_t> shape, ParamKind kind);
  std::vector<ParamSpec> specs_;
  std::unordered_map<std::string, size_t> index_;
  int64_t arena_size_ = 0;
  int64_t num_params_ = 0;
};

// "model.layers.{i}." for main layer i, or the MTP module k (0-based) at HF index L + k.
std::string layer_prefix(int64_t hf_layer);

}  // namespace mariana
