// Test helper: turn a Mariana checkpoint into what HF transformers' save_pretrained writes for a
// DeepSeek-V3 model — the same tensors minus the MTP modules (model.layers.{num_hidden_layers}.*
// and beyond), with the shard index rewritten when the checkpoint is sharded.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/safetensors.h"

namespace mariana::testing {

// Removes every tensor named `prefix`... from the checkpoint at `dir`; a shard left empty is
// deleted and dropped from model.safetensors.index.json.
inline void checkpoint_drop_tensors(const std::string& dir, const std::string& prefix) {
  namespace fs = std::filesystem;
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  const bool sharded = fs::exists(index_path);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().filename().string());
  for (const std::string& f : files) {
    const std::string path = (fs::path(dir) / f).string();
    auto sf = SafetensorsFile::open(path);
    ASSERT_TRUE(sf.ok()) << sf.status().to_string();
    std::vector<std::pair<std::string, Tensor>> items;
    for (const auto& e : sf.value().entries())
      if (e.name.rfind(prefix, 0) != 0) items.emplace_back(e.name, sf.value().view(e));
    if (items.size() == sf.value().entries().size()) continue;
    if (items.empty() && sharded) {
      fs::remove(path);
      continue;
    }
    ASSERT_TRUE(safetensors_write(path, items, sf.value().metadata()).ok());
  }
  if (!sharded) return;
  nlohmann::ordered_json index = nlohmann::ordered_json::parse(read_file(index_path.string()).value());
  nlohmann::ordered_json kept = nlohmann::ordered_json::object();
  for (const auto& [name, file] : index["weight_map"].items())
    if (name.rfind(prefix, 0) != 0) kept[name] = file;
  index["weight_map"] = kept;
  ASSERT_TRUE(write_file_atomic(index_path.string(), index.dump(2) + "\n").ok());
}

}  // namespace mariana::testing
