// .npy v1.0: "\x93NUMPY", 1, 0, u16 header length, a Python-literal dict padded with spaces and
// a newline so that the data starts on a 64-byte boundary.
#include "core/npy.h"

#include <cstring>

#include "core/file_util.h"

namespace mariana {

std::string npy_serialize_f32(const float* data, const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) dims += ",";
    if (i + 1 < shape.size()) dims += " ";
    n *= shape[i];
  }
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t prefix = 10;  // magic (6) + version (2) + header length (2)
  const size_t total = (prefix + header.size() + 1 + 63) / 64 * 64;
  header.append(total - prefix - header.size() - 1, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  const uint16_t hl = static_cast<uint16_t>(header.size());
  out += static_cast<char>(hl & 0xff);
  out += static_cast<char>(hl >> 8);
  out += header;
  const size_t off = out.size();
  out.resize(off + static_cast<size_t>(n) * sizeof(float));
  std::memcpy(out.data() + off, data, static_cast<size_t>(n) * sizeof(float));
  return out;
}

Status npy_write_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  return write_file_atomic(path, npy_serialize_f32(data, shape));
}

}  // namespace mariana
