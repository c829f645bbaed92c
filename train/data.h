// The training data pipeline: tokenized shards on disk (format in train/shard_format.md), a
// loader that packs documents into rows of the training length with document masks, applies FIM
// (PSM form) at a configurable rate, shuffles deterministically from a seed, and whose position
// is part of the checkpoint. Input preparation (`mariana data prepare`) lives here too.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "model/model.h"
#include "train/tokenizer.h"

namespace mariana {

// ---- Shard files (format: train/shard_format.md; code: train/data_shard.cc) ----

struct ShardHeader {
  int64_t vocab_size = 0, num_documents = 0, num_tokens = 0;
  int32_t token_bytes = 0;     // 2 (u16 ids) when vocab_size <= 65536, else 4
  uint64_t body_xxh64 = 0;     // checksum of everything after the 64-byte header
  int64_t file_bytes = 0;
};

// Writes one shard atomically. `offsets` [num_documents + 1] delimit the documents in `tokens`
// (offsets[0] = 0, non-decreasing, back() = tokens.size()); every id must be in [0, vocab_size).
// InvalidArgument on a bad argument; the write's own errors otherwise.
Result<ShardHeader> shard_write(const std::string& path, int64_t vocab_size,
                                const std::vector<int64_t>& offsets, const std::vector<int32_t>& tokens);

// A memory-mapped shard, fully validated on open (header, size, checksum, offsets, token range):
// DataLoss "<path>: ..." on any mismatch, NotFound if missing. Read-only; safe to share between
// threads. Move-only; unmaps on destruction.
class TokenShard {
 public:
  static Result<TokenShard> open(const std::string& path);
  const ShardHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  int64_t num_documents() const { return header_.num_documents; }
  int64_t doc_size(int64_t d) const;  // d in [0, num_documents)
  // Appends document d's ids to `out`.
  void doc_tokens(int64_t d, std::vector<int32_t>* out) const;

  TokenShard(TokenShard&&) noexcept;
  TokenShard& operator=(TokenShard&&) noexcept;
  ~TokenShard();

 private:
  TokenShard() = default;
  std::string path_;
  ShardHeader header_;
  const unsigned char* map_ = nullptr;  // the whole file, PROT_READ
  size_t map_bytes_ = 0;
  const uint64_t* offsets_ = nullptr;   // [num_documents + 1], inside map_
  const unsigned char* tokens_ = nullptr;
};

// ---- Preparation ----

// The held-out split of a document (or an SFT conversation's JSONL line): true for a fixed
// `fraction` of all texts, chosen by XXH64 of the text (a pure function: the same text is always
// on the same side, whatever file or position it comes from). fraction 0: never.
bool data_held_out(std::string_view text, double fraction);

// Which documents a preparation keeps, by data_held_out(text, held_out).
enum class DataSplit { kAll, kTrain, kHeldOut };

struct PrepareOptions {
  std::vector<std::string> inputs;  // .txt (one document per file) or .jsonl ({"text": ...} per line)
  std::string out_dir;              // shards + index written here, atomically
  bool skip_bad = false;            // skip and count bad lines/files instead of failing
  int64_t shard_tokens = 1 << 24;   // tokens per shard file
  DataSplit split = DataSplit::kAll;  // kTrain / kHeldOut: only the documents on that side of held_out
  double held_out = 0;
};
struct PrepareReport {
  int64_t documents = 0, tokens = 0, skipped = 0, shards = 0;
  std::vector<std::string> skipped_where;  // "file:line: reason" for each skipped item (first 100)
};
// Each document is stored as its token ids (no BOS/EOS; the loader adds them). Errors name the
// file and line ("data/x.jsonl:17: invalid JSON: ..."; "...:18: missing field 'text'";
// "data/empty.txt: empty file").
Result<PrepareReport> data_prepare(const Tokenizer& tok, const PrepareOptions& opt);

// What data_prepare needs from a tokenizer: the Tokenizer overload wraps tok.encode and
// tok.vocab_size() in one (train/data_tokenizer.cc); tests pass a fake.
struct TokenEncoder {
  std::function<std::vector<int32_t>(std::string_view)> encode;
  int64_t vocab_size = 0;
};
Result<PrepareReport> data_prepare(const TokenEncoder& enc, const PrepareOptions& opt);

struct LoaderOptions {
  std::string data_dir;       // a directory written by data_prepare
  int64_t seq_len = 256;      // S
  uint64_t seed = 0;          // shuffling and FIM decisions
  double fim_rate = 0.1;      // fraction of documents rewritten to PSM form
  int32_t bos = 0, eos = 1, fim_begin = 2, fim_hole = 3, fim_end = 4;  // from the tokenizer
  bool shuffle = true;        // false: documents in stored order every epoch (evaluation, tests)
};
// Sets bos, eos and the FIM ids from the tokenizer's special tokens.
void loader_options_set_special_tokens(const Tokenizer& tok, LoaderOptions* opt);

// The order in which epoch `epoch` visits documents [0, n): a Fisher–Yates shuffle driven by
// PhiloxStream(seed, kDataShuffleStream + epoch). A pure function of its arguments.
std::vector<int64_t> data_epoch_order(uint64_t seed, int64_t epoch, int64_t n);
// The tokens the loader emits for document `doc` (global index) in `epoch`: BOS tokens EOS, or,
// with probability opt.fim_rate, BOS <fim_begin> prefix <fim_hole> suffix <fim_end> middle EOS,
// where prefix|middle|suffix = tokens split at two uniform points in [0, size]. The decision and
// the points come from philox_block(opt.seed, kDataFimStream + epoch, doc). Pure.
std::vector<int32_t> data_document_sequence(const int32_t* tokens, int64_t size, int64_t doc,
                                            int64_t epoch, const LoaderOptions& opt);
// Whether data_document_sequence rewrites (doc, epoch) to FIM form.
bool data_document_is_fim(int64_t doc, int64_t epoch, const LoaderOptions& opt);
constexpr uint64_t kDataShuffleStream = uint64_t{1} << 40;
constexpr uint64_t kDataFimStream = uint64_t{2} << 40;

// Packs documents (BOS + tokens + EOS, or the FIM form <fim_begin> prefix <fim_hole> suffix
// <fim_end> middle EOS) back to back into rows of S tokens. targets[i] is the next token of the same
// document (−1 after a document's last token and at the row's end); doc_start marks where each
// document (or the continuation of one cut by the previous row) starts within the row.
// Documents are visited in a Philox-shuffled order per epoch; the loader never reads outside its
// shards' validated bounds.
class DataLoader {
 public:
  // InvalidArgument / DataLoss naming the shard on a bad header, size or checksum.
  static Result<DataLoader> open(const LoaderOptions& opt);
  // Fills `out` with `rows` rows of S tokens.
  Status next(int64_t rows, Batch* out);
  // The exact position (epoch, cursor, offset inside the current document...), as JSON for the
  // trainer checkpoint; restore() continues bit-identically.
  nlohmann::json state() const;
  Status restore(const nlohmann::json& state);
  int64_t epoch() const;
  int64_t num_documents() const;
  int64_t num_tokens() const;

  DataLoader(DataLoader&&) noexcept;
  DataLoader& operator=(DataLoader&&) noexcept;
  ~DataLoader();

 private:
  DataLoader();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mariana
