// Corrupting a saved checkpoint in place, for tests of what loaders refuse: one element of one
// F32 tensor of a safetensors file overwritten (the file stays well-formed, only a value changes).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>

#include "core/safetensors.h"
#include "core/status.h"

namespace mariana::testing {

inline Status poke_f32(const std::string& path, const std::string& tensor, int64_t index, float value) {
  uint64_t data_start = 0, at = 0;
  {
    auto sf = SafetensorsFile::open(path);
    if (!sf.ok()) return sf.status();
    const SafetensorsEntry* e = sf.value().find(tensor);
    if (e == nullptr || e->dtype != DType::kF32) return NotFound(path + ": no F32 tensor '" + tensor + "'");
    at = e->begin + static_cast<uint64_t>(index) * sizeof(float);
    if (at + sizeof(float) > e->end) return OutOfRange(path + ": '" + tensor + "' has no element " + std::to_string(index));
  }
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  char len[8];
  f.read(len, 8);
  std::memcpy(&data_start, len, 8);  // little-endian header length
  f.seekp(static_cast<std::streamoff>(8 + data_start + at));
  f.write(reinterpret_cast<const char*>(&value), sizeof(float));
  return f ? Status::Ok() : Unavailable(path + ": write failed");
}

}  // namespace mariana::testing
