// BPE training: count the corpus' pre-tokens, then repeatedly merge the most frequent adjacent
// pair. Pair counts are updated incrementally (only the words that hold the merged pair are
// touched, found through a pair -> words index) and the best pair comes from a lazy max-heap whose
// entries are upper bounds on the current counts.
#include <algorithm>
#include <filesystem>
#include <optional>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/json_util.h"
#include "train/tokenizer_internal.h"

namespace mariana {

namespace {

struct Word {
  std::vector<int32_t> syms;
  int64_t count;
};

class BpeTrainer {
 public:
  BpeTrainer(const std::unordered_map<std::string_view, int64_t>& word_counts, int64_t min_frequency)
      : min_frequency_(std::max<int64_t>(min_frequency, 1)) {
    for (int b = 0; b < 256; ++b) {
      tok_bytes_.emplace_back(1, static_cast<char>(b));
      tok_index_.emplace(tok_bytes_.back(), b);
    }
    // Sorted so that the word order, and with it everything after, does not depend on hashing.
    std::vector<std::pair<std::string_view, int64_t>> sorted(word_counts.begin(), word_counts.end());
    std::sort(sorted.begin(), sorted.end());
    words_.reserve(sorted.size());
    for (const auto& [w, c] : sorted) {
      Word word{{}, c};
      word.syms.reserve(w.size());
      for (char ch : w) word.syms.push_back(static_cast<uint8_t>(ch));
      words_.push_back(std::move(word));
    }
    for (size_t wi = 0; wi < words_.size(); ++wi) {
      const Word& w = words_[wi];
      for (size_t i = 0; i + 1 < w.syms.size(); ++i) {
        const uint64_t k = pair_key(w.syms[i], w.syms[i + 1]);
        pair_count_[k] += w.count;
        auto& where = pair_where_[k];
        if (where.empty() || where.back() != static_cast<int32_t>(wi)) where.push_back(static_cast<int32_t>(wi));
      }
    }
    for (const auto& [k, c] : pair_count_) heap_.push_back({c, static_cast<int32_t>(k >> 32), static_cast<int32_t>(k & 0xFFFFFFFFu)});
    std::make_heap(heap_.begin(), heap_.end(), Less{this});
    word_stamp_.assign(words_.size(), -1);
  }

  // Merges until `max_tokens` tokens (bytes included) exist or no pair is frequent enough.
  std::vector<std::pair<std::string, std::string>> run(int64_t max_tokens) {
    std::vector<std::pair<std::string, std::string>> merges;
    std::unordered_set<uint64_t> merged;
    int64_t step = 0;
    while (static_cast<int64_t>(tok_bytes_.size()) < max_tokens) {
      std::optional<Entry> best = pop_best();
      if (!best || best->count < min_frequency_) break;
      const int32_t a = best->a, b = best->b;
      std::string joined = tok_bytes_[a] + tok_bytes_[b];
      int32_t c;
      if (auto it = tok_index_.find(joined); it != tok_index_.end()) {
        c = it->second;  // the same bytes reached through another split: no new token
      } else {
        c = static_cast<int32_t>(tok_bytes_.size());
        tok_bytes_.push_back(joined);
        tok_index_.emplace(std::move(joined), c);
      }
      // A pair can only come back if a merge re-created one of its tokens; it keeps its first rank.
      if (merged.insert(pair_key(a, b)).second) merges.emplace_back(tok_bytes_[a], tok_bytes_[b]);
      apply_merge(a, b, c, step++);
    }
    return merges;
  }

 private:
  struct Entry {
    int64_t count;
    int32_t a, b;
  };
  // Heap order: higher count first; on a tie the pair whose (left bytes, right bytes) is
  // lexicographically smaller (unsigned bytes) comes first.
  struct Less {
    const BpeTrainer* t;
    bool operator()(const Entry& x, const Entry& y) const {
      if (x.count != y.count) return x.count < y.count;
      const int l = t->tok_bytes_[x.a].compare(t->tok_bytes_[y.a]);
      if (l != 0) return l > 0;
      return t->tok_bytes_[x.b].compare(t->tok_bytes_[y.b]) > 0;
    }
  };

  std::optional<Entry> pop_best() {
    while (!heap_.empty()) {
      std::pop_heap(heap_.begin(), heap_.end(), Less{this});
      Entry e = heap_.back();
      heap_.pop_back();
      auto it = pair_count_.find(pair_key(e.a, e.b));
      const int64_t actual = it == pair_count_.end() ? 0 : it->second;
      if (actual == e.count) return e;
      if (actual > 0) {  // counts only shrink between pushes: re-queue at the true count
        heap_.push_back({actual, e.a, e.b});
        std::push_heap(heap_.begin(), heap_.end(), Less{this});
      }
    }
    return std::nullopt;
  }

  void add(int32_t x, int32_t y, int64_t delta, int32_t wi) {
    const uint64_t k = pair_key(x, y);
    pair_count_[k] += delta;
    if (delta > 0) {
      auto& where = pair_where_[k];
      if (where.empty() || where.back() != wi) where.push_back(wi);
      touched_.push_back(k);
    }
  }

  // Replaces every non-overlapping (a, b), left to right, by c in the words that hold it and updates
  // the neighbouring pairs' counts; pairs that grew are pushed on the heap.
  void apply_merge(int32_t a, int32_t b, int32_t c, int64_t step) {
    const uint64_t key = pair_key(a, b);
    std::vector<int32_t> where = std::move(pair_where_[key]);
    pair_where_.erase(key);
    touched_.clear();
    for (int32_t wi : where) {
      if (word_stamp_[wi] == step) continue;
      word_stamp_[wi] = step;
      std::vector<int32_t>& s = words_[wi].syms;
      const int64_t n = words_[wi].count;
      size_t i = 0, j = 0;
      while (i < s.size()) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          if (j > 0) {
            add(s[j - 1], a, -n, wi);
            add(s[j - 1], c, n, wi);
          }
          if (i + 2 < s.size()) {
            add(b, s[i + 2], -n, wi);
            add(c, s[i + 2], n, wi);
          }
          s[j++] = c;
          i += 2;
        } else {
          s[j++] = s[i++];
        }
      }
      s.resize(j);
    }
    pair_count_.erase(key);
    std::sort(touched_.begin(), touched_.end());
    touched_.erase(std::unique(touched_.begin(), touched_.end()), touched_.end());
    for (uint64_t k : touched_) {
      auto it = pair_count_.find(k);
      if (it == pair_count_.end() || it->second <= 0) continue;
      heap_.push_back({it->second, static_cast<int32_t>(k >> 32), static_cast<int32_t>(k & 0xFFFFFFFFu)});
      std::push_heap(heap_.begin(), heap_.end(), Less{this});
    }
  }

  int64_t min_frequency_;
  std::vector<std::string> tok_bytes_;
  std::unordered_map<std::string, int32_t> tok_index_;
  std::vector<Word> words_;
  std::vector<int64_t> word_stamp_;
  std::unordered_map<uint64_t, int64_t> pair_count_;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_where_;  // may list words that lost the pair
  std::vector<Entry> heap_;
  std::vector<uint64_t> touched_;
};

Status check_options(const TokenizerTrainOptions& opt) {
  const int64_t min_vocab = 256 + kNumSpecialTokens;
  if (opt.vocab_size < min_vocab) {
    return InvalidArgument("tokenizer: vocab_size " + std::to_string(opt.vocab_size) + " cannot hold the 256 byte tokens and " +
                           std::to_string(kNumSpecialTokens) + " special tokens (need at least " + std::to_string(min_vocab) + ")");
  }
  if (opt.vocab_size > (int64_t{1} << 31) - 1) return InvalidArgument("tokenizer: vocab_size " + std::to_string(opt.vocab_size) + " does not fit int32 ids");
  if (opt.min_frequency < 1) return InvalidArgument("tokenizer: min_frequency must be >= 1, got " + std::to_string(opt.min_frequency));
  return Status::Ok();
}

Tokenizer train_on(const std::vector<std::string_view>& texts, const TokenizerTrainOptions& opt) {
  std::unordered_map<std::string_view, int64_t> counts;
  std::vector<std::string_view> words;
  for (std::string_view t : texts) {
    words.clear();
    PreTokenizer::gpt2().split(t, &words);  // the split the saved tokenizer.json names
    for (std::string_view w : words) ++counts[w];
  }
  BpeTrainer trainer(counts, opt.min_frequency);
  return TokenizerBuilder::from_byte_merges(trainer.run(opt.vocab_size - kNumSpecialTokens));
}

}  // namespace

Result<Tokenizer> Tokenizer::train_from_texts(const std::vector<std::string>& texts, const TokenizerTrainOptions& opt) {
  MARIANA_RETURN_IF_ERROR(check_options(opt));
  return train_on(std::vector<std::string_view>(texts.begin(), texts.end()), opt);
}

Result<std::vector<std::string>> tokenizer_read_texts(const std::vector<std::string>& files) {
  std::vector<std::string> texts;
  for (const std::string& f : files) {
    MARIANA_ASSIGN_OR_RETURN(std::string bytes, read_file(f));
    if (std::filesystem::path(f).extension() != ".jsonl") {
      texts.push_back(std::move(bytes));
      continue;
    }
    std::string_view all = bytes;
    int64_t line_no = 0;
    while (!all.empty()) {
      ++line_no;
      const size_t nl = all.find('\n');
      const std::string_view line = all.substr(0, nl);
      all = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
      const std::string where = f + ":" + std::to_string(line_no);
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) return InvalidArgument(where + ": invalid JSON");
      if (!j.is_object() || !j.contains("text")) return InvalidArgument(where + ": missing field 'text'");
      if (!j["text"].is_string()) return InvalidArgument(where + ": field 'text': expected a string, got " + json_describe(j["text"]));
      texts.push_back(j["text"].get<std::string>());
    }
  }
  return texts;
}

Result<Tokenizer> Tokenizer::train(const std::vector<std::string>& files, const TokenizerTrainOptions& opt) {
  MARIANA_RETURN_IF_ERROR(check_options(opt));
  if (files.empty()) return InvalidArgument("tokenizer: no input files");
  MARIANA_ASSIGN_OR_RETURN(std::vector<std::string> texts, tokenizer_read_texts(files));
  return train_from_texts(texts, opt);
}

}  // namespace mariana
