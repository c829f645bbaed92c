// DataLoader: validated, memory-mapped shards → packed rows with document starts, FIM and a
// per-epoch Philox shuffle. The whole position is (epoch, cursor into the epoch's order, offset
// into the current document's emitted sequence); everything else is recomputed from the seed.
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/json_util.h"
#include "core/philox.h"
#include "train/data.h"

namespace mariana {

namespace {

constexpr int kStateVersion = 1;

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

// philox_block's four words for (doc, epoch): words 0-1 decide FIM, words 2 and 3 are the cuts.
std::array<uint32_t, 4> fim_block(int64_t doc, int64_t epoch, const LoaderOptions& opt) {
  return philox_block(opt.seed, kDataFimStream + static_cast<uint64_t>(epoch), static_cast<uint64_t>(doc));
}

bool fim_decide(const std::array<uint32_t, 4>& w, double rate) {
  if (!(rate > 0)) return false;
  const uint64_t bits = ((static_cast<uint64_t>(w[0]) << 32) | w[1]) >> 11;
  return static_cast<double>(bits) * 0x1.0p-53 < rate;
}

}  // namespace

std::vector<int64_t> data_epoch_order(uint64_t seed, int64_t epoch, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  PhiloxStream rng(seed, kDataShuffleStream + static_cast<uint64_t>(epoch));
  for (int64_t i = n - 1; i > 0; --i) {
    const uint64_t hi = rng.next_u32();
    const uint64_t u = (hi << 32) | rng.next_u32();
    // Multiply-shift maps u to [0, i]; its bias is below (i+1)/2^64.
    const auto j = static_cast<int64_t>((static_cast<unsigned __int128>(u) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(order[i], order[j]);
  }
  return order;
}

bool data_document_is_fim(int64_t doc, int64_t epoch, const LoaderOptions& opt) {
  return fim_decide(fim_block(doc, epoch, opt), opt.fim_rate);
}

std::vector<int32_t> data_document_sequence(const int32_t* tokens, int64_t size, int64_t doc, int64_t epoch,
                                            const LoaderOptions& opt) {
  MARIANA_CHECK(size >= 0 && size < (int64_t{1} << 32));
  std::vector<int32_t> out;
  const auto w = fim_block(doc, epoch, opt);
  if (!fim_decide(w, opt.fim_rate)) {
    out.reserve(static_cast<size_t>(size) + 2);
    out.push_back(opt.bos);
    out.insert(out.end(), tokens, tokens + size);
    out.push_back(opt.eos);
    return out;
  }
  // Two cut points uniform in [0, size] (multiply-shift; bias below (size+1)/2^32).
  const uint64_t span = static_cast<uint64_t>(size) + 1;
  const auto a = static_cast<int64_t>((static_cast<uint64_t>(w[2]) * span) >> 32);
  const auto b = static_cast<int64_t>((static_cast<uint64_t>(w[3]) * span) >> 32);
  const int64_t lo = std::min(a, b), hi = std::max(a, b);
  out.reserve(static_cast<size_t>(size) + 5);
  out.push_back(opt.bos);
  out.push_back(opt.fim_begin);
  out.insert(out.end(), tokens, tokens + lo);              // prefix
  out.push_back(opt.fim_hole);
  out.insert(out.end(), tokens + hi, tokens + size);       // suffix
  out.push_back(opt.fim_end);
  out.insert(out.end(), tokens + lo, tokens + hi);         // middle
  out.push_back(opt.eos);
  return out;
}

struct DataLoader::Impl {
  LoaderOptions opt;
  std::vector<TokenShard> shards;
  std::vector<int64_t> doc_base;  // [shards + 1]: global index of each shard's first document
  int64_t documents = 0, tokens = 0, vocab_size = 0;
  uint64_t data_xxh64 = 0;        // fingerprint of the data: XXH64 of the shards' body checksums

  // The position.
  int64_t epoch = 0, cursor = 0, offset = 0;
  std::vector<int64_t> order;     // this epoch's document order
  std::vector<int32_t> seq;       // order[cursor]'s emitted sequence, valid when have_seq
  bool have_seq = false;
  std::vector<int32_t> scratch;

  std::vector<int64_t> order_for(int64_t e) const {
    if (opt.shuffle) return data_epoch_order(opt.seed, e, documents);
    std::vector<int64_t> o(static_cast<size_t>(documents));
    for (int64_t i = 0; i < documents; ++i) o[i] = i;
    return o;
  }

  std::vector<int32_t> sequence_of(int64_t doc, int64_t e) {
    const auto it = std::upper_bound(doc_base.begin(), doc_base.end(), doc) - 1;
    const size_t s = static_cast<size_t>(it - doc_base.begin());
    scratch.clear();
    shards[s].doc_tokens(doc - *it, &scratch);
    return data_document_sequence(scratch.data(), static_cast<int64_t>(scratch.size()), doc, e, opt);
  }

  const std::vector<int32_t>& current() {
    if (!have_seq) {
      seq = sequence_of(order[cursor], epoch);
      have_seq = true;
    }
    return seq;
  }

  void advance_document() {
    offset = 0;
    have_seq = false;
    if (++cursor == documents) {
      cursor = 0;
      ++epoch;
      order = order_for(epoch);
    }
  }
};

DataLoader::DataLoader() : impl_(std::make_unique<Impl>()) {}
DataLoader::DataLoader(DataLoader&&) noexcept = default;
DataLoader& DataLoader::operator=(DataLoader&&) noexcept = default;
DataLoader::~DataLoader() = default;

Result<DataLoader> DataLoader::open(const LoaderOptions& opt) {
  if (opt.seq_len <= 0) return InvalidArgument("data loader: seq_len must be positive, got " + std::to_string(opt.seq_len));
  if (!(opt.fim_rate >= 0 && opt.fim_rate <= 1))
    return InvalidArgument("data loader: fim_rate must be in [0, 1], got " + std::to_string(opt.fim_rate));
  const std::string index_path = (std::filesystem::path(opt.data_dir) / "index.json").string();
  MARIANA_ASSIGN_OR_RETURN(JsonFields index, JsonFields::load(index_path));
  MARIANA_ASSIGN_OR_RETURN(std::string format, index.get_string("format"));
  if (format != "mariana-token-shards")
    return InvalidArgument(index_path + ": field 'format': expected \"mariana-token-shards\", got \"" + format + "\"");
  MARIANA_ASSIGN_OR_RETURN(int64_t version, index.get_int("version"));
  if (version != 1) return InvalidArgument(index_path + ": field 'version': unsupported version " + std::to_string(version));

  DataLoader dl;
  Impl& im = *dl.impl_;
  im.opt = opt;
  MARIANA_ASSIGN_OR_RETURN(im.vocab_size, index.get_int("vocab_size"));
  MARIANA_ASSIGN_OR_RETURN(int64_t want_docs, index.get_int("documents"));
  MARIANA_ASSIGN_OR_RETURN(int64_t want_tokens, index.get_int("tokens"));
  MARIANA_ASSIGN_OR_RETURN(std::vector<JsonFields> entries, index.get_object_array("shards"));
  std::vector<uint64_t> sums;
  im.doc_base.push_back(0);
  for (const JsonFields& e : entries) {
    MARIANA_ASSIGN_OR_RETURN(std::string file, e.get_string("file"));
    if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
      return InvalidArgument(index_path + ": shard file '" + file + "' must be a plain file name in the directory");
    const std::string path = (std::filesystem::path(opt.data_dir) / file).string();
    MARIANA_ASSIGN_OR_RETURN(int64_t docs, e.get_int("documents"));
    MARIANA_ASSIGN_OR_RETURN(int64_t toks, e.get_int("tokens"));
    MARIANA_ASSIGN_OR_RETURN(int64_t bytes, e.get_int("bytes"));
    MARIANA_ASSIGN_OR_RETURN(std::string sum, e.get_string("body_xxh64"));
    MARIANA_ASSIGN_OR_RETURN(TokenShard shard, TokenShard::open(path));
    const ShardHeader& h = shard.header();
    auto mismatch = [&](const char* what, const std::string& got, const std::string& want) {
      return DataLoss(path + ": " + what + " " + got + " does not match index.json's " + want);
    };
    if (h.file_bytes != bytes) return mismatch("size in bytes", std::to_string(h.file_bytes), std::to_string(bytes));
    if (h.num_documents != docs) return mismatch("document count", std::to_string(h.num_documents), std::to_string(docs));
    if (h.num_tokens != toks) return mismatch("token count", std::to_string(h.num_tokens), std::to_string(toks));
    if (hex64(h.body_xxh64) != sum) return mismatch("body checksum", hex64(h.body_xxh64), sum);
    if (h.vocab_size != im.vocab_size) return mismatch("vocab_size", std::to_string(h.vocab_size), std::to_string(im.vocab_size));
    im.documents += h.num_documents;
    im.tokens += h.num_tokens;
    im.doc_base.push_back(im.documents);
    sums.push_back(h.body_xxh64);
    im.shards.push_back(std::move(shard));
  }
  if (im.documents != want_docs || im.tokens != want_tokens)
    return DataLoss(index_path + ": the shards hold " + std::to_string(im.documents) + " documents and " +
                    std::to_string(im.tokens) + " tokens, the index says " + std::to_string(want_docs) + " and " +
                    std::to_string(want_tokens));
  if (im.documents == 0) return InvalidArgument(opt.data_dir + ": no documents");
  for (const auto& [name, id] : {std::pair{"bos", opt.bos}, std::pair{"eos", opt.eos}, std::pair{"fim_begin", opt.fim_begin},
                                 std::pair{"fim_hole", opt.fim_hole}, std::pair{"fim_end", opt.fim_end}}) {
    if (id < 0 || id >= im.vocab_size)
      return InvalidArgument(std::string("data loader: ") + name + " id " + std::to_string(id) + " outside the data's vocabulary [0, " +
                             std::to_string(im.vocab_size) + ")");
  }
  im.data_xxh64 = XXH64(sums.data(), sums.size() * sizeof(uint64_t), 0);
  im.order = im.order_for(0);
  return dl;
}

Status DataLoader::next(int64_t rows, Batch* out) {
  if (rows <= 0) return InvalidArgument("data loader: rows must be positive, got " + std::to_string(rows));
  Impl& im = *impl_;
  const int64_t S = im.opt.seq_len;
  out->B = rows;
  out->S = S;
  out->tokens.resize(static_cast<size_t>(rows * S));
  out->targets.resize(static_cast<size_t>(rows * S));
  out->doc_start.resize(static_cast<size_t>(rows * S));
  for (int64_t r = 0; r < rows; ++r) {
    int32_t* tok = out->tokens.data() + r * S;
    int32_t* tgt = out->targets.data() + r * S;
    int32_t* ds = out->doc_start.data() + r * S;
    for (int64_t i = 0; i < S;) {
      const std::vector<int32_t>& seq = im.current();
      const int64_t n = std::min<int64_t>(S - i, static_cast<int64_t>(seq.size()) - im.offset);
      const int32_t* src = seq.data() + im.offset;
      // A segment: one document's tokens (or the continuation of one) inside this row.
      for (int64_t k = 0; k < n; ++k) {
        tok[i + k] = src[k];
        tgt[i + k] = k + 1 < n ? src[k + 1] : -1;
        ds[i + k] = static_cast<int32_t>(i);
      }
      i += n;
      im.offset += n;
      if (im.offset == static_cast<int64_t>(seq.size())) im.advance_document();
    }
  }
  return Status::Ok();
}

nlohmann::json DataLoader::state() const {
  const Impl& im = *impl_;
  nlohmann::json j;
  j["version"] = kStateVersion;
  j["epoch"] = im.epoch;
  j["cursor"] = im.cursor;
  j["offset"] = im.offset;
  j["seed"] = hex64(im.opt.seed);
  j["fim_rate"] = im.opt.fim_rate;
  j["shuffle"] = im.opt.shuffle;
  j["documents"] = im.documents;
  j["tokens"] = im.tokens;
  j["data_xxh64"] = hex64(im.data_xxh64);
  return j;
}

Status DataLoader::restore(const nlohmann::json& state) {
  Impl& im = *impl_;
  const std::string what = "data loader state";
  JsonFields f(state, what);
  MARIANA_ASSIGN_OR_RETURN(int64_t version, f.get_int("version"));
  if (version != kStateVersion) return InvalidArgument(what + ": field 'version': unsupported version " + std::to_string(version));
  MARIANA_ASSIGN_OR_RETURN(int64_t epoch, f.get_int("epoch"));
  MARIANA_ASSIGN_OR_RETURN(int64_t cursor, f.get_int("cursor"));
  MARIANA_ASSIGN_OR_RETURN(int64_t offset, f.get_int("offset"));
  MARIANA_ASSIGN_OR_RETURN(std::string seed, f.get_string("seed"));
  MARIANA_ASSIGN_OR_RETURN(double fim_rate, f.get_double("fim_rate"));
  MARIANA_ASSIGN_OR_RETURN(bool shuffle, f.get_bool("shuffle"));
  MARIANA_ASSIGN_OR_RETURN(int64_t documents, f.get_int("documents"));
  MARIANA_ASSIGN_OR_RETURN(int64_t tokens, f.get_int("tokens"));
  MARIANA_ASSIGN_OR_RETURN(std::string data_sum, f.get_string("data_xxh64"));
  auto differs = [&](const char* field, const std::string& got, const std::string& have) {
    return InvalidArgument(what + ": field '" + field + "': " + got + " does not match this loader's " + have);
  };
  if (documents != im.documents) return differs("documents", std::to_string(documents), std::to_string(im.documents));
  if (tokens != im.tokens) return differs("tokens", std::to_string(tokens), std::to_string(im.tokens));
  if (data_sum != hex64(im.data_xxh64)) return differs("data_xxh64", data_sum, hex64(im.data_xxh64));
  if (seed != hex64(im.opt.seed)) return differs("seed", seed, hex64(im.opt.seed));
  if (fim_rate != im.opt.fim_rate) return differs("fim_rate", std::to_string(fim_rate), std::to_string(im.opt.fim_rate));
  if (shuffle != im.opt.shuffle) return differs("shuffle", shuffle ? "true" : "false", im.opt.shuffle ? "true" : "false");
  if (epoch < 0) return InvalidArgument(what + ": field 'epoch': negative");
  if (cursor < 0 || cursor >= im.documents)
    return InvalidArgument(what + ": field 'cursor': " + std::to_string(cursor) + " outside [0, " + std::to_string(im.documents) + ")");
  std::vector<int64_t> order = im.order_for(epoch);
  std::vector<int32_t> seq = im.sequence_of(order[cursor], epoch);
  if (offset < 0 || offset >= static_cast<int64_t>(seq.size()))
    return InvalidArgument(what + ": field 'offset': " + std::to_string(offset) + " outside the current document's [0, " +
                           std::to_string(seq.size()) + ")");
  im.epoch = epoch;
  im.cursor = cursor;
  im.offset = offset;
  im.order = std::move(order);
  im.seq = std::move(seq);
  im.have_seq = true;
  return Status::Ok();
}

int64_t DataLoader::epoch() const { return impl_->epoch; }
int64_t DataLoader::num_documents() const { return impl_->documents; }
int64_t DataLoader::num_tokens() const { return impl_->tokens; }

}  // namespace mariana
