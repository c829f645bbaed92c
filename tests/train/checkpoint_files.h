// Byte comparison of two checkpoint directories, for tests that require a run to end bit for bit
// like another (any layout: one model.safetensors, or a parallel job's per-rank files).
#pragma once

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "core/file_util.h"

namespace mariana::testing_util {

// Empty when both directories hold the same .safetensors files (the model, one file or a parallel
// job's per-rank files, and the optimizer moments) with the same bytes; else what differs.
inline std::string checkpoint_difference(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  auto names = [](const std::string& dir) {
    std::vector<std::string> v;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") v.push_back(e.path().filename().string());
    std::sort(v.begin(), v.end());
    return v;
  };
  const std::vector<std::string> na = names(a), nb = names(b);
  if (na.empty()) return a + ": no files";
  if (na != nb) return a + " and " + b + " hold different files";
  for (const std::string& n : na) {
    auto x = read_file(a + "/" + n), y = read_file(b + "/" + n);
    if (!x.ok() || !y.ok()) return n + ": unreadable";
    if (x.value() != y.value()) return n + " differs";
  }
  return "";
}

}  // namespace mariana::testing_util
