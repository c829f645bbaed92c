// Reading and writing the safetensors format (huggingface/safetensors): 8-byte little-endian header
// length N, N bytes of JSON header, then the tensor bytes. The reader validates the whole header
// before handing out views; the writer reproduces the Python library's layout byte for byte.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace mariana {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data buffer (after the header)
};

// Headers larger than this are rejected as corrupt (the Python library's limit).
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// A validated, read-only safetensors file. The bytes are mmapped privately (copy-on-write: writing
// through a view never reaches the file) or, where mmap fails, read into memory. Copies share the
// bytes. Views returned by view() point into them and must not outlive every copy of this object.
class SafetensorsFile {
 public:
  // NotFound / PermissionDenied / ... if the file cannot be read; DataLoss naming the file (and the
  // tensor, where there is one) if the contents are not a well-formed safetensors file.
  static Result<SafetensorsFile> open(const std::string& path);
  // Parses bytes already in memory; `path` only names them in errors. The bytes are copied.
  static Result<SafetensorsFile> parse(std::string_view bytes, const std::string& path);

  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // data-offset order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsEntry* find(const std::string& name) const;  // nullptr if absent
  Tensor view(const SafetensorsEntry& e) const;                 // view into the file's bytes
  const std::string& path() const { return path_; }

 private:
  static Result<SafetensorsFile> from_bytes(std::shared_ptr<const void> owner, const uint8_t* bytes,
                                            uint64_t size, const std::string& path);

  std::string path_;
  std::shared_ptr<const void> owner_;  // the mapping or buffer behind data_
  const uint8_t* data_ = nullptr;      // start of the data buffer
  std::vector<SafetensorsEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// The file's bytes, identical to what the Python safetensors library writes: tensors ordered by
// dtype size descending — ties between dtypes of one size broken as that library does (I64 before
// F64, F32 before I32, BF16 before F16 before I16, F8_E4M3 before F8_E5M2 before I8 before U8 before
// BOOL) — then by name; compact header JSON with "__metadata__" first (omitted if empty), then the
// tensors in that order, each {"dtype","shape","data_offsets"}; header padded with spaces to a
// multiple of 8 bytes; data contiguous with no gaps. Preconditions (checked, abort on violation):
// CPU tensors with data, unique names, no tensor named "__metadata__", valid UTF-8 everywhere.
std::string safetensors_serialize(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// Checks the preconditions above (InvalidArgument naming the tensor), then writes
// safetensors_serialize(...) with write_file_atomic.
Status safetensors_write(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace mariana
