// Token shard writer and memory-mapped reader; the format is train/shard_format.md. The reader
// validates every byte it will ever hand out before open() returns.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "core/file_util.h"
#include "train/data.h"

namespace mariana {

namespace {

constexpr char kMagic[8] = {'M', 'R', 'N', 'S', 'H', 'A', 'R', 'D'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 64;

void put_u32(std::string* s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*s)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_u64(std::string* s, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) (*s)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
uint32_t get_u32(const unsigned char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

int32_t token_bytes_for(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

}  // namespace

Result<ShardHeader> shard_write(const std::string& path, int64_t vocab_size,
                                const std::vector<int64_t>& offsets, const std::vector<int32_t>& tokens) {
  if (vocab_size <= 0 || vocab_size > (int64_t{1} << 31))
    return InvalidArgument(path + ": vocab_size " + std::to_string(vocab_size) + " outside [1, 2^31]");
  if (offsets.empty() || offsets.front() != 0 || offsets.back() != static_cast<int64_t>(tokens.size()))
    return InvalidArgument(path + ": offsets must start at 0 and end at the token count");
  for (size_t i = 1; i < offsets.size(); ++i)
    if (offsets[i] < offsets[i - 1]) return InvalidArgument(path + ": offsets decrease at document " + std::to_string(i - 1));
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || tokens[i] >= vocab_size)
      return InvalidArgument(path + ": token " + std::to_string(tokens[i]) + " at " + std::to_string(i) +
                             " outside [0, " + std::to_string(vocab_size) + ")");

  ShardHeader h;
  h.vocab_size = vocab_size;
  h.num_documents = static_cast<int64_t>(offsets.size()) - 1;
  h.num_tokens = static_cast<int64_t>(tokens.size());
  h.token_bytes = token_bytes_for(vocab_size);
  const size_t offsets_at = kHeaderBytes;
  const size_t tokens_at = offsets_at + 8 * offsets.size();
  h.file_bytes = static_cast<int64_t>(tokens_at + static_cast<size_t>(h.token_bytes) * tokens.size());

  std::string buf(static_cast<size_t>(h.file_bytes), '\0');
  for (size_t i = 0; i < offsets.size(); ++i) put_u64(&buf, offsets_at + 8 * i, static_cast<uint64_t>(offsets[i]));
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint32_t t = static_cast<uint32_t>(tokens[i]);
    const size_t at = tokens_at + h.token_bytes * i;
    if (h.token_bytes == 2) {
      buf[at] = static_cast<char>(t & 0xff);
      buf[at + 1] = static_cast<char>(t >> 8);
    } else {
      put_u32(&buf, at, t);
    }
  }
  h.body_xxh64 = XXH64(buf.data() + kHeaderBytes, buf.size() - kHeaderBytes, 0);
  std::memcpy(buf.data(), kMagic, 8);
  put_u32(&buf, 8, kVersion);
  put_u32(&buf, 12, static_cast<uint32_t>(h.token_bytes));
  put_u64(&buf, 16, static_cast<uint64_t>(h.vocab_size));
  put_u64(&buf, 24, static_cast<uint64_t>(h.num_documents));
  put_u64(&buf, 32, static_cast<uint64_t>(h.num_tokens));
  put_u64(&buf, 40, h.body_xxh64);
  put_u64(&buf, 48, 0);
  put_u64(&buf, 56, XXH64(buf.data(), 56, 0));
  MARIANA_RETURN_IF_ERROR(write_file_atomic(path, buf));
  return h;
}

Result<TokenShard> TokenShard::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno_status(errno, path + ": open");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return errno_status(err, path + ": fstat");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return DataLoss(path + ": not a regular file");
  }
  TokenShard s;
  s.path_ = path;
  s.map_bytes_ = static_cast<size_t>(st.st_size);
  if (s.map_bytes_ < kHeaderBytes) {
    ::close(fd);
    return DataLoss(path + ": " + std::to_string(s.map_bytes_) + " bytes, too short for the 64-byte shard header");
  }
  void* p = ::mmap(nullptr, s.map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (p == MAP_FAILED) {
    s.map_bytes_ = 0;
    return errno_status(map_err, path + ": mmap");
  }
  s.map_ = static_cast<const unsigned char*>(p);
  const unsigned char* m = s.map_;

  auto bad = [&](const std::string& what) { return DataLoss(path + ": " + what); };
  if (std::memcmp(m, kMagic, 8) != 0) return bad("bad magic (not a Mariana token shard)");
  const uint32_t version = get_u32(m + 8);
  if (version != kVersion)
    return bad("unsupported shard version " + std::to_string(version) + " (expected " + std::to_string(kVersion) + ")");
  if (get_u64(m + 56) != XXH64(m, 56, 0)) return bad("header checksum mismatch");
  ShardHeader& h = s.header_;
  h.token_bytes = static_cast<int32_t>(get_u32(m + 12));
  const uint64_t vocab = get_u64(m + 16), ndocs = get_u64(m + 24), ntok = get_u64(m + 32);
  h.body_xxh64 = get_u64(m + 40);
  if (vocab == 0 || vocab > (uint64_t{1} << 31)) return bad("vocab_size " + std::to_string(vocab) + " outside [1, 2^31]");
  h.vocab_size = static_cast<int64_t>(vocab);
  if (h.token_bytes != token_bytes_for(h.vocab_size))
    return bad("token_bytes " + std::to_string(h.token_bytes) + " does not match vocab_size " + std::to_string(vocab));
  // Expected size without overflow: every term is bounded by the real file size first.
  const uint64_t size = s.map_bytes_;
  if (ndocs >= (size - kHeaderBytes) / 8)
    return bad("header says " + std::to_string(ndocs) + " documents, more than the file can hold");
  const uint64_t tokens_at = kHeaderBytes + 8 * (ndocs + 1);
  if (ntok > (size - tokens_at) / static_cast<uint64_t>(h.token_bytes) ||
      tokens_at + ntok * static_cast<uint64_t>(h.token_bytes) != size) {
    const long double want = static_cast<long double>(tokens_at) + static_cast<long double>(ntok) * h.token_bytes;
    return bad("file has " + std::to_string(size) + " bytes but the header (" + std::to_string(ndocs) + " documents, " +
               std::to_string(ntok) + " tokens) implies " + std::to_string(static_cast<unsigned long long>(want)));
  }
  h.num_documents = static_cast<int64_t>(ndocs);
  h.num_tokens = static_cast<int64_t>(ntok);
  h.file_bytes = static_cast<int64_t>(size);
  if (XXH64(m + kHeaderBytes, size - kHeaderBytes, 0) != h.body_xxh64) return bad("body checksum mismatch");
  s.offsets_ = reinterpret_cast<const uint64_t*>(m + kHeaderBytes);
  s.tokens_ = m + tokens_at;
  // Little-endian hosts only (static_assert below); offsets_ is 8-byte aligned inside the mapping.
  if (s.offsets_[0] != 0) return bad("offsets[0] is " + std::to_string(s.offsets_[0]) + ", expected 0");
  for (uint64_t d = 0; d < ndocs; ++d)
    if (s.offsets_[d + 1] < s.offsets_[d] || s.offsets_[d + 1] > ntok)
      return bad("offsets[" + std::to_string(d + 1) + "] = " + std::to_string(s.offsets_[d + 1]) +
                 " is not monotonic within [0, " + std::to_string(ntok) + "]");
  if (s.offsets_[ndocs] != ntok)
    return bad("offsets[" + std::to_string(ndocs) + "] = " + std::to_string(s.offsets_[ndocs]) + ", expected the token count " +
               std::to_string(ntok));
  for (uint64_t i = 0; i < ntok; ++i) {
    const uint32_t t = h.token_bytes == 2 ? static_cast<uint32_t>(s.tokens_[2 * i] | (s.tokens_[2 * i + 1] << 8))
                                          : get_u32(s.tokens_ + 4 * i);
    if (t >= vocab) return bad("token " + std::to_string(t) + " at " + std::to_string(i) + " outside the vocabulary of " + std::to_string(vocab));
  }
  return s;
}
static_assert(std::endian::native == std::endian::little, "shards are read in place as little-endian");

int64_t TokenShard::doc_size(int64_t d) const {
  MARIANA_CHECK(d >= 0 && d < header_.num_documents);
  return static_cast<int64_t>(offsets_[d + 1] - offsets_[d]);
}

void TokenShard::doc_tokens(int64_t d, std::vector<int32_t>* out) const {
  MARIANA_CHECK(d >= 0 && d < header_.num_documents);
  const uint64_t b = offsets_[d], e = offsets_[d + 1];
  out->reserve(out->size() + (e - b));
  if (header_.token_bytes == 2) {
    for (uint64_t i = b; i < e; ++i) out->push_back(static_cast<int32_t>(tokens_[2 * i] | (tokens_[2 * i + 1] << 8)));
  } else {
    for (uint64_t i = b; i < e; ++i) out->push_back(static_cast<int32_t>(get_u32(tokens_ + 4 * i)));
  }
}

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)), header_(o.header_), map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)), offsets_(std::exchange(o.offsets_, nullptr)),
      tokens_(std::exchange(o.tokens_, nullptr)) {}

TokenShard& TokenShard::operator=(TokenShard&& o) noexcept {
  if (this != &o) {
    if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
    path_ = std::move(o.path_);
    header_ = o.header_;
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    offsets_ = std::exchange(o.offsets_, nullptr);
    tokens_ = std::exchange(o.tokens_, nullptr);
  }
  return *this;
}

TokenShard::~TokenShard() {
  if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
}

}  // namespace mariana
