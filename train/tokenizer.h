// Byte-level BPE tokenizer trained by Mariana and stored in HuggingFace `tokenizer.json` format
// (a BPE model with vocab and merges, ByteLevel pre-tokenizer and decoder, added special tokens),
// so the Python `tokenizers` library loads it and produces the same ids; it also loads HF byte-level
// BPE files such as DeepSeek-V3's (Split + ByteLevel pre-tokenizers, added tokens) and gives HF's
// ids. Pre-tokenization runs HF's regexes with PCRE2. Any byte string round trips exactly, invalid
// UTF-8 included. The file layout, what load() accepts and the training tie-break are described in
// train/tokenizer_format.md.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace mariana {

// The special tokens, DeepSeek-style spellings. Ids are assigned right after the byte-level
// alphabet and merges, in this order.
enum class SpecialToken : int {
  kBos = 0,        // "<｜begin▁of▁sentence｜>"
  kEos,            // "<｜end▁of▁sentence｜>"
  kFimHole,        // "<｜fim▁hole｜>"
  kFimBegin,       // "<｜fim▁begin｜>"
  kFimEnd,         // "<｜fim▁end｜>"
  kUser,           // "<｜User｜>"
  kAssistant,      // "<｜Assistant｜>"
  kPad,            // "<｜▁pad▁｜>"
  kCount
};
const char* special_token_text(SpecialToken t);
constexpr int kNumSpecialTokens = static_cast<int>(SpecialToken::kCount);

// The GPT-2 pre-tokenizer split (HF ByteLevel, use_regex: true, add_prefix_space: false):
// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ run by PCRE2 with
// Unicode classes (Unicode 14, as HF's Oniguruma). The pieces are views into `text` and concatenate
// back to it; bytes that are not valid UTF-8 match no class and each run of them is its own piece.
// Mariana trains with this split and its tokenizer.json names it.
std::vector<std::string_view> tokenizer_pretokenize(std::string_view text);

// The texts train() learns from: each file's bytes, or for a .jsonl file the "text" field of each
// non-blank line. NotFound for a missing file; InvalidArgument "<file>:<line>: ..." for a bad line.
Result<std::vector<std::string>> tokenizer_read_texts(const std::vector<std::string>& files);

struct TokenizerTrainOptions {
  int64_t vocab_size = 4096;   // total, including the 256 byte tokens and the special tokens
  int64_t min_frequency = 2;   // a pair seen fewer times is never merged
};

class Tokenizer {
 public:
  // Trains on the files' bytes (text files; for .jsonl files, the "text" field of each line).
  // InvalidArgument if vocab_size cannot hold the byte alphabet and the special tokens.
  static Result<Tokenizer> train(const std::vector<std::string>& files, const TokenizerTrainOptions& opt);
  static Result<Tokenizer> train_from_texts(const std::vector<std::string>& texts, const TokenizerTrainOptions& opt);
  // Loads a tokenizer.json written by save() or by HF for a byte-level BPE (Split/ByteLevel/Digits
  // pre-tokenizers, added tokens); refuses what it cannot reproduce exactly, with errors that name
  // the file and the field.
  static Result<Tokenizer> load(const std::string& path);
  // Atomic write of tokenizer.json.
  Status save(const std::string& path) const;

  // Text to ids exactly as HF's encode(text, add_special_tokens=False): the text of an added token
  // (special or not) becomes its id, the rest is pre-tokenized and BPE-encoded. Deterministic and
  // thread-safe.
  std::vector<int32_t> encode(std::string_view text) const;
  // The same without added-token matching: "<｜User｜>" in the text is ordinary bytes. For content
  // that must not inject control tokens (chat messages).
  std::vector<int32_t> encode_ordinary(std::string_view text) const;
  // Ids to bytes; special tokens decode to their text. Ids out of range are skipped.
  std::string decode(const std::vector<int32_t>& ids) const;

  // Number of ids (byte tokens + merged tokens + special tokens); ids are 0..vocab_size()-1.
  int64_t vocab_size() const;
  int32_t special_id(SpecialToken t) const;
  int32_t bos_id() const { return special_id(SpecialToken::kBos); }
  int32_t eos_id() const { return special_id(SpecialToken::kEos); }
  int32_t pad_id() const { return special_id(SpecialToken::kPad); }

  // The bytes id decodes to (a special token: its text); empty for an id out of range.
  std::string token_bytes(int32_t id) const;
  // The merges in rank order (lowest rank = applied first), as (left bytes, right bytes).
  std::vector<std::pair<std::string, std::string>> merges() const;
  int64_t num_merges() const;

 private:
  struct Impl;
  friend struct TokenizerBuilder;  // train/tokenizer_internal.h
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace mariana
