// Checkpoints in HuggingFace layout: a directory with config.json and model.safetensors, or shards
// model-0000i-of-0000n.safetensors plus model.safetensors.index.json. Tensor names are HF
// DeepSeek-V3's; weights are stored in fp32 or bf16 (the gate bias always fp32, as HF keeps it).
// Each MTP module's shared_head.head is written as a copy of lm_head (shared in the model).
// Loading validates every tensor (presence, dtype, shape, no unknown names, finite values) and
// reproduces the layout on export, so import then export is byte-identical. A directory written by
// the trainer or GRPO also holds manifest.json (the size and XXH64 of every other file); every load
// verifies it when present, so a changed byte anywhere in the checkpoint is refused. A checkpoint
// with no MTP tensors at all (HF transformers saves none) loads without its MTP modules:
// config().mtp_missing says how many config.json declares. The config.json written is
// model_config_hf_json's.
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
  ShardFilter shard;                        // the tensors written (a rank's part); default all
};

// Refuses (OutOfRange, nothing written) a model with a weight check_weights_finite rejects.
// Writes the directory atomically: everything goes to a sibling temporary directory, each file
// fsynced, then renamed into place (an existing checkpoint at `dir` is replaced only then).
template <typename F>
Status checkpoint_save(const std::string& dir, const Model<F>& model, const CheckpointOptions& opt);

// A checkpoint written by several processes into one directory (a parallel job's ranks, each
// writing the tensors it holds). Every tensor of the full model, and each MTP shared head, in the
// order checkpoint_save would write them; a shard's (its table and filter) when given.
std::vector<std::string> checkpoint_tensor_names(const ModelConfig& config, const ParamTable& table,
                                                 const ShardFilter& shard = {});
// The tensor of `table` a stored name holds: lm_head.weight for an MTP module's shared head (the
// checkpoint's copy of it), else the tensor of that name; nullptr if the table has none.
const ParamSpec* checkpoint_tensor_spec(const ParamTable& table, const std::string& name);
// InvalidArgument unless `layout` names every tensor of checkpoint_tensor_names exactly once, in
// F32 or BF16.
Status checkpoint_layout_check(const std::string& dir, const ModelConfig& config, const ParamTable& table,
                               const CheckpointLayout& layout, const ShardFilter& shard = {});
// The name of file i of n: model.safetensors when n is 1, else model-0000{i+1}-of-0000n.safetensors.
std::string checkpoint_file_name(size_t i, size_t n);
// Writes the safetensors files `files` (indices into layout.shards; one file: model.safetensors,
// else model-0000i-of-0000n.safetensors) of `layout` into the existing directory dir, each atomic,
// from `model`, which must hold their tensors. `what` names the checkpoint in errors (OutOfRange
// for a weight check_weights_finite rejects).
template <typename F>
Status checkpoint_write_files(const std::string& dir, const Model<F>& model, const CheckpointLayout& layout,
                              const std::vector<size_t>& files, const std::string& what);
// Writes dir/config.json and, for more than one file, model.safetensors.index.json of `layout`
// (table: the full model's, for the sizes).
Status checkpoint_write_index(const std::string& dir, const ModelConfig& config, const ParamTable& table,
                              const CheckpointLayout& layout);

template <typename F>
struct LoadedCheckpoint {
  Model<F> model;
  CheckpointLayout layout;
};

struct CheckpointLoadOptions {
  // Verify manifest.json when the directory has one (a directory without one, e.g. an HF
  // download, loads unverified). Off: the checksums are skipped; finiteness is always checked.
  bool verify_manifest = true;
  // The part of the model to load (a parallel rank's, shard_filter_of_rank): the model is built for
  // it and only its tensors are read; the others' names are still checked against the full model.
  ShardFilter shard;
};

// NotFound (no such directory / file), InvalidArgument (bad config, missing, unknown or
// wrongly shaped tensor, shared head differing from lm_head), DataLoss (corrupt safetensors, a
// file differing from the manifest, a weight that is NaN, ±inf or at least kMaxWeightMagnitude in magnitude);
// every message names the file and the tensor or field.
template <typename F>
Result<LoadedCheckpoint<F>> checkpoint_load(const std::string& dir, const CheckpointLoadOptions& opt = {});

// The manifest of a checkpoint directory.
constexpr const char* kCheckpointManifest = "manifest.json";
// Writes dir/manifest.json: `step` (a training step or RL iteration) and the size and XXH64 of
// every other regular file in dir.
Status checkpoint_manifest_write(const std::string& dir, int64_t step);
// NotFound without a manifest; DataLoss naming the file when one is missing, differs in size or
// checksum, or is not listed.
Status checkpoint_manifest_verify(const std::string& dir);

// Stored weights must be below this magnitude: 2^64 ≈ 1.8e19, whose square overflows float32. Such
// a weight turns every RMSNorm and dot product it meets into inf/NaN, so no usable model holds one;
// a value like 1e30 is corruption, refused like NaN.
constexpr double kMaxWeightMagnitude = 0x1p64;
// DataLoss "<file>: tensor '<name>': element i is <v> ..." for the first value in p[0, n) that is
// not finite or not below max_magnitude in magnitude (optimizer moments pass infinity: a second
// moment may legitimately exceed 2^64).
template <typename F>
Status check_weights_finite(const std::string& file, const std::string& tensor, const F* p, int64_t n,
                            double max_magnitude = kMaxWeightMagnitude);

}  // namespace mariana
