// safetensors header validation (every rule listed in core/safetensors.h, each failure a DataLoss
// naming the file and tensor), the mmap-backed reader, and the byte-exact serializer.
#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "core/file_util.h"

namespace mariana {

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

constexpr const char* kMetadataKey = "__metadata__";

Status corrupt(const std::string& path, const std::string& what) { return DataLoss(path + ": " + what); }
Status corrupt_tensor(const std::string& path, const std::string& name, const std::string& what) {
  return DataLoss(path + ": tensor '" + name + "': " + what);
}

// Validates one tensor entry's JSON and fills everything but the coverage check.
Result<SafetensorsEntry> parse_entry(const std::string& path, const std::string& name, const nlohmann::json& j,
                                     uint64_t data_size) {
  if (!j.is_object()) return corrupt_tensor(path, name, "entry is not a JSON object");
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!j.contains(key)) return corrupt_tensor(path, name, std::string("missing '") + key + "'");
  }
  SafetensorsEntry e;
  e.name = name;
  const nlohmann::json& dtype = j["dtype"];
  if (!dtype.is_string()) return corrupt_tensor(path, name, "'dtype' is not a string");
  Result<DType> dt = dtype_from_name(dtype.get<std::string>());
  if (!dt.ok()) return corrupt_tensor(path, name, "unknown dtype " + dtype.dump());
  e.dtype = *dt;

  const nlohmann::json& shape = j["shape"];
  if (!shape.is_array()) return corrupt_tensor(path, name, "'shape' is not an array");
  for (const nlohmann::json& d : shape) {
    if (!d.is_number_integer()) return corrupt_tensor(path, name, "'shape' holds a non-integer " + d.dump());
    if (d.is_number_unsigned() && d.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return corrupt_tensor(path, name, "dimension " + d.dump() + " is too large");
    }
    int64_t v = d.get<int64_t>();
    if (v < 0) return corrupt_tensor(path, name, "negative dimension " + std::to_string(v));
    e.shape.push_back(v);
  }
  // numel, refusing overflow unless a zero dimension makes the product 0 anyway.
  uint64_t numel = 1;
  if (std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end()) {
    numel = 0;
  } else {
    for (int64_t v : e.shape) {
      uint64_t u = static_cast<uint64_t>(v);
      if (numel > std::numeric_limits<uint64_t>::max() / u) {
        return corrupt_tensor(path, name, "shape " + Tensor::shape_string(e.shape) + " overflows 64 bits");
      }
      numel *= u;
    }
  }

  const nlohmann::json& offsets = j["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return corrupt_tensor(path, name, "'data_offsets' is not a pair of non-negative integers: " + offsets.dump());
  }
  e.begin = offsets[0].get<uint64_t>();
  e.end = offsets[1].get<uint64_t>();
  if (e.end < e.begin) {
    return corrupt_tensor(path, name, "data_offsets end " + std::to_string(e.end) + " < begin " +
                                          std::to_string(e.begin));
  }
  uint64_t elem = dtype_size(e.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / elem || e.end - e.begin != numel * elem) {
    return corrupt_tensor(path, name, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                                          ") hold " + std::to_string(e.end - e.begin) + " bytes but " +
                                          dtype_name(e.dtype) + " " + Tensor::shape_string(e.shape) + " needs " +
                                          std::to_string(numel) + " x " + std::to_string(elem));
  }
  if (e.end > data_size) {
    return corrupt_tensor(path, name, "data_offsets end " + std::to_string(e.end) + " is beyond the " +
                                          std::to_string(data_size) + "-byte data buffer");
  }
  return e;
}

}  // namespace

Result<SafetensorsFile> SafetensorsFile::from_bytes(std::shared_ptr<const void> owner, const uint8_t* bytes,
                                                    uint64_t size, const std::string& path) {
  if (size < 8) {
    return corrupt(path, "file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  }
  uint64_t n = 0;
  std::memcpy(&n, bytes, 8);
  if (n > kSafetensorsMaxHeaderBytes) {
    return corrupt(path, "header length " + std::to_string(n) + " exceeds the limit of " +
                             std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  }
  if (n > size - 8) {
    return corrupt(path, "header length " + std::to_string(n) + " is larger than the " + std::to_string(size - 8) +
                             " bytes after it");
  }
  std::string_view header(reinterpret_cast<const char*>(bytes + 8), n);
  uint64_t data_size = size - 8 - n;

  // nlohmann keeps the last of duplicate keys; a callback sees every top-level key.
  std::set<std::string> seen;
  std::string duplicate;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header, [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
      if (depth == 1 && ev == nlohmann::json::parse_event_t::key && duplicate.empty()) {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!seen.insert(key).second) duplicate = key;
      }
      return true;
    });
  } catch (const nlohmann::json::exception& e) {
    return corrupt(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return corrupt(path, "header is not a JSON object");
  if (!duplicate.empty()) return corrupt_tensor(path, duplicate, "name appears twice in the header");

  SafetensorsFile f;
  f.path_ = path;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == kMetadataKey) {
      if (!it->is_object()) return corrupt(path, "__metadata__ is not a JSON object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) {
          return corrupt(path, "__metadata__ value for '" + m.key() + "' is not a string: " + m->dump());
        }
        f.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    MARIANA_ASSIGN_OR_RETURN(SafetensorsEntry e, parse_entry(path, it.key(), *it, data_size));
    f.entries_.push_back(std::move(e));
  }

  // The data buffer must be covered exactly: sorted by offset, each tensor starts where the previous
  // one ended (empty tensors may share an offset), the last ends at the buffer's end.
  std::sort(f.entries_.begin(), f.entries_.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  std::string prev = "";
  for (const SafetensorsEntry& e : f.entries_) {
    if (e.begin < covered) {
      return corrupt_tensor(path, e.name, "bytes [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                                              ") overlap tensor '" + prev + "', which ends at " +
                                              std::to_string(covered));
    }
    if (e.begin > covered) {
      return corrupt_tensor(path, e.name, "starts at byte " + std::to_string(e.begin) + " leaving a hole after " +
                                              (prev.empty() ? std::string("the header") : "tensor '" + prev + "'") +
                                              ", which ends at " + std::to_string(covered));
    }
    covered = e.end;
    prev = e.name;
  }
  if (covered != data_size) {
    return corrupt(path, "tensors cover " + std::to_string(covered) + " of the " + std::to_string(data_size) +
                             " data bytes" + (prev.empty() ? std::string() : " (last is '" + prev + "')"));
  }
  for (size_t i = 0; i < f.entries_.size(); ++i) f.index_[f.entries_[i].name] = i;
  f.owner_ = std::move(owner);
  f.data_ = bytes + 8 + n;
  return f;
}

Result<SafetensorsFile> SafetensorsFile::parse(std::string_view bytes, const std::string& path) {
  // Copy into 64-byte aligned storage so that views are as aligned as the offsets allow.
  Tensor buf = Tensor::zeros(DType::kU8, {static_cast<int64_t>(bytes.size())});
  if (!bytes.empty()) std::memcpy(buf.data(), bytes.data(), bytes.size());
  auto owner = std::make_shared<Tensor>(buf);
  return from_bytes(owner, buf.data_as<uint8_t>(), bytes.size(), path);
}

Result<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_status(errno, path + ": open");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return errno_status(err, path + ": fstat");
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  void* map = MAP_FAILED;
  if (S_ISREG(st.st_mode) && size >= 8) {
    map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  }
  ::close(fd);
  if (map == MAP_FAILED) {  // tiny, special or unmappable file: read it instead
    MARIANA_ASSIGN_OR_RETURN(std::string bytes, read_file(path));
    return parse(bytes, path);
  }
  std::shared_ptr<const void> owner(map, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  return from_bytes(std::move(owner), static_cast<const uint8_t*>(map), size, path);
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Tensor SafetensorsFile::view(const SafetensorsEntry& e) const {
  // The mapping is private and writable, so handing out a mutable pointer cannot reach the file.
  return Tensor::view(const_cast<uint8_t*>(data_ + e.begin), e.dtype, e.shape);
}

namespace {

// The position of each dtype in the Rust library's `Dtype` enum (BOOL, U8, I8, F8_E5M2, F8_E4M3,
// I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64), which its writer sorts by, descending. It
// grows with the element size, so this is "size descending" with a fixed tie order between dtypes of
// one size (I64 before F64, F32 before I32, BF16 before F16 before I16, I8 before U8 before BOOL).
int safetensors_dtype_rank(DType dtype) {
  switch (dtype) {
    case DType::kBool: return 0;
    case DType::kU8: return 1;
    case DType::kI8: return 2;
    case DType::kF8E5M2: return 3;
    case DType::kF8E4M3: return 4;
    case DType::kI16: return 5;
    case DType::kF16: return 7;
    case DType::kBF16: return 8;
    case DType::kI32: return 9;
    case DType::kF32: return 11;
    case DType::kF64: return 12;
    case DType::kI64: return 13;
  }
  MARIANA_CHECK(false && "unknown DType");
  return 0;
}

// Indices of `tensors` in file order: dtype rank descending, then name.
std::vector<size_t> file_order(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    int ra = safetensors_dtype_rank(tensors[a].second.dtype());
    int rb = safetensors_dtype_rank(tensors[b].second.dtype());
    if (ra != rb) return ra > rb;
    return tensors[a].first < tensors[b].first;
  });
  return order;
}

// Empty when the arguments are fine, else what is wrong.
std::string check_write_args(const std::vector<std::pair<std::string, Tensor>>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  std::set<std::string> names;
  for (const auto& [name, t] : tensors) {
    std::string what = "tensor '" + name + "': ";
    if (name == kMetadataKey) return what + "the name is reserved";
    if (!names.insert(name).second) return what + "name given twice";
    if (t.device() != Device::kCPU) return what + "not on the CPU";
    if (!t.defined()) return what + "has no data";
    try {
      (void)nlohmann::json(name).dump();
    } catch (const nlohmann::json::exception&) {
      return what + "name is not valid UTF-8";
    }
  }
  for (const auto& [k, v] : metadata) {
    try {
      (void)nlohmann::json(k).dump();
      (void)nlohmann::json(v).dump();
    } catch (const nlohmann::json::exception&) {
      return "metadata '" + k + "': not valid UTF-8";
    }
  }
  return "";
}

}  // namespace

std::string safetensors_serialize(const std::vector<std::pair<std::string, Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::string problem = check_write_args(tensors, metadata);
  if (!problem.empty()) {
    std::fprintf(stderr, "safetensors_serialize: %s\n", problem.c_str());
    MARIANA_CHECK(problem.empty());
  }
  std::vector<size_t> order = file_order(tensors);

  std::string header = "{";
  if (!metadata.empty()) {
    header += std::string("\"") + kMetadataKey + "\":" + nlohmann::json(metadata).dump();
  }
  uint64_t offset = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    if (header.size() > 1) header += ",";
    nlohmann::json shape = nlohmann::json::array();
    for (int64_t d : t.shape()) shape.push_back(d);
    header += nlohmann::json(name).dump() + ":{\"dtype\":\"" + dtype_name(t.dtype()) + "\",\"shape\":" +
              shape.dump() + ",\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + t.nbytes()) + "]}";
    offset += t.nbytes();
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + header.size() + offset);
  uint64_t n = header.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += header;
  for (size_t i : order) {
    const Tensor& t = tensors[i].second;
    if (t.nbytes() > 0) out.append(static_cast<const char*>(t.data()), t.nbytes());
  }
  return out;
}

Status safetensors_write(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::string problem = check_write_args(tensors, metadata);
  if (!problem.empty()) return InvalidArgument(path + ": " + problem);
  return write_file_atomic(path, safetensors_serialize(tensors, metadata));
}

}  // namespace mariana
