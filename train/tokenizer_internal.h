// Private to train/tokenizer*.cc: the tokenizer's tables (Tokenizer::Impl), the GPT-2 byte <->
// unicode alphabet, the pre-tokenizer's callback form and the encode cache. Not part of the API.
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

// Calls emit(piece) for each pre-token of `text`, in order (see tokenizer_pretokenize).
template <typename Emit>
void pretokenize_each(std::string_view text, Emit&& emit);

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
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };
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
};

// Builds tokenizers from their tables; the only code that constructs a Tokenizer.
struct TokenizerBuilder {
  // Standard layout from merges given as byte strings in rank order: ids 0..255 are the bytes,
  // then each merge's result in order (a merge whose result already exists adds no id), then the
  // special tokens. Every merge's parts must already exist when it is reached (MARIANA_CHECK).
  static Tokenizer from_byte_merges(const std::vector<std::pair<std::string, std::string>>& merges);
  // Finishes `impl` (merge_map) after load() filled id_bytes, id_is_special, byte_ids,
  // special_ids and merges.
  static Tokenizer finish(std::unique_ptr<Tokenizer::Impl> impl);
};

// ---- template definition --------------------------------------------------------------------

namespace pretok {

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

struct CodePoint {
  uint32_t len;  // bytes, 1..4
  CharClass cls;
};

// Class of a non-ASCII code point (see tokenizer_pretokenize for the approximation).
CharClass classify_non_ascii(uint32_t cp);

// The code point starting at text[i] (i < text.size()); an invalid UTF-8 byte is a 1-byte kOther.
inline CodePoint next_code_point(std::string_view text, size_t i) {
  const auto b0 = static_cast<uint8_t>(text[i]);
  if (b0 < 0x80) {
    if ((b0 >= 'a' && b0 <= 'z') || (b0 >= 'A' && b0 <= 'Z')) return {1, CharClass::kLetter};
    if (b0 >= '0' && b0 <= '9') return {1, CharClass::kNumber};
    if (b0 == ' ' || (b0 >= 0x09 && b0 <= 0x0D)) return {1, CharClass::kSpace};
    return {1, CharClass::kOther};
  }
  uint32_t len, cp;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    return {1, CharClass::kOther};
  }
  if (i + len > text.size()) return {1, CharClass::kOther};
  for (uint32_t k = 1; k < len; ++k) {
    const auto b = static_cast<uint8_t>(text[i + k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return {1, CharClass::kOther};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {len, classify_non_ascii(cp)};
}

}  // namespace pretok

template <typename Emit>
void pretokenize_each(std::string_view text, Emit&& emit) {
  using pretok::CharClass;
  using pretok::next_code_point;
  const size_t n = text.size();
  size_t i = 0;
  // Consumes code points of class c starting at j; returns the end.
  auto run_of = [&](size_t j, CharClass c) {
    while (j < n) {
      const pretok::CodePoint p = next_code_point(text, j);
      if (p.cls != c) break;
      j += p.len;
    }
    return j;
  };
  while (i < n) {
    const char c0 = text[i];
    // 's 't 're 've 'm 'll 'd (case-sensitive, as in the GPT-2 pattern).
    if (c0 == '\'' && i + 1 < n) {
      const char c1 = text[i + 1];
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        emit(text.substr(i, 2));
        i += 2;
        continue;
      }
      if (i + 2 < n && ((c1 == 'r' && text[i + 2] == 'e') || (c1 == 'v' && text[i + 2] == 'e') ||
                        (c1 == 'l' && text[i + 2] == 'l'))) {
        emit(text.substr(i, 3));
        i += 3;
        continue;
      }
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional ASCII space, then a run of one class.
    const size_t j = (c0 == ' ' && i + 1 < n) ? i + 1 : i;
    const pretok::CodePoint first = next_code_point(text, j);
    if (first.cls != CharClass::kSpace) {
      const size_t end = run_of(j + first.len, first.cls);
      emit(text.substr(i, end - i));
      i = end;
      continue;
    }
    // A whitespace run [i, end). `\s+(?!\S)` takes it whole at the end of the text, else all but its
    // last code point (which then starts the next piece: a space joins the word after it). A single
    // whitespace code point before a non-space is taken alone by `\s+`.
    size_t end = i, last = i;
    int count = 0;
    while (end < n) {
      const pretok::CodePoint p = next_code_point(text, end);
      if (p.cls != CharClass::kSpace) break;
      last = end;
      end += p.len;
      ++count;
    }
    if (end == n || count == 1) {
      emit(text.substr(i, end - i));
      i = end;
    } else {
      emit(text.substr(i, last - i));
      i = last;
    }
  }
}

}  // namespace mariana
