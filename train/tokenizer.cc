// Tokenizer core: the byte-level alphabet, BPE encoding of one pre-token (HF's merge order), the
// encode cache, decode and the builders. The pre-tokenizer is in tokenizer_pretok.cc, training in
// tokenizer_train.cc, tokenizer.json reading and writing in tokenizer_json.cc.
#include <algorithm>
#include <mutex>

#include "train/tokenizer_internal.h"

namespace mariana {

namespace {

constexpr const char* kSpecialTexts[kNumSpecialTokens] = {
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>", "<｜fim▁begin｜>",
    "<｜fim▁end｜>",           "<｜User｜>",            "<｜Assistant｜>", "<｜▁pad▁｜>",
};

void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// GPT-2's bytes_to_unicode tables: byte -> code point, and code point (< 0x144) -> byte or -1.
struct ByteLevelAlphabet {
  std::array<std::string, 256> utf8;
  std::array<int16_t, 0x144> byte_of;
  ByteLevelAlphabet() {
    byte_of.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const uint32_t cp = printable ? b : next++;
      append_utf8(cp, &utf8[b]);
      byte_of[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelAlphabet& alphabet() {
  static const ByteLevelAlphabet a;
  return a;
}

}  // namespace

const char* special_token_text(SpecialToken t) {
  const int i = static_cast<int>(t);
  MARIANA_CHECK(i >= 0 && i < kNumSpecialTokens);
  return kSpecialTexts[i];
}

const std::string& byte_level_char(uint8_t b) { return alphabet().utf8[b]; }

std::string byte_level_encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += alphabet().utf8[static_cast<uint8_t>(c)];
  return out;
}

bool byte_level_decode(std::string_view s, std::string* out) {
  const ByteLevelAlphabet& a = alphabet();
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<uint8_t>(s[i]);
    uint32_t cp;
    if (b0 < 0x80) {
      cp = b0, i += 1;
    } else if ((b0 & 0xE0) == 0xC0 && i + 1 < s.size() && (static_cast<uint8_t>(s[i + 1]) & 0xC0) == 0x80) {
      cp = ((b0 & 0x1Fu) << 6) | (static_cast<uint8_t>(s[i + 1]) & 0x3Fu), i += 2;
    } else {
      return false;  // every alphabet character is 1 or 2 bytes of UTF-8
    }
    if (cp >= a.byte_of.size() || a.byte_of[cp] < 0) return false;
    out->push_back(static_cast<char>(a.byte_of[cp]));
  }
  return true;
}

std::vector<std::string_view> tokenizer_pretokenize(std::string_view text) {
  std::vector<std::string_view> out;
  PreTokenizer::gpt2().split(text, &out);
  return out;
}

// ---- encode cache ---------------------------------------------------------------------------------

bool EncodeCache::get(std::string_view word, std::vector<int32_t>* out) const {
  const size_t h = Hash()(word);
  const Shard& s = shards_[h % kShards];
  std::shared_lock lock(s.mu);
  auto it = s.map.find(word);
  if (it == s.map.end()) return false;
  out->insert(out->end(), it->second.begin(), it->second.end());
  return true;
}

void EncodeCache::put(std::string_view word, const int32_t* ids, size_t n) {
  const size_t h = Hash()(word);
  Shard& s = shards_[h % kShards];
  std::unique_lock lock(s.mu);
  if (s.map.size() >= kMaxEntriesPerShard) return;
  s.map.try_emplace(std::string(word), ids, ids + n);
}

// ---- BPE on one pre-token -------------------------------------------------------------------------

// HF tokenizers' Word::merge_all: a heap of candidate merges ordered by (rank, position); an entry
// whose pair no longer produces the same id is stale and skipped. Equivalent to "apply the
// lowest-ranked merge present, leftmost first, until none applies".
void Tokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>* out) const {
  const size_t n = word.size();
  if (n == 1) {
    out->push_back(byte_ids[static_cast<uint8_t>(word[0])]);
    return;
  }
  if (n == 2) {  // at most one merge: cheaper than the cache
    const int32_t a = byte_ids[static_cast<uint8_t>(word[0])], b = byte_ids[static_cast<uint8_t>(word[1])];
    auto it = merge_map.find(pair_key(a, b));
    if (it != merge_map.end()) {
      out->push_back(it->second.id);
    } else {
      out->push_back(a);
      out->push_back(b);
    }
    return;
  }
  if (n <= EncodeCache::kMaxWordBytes && cache.get(word, out)) return;

  struct Symbol {
    int32_t id;
    int32_t prev, next;  // -1 at the ends
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  // Scratch space reused across calls on this thread.
  thread_local std::vector<Symbol> sym;
  thread_local std::vector<Candidate> heap;
  sym.resize(n);
  heap.clear();
  for (size_t i = 0; i < n; ++i) {
    sym[i] = {byte_ids[static_cast<uint8_t>(word[i])], static_cast<int32_t>(i) - 1,
              i + 1 < n ? static_cast<int32_t>(i + 1) : -1, true};
  }
  auto lookup = [&](int32_t a, int32_t b) -> const MergeTarget* {
    auto it = merge_map.find(pair_key(a, b));
    return it == merge_map.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < n; ++i) {
    if (const MergeTarget* m = lookup(sym[i].id, sym[i + 1].id)) heap.push_back({m->rank, static_cast<int32_t>(i), m->id});
  }
  std::make_heap(heap.begin(), heap.end(), std::greater<>());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    const MergeTarget* m = lookup(left.id, right.id);
    if (m == nullptr || m->id != top.id) continue;  // stale
    left.id = top.id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const MergeTarget* p = lookup(sym[left.prev].id, left.id)) {
        heap.push_back({p->rank, left.prev, p->id});
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      }
    }
    if (left.next >= 0) {
      if (const MergeTarget* q = lookup(left.id, sym[left.next].id)) {
        heap.push_back({q->rank, top.pos, q->id});
        std::push_heap(heap.begin(), heap.end(), std::greater<>());
      }
    }
  }
  const size_t start = out->size();
  for (int32_t i = 0; i >= 0; i = sym[i].next) out->push_back(sym[i].id);
  if (n <= EncodeCache::kMaxWordBytes) cache.put(word, out->data() + start, out->size() - start);
}

// ---- Tokenizer --------------------------------------------------------------------------------------

void Tokenizer::Impl::encode_text(std::string_view text, std::vector<int32_t>* out) const {
  thread_local std::vector<std::string_view> words;
  words.clear();
  pre_tokenizer.split(text, &words);
  for (std::string_view w : words) encode_word(w, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  impl_->added_matcher.each(
      text, [&](std::string_view piece) { impl_->encode_text(piece, &ids); }, [&](int32_t id) { ids.push_back(id); });
  return ids;
}

std::vector<int32_t> Tokenizer::encode_ordinary(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  impl_->encode_text(text, &ids);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    if (id >= 0 && static_cast<size_t>(id) < impl_->id_bytes.size()) out += impl_->id_bytes[id];
  }
  return out;
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_bytes.size()); }

int32_t Tokenizer::special_id(SpecialToken t) const {
  const int i = static_cast<int>(t);
  MARIANA_CHECK(i >= 0 && i < kNumSpecialTokens);
  return impl_->special_ids[i];
}

std::string Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_bytes.size()) return {};
  return impl_->id_bytes[id];
}

std::vector<std::pair<std::string, std::string>> Tokenizer::merges() const {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(impl_->merges.size());
  for (auto [a, b] : impl_->merges) out.emplace_back(impl_->id_bytes[a], impl_->id_bytes[b]);
  return out;
}

int64_t Tokenizer::num_merges() const { return static_cast<int64_t>(impl_->merges.size()); }

// ---- builders -----------------------------------------------------------------------------------------

Tokenizer TokenizerBuilder::from_byte_merges(const std::vector<std::pair<std::string, std::string>>& merges) {
  auto impl = std::make_unique<Tokenizer::Impl>();
  std::unordered_map<std::string, int32_t> index;
  for (int b = 0; b < 256; ++b) {
    impl->id_bytes.emplace_back(1, static_cast<char>(b));
    impl->byte_ids[b] = b;
    index.emplace(impl->id_bytes.back(), b);
  }
  for (const auto& [l, r] : merges) {
    auto li = index.find(l), ri = index.find(r);
    MARIANA_CHECK(li != index.end() && ri != index.end());
    impl->merges.emplace_back(li->second, ri->second);
    std::string joined = l + r;
    if (index.count(joined) == 0) {
      index.emplace(joined, static_cast<int32_t>(impl->id_bytes.size()));
      impl->id_bytes.push_back(std::move(joined));
    }
  }
  impl->id_is_special.assign(impl->id_bytes.size(), 0);
  for (int s = 0; s < kNumSpecialTokens; ++s) {
    impl->special_ids[s] = static_cast<int32_t>(impl->id_bytes.size());
    impl->added_tokens.push_back({kSpecialTexts[s], impl->special_ids[s], /*special=*/true, /*normalized=*/false});
    impl->id_bytes.emplace_back(kSpecialTexts[s]);
    impl->id_is_special.push_back(1);
  }
  impl->pre_tokenizer = PreTokenizer::gpt2();
  return finish(std::move(impl));
}

Tokenizer TokenizerBuilder::finish(std::unique_ptr<Tokenizer::Impl> impl) {
  // Byte strings -> ids of the non-special tokens, to find each merge's result.
  std::unordered_map<std::string_view, int32_t> index;
  for (size_t i = 0; i < impl->id_bytes.size(); ++i) {
    if (!impl->id_is_special[i]) index.emplace(impl->id_bytes[i], static_cast<int32_t>(i));
  }
  impl->added_matcher = AddedTokenMatcher();
  for (const AddedToken& t : impl->added_tokens) impl->added_matcher.add(t);
  impl->merge_map.clear();
  for (size_t r = 0; r < impl->merges.size(); ++r) {
    const auto [a, b] = impl->merges[r];
    auto it = index.find(impl->id_bytes[a] + impl->id_bytes[b]);
    MARIANA_CHECK(it != index.end());
    impl->merge_map[pair_key(a, b)] = {static_cast<int32_t>(r), it->second};
  }
  return Tokenizer(std::shared_ptr<const Tokenizer::Impl>(std::move(impl)));
}

}  // namespace mariana
