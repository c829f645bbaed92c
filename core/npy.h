// Writing numpy .npy files (format version 1.0, little-endian float32, C order), atomically.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace mariana {

std::string npy_serialize_f32(const float* data, const std::vector<int64_t>& shape);
Status npy_write_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);

}  // namespace mariana
