// Final-answer extraction and numeric comparison for the rule-based math reward. The accepted
// forms are documented, with examples, in rl/rewards/README.md; the table test in
// tests/rl/rewards/math_scorer_test.cc holds one pair per form.
#include "rl/rewards/math_scorer.h"

#include <algorithm>
#include <cctype>
#include <string_view>
#include <vector>

namespace mariana::rl {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::string lower_ascii(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

// The index one past the '}' matching the '{' at `open`, or npos when unbalanced.
size_t match_brace(const std::string& s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i + 1;
  }
  return std::string::npos;
}

// Unicode minus, dollar signs, percent signs, \left/\right, LaTeX spacing and thousands braces
// removed; \text{X}-like wrappers replaced by " X "; \dfrac and \tfrac spelled \frac.
std::string normalize(std::string s) {
  replace_all(s, "\xE2\x88\x92", "-");  // U+2212 MINUS SIGN
  replace_all(s, "\\dfrac", "\\frac");
  replace_all(s, "\\tfrac", "\\frac");
  for (std::string_view w : {"\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ",
                             "\\$", "$", "\\%", "%"})
    replace_all(s, w, "");
  replace_all(s, "{,}", ",");
  for (std::string_view cmd : {"\\text", "\\textbf", "\\textrm", "\\mathrm", "\\mathbf", "\\mbox"}) {
    size_t pos = 0;
    while ((pos = s.find(cmd, pos)) != std::string::npos) {
      const size_t open = pos + cmd.size();
      if (open >= s.size() || s[open] != '{') {
        pos = open;
        continue;
      }
      const size_t close = match_brace(s, open);
      if (close == std::string::npos) break;
      s = s.substr(0, pos) + " " + s.substr(open + 1, close - open - 2) + " " + s.substr(close);
    }
  }
  return s;
}

// sign · mantissa · 10^scale as an exact rational.
MathNumber make_number(bool negative, const std::string& mantissa, int scale) {
  MathNumber n;
  n.value = mpq_class(mpz_class(mantissa.empty() ? "0" : mantissa, 10));
  mpz_class p;
  mpz_ui_pow_ui(p.get_mpz_t(), 10, static_cast<unsigned long>(scale < 0 ? -scale : scale));
  if (scale >= 0)
    n.value *= p;
  else
    n.value /= p;
  if (negative) n.value = -n.value;
  n.value.canonicalize();
  return n;
}

// An unsigned decimal at s[i]: digits with ','-separated groups of three, an optional fraction
// and an optional exponent ("1,234.5e3", ".5"). Sets `end`.
std::optional<MathNumber> parse_unsigned(const std::string& s, size_t i, bool negative, size_t& end) {
  std::string mantissa;
  size_t j = i;
  size_t first_group = 0;
  while (j < s.size() && is_digit(s[j])) mantissa += s[j++], ++first_group;
  // Thousands separators: a comma followed by exactly three digits, after a first group of 1-3.
  if (first_group >= 1 && first_group <= 3) {
    while (j + 3 < s.size() && s[j] == ',' && is_digit(s[j + 1]) && is_digit(s[j + 2]) && is_digit(s[j + 3]) &&
           (j + 4 >= s.size() || !is_digit(s[j + 4]))) {
      mantissa.append(s, j + 1, 3);
      j += 4;
    }
  }
  int scale = 0;
  if (j + 1 < s.size() && s[j] == '.' && is_digit(s[j + 1])) {
    ++j;
    while (j < s.size() && is_digit(s[j])) mantissa += s[j++], --scale;
  }
  if (mantissa.empty()) return std::nullopt;
  if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
    size_t k = j + 1;
    bool neg_exp = false;
    if (k < s.size() && (s[k] == '+' || s[k] == '-')) neg_exp = s[k++] == '-';
    if (k < s.size() && is_digit(s[k])) {
      int exp = 0;
      while (k < s.size() && is_digit(s[k])) exp = std::min(exp * 10 + (s[k++] - '0'), 100000);
      scale += neg_exp ? -exp : exp;
      j = k;
    }
  }
  end = j;
  return make_number(negative, mantissa, scale);
}

std::optional<MathNumber> divide(const MathNumber& a, const MathNumber& b) {
  if (sgn(b.value) == 0) return std::nullopt;
  MathNumber q;
  q.value = a.value / b.value;
  return q;
}

// A signed decimal filling all of `arg` (a \frac argument), spaces allowed around it.
std::optional<MathNumber> parse_whole(const std::string& arg) {
  const std::string t = trim(arg);
  size_t i = 0;
  bool negative = false;
  if (i < t.size() && (t[i] == '-' || t[i] == '+')) negative = t[i++] == '-';
  while (i < t.size() && t[i] == ' ') ++i;
  size_t end = 0;
  auto n = parse_unsigned(t, i, negative, end);
  if (!n || end != t.size()) return std::nullopt;
  return n;
}

// A \frac argument at s[i]: "{...}" or a single character ("\frac12"). Sets `end`.
std::optional<std::string> frac_arg(const std::string& s, size_t i, size_t& end) {
  while (i < s.size() && s[i] == ' ') ++i;
  if (i >= s.size()) return std::nullopt;
  if (s[i] == '{') {
    const size_t close = match_brace(s, i);
    if (close == std::string::npos) return std::nullopt;
    end = close;
    return s.substr(i + 1, close - i - 2);
  }
  end = i + 1;
  return s.substr(i, 1);
}

// A '-' or '+' just before position i (spaces between allowed): negative?
bool sign_before(const std::string& s, size_t i) {
  while (i > 0 && s[i - 1] == ' ') --i;
  return i > 0 && s[i - 1] == '-';
}

// The first number in s; [begin, end) is its span (sign excluded).
std::optional<MathNumber> first_number(const std::string& s, size_t& begin, size_t& end) {
  for (size_t i = 0; i < s.size(); ++i) {
    begin = i;
    if (s.compare(i, 5, "\\frac") == 0) {
      size_t e1 = 0, e2 = 0;
      auto a = frac_arg(s, i + 5, e1);
      auto b = a ? frac_arg(s, e1, e2) : std::nullopt;
      auto na = a ? parse_whole(*a) : std::nullopt;
      auto nb = b ? parse_whole(*b) : std::nullopt;
      if (na && nb) {
        auto q = divide(*na, *nb);
        if (!q) return std::nullopt;
        if (sign_before(s, i)) q->value = -q->value;
        end = e2;
        return q;
      }
      continue;
    }
    if (!is_digit(s[i]) && !(s[i] == '.' && i + 1 < s.size() && is_digit(s[i + 1]))) continue;
    auto n = parse_unsigned(s, i, sign_before(s, i), end);
    if (!n) continue;
    size_t j = end;
    while (j < s.size() && s[j] == ' ') ++j;
    if (j < s.size() && s[j] == '/') {
      ++j;
      while (j < s.size() && s[j] == ' ') ++j;
      bool neg_den = false;
      if (j < s.size() && s[j] == '-') neg_den = true, ++j;
      size_t end2 = 0;
      if (j < s.size() && (is_digit(s[j]) || s[j] == '.')) {
        if (auto d = parse_unsigned(s, j, neg_den, end2)) {
          end = end2;
          return divide(*n, *d);
        }
      }
    }
    return n;
  }
  return std::nullopt;
}

bool has_answer_form(const std::string& text) {
  const std::string low = lower_ascii(text);
  return text.find("\\boxed") != std::string::npos || text.find("\\fbox") != std::string::npos ||
         low.find("####") != std::string::npos || low.find("the answer is") != std::string::npos ||
         low.find("answer:") != std::string::npos;
}

std::string normalize_text(const std::string& s) {
  std::string n = normalize(s);
  std::string out;
  for (char c : n)
    if (!std::isspace(static_cast<unsigned char>(c))) out += c;
  while (!out.empty() && out.back() == '.') out.pop_back();
  return lower_ascii(out);
}

}  // namespace

std::optional<std::string> math_extract_final_answer(const std::string& response) {
  // The last well-formed \boxed{...} or \fbox{...}.
  std::vector<size_t> starts;
  for (std::string_view cmd : {"\\boxed", "\\fbox"})
    for (size_t p = response.find(cmd); p != std::string::npos; p = response.find(cmd, p + 1))
      starts.push_back(p + cmd.size());
  std::sort(starts.rbegin(), starts.rend());
  for (size_t open : starts) {
    while (open < response.size() && response[open] == ' ') ++open;
    if (open >= response.size() || response[open] != '{') continue;
    const size_t close = match_brace(response, open);
    if (close != std::string::npos) return trim(std::string_view(response).substr(open + 1, close - open - 2));
  }
  // Else the text after the last answer marker.
  const std::string low = lower_ascii(response);
  size_t best = std::string::npos, best_len = 0;
  for (std::string_view m : {"####", "the answer is", "answer:"}) {
    const size_t p = low.rfind(m);
    if (p != std::string::npos && (best == std::string::npos || p > best)) best = p, best_len = m.size();
  }
  if (best == std::string::npos) return std::nullopt;
  size_t pos = best + best_len;
  while (pos <= response.size()) {
    size_t eol = response.find('\n', pos);
    if (eol == std::string::npos) eol = response.size();
    std::string line = trim(std::string_view(response).substr(pos, eol - pos));
    if (!line.empty()) return line;
    if (eol == response.size()) break;
    pos = eol + 1;
  }
  return std::nullopt;
}

namespace {

// The number of math_parse_number; `sole` tells whether the text it came from holds no other digit.
std::optional<MathNumber> parse_number(const std::string& text, bool& sole) {
  const std::string s = normalize(text);
  size_t begin = 0, end = 0;
  auto sole_in = [&](const std::string& seg) {
    for (size_t i = 0; i < seg.size(); ++i)
      if ((i < begin || i >= end) && is_digit(seg[i])) return false;
    return true;
  };
  const size_t eq = s.rfind('=');
  if (eq != std::string::npos) {
    const std::string tail = s.substr(eq + 1);
    if (auto n = first_number(tail, begin, end)) {
      sole = sole_in(tail);
      return n;
    }
  }
  auto n = first_number(s, begin, end);
  sole = n && sole_in(s);
  return n;
}

}  // namespace

std::optional<MathNumber> math_parse_number(const std::string& text) {
  bool sole = false;
  return parse_number(text, sole);
}

bool math_numbers_equal(const MathNumber& a, const MathNumber& b) { return a.value == b.value; }

bool math_answers_match(const std::string& answer, const std::string& reference) {
  std::string ref = reference;
  if (has_answer_form(reference))
    if (auto r = math_extract_final_answer(reference)) ref = *r;
  bool sole = false;
  if (auto ref_num = parse_number(ref, sole); ref_num && sole) {
    auto ans_num = math_parse_number(answer);
    return ans_num && math_numbers_equal(*ans_num, *ref_num);
  }
  return normalize_text(answer) == normalize_text(ref);
}

Status MathScorer::validate(const RewardSample& sample) const { return require_answer("math", sample); }

Result<RewardResult> MathScorer::score(const RewardSample& sample) {
  MARIANA_RETURN_IF_ERROR(validate(sample));
  RewardResult r;
  const std::optional<std::string> answer = math_extract_final_answer(sample.response);
  if (!answer || answer->empty()) {
    r.reason = "no answer";
    r.detail = "no \\boxed{...} and no answer marker (####, The answer is, Answer:) with text after it";
    return r;
  }
  if (math_answers_match(*answer, *sample.answer)) {
    r.reward = 1.0;
    r.ok = true;
    r.reason = kReasonCorrect;
    r.detail = "answer '" + *answer + "'";
    return r;
  }
  r.reason = "wrong answer";
  r.detail = "expected '" + *sample.answer + "', got '" + *answer + "'";
  return r;
}

}  // namespace mariana::rl
