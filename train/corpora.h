// Built-in corpora, so that no download is ever needed: worked arithmetic, passkey retrieval,
// template prose and a mix of the three. Every document is a pure function of (seed, index,
// options) through Philox, so a corpus is reproducible and its first k documents do not depend on
// how many are generated. `mariana data gen` writes them as JSONL ({"text": ...} per line).
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace mariana {

enum class CorpusTask { kArithmetic, kPasskey, kMix };
// "arithmetic" | "passkey" | "mix"; InvalidArgument naming the choices otherwise.
Result<CorpusTask> corpus_task_parse(const std::string& name);
const char* corpus_task_name(CorpusTask task);

// ---- Arithmetic ----
// One problem per document, worked digit by digit, ending with the marked answer line "#### N":
//
//   Q: 347 + 85 = ?
//   A: Add the digits from the right.
//   7 + 5 = 12, write 2, carry 1.
//   4 + 8 + 1 = 13, write 3, carry 1.
//   3 + 1 = 4, write 4.
//   347 + 85 = 432
//   #### 432
//
// Subtraction borrows column by column ("4 - 8 - 1 < 0, so 14 - 8 - 1 = 5, write 5, borrow 1.");
// a negative difference is worked as -(b - a). Multiplication lists one partial product per digit
// of the second operand ("347 * 8 = 2776, shifted 1 place: 27760.") and their running sum.
// The held-out split: a fixed tenth of all problems (a, op, b), chosen by a hash, that no
// training corpus ever contains; evaluations draw from it (`mariana eval --task arithmetic`).
enum class ArithmeticSplit { kTrain, kHeldOut, kAll };
bool arithmetic_held_out(int64_t a, char op, int64_t b);

struct ArithmeticOptions {
  int min_digits = 1, max_digits = 3;  // each operand's digit count, uniform in [min, max]; 1 ≤ min ≤ max ≤ 9
  std::string ops = "+-*";             // drawn uniformly from these
  ArithmeticSplit split = ArithmeticSplit::kTrain;  // problems are redrawn until in the split
  // An imperfect teacher, for SFT data that RL has something to correct: with this probability a
  // + or − problem's worked text forgets every carry or borrow (it still writes "carry 1." or
  // "borrow 1." but never applies it, and drops the final "write the carry 1."), so the text ends
  // in a wrong "#### N" whenever a carry or borrow mattered. 0 (the default): always right. The
  // problem and its `answer` (what evaluations and rewards compare with) never change.
  double teacher_slip = 0;  // in [0, 1]
};
struct ArithmeticProblem {
  int64_t a = 0, b = 0, answer = 0;
  char op = '+';
  std::string text;  // the worked document above
};
// A problem of the split (redrawn from the same Philox stream until it is in it).
ArithmeticProblem make_arithmetic(uint64_t seed, const ArithmeticOptions& opt);
// The worked text for a given problem (op one of + - *; 0 ≤ a, b < 10^9). forget_carries: the
// teacher's slip above (+ and − only), the answer lines then give what the written digits make.
std::string arithmetic_worked(int64_t a, char op, int64_t b, bool forget_carries = false);

// ---- Passkey retrieval ----
// Filler of repeated sentences ("The grass is green. The sky is blue. ...") of at most
// filler_chars characters (whole sentences, so within one sentence of it), with the sentence
// "The pass key is 71432. Remember it. 71432 is the pass key." inserted at the sentence boundary
// nearest relative depth `depth` in [0, 1], then the question. prompt + answer is the document;
// an evaluation feeds the prompt and checks the continuation against the answer.
struct PasskeySample {
  std::string prompt;   // "... What is the pass key? The pass key is"
  std::string answer;   // " 71432"
  int32_t passkey = 0;  // 5 digits, uniform in [10000, 99999]
  int64_t key_offset = 0;  // where the passkey sentence starts in prompt
  std::string text() const { return prompt + answer; }
};
PasskeySample make_passkey(uint64_t seed, int64_t filler_chars, double depth);

// ---- Prose ----
// Simple template sentences ("The old farmer carried a red bicycle before dawn."), at least one,
// until the text reaches `chars` characters.
std::string make_prose(uint64_t seed, int64_t chars);

// ---- Corpora ----
struct CorpusOptions {
  ArithmeticOptions arithmetic;
  int64_t passkey_chars = 1000;  // filler characters per passkey document
  double passkey_depth = -1;     // a fixed depth in [0, 1], or < 0: uniform per document
  int64_t prose_chars = 400;     // characters per prose document
  // The mix's proportions (normalized; each ≥ 0, sum > 0).
  double mix_arithmetic = 0.5, mix_passkey = 0.2, mix_prose = 0.3;
};
// InvalidArgument naming the field on a bad option.
Status corpus_options_validate(const CorpusOptions& opt);
// Document `index` of the corpus (options assumed valid).
std::string corpus_document(CorpusTask task, uint64_t seed, int64_t index, const CorpusOptions& opt);
// Documents 0..n-1 as JSONL, written atomically.
Status write_corpus_jsonl(CorpusTask task, int64_t n, uint64_t seed, const CorpusOptions& opt,
                          const std::string& path);

}  // namespace mariana
