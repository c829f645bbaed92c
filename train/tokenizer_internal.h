// Private to train/tokenizer*.cc: the tokenizer's tables (Tokenizer::Impl), the GPT-2 byte <->
// unicode alphabet, the regex pre-tokenizer (PCRE2), added-token matching and the encode cache.
// Not part of the API.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "train/tokenizer.h"

namespace mariana {

// GPT-2's bytes_to_unicode: byte b <-> one printable code point (the 188 printable Latin-1 bytes map
// to themselves, the other 68 to U+0100..U+0143), so that every token is a printable string.
const std::string& byte_level_char(uint8_t b);  // UTF-8 of b's code point
// Maps a vocab string (UTF-8 of alphabet code points) back to bytes; false if it holds a character
// outside the alphabet or is not valid UTF-8.
bool byte_level_decode(std::string_view s, std::string* out);
std::string byte_level_encode(std::string_view bytes);

// Hashes std::string keys and std::string_view lookups alike (heterogeneous find).
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};

// HF ByteLevel's split pattern (GPT-2), used when a ByteLevel pre-tokenizer has use_regex: true.
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A pattern compiled once by PCRE2 (8-bit, UTF + UCP, JIT when available) with HF's (Oniguruma's)
// meaning: `\s`/`\S` are rewritten to Unicode White_Space (PCRE2's \s also takes U+180E), and
// escapes whose classes differ between the engines (\w \W \b \B \h \H \R \X) are refused.
// Bytes that are not valid UTF-8 never match (PCRE2_MATCH_INVALID_UTF). Shared and thread-safe.
class Regex {
 public:
  // `literal`: the pattern is a plain string (HF's {"String": ...}). InvalidArgument with the
  // compiler's message and offset.
  static Result<Regex> compile(std::string_view pattern, bool literal);
  // The leftmost match in text starting at or after `from`; false if none.
  bool find(std::string_view text, size_t from, size_t* begin, size_t* end) const;

 private:
  std::shared_ptr<void> code_;  // pcre2_code_8
};

// HF's SplitDelimiterBehavior.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// One HF `Split` pre-tokenizer (ByteLevel's own regex and `Digits` are expressed as one).
struct SplitStep {
  Regex regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

// The pre-tokenizer chain: each step splits every piece of the previous one. Pieces are views into
// the text, in order, never empty; without Removed steps they concatenate back to the text.
class PreTokenizer {
 public:
  static const PreTokenizer& gpt2();  // ByteLevel(add_prefix_space: false, use_regex: true)
  void add(SplitStep step) { steps_.push_back(std::move(step)); }
  void append(const PreTokenizer& p) { steps_.insert(steps_.end(), p.steps_.begin(), p.steps_.end()); }
  void split(std::string_view text, std::vector<std::string_view>* out) const;

 private:
  std::vector<SplitStep> steps_;
};

// An entry of tokenizer.json's added_tokens.
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = true;
  bool normalized = false;
};

// Finds added tokens in text as HF's AddedVocabulary does: leftmost match, the longest one at that
// position, then on from its end; tokens with normalized: false are found first, those with
// normalized: true in the text between them (the normalizer being the identity).
class AddedTokenMatcher {
 public:
  void add(const AddedToken& t);
  // Calls text_piece(view) for the text between added tokens and token(id) for each added token.
  template <typename Text, typename Token>
  void each(std::string_view text, Text&& text_piece, Token&& token) const {
    raw_.each(text, [&](std::string_view gap) { normalized_.each(gap, text_piece, token); }, token);
  }

 private:
  struct Set {
    std::unordered_map<std::string, int32_t, StringViewHash, std::equal_to<>> contents;
    std::vector<size_t> lengths;  // distinct content lengths, longest first
    std::array<bool, 256> first_byte{};
    template <typename Text, typename Token>
    void each(std::string_view text, Text&& text_piece, Token&& token) const {
      size_t start = 0;
      for (size_t i = 0; i < text.size(); ++i) {
        if (!first_byte[static_cast<uint8_t>(text[i])]) continue;
        for (size_t len : lengths) {
          if (len > text.size() - i) continue;
          auto it = contents.find(text.substr(i, len));
          if (it == contents.end()) continue;
          if (i > start) text_piece(text.substr(start, i - start));
          token(it->second);
          start = i + len;
          i = start - 1;
          break;
        }
      }
      if (start < text.size()) text_piece(text.substr(start));
    }
  };
  Set raw_, normalized_;
};

// Word -> ids, shared by all threads encoding with one tokenizer. Sharded, each shard behind a
// reader/writer lock; a shard stops accepting entries once full (like HF's cache), so memory is
// bounded and a hot vocabulary stays cached.
class EncodeCache {
 public:
  static constexpr size_t kMaxWordBytes = 128;  // longer words are not cached
  bool get(std::string_view word, std::vector<int32_t>* out) const;  // appends on a hit
  void put(std::string_view word, const int32_t* ids, size_t n);

 private:
  static constexpr size_t kShards = 32;
  static constexpr size_t kMaxEntriesPerShard = 8192;
  using Hash = StringViewHash;
  struct Shard {
    mutable std::shared_mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> map;
  };
  std::array<Shard, kShards> shards_;
};

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Tokenizer::Impl {
  // [V] what each id decodes to; a special token's text for the special ids.
  std::vector<std::string> id_bytes;
  std::vector<uint8_t> id_is_special;                // [V]
  std::array<int32_t, 256> byte_ids{};              // byte -> its single-byte token
  std::array<int32_t, kNumSpecialTokens> special_ids{};
  std::vector<AddedToken> added_tokens;  // as in added_tokens, in file order
  AddedTokenMatcher added_matcher;
  PreTokenizer pre_tokenizer;
  std::string pre_tokenizer_json;  // what save() writes; the ByteLevel default when empty
  std::vector<std::pair<int32_t, int32_t>> merges;  // rank order, as written in the file
  struct MergeTarget {
    int32_t rank;
    int32_t id;
  };
  // (left, right) -> (rank, merged id). For a pair listed twice the later rank wins, as in HF.
  std::unordered_map<uint64_t, MergeTarget> merge_map;
  mutable EncodeCache cache;

  // Appends the BPE ids of one pre-token.
  void encode_word(std::string_view word, std::vector<int32_t>* out) const;
  // Pre-tokenizes text (no added tokens in it) and appends the BPE ids of every piece.
  void encode_text(std::string_view text, std::vector<int32_t>* out) const;
};

// Builds tokenizers from their tables; the only code that constructs a Tokenizer.
struct TokenizerBuilder {
  // Standard layout from merges given as byte strings in rank order: ids 0..255 are the bytes,
  // then each merge's result in order (a merge whose result already exists adds no id), then the
  // special tokens; the GPT-2 ByteLevel pre-tokenizer. Every merge's parts must already exist when it is reached (MARIANA_CHECK).
  static Tokenizer from_byte_merges(const std::vector<std::pair<std::string, std::string>>& merges);
  // Finishes `impl` (merge_map, added_matcher) after load() filled id_bytes, id_is_special,
  // byte_ids, special_ids, added_tokens, pre_tokenizer and merges.
  static Tokenizer finish(std::unique_ptr<Tokenizer::Impl> impl);
};

}  // namespace mariana
