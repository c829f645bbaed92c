// The built-in corpora (train/corpora.h): worked arithmetic, passkey retrieval, template prose.
#include "train/corpora.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/philox.h"

namespace mariana {

namespace {

// Philox streams of the generators (under a per-document seed) and of the per-document seeds.
constexpr uint64_t kDocSeedStream = 0xC0'0000;
constexpr uint64_t kArithmeticStream = 1, kPasskeyStream = 2, kProseStream = 3, kMixStream = 4;

// Uniform in [lo, hi] (multiply-shift on 32 bits; bias below (hi-lo+1)/2^32).
int64_t uniform_int(PhiloxStream& rng, int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  const uint64_t hi32 = rng.next_u32();
  const uint64_t u = (hi32 << 32) | rng.next_u32();
  return lo + static_cast<int64_t>((static_cast<unsigned __int128>(u) * span) >> 64);
}

int64_t pow10(int d) {
  int64_t p = 1;
  for (int i = 0; i < d; ++i) p *= 10;
  return p;
}

std::string digits_of(int64_t v) { return std::to_string(v); }

// Column-by-column subtraction of b from a, a >= b >= 0; returns the number the written digits
// make. forget_borrow: a borrow is announced but never taken from the next column (a teacher's slip).
int64_t subtract_columns(int64_t a, int64_t b, bool forget_borrow, std::string* out) {
  const std::string as = digits_of(a), bs = digits_of(b);
  int borrow = 0;
  int64_t written = 0, place = 1;
  for (size_t i = 0; i < as.size(); ++i, place *= 10) {
    const int x = as[as.size() - 1 - i] - '0';
    const bool has_b = i < bs.size();
    const int y = has_b ? bs[bs.size() - 1 - i] - '0' : 0;
    if (forget_borrow) borrow = 0;
    std::string expr = std::to_string(x);
    if (has_b) expr += " - " + std::to_string(y);
    if (borrow) expr += " - 1";
    const int v = x - y - borrow;
    if (!has_b && !borrow) {
      *out += "bring down " + std::to_string(x) + ".\n";
      written += x * place;
    } else if (v >= 0) {
      *out += expr + " = " + std::to_string(v) + ", write " + std::to_string(v) + ".\n";
      written += v * place;
      borrow = 0;
    } else {
      *out += expr + " < 0, so 1" + expr + " = " + std::to_string(v + 10) + ", write " + std::to_string(v + 10) +
              ", borrow 1.\n";
      written += (v + 10) * place;
      borrow = 1;
    }
  }
  return written;
}

const std::array<const char*, 5> kFillerSentences = {"The grass is green.", "The sky is blue.", "The sun is yellow.",
                                                     "Here we go.", "There and back again."};

const std::array<const char*, 10> kSubjects = {"The old farmer", "A small child", "The river", "My neighbour",
                                               "The engineer", "A tired horse", "The city", "Her brother",
                                               "The teacher", "A quiet cat"};
const std::array<const char*, 10> kVerbs = {"walked to", "looked at", "remembered", "painted", "carried",
                                            "followed", "built", "forgot", "cleaned", "waited for"};
const std::array<const char*, 10> kObjects = {"the quiet market", "a red bicycle", "the stone bridge",
                                              "an empty house", "the morning train", "a wooden boat",
                                              "the long letter", "the garden wall", "a blue kite", "the old mill"};
const std::array<const char*, 10> kTails = {"before dawn", "in the rain", "after dinner", "with great care",
                                            "without a word", "for the last time", "near the sea", "every Sunday",
                                            "at noon", "in the spring"};

uint64_t document_seed(uint64_t seed, int64_t index) {
  const auto w = philox_block(seed, kDocSeedStream, static_cast<uint64_t>(index));
  return (static_cast<uint64_t>(w[0]) << 32) | w[1];
}

}  // namespace

Result<CorpusTask> corpus_task_parse(const std::string& name) {
  if (name == "arithmetic") return CorpusTask::kArithmetic;
  if (name == "passkey") return CorpusTask::kPasskey;
  if (name == "mix") return CorpusTask::kMix;
  return InvalidArgument("unknown corpus task '" + name + "' (expected arithmetic, passkey or mix)");
}

const char* corpus_task_name(CorpusTask task) {
  switch (task) {
    case CorpusTask::kArithmetic: return "arithmetic";
    case CorpusTask::kPasskey: return "passkey";
    case CorpusTask::kMix: return "mix";
  }
  return "?";
}

std::string arithmetic_worked(int64_t a, char op, int64_t b, bool forget_carries) {
  MARIANA_CHECK(a >= 0 && b >= 0 && a < pow10(9) && b < pow10(9));
  MARIANA_CHECK(op == '+' || op == '-' || op == '*');
  const std::string as = digits_of(a), bs = digits_of(b);
  const std::string problem = as + " " + op + " " + bs;
  std::string out = "Q: " + problem + " = ?\nA: ";
  int64_t answer = 0;
  if (op == '+') {
    out += "Add the digits from the right.\n";
    int carry = 0;
    int64_t place = 1;
    const size_t n = std::max(as.size(), bs.size());
    for (size_t i = 0; i < n; ++i, place *= 10) {
      if (forget_carries) carry = 0;
      std::vector<int> terms;
      if (i < as.size()) terms.push_back(as[as.size() - 1 - i] - '0');
      if (i < bs.size()) terms.push_back(bs[bs.size() - 1 - i] - '0');
      if (carry) terms.push_back(carry);
      int s = 0;
      std::string expr;
      for (size_t k = 0; k < terms.size(); ++k) {
        expr += (k ? " + " : "") + std::to_string(terms[k]);
        s += terms[k];
      }
      if (terms.size() == 1) {
        out += "bring down " + expr + ".\n";
      } else {
        out += expr + " = " + std::to_string(s) + ", write " + std::to_string(s % 10) + (s >= 10 ? ", carry 1.\n" : ".\n");
      }
      answer += (s % 10) * place;
      carry = s >= 10 ? 1 : 0;
    }
    if (carry && !forget_carries) {
      out += "write the carry 1.\n";
      answer += place;
    }
  } else if (op == '-') {
    if (a >= b) {
      out += "Subtract the digits from the right.\n";
      answer = subtract_columns(a, b, forget_carries, &out);
    } else {
      out += as + " < " + bs + ", so " + problem + " = -(" + bs + " - " + as + ").\nSubtract the digits from the right.\n";
      const int64_t magnitude = subtract_columns(b, a, forget_carries, &out);
      out += bs + " - " + as + " = " + std::to_string(magnitude) + "\n";
      answer = -magnitude;
    }
  } else {
    answer = a * b;
    out += "Multiply " + as + " by each digit of " + bs + " from the right.\n";
    int64_t sum = 0;
    for (size_t i = 0; i < bs.size(); ++i) {
      const int d = bs[bs.size() - 1 - i] - '0';
      const int64_t p = a * d;
      const int64_t shifted = p * pow10(static_cast<int>(i));
      out += as + " * " + std::to_string(d) + " = " + std::to_string(p);
      if (i > 0) out += ", shifted " + std::to_string(i) + (i == 1 ? " place: " : " places: ") + std::to_string(shifted);
      out += ".\n";
      if (i > 0) out += std::to_string(sum) + " + " + std::to_string(shifted) + " = " + std::to_string(sum + shifted) + ".\n";
      sum += shifted;
    }
  }
  out += problem + " = " + std::to_string(answer) + "\n#### " + std::to_string(answer) + "\n";
  return out;
}

bool arithmetic_held_out(int64_t a, char op, int64_t b) {
  // splitmix64 of the problem's packed form; one problem in ten is held out.
  uint64_t z = (static_cast<uint64_t>(a) * 1000000007ULL) ^ (static_cast<uint64_t>(b) << 20) ^
               (static_cast<uint64_t>(static_cast<unsigned char>(op)) << 58);
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z % 10 == 0;
}

ArithmeticProblem make_arithmetic(uint64_t seed, const ArithmeticOptions& opt) {
  MARIANA_CHECK(opt.min_digits >= 1 && opt.min_digits <= opt.max_digits && opt.max_digits <= 9 && !opt.ops.empty());
  PhiloxStream rng(seed, kArithmeticStream);
  auto operand = [&] {
    const int d = static_cast<int>(uniform_int(rng, opt.min_digits, opt.max_digits));
    return uniform_int(rng, d == 1 ? 0 : pow10(d - 1), pow10(d) - 1);
  };
  ArithmeticProblem p;
  for (int attempt = 0;; ++attempt) {
    MARIANA_CHECK(attempt < 100000);  // every digit range holds problems of both splits
    p.op = opt.ops[static_cast<size_t>(uniform_int(rng, 0, static_cast<int64_t>(opt.ops.size()) - 1))];
    p.a = operand();
    p.b = operand();
    if (opt.split == ArithmeticSplit::kAll ||
        arithmetic_held_out(p.a, p.op, p.b) == (opt.split == ArithmeticSplit::kHeldOut))
      break;
  }
  p.answer = p.op == '+' ? p.a + p.b : p.op == '-' ? p.a - p.b : p.a * p.b;
  // The teacher's slip is drawn after the problem, so the problem never depends on teacher_slip.
  const bool slip = opt.teacher_slip > 0 && rng.next_u32() < opt.teacher_slip * 4294967296.0;
  p.text = arithmetic_worked(p.a, p.op, p.b, /*forget_carries=*/slip);
  return p;
}

PasskeySample make_passkey(uint64_t seed, int64_t filler_chars, double depth) {
  MARIANA_CHECK(filler_chars >= 0 && depth >= 0 && depth <= 1);
  PhiloxStream rng(seed, kPasskeyStream);
  PasskeySample s;
  s.passkey = static_cast<int32_t>(uniform_int(rng, 10000, 99999));
  const std::string key = std::to_string(s.passkey);
  // Whole filler sentences, cycling, joined by single spaces, up to filler_chars characters.
  std::vector<std::string> sentences;
  int64_t len = 0;
  for (size_t k = 0;; ++k) {
    const std::string next = kFillerSentences[k % kFillerSentences.size()];
    const int64_t add = static_cast<int64_t>(next.size()) + (sentences.empty() ? 0 : 1);
    if (len + add > filler_chars) break;
    sentences.push_back(next);
    len += add;
  }
  // The boundary (before sentence k, k in [0, n]) whose character position is nearest depth·len.
  const double want = depth * static_cast<double>(len);
  size_t best = 0;
  double best_dist = want;
  int64_t pos = 0;
  for (size_t k = 1; k <= sentences.size(); ++k) {
    pos += static_cast<int64_t>(sentences[k - 1].size()) + (k > 1 ? 1 : 0);
    const double dist = std::abs(static_cast<double>(pos) - want);
    if (dist < best_dist) {
      best_dist = dist;
      best = k;
    }
  }
  const std::string key_sentence = "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
  sentences.insert(sentences.begin() + static_cast<std::ptrdiff_t>(best), key_sentence);
  for (size_t k = 0; k < sentences.size(); ++k) {
    if (k) s.prompt += ' ';
    if (k == best) s.key_offset = static_cast<int64_t>(s.prompt.size());
    s.prompt += sentences[k];
  }
  s.prompt += " What is the pass key? The pass key is";
  s.answer = " " + key;
  return s;
}

std::string make_prose(uint64_t seed, int64_t chars) {
  PhiloxStream rng(seed, kProseStream);
  std::string out;
  do {
    if (!out.empty()) out += ' ';
    out += kSubjects[uniform_int(rng, 0, kSubjects.size() - 1)];
    out += ' ';
    out += kVerbs[uniform_int(rng, 0, kVerbs.size() - 1)];
    out += ' ';
    out += kObjects[uniform_int(rng, 0, kObjects.size() - 1)];
    out += ' ';
    out += kTails[uniform_int(rng, 0, kTails.size() - 1)];
    out += '.';
  } while (static_cast<int64_t>(out.size()) < chars);
  return out;
}

Status corpus_options_validate(const CorpusOptions& opt) {
  const ArithmeticOptions& a = opt.arithmetic;
  if (a.min_digits < 1 || a.max_digits > 9 || a.min_digits > a.max_digits)
    return InvalidArgument("corpus: arithmetic digits must satisfy 1 <= min_digits <= max_digits <= 9, got " +
                           std::to_string(a.min_digits) + ".." + std::to_string(a.max_digits));
  if (a.ops.empty() || a.ops.find_first_not_of("+-*") != std::string::npos)
    return InvalidArgument("corpus: arithmetic ops '" + a.ops + "' must be a non-empty subset of \"+-*\"");
  if (!(a.teacher_slip >= 0 && a.teacher_slip <= 1))
    return InvalidArgument("corpus: arithmetic teacher_slip must be in [0, 1], got " + std::to_string(a.teacher_slip));
  if (opt.passkey_chars < 0) return InvalidArgument("corpus: passkey_chars must be >= 0");
  if (opt.prose_chars < 0) return InvalidArgument("corpus: prose_chars must be >= 0");
  if (std::isnan(opt.passkey_depth) || opt.passkey_depth > 1)
    return InvalidArgument("corpus: passkey_depth must be in [0, 1] (or negative for random)");
  const double m[3] = {opt.mix_arithmetic, opt.mix_passkey, opt.mix_prose};
  for (double v : m)
    if (!(v >= 0) || !std::isfinite(v)) return InvalidArgument("corpus: mix proportions must be finite and >= 0");
  if (!(m[0] + m[1] + m[2] > 0)) return InvalidArgument("corpus: mix proportions must not all be 0");
  return Status::Ok();
}

std::string corpus_document(CorpusTask task, uint64_t seed, int64_t index, const CorpusOptions& opt) {
  const uint64_t ds = document_seed(seed, index);
  PhiloxStream rng(ds, kMixStream);
  enum class Kind { kArithmetic, kPasskey, kProse };
  Kind kind = task == CorpusTask::kArithmetic ? Kind::kArithmetic : Kind::kPasskey;
  if (task == CorpusTask::kMix) {
    const double total = opt.mix_arithmetic + opt.mix_passkey + opt.mix_prose;
    const double u = rng.next_uniform() * total;
    if (u < opt.mix_arithmetic) kind = Kind::kArithmetic;
    else if (u < opt.mix_arithmetic + opt.mix_passkey || opt.mix_prose == 0) kind = Kind::kPasskey;  // rounding guard
    else kind = Kind::kProse;
  }
  switch (kind) {
    case Kind::kArithmetic: return make_arithmetic(ds, opt.arithmetic).text;
    case Kind::kPasskey: {
      const double depth = opt.passkey_depth >= 0 ? opt.passkey_depth : rng.next_uniform();
      return make_passkey(ds, opt.passkey_chars, depth).text();
    }
    case Kind::kProse: return make_prose(ds, opt.prose_chars);
  }
  return {};
}

Status write_corpus_jsonl(CorpusTask task, int64_t n, uint64_t seed, const CorpusOptions& opt, const std::string& path) {
  if (n <= 0) return InvalidArgument("corpus: the number of documents must be positive, got " + std::to_string(n));
  MARIANA_RETURN_IF_ERROR(corpus_options_validate(opt));
  std::string out;
  for (int64_t i = 0; i < n; ++i) {
    out += nlohmann::json{{"text", corpus_document(task, seed, i, opt)}}.dump();
    out += '\n';
  }
  return write_file_atomic(path, out);
}

}  // namespace mariana
