// HF-layout checkpoint import and export.
#include "model/checkpoint.h"

#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/tensor.h"

namespace mariana {

namespace fs = std::filesystem;

namespace {

constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr const char* kSingleFile = "model.safetensors";

}  // namespace

std::string checkpoint_file_name(size_t i, size_t n) {
  if (n == 1) return kSingleFile;
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

namespace {

std::string shard_name(size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

// Names of the MTP shared heads (copies of lm_head) of the MTP modules `shard` holds.
std::vector<std::string> shared_head_names(const ModelConfig& c, const ShardFilter& shard = {}) {
  std::vector<std::string> v;
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int64_t hf = c.num_hidden_layers + k;
    if (hf >= shard.layer_begin && hf < shard.layer_end) v.push_back(layer_prefix(hf) + "shared_head.head.weight");
  }
  return v;
}

// One tensor's bytes in the stored dtype.
template <typename F>
Tensor encode_tensor(const F* src, const std::vector<int64_t>& shape, DType dtype) {
  Tensor t = Tensor::zeros(dtype, shape);
  const int64_t n = t.numel();
  if (dtype == DType::kBF16) {
    auto* d = t.data_as<uint16_t>();
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(static_cast<float>(src[i]));
  } else {
    auto* d = t.data_as<float>();
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(src[i]);
  }
  return t;
}

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// Size and XXH64 of every regular file in dir except the manifest itself.
Result<nlohmann::ordered_json> hash_files(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().filename() != kCheckpointManifest) names.push_back(e.path().filename().string());
  if (ec) return Unavailable(dir.string() + ": cannot list: " + ec.message());
  std::sort(names.begin(), names.end());
  nlohmann::ordered_json files = nlohmann::ordered_json::object();
  for (const std::string& n : names) {
    MARIANA_ASSIGN_OR_RETURN(std::string bytes, read_file((dir / n).string()));
    files[n] = {{"bytes", bytes.size()}, {"xxh64", hex64(XXH64(bytes.data(), bytes.size(), 0))}};
  }
  return files;
}

std::string unique_suffix() {
  std::random_device rd;
  return std::to_string(::getpid()) + "-" + std::to_string(rd());
}

}  // namespace

namespace {

int64_t stored_bytes(const ParamSpec& s, DType dtype) {
  return s.numel() * static_cast<int64_t>(dtype_size(s.kind == ParamKind::kGateBias ? DType::kF32 : dtype));
}

}  // namespace

const ParamSpec* checkpoint_tensor_spec(const ParamTable& table, const std::string& name) {
  static const std::string kHead = "shared_head.head.weight";
  const bool copy = name.size() > kHead.size() && name.compare(name.size() - kHead.size(), kHead.size(), kHead) == 0;
  return table.find(copy ? std::string("lm_head.weight") : name);
}

std::vector<std::string> checkpoint_tensor_names(const ModelConfig& c, const ParamTable& table, const ShardFilter& shard) {
  std::vector<std::string> order;
  for (const ParamSpec* s : table.select(shard)) {
    order.push_back(s->name);
    if (s->slot == ParamSlot::kLmHead)
      for (const std::string& n : shared_head_names(c, shard)) order.push_back(n);
  }
  return order;
}

Status checkpoint_layout_check(const std::string& dir, const ModelConfig& config, const ParamTable& table,
                               const CheckpointLayout& layout, const ShardFilter& shard) {
  if (layout.dtype != DType::kF32 && layout.dtype != DType::kBF16)
    return InvalidArgument("checkpoint " + dir + ": dtype must be F32 or BF16, got " + dtype_name(layout.dtype));
  const std::vector<std::string> names = checkpoint_tensor_names(config, table, shard);
  std::set<std::string> expected(names.begin(), names.end()), seen;
  for (const auto& sh : layout.shards) {
    for (const auto& n : sh) {
      if (!expected.count(n)) return InvalidArgument("checkpoint " + dir + ": layout names unknown tensor '" + n + "'");
      if (!seen.insert(n).second) return InvalidArgument("checkpoint " + dir + ": layout names tensor '" + n + "' twice");
    }
  }
  if (seen.size() != expected.size()) return InvalidArgument("checkpoint " + dir + ": layout does not cover every tensor");
  return Status::Ok();
}

template <typename F>
Status checkpoint_write_files(const std::string& dir, const Model<F>& model, const CheckpointLayout& layout,
                              const std::vector<size_t>& files, const std::string& what) {
  const ParamTable& table = model.table();
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  for (size_t i : files) {
    std::vector<std::pair<std::string, Tensor>> items;
    for (const std::string& n : layout.shards.at(i)) {
      const ParamSpec* s = checkpoint_tensor_spec(table, n);
      if (s == nullptr) return InvalidArgument(what + ": tensor '" + n + "' is not held by this process");
      const Status finite = check_weights_finite(what, s->name, model.params() + s->offset, s->numel());
      if (!finite.ok()) return OutOfRange(finite.message() + "; refusing to write it");
      const DType dt = s->kind == ParamKind::kGateBias ? DType::kF32 : layout.dtype;
      items.emplace_back(n, encode_tensor(model.params() + s->offset, s->shape, dt));
    }
    const size_t count = layout.shards.size();
    const std::string fname = count == 1 ? kSingleFile : shard_name(i, count);
    MARIANA_RETURN_IF_ERROR(safetensors_write((fs::path(dir) / fname).string(), items, meta));
  }
  return Status::Ok();
}

Status checkpoint_write_index(const std::string& dir, const ModelConfig& config, const ParamTable& table,
                              const CheckpointLayout& layout) {
  MARIANA_RETURN_IF_ERROR(write_file_atomic((fs::path(dir) / "config.json").string(), model_config_hf_json(config)));
  if (layout.shards.size() <= 1) return Status::Ok();
  std::map<std::string, std::string> sorted;  // weight_map sorted by name, as HF writes it
  int64_t total = 0;
  for (size_t i = 0; i < layout.shards.size(); ++i) {
    for (const std::string& n : layout.shards[i]) {
      sorted[n] = shard_name(i, layout.shards.size());
      const ParamSpec* s = checkpoint_tensor_spec(table, n);
      if (s == nullptr) return InvalidArgument("checkpoint " + dir + ": layout names unknown tensor '" + n + "'");
      total += stored_bytes(*s, layout.dtype);
    }
  }
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (const auto& [n, f] : sorted) weight_map[n] = f;
  nlohmann::ordered_json index;
  index["metadata"] = {{"total_size", total}};
  index["weight_map"] = weight_map;
  return write_file_atomic((fs::path(dir) / kIndexFile).string(), index.dump(2) + "\n");
}

template <typename F>
Status checkpoint_save(const std::string& dir, const Model<F>& model, const CheckpointOptions& opt) {
  const ParamTable& table = model.table();
  // Shard assignment: the imported layout, or greedy in table order under max_shard_bytes.
  CheckpointLayout layout;
  layout.dtype = opt.layout ? opt.layout->dtype : opt.dtype;
  if (opt.layout && !opt.layout->shards.empty()) {
    layout.shards = opt.layout->shards;
  } else if (layout.dtype == DType::kF32 || layout.dtype == DType::kBF16) {
    layout.shards.emplace_back();
    int64_t bytes = 0;
    for (const std::string& n : checkpoint_tensor_names(model.config(), table, opt.shard)) {
      const int64_t b = stored_bytes(*checkpoint_tensor_spec(table, n), layout.dtype);
      if (!layout.shards.back().empty() && bytes + b > opt.max_shard_bytes) {
        layout.shards.emplace_back();
        bytes = 0;
      }
      layout.shards.back().push_back(n);
      bytes += b;
    }
  }
  MARIANA_RETURN_IF_ERROR(checkpoint_layout_check(dir, model.config(), table, layout, opt.shard));
  // A model with a non-finite or absurd weight is never written.
  for (const ParamSpec* s : table.select(opt.shard)) {
    const Status finite = check_weights_finite("checkpoint " + dir, s->name, model.params() + s->offset, s->numel());
    if (!finite.ok()) return OutOfRange(finite.message() + "; refusing to write it");
  }

  // Write into a fresh sibling directory, then swap it in.
  const fs::path target = fs::path(dir);
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) return Unavailable("checkpoint " + dir + ": cannot create " + parent.string() + ": " + ec.message());
  const fs::path tmp = parent / ("." + target.filename().string() + ".tmp-" + unique_suffix());
  fs::create_directory(tmp, ec);
  if (ec) return Unavailable("checkpoint " + dir + ": cannot create " + tmp.string() + ": " + ec.message());
  auto fail = [&](Status st) {
    fs::remove_all(tmp, ec);
    return st;
  };

  std::vector<size_t> all(layout.shards.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  Status st = checkpoint_write_index(tmp.string(), model.config(), table, layout);
  if (st.ok()) st = checkpoint_write_files(tmp.string(), model, layout, all, "checkpoint " + dir);
  if (!st.ok()) return fail(st);
  // Swap: move an existing checkpoint aside, rename the new one into place, then delete the old.
  fs::path old;
  if (fs::exists(target)) {
    old = parent / ("." + target.filename().string() + ".old-" + unique_suffix());
    fs::rename(target, old, ec);
    if (ec) return fail(Unavailable("checkpoint " + dir + ": cannot move the old checkpoint aside: " + ec.message()));
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    if (!old.empty()) fs::rename(old, target, ec);
    return fail(Unavailable("checkpoint " + dir + ": cannot rename into place: " + ec.message()));
  }
  if (!old.empty()) fs::remove_all(old, ec);
  return Status::Ok();
}

Status checkpoint_manifest_write(const std::string& dir, int64_t step) {
  MARIANA_ASSIGN_OR_RETURN(nlohmann::ordered_json files, hash_files(dir));
  nlohmann::ordered_json manifest;
  manifest["step"] = step;
  manifest["files"] = files;
  return write_file_atomic((fs::path(dir) / kCheckpointManifest).string(), manifest.dump(2) + "\n");
}

Status checkpoint_manifest_verify(const std::string& dir) {
  const fs::path mpath = fs::path(dir) / kCheckpointManifest;
  MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(mpath.string()));
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(mpath.string() + ": invalid JSON: " + e.what());
  }
  if (!m.contains("files") || !m["files"].is_object()) return DataLoss(mpath.string() + ": field 'files' missing");
  MARIANA_ASSIGN_OR_RETURN(nlohmann::ordered_json actual, hash_files(dir));
  for (const auto& [name, want] : m["files"].items()) {
    const std::string path = (fs::path(dir) / name).string();
    if (!actual.contains(name)) return DataLoss(path + ": listed in the manifest but missing");
    if (actual[name] != want) return DataLoss(path + ": size or checksum differs from the manifest (the file changed after it was written)");
  }
  for (const auto& [name, got] : actual.items())
    if (!m["files"].contains(name)) return DataLoss((fs::path(dir) / name).string() + ": not listed in the manifest");
  return Status::Ok();
}

template <typename F>
Status check_weights_finite(const std::string& file, const std::string& tensor, const F* p, int64_t n,
                            double max_magnitude) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(p[i]);
    if (std::isfinite(v) && std::fabs(v) < max_magnitude) continue;
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%g", v);
    return DataLoss(file + ": tensor '" + tensor + "': element " + std::to_string(i) + " is " + buf +
                    (std::isfinite(v) ? " (a weight's magnitude must stay below 2^64 ≈ 1.8e19)" : " (weights must be finite)"));
  }
  return Status::Ok();
}

template <typename F>
Result<LoadedCheckpoint<F>> checkpoint_load(const std::string& dir, const CheckpointLoadOptions& opt) {
  if (!fs::is_directory(dir)) return NotFound("checkpoint " + dir + ": no such directory");
  if (opt.verify_manifest && fs::exists(fs::path(dir) / kCheckpointManifest))
    MARIANA_RETURN_IF_ERROR(checkpoint_manifest_verify(dir));
  const std::string config_path = (fs::path(dir) / "config.json").string();
  MARIANA_ASSIGN_OR_RETURN(ModelConfig config, model_config_load(config_path));

  // Which files hold which tensors.
  std::vector<std::string> files;
  std::vector<std::vector<std::string>> listed;  // names per file from the index (for layout)
  const fs::path index_path = fs::path(dir) / kIndexFile;
  if (fs::exists(index_path)) {
    MARIANA_ASSIGN_OR_RETURN(std::string text, read_file(index_path.string()));
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      return InvalidArgument(index_path.string() + ": invalid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      return InvalidArgument(index_path.string() + ": field 'weight_map': expected an object");
    std::map<std::string, size_t> file_ids;
    for (const auto& [name, f] : j["weight_map"].items()) {
      if (!f.is_string()) return InvalidArgument(index_path.string() + ": field 'weight_map." + name + "': expected a string");
      const std::string fname = f.template get<std::string>();
      if (fname.find('/') != std::string::npos || fname.empty())
        return InvalidArgument(index_path.string() + ": field 'weight_map." + name + "': bad file name '" + fname + "'");
      if (!file_ids.count(fname)) file_ids[fname] = 0;
    }
    for (auto& [fname, id] : file_ids) {
      id = files.size();
      files.push_back(fname);
    }
    listed.assign(files.size(), {});
  } else {
    files.push_back(kSingleFile);
    listed.assign(1, {});
  }

  std::vector<SafetensorsFile> opened;
  for (const std::string& f : files) {
    MARIANA_ASSIGN_OR_RETURN(SafetensorsFile sf, SafetensorsFile::open((fs::path(dir) / f).string()));
    opened.push_back(std::move(sf));
  }
  // A checkpoint saved by HF transformers has no MTP tensors although its config declares them:
  // load it without the MTP modules (inference and eval need none; training initialises them).
  auto is_mtp = [&](const std::string& name) {
    for (int64_t k = 0; k < config.num_nextn_predict_layers; ++k)
      if (name.rfind(layer_prefix(config.num_hidden_layers + k), 0) == 0) return true;
    return false;
  };
  bool any_mtp = false;
  for (const SafetensorsFile& sf : opened)
    for (const SafetensorsEntry& e : sf.entries()) any_mtp = any_mtp || is_mtp(e.name);
  if (config.num_nextn_predict_layers > 0 && !any_mtp) {
    config.mtp_missing = config.num_nextn_predict_layers;
    config.num_nextn_predict_layers = 0;
  }

  LoadedCheckpoint<F> out{Model<F>(config, opt.shard), CheckpointLayout{}};
  Model<F>& model = out.model;
  const ParamTable& table = model.table();
  const ParamTable full(config);  // names outside the shard are checked against it, then skipped
  const std::vector<std::string> heads = shared_head_names(config);
  std::map<std::string, bool> seen;
  bool dtype_known = false;
  for (size_t fi = 0; fi < opened.size(); ++fi) {
    const SafetensorsFile& sf = opened[fi];
    const std::string& path = sf.path();
    for (const SafetensorsEntry& e : sf.entries()) {
      const bool is_head_copy = std::find(heads.begin(), heads.end(), e.name) != heads.end();
      const ParamSpec* spec = table.find(is_head_copy ? std::string("lm_head.weight") : e.name);
      if (spec == nullptr && full.find(is_head_copy ? std::string("lm_head.weight") : e.name) == nullptr)
        return InvalidArgument(path + ": tensor '" + e.name + "' is not a parameter of this config");
      if (seen.count(e.name)) return InvalidArgument(path + ": tensor '" + e.name + "' appears twice");
      seen[e.name] = true;
      listed[fi].push_back(e.name);
      if (spec == nullptr) continue;  // another shard's tensor: left unread
      if (e.shape != spec->shape) {
        return InvalidArgument(path + ": tensor '" + e.name + "': expected shape " + Tensor::shape_string(spec->shape) +
                               ", got " + Tensor::shape_string(e.shape));
      }
      if (e.dtype != DType::kF32 && e.dtype != DType::kBF16) {
        return InvalidArgument(path + ": tensor '" + e.name + "': expected dtype F32 or BF16, got " + dtype_name(e.dtype));
      }
      if (spec->kind != ParamKind::kGateBias) {
        if (!dtype_known) {
          out.layout.dtype = e.dtype;
          dtype_known = true;
        } else if (e.dtype != out.layout.dtype) {
          return InvalidArgument(path + ": tensor '" + e.name + "': dtype " + dtype_name(e.dtype) +
                                 " differs from the checkpoint's " + dtype_name(out.layout.dtype));
        }
      }
      if (is_head_copy) continue;  // compared with lm_head below
      const Tensor v = sf.view(e);
      F* dst = model.params() + spec->offset;
      const int64_t n = spec->numel();
      if (e.dtype == DType::kBF16) {
        const auto* s = v.template data_as<uint16_t>();
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<F>(bf16_to_f32(s[i]));
      } else {
        const auto* s = v.template data_as<float>();
        for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<F>(s[i]);
      }
      MARIANA_RETURN_IF_ERROR(check_weights_finite(path, e.name, dst, n));
    }
  }
  for (const ParamSpec& s : table.specs()) {
    if (!seen.count(s.name)) {
      return InvalidArgument(dir + ": tensor '" + s.name + "' (shape " + Tensor::shape_string(s.shape) +
                             ") is missing from the checkpoint");
    }
  }
  // Shared heads must equal lm_head exactly (they are one tensor in the model); a shard without
  // the head (a layer range) has nothing to compare them with.
  const ParamSpec* head = table.find("lm_head.weight");
  const Tensor head_enc = head != nullptr ? encode_tensor(model.params() + head->offset, head->shape, out.layout.dtype)
                                          : Tensor();
  for (const SafetensorsFile& sf : opened) {
    for (const std::string& n : head != nullptr ? heads : std::vector<std::string>{}) {
      const SafetensorsEntry* e = sf.find(n);
      if (e == nullptr) continue;
      const Tensor v = sf.view(*e);
      if (v.nbytes() != head_enc.nbytes() || std::memcmp(v.data(), head_enc.data(), v.nbytes()) != 0)
        return InvalidArgument(sf.path() + ": tensor '" + n + "' differs from lm_head.weight; Mariana shares the MTP head with the main head");
    }
  }
  if (files.size() > 1) out.layout.shards = listed;
  return out;
}

template Status checkpoint_save<float>(const std::string&, const Model<float>&, const CheckpointOptions&);
template Status checkpoint_save<double>(const std::string&, const Model<double>&, const CheckpointOptions&);
template Status checkpoint_write_files<float>(const std::string&, const Model<float>&, const CheckpointLayout&,
                                              const std::vector<size_t>&, const std::string&);
template Result<LoadedCheckpoint<float>> checkpoint_load<float>(const std::string&, const CheckpointLoadOptions&);
template Result<LoadedCheckpoint<double>> checkpoint_load<double>(const std::string&, const CheckpointLoadOptions&);
template Status check_weights_finite<float>(const std::string&, const std::string&, const float*, int64_t, double);
template Status check_weights_finite<double>(const std::string&, const std::string&, const double*, int64_t, double);

}  // namespace mariana
