// Checkpoints in HuggingFace layout: a directory with config.json and model.safetensors, or shards
// model-0000i-of-0000n.safetensors plus model.safetensors.index.json. Tensor names are HF
// DeepSeek-V3's; weights are stored in fp32 or bf16 (the gate bias always fp32, as HF keeps it).
// Each MTP module's shared_head.head is written as a copy of lm_head (shared in the model).
// Loading validates every tensor (presence, dtype, shape, no unknown names) and reproduces the
// layout on export, so import then export is byte-identical. A checkpoint with no MTP tensors at
// all (HF transformers saves none) loads without its MTP modules: config().mtp_missing says how
// many config.json declares. The config.json written is model_config_hf_json's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "model/model.h"

namespace mariana {

struct CheckpointLayout {
  DType dtype = DType::kF32;                     // kF32 or kBF16
  std::vector<std::vector<std::string>> shards;  // tensor names per file; empty: decide by size
};

struct CheckpointOptions {
  DType dtype = DType::kF32;
  int64_t max_shard_bytes = 5'000'000'000;  // HF's default "5GB"
  const CheckpointLayout* layout = nullptr; // reproduce an imported layout (dtype and shards)
};

// Writes the directory atomically: everything goes to a sibling temporary directory, each file
// fsynced, then renamed into place (an existing checkpoint at `dir` is replaced only then).
template <typename F>
Status checkpoint_save(const std::string& dir, const Model<F>& model, const CheckpointOptions& opt);

template <typename F>
struct LoadedCheckpoint {
  Model<F> model;
  CheckpointLayout layout;
};

// NotFound (no such directory / file), InvalidArgument (bad config, missing, unknown or
// wrongly shaped tensor, shared head differing from lm_head), DataLoss (corrupt safetensors);
// every message names the file and the tensor or field.
template <typename F>
Result<LoadedCheckpoint<F>> checkpoint_load(const std::string& dir);

}  // namespace mariana
