// The pre-tokenizer: HF's Split pre-tokenizers (and ByteLevel's GPT-2 regex) run with PCRE2 in the
// meaning HF's Oniguruma gives the patterns, the five split behaviours, and added-token lookup.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstdio>

#include "train/tokenizer_internal.h"

namespace mariana {

namespace {

// Rewrites the escapes whose meaning differs between Oniguruma and PCRE2 (UCP): Oniguruma's \s is
// the White_Space property, PCRE2's also takes U+180E. Refuses the class escapes we would get
// wrong rather than split differently from HF.
Result<std::string> onig_to_pcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 16);
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '\\' || i + 1 == pattern.size()) {
      out.push_back(pattern[i]);
      continue;
    }
    const char e = pattern[++i];
    switch (e) {
      case 's': out += "\\p{White_Space}"; break;
      case 'S': out += "\\P{White_Space}"; break;
      case 'w': case 'W': case 'b': case 'B': case 'h': case 'H': case 'R': case 'X':
        return InvalidArgument(std::string("escape \\") + e + " is not supported (its Unicode class differs between HF's regex engine and PCRE2)");
      default:
        out.push_back('\\');
        out.push_back(e);
    }
  }
  return out;
}

struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, stack); }
  ~MatchScratch() {
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    pcre2_match_data_free(data);
  }
};

}  // namespace

Result<Regex> Regex::compile(std::string_view pattern, bool literal) {
  std::string translated(pattern);
  if (!literal) {
    MARIANA_ASSIGN_OR_RETURN(translated, onig_to_pcre2(pattern));
  }
  int err = 0;
  PCRE2_SIZE at = 0;
  const uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(), options, &err, &at, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    return InvalidArgument("regex " + std::string(pattern) + ": " + reinterpret_cast<const char*>(msg) + " at offset " + std::to_string(at));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without JIT, pcre2_match interprets
  Regex r;
  r.code_ = std::shared_ptr<void>(code, [](void* c) { pcre2_code_free(static_cast<pcre2_code*>(c)); });
  return r;
}

bool Regex::find(std::string_view text, size_t from, size_t* begin, size_t* end) const {
  thread_local MatchScratch scratch;
  const auto* code = static_cast<const pcre2_code*>(code_.get());
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), from, 0, scratch.data, scratch.context);
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc <= 0) {  // a resource limit: never reached by HF's patterns on any text we tested
    std::fprintf(stderr, "pcre2_match failed with error %d\n", rc);
    MARIANA_CHECK(rc > 0);
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(scratch.data);
  *begin = ov[0];
  *end = ov[1];
  return true;
}

const PreTokenizer& PreTokenizer::gpt2() {
  static const PreTokenizer p = [] {
    PreTokenizer t;
    auto re = Regex::compile(kGpt2Pattern, false);
    MARIANA_CHECK(re.ok());
    t.add({std::move(re).value(), SplitBehavior::kIsolated, false});
    return t;
  }();
  return p;
}

namespace {

struct Span {
  size_t begin, end;
  bool match;
};

// HF's Pattern::find_matches for a regex: the text cut into matches and the gaps between them.
// Empty matches are dropped (HF keeps them, but they only ever make empty pieces, which it drops).
void find_spans(const Regex& re, std::string_view text, std::vector<Span>* spans) {
  size_t prev = 0, from = 0, b = 0, e = 0;
  while (from <= text.size() && re.find(text, from, &b, &e)) {
    if (e == b) {  // step over one code point (or one invalid byte)
      from = b + 1;
      while (from < text.size() && (static_cast<uint8_t>(text[from]) & 0xC0) == 0x80) ++from;
      continue;
    }
    if (b > prev) spans->push_back({prev, b, false});
    spans->push_back({b, e, true});
    prev = from = e;
  }
  if (prev < text.size()) spans->push_back({prev, text.size(), false});
}

// HF's NormalizedString::split: spans flagged `match` become pieces per the behaviour; the flag of
// each output span says whether it is removed.
void apply_behavior(SplitBehavior behavior, std::vector<Span>& spans, std::vector<Span>* out) {
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) out->push_back({s.begin, s.end, false});
      return;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) out->push_back({s.begin, s.end, s.match});
      return;
    case SplitBehavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.match && !previous_match && !out->empty()) {
          out->back().end = s.end;
        } else {
          out->push_back({s.begin, s.end, false});
        }
        previous_match = s.match;
      }
      return;
    case SplitBehavior::kMergedWithNext: {
      const size_t first = out->size();
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->match && !previous_match && out->size() > first) {
          out->back().begin = it->begin;
        } else {
          out->push_back({it->begin, it->end, false});
        }
        previous_match = it->match;
      }
      std::reverse(out->begin() + static_cast<std::ptrdiff_t>(first), out->end());
      return;
    }
    case SplitBehavior::kContiguous:
      for (const Span& s : spans) {
        if (s.match == previous_match && !out->empty()) {
          out->back().end = s.end;
        } else {
          out->push_back({s.begin, s.end, false});
        }
        previous_match = s.match;
      }
      return;
  }
}

}  // namespace

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>* out) const {
  thread_local std::vector<std::string_view> cur, next;
  thread_local std::vector<Span> spans, pieces;
  cur.clear();
  if (!text.empty()) cur.push_back(text);
  for (const SplitStep& step : steps_) {
    next.clear();
    for (std::string_view piece : cur) {
      spans.clear();
      pieces.clear();
      find_spans(step.regex, piece, &spans);
      if (step.invert) {
        for (Span& s : spans) s.match = !s.match;
      }
      apply_behavior(step.behavior, spans, &pieces);
      for (const Span& s : pieces) {
        if (!s.match && s.end > s.begin) next.push_back(piece.substr(s.begin, s.end - s.begin));
      }
    }
    cur.swap(next);
  }
  out->insert(out->end(), cur.begin(), cur.end());
}

void AddedTokenMatcher::add(const AddedToken& t) {
  Set& set = t.normalized ? normalized_ : raw_;
  if (t.content.empty()) return;  // HF never matches an empty token
  set.contents.emplace(t.content, t.id);
  if (std::find(set.lengths.begin(), set.lengths.end(), t.content.size()) == set.lengths.end()) {
    set.lengths.push_back(t.content.size());
    std::sort(set.lengths.begin(), set.lengths.end(), std::greater<>());
  }
  set.first_byte[static_cast<uint8_t>(t.content[0])] = true;
}

}  // namespace mariana
