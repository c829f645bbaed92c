// Built-in corpora: reproducible from the seed, arithmetic worked correctly (every "x op y = z"
// step is re-evaluated), passkeys placed at the asked depth, mix proportions as configured.
#include <cmath>
#include <regex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "core/file_util.h"
#include "tests/core/temp_dir.h"
#include "train/corpora.h"
#include "train/data.h"

namespace mariana {
namespace {

// Left-to-right value of "a op b op c" (the steps never mix * with + or -).
int64_t evaluate(const std::string& expr) {
  std::istringstream in(expr);
  int64_t v = 0, x = 0;
  char op = 0;
  in >> v;
  while (in >> op >> x) v = op == '+' ? v + x : op == '-' ? v - x : v * x;
  return v;
}

// Checks one arithmetic document; returns the number of steps it verified.
int check_arithmetic(const std::string& text) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(text, m, std::regex(R"(^Q: (\d+) ([-+*]) (\d+) = \?\nA: )"))) << text;
  if (m.empty()) return 0;
  const int64_t a = std::stoll(m[1]), b = std::stoll(m[3]);
  const char op = m[2].str()[0];
  const int64_t want = op == '+' ? a + b : op == '-' ? a - b : a * b;
  std::smatch f;
  EXPECT_TRUE(std::regex_search(text, f, std::regex(R"(\n#### (-?\d+)\n$)"))) << text;
  if (f.empty()) return 0;
  EXPECT_EQ(std::stoll(f[1]), want) << text;
  EXPECT_NE(text.find("\n" + m[1].str() + " " + op + " " + m[3].str() + " = " + std::to_string(want) + "\n#### "),
            std::string::npos)
      << text;
  // Every worked step "x op y [op z] = r" holds.
  int steps = 0;
  const std::regex step(R"((\d+(?: [-+*] \d+)+) = (-?\d+))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), step); it != std::sregex_iterator(); ++it, ++steps)
    EXPECT_EQ(evaluate((*it)[1]), std::stoll((*it)[2])) << (*it)[0] << "\nin\n" << text;
  return steps;
}

TEST(Corpora, ArithmeticFormatExample) {
  EXPECT_EQ(arithmetic_worked(347, '+', 85),
            "Q: 347 + 85 = ?\nA: Add the digits from the right.\n"
            "7 + 5 = 12, write 2, carry 1.\n4 + 8 + 1 = 13, write 3, carry 1.\n3 + 1 = 4, write 4.\n"
            "347 + 85 = 432\n#### 432\n");
  EXPECT_EQ(arithmetic_worked(52, '-', 347),
            "Q: 52 - 347 = ?\nA: 52 < 347, so 52 - 347 = -(347 - 52).\nSubtract the digits from the right.\n"
            "7 - 2 = 5, write 5.\n4 - 5 < 0, so 14 - 5 = 9, write 9, borrow 1.\n3 - 1 = 2, write 2.\n"
            "347 - 52 = 295\n52 - 347 = -295\n#### -295\n");
  EXPECT_EQ(arithmetic_worked(347, '*', 85),
            "Q: 347 * 85 = ?\nA: Multiply 347 by each digit of 85 from the right.\n"
            "347 * 5 = 1735.\n347 * 8 = 2776, shifted 1 place: 27760.\n1735 + 27760 = 29495.\n"
            "347 * 85 = 29495\n#### 29495\n");
  EXPECT_EQ(arithmetic_worked(95, '+', 7),
            "Q: 95 + 7 = ?\nA: Add the digits from the right.\n5 + 7 = 12, write 2, carry 1.\n"
            "9 + 1 = 10, write 0, carry 1.\nwrite the carry 1.\n95 + 7 = 102\n#### 102\n");
}

TEST(Corpora, ArithmeticAnswersAndStepsAreCorrect) {
  ArithmeticOptions o;
  int64_t steps = 0;
  for (int digits : {1, 3, 9}) {
    o.min_digits = 1;
    o.max_digits = digits;
    for (uint64_t s = 0; s < 400; ++s) {
      const ArithmeticProblem p = make_arithmetic(s * 31 + digits, o);
      EXPECT_LT(p.a, static_cast<int64_t>(std::pow(10, digits)));
      EXPECT_LT(p.b, static_cast<int64_t>(std::pow(10, digits)));
      EXPECT_EQ(p.answer, p.op == '+' ? p.a + p.b : p.op == '-' ? p.a - p.b : p.a * p.b);
      steps += check_arithmetic(p.text);
    }
  }
  EXPECT_GT(steps, 5000);
  // Edge cases: zeros, borrows through zeros, the largest operands.
  for (auto [a, op, b] : std::vector<std::tuple<int64_t, char, int64_t>>{
           {0, '+', 0}, {1000, '-', 1}, {1, '-', 1000}, {5, '-', 5}, {999999999, '*', 999999999},
           {999999999, '+', 1}, {100, '*', 0}, {0, '-', 0}, {10, '*', 10}}) {
    check_arithmetic(arithmetic_worked(a, op, b));
  }
}

// The imperfect teacher (teacher_slip): the slipped text forgets every carry and borrow, its answer
// lines give what the written digits make, and the problem and its true answer do not change.
TEST(Corpora, TeacherSlipForgetsCarriesAndBorrows) {
  EXPECT_EQ(arithmetic_worked(347, '+', 85, /*forget_carries=*/true),
            "Q: 347 + 85 = ?\nA: Add the digits from the right.\n"
            "7 + 5 = 12, write 2, carry 1.\n4 + 8 = 12, write 2, carry 1.\nbring down 3.\n"
            "347 + 85 = 322\n#### 322\n");
  EXPECT_EQ(arithmetic_worked(95, '+', 7, true),
            "Q: 95 + 7 = ?\nA: Add the digits from the right.\n5 + 7 = 12, write 2, carry 1.\n"
            "bring down 9.\n95 + 7 = 92\n#### 92\n");
  EXPECT_EQ(arithmetic_worked(52, '-', 347, true),
            "Q: 52 - 347 = ?\nA: 52 < 347, so 52 - 347 = -(347 - 52).\nSubtract the digits from the right.\n"
            "7 - 2 = 5, write 5.\n4 - 5 < 0, so 14 - 5 = 9, write 9, borrow 1.\nbring down 3.\n"
            "347 - 52 = 395\n52 - 347 = -395\n#### -395\n");
  EXPECT_EQ(arithmetic_worked(1000, '-', 1, true),
            "Q: 1000 - 1 = ?\nA: Subtract the digits from the right.\n0 - 1 < 0, so 10 - 1 = 9, write 9, borrow 1.\n"
            "bring down 0.\nbring down 0.\nbring down 1.\n1000 - 1 = 1009\n#### 1009\n");
  // No carry, no borrow, or multiplication: the slip changes nothing.
  for (auto [a, op, b] : std::vector<std::tuple<int64_t, char, int64_t>>{{12, '+', 34}, {98, '-', 76}, {347, '*', 85}})
    EXPECT_EQ(arithmetic_worked(a, op, b, true), arithmetic_worked(a, op, b));

  ArithmeticOptions clean, half, always;
  clean.ops = half.ops = always.ops = "+-";
  clean.max_digits = half.max_digits = always.max_digits = 2;
  half.teacher_slip = 0.5;
  always.teacher_slip = 1;
  int affected = 0, slipped = 0;
  for (uint64_t s = 0; s < 2000; ++s) {
    const ArithmeticProblem c = make_arithmetic(s, clean), h = make_arithmetic(s, half), w = make_arithmetic(s, always);
    ASSERT_EQ(std::make_tuple(c.a, c.op, c.b, c.answer), std::make_tuple(w.a, w.op, w.b, w.answer));
    ASSERT_EQ(std::make_tuple(c.a, c.op, c.b, c.answer), std::make_tuple(h.a, h.op, h.b, h.answer));
    EXPECT_EQ(c.text, arithmetic_worked(c.a, c.op, c.b));
    EXPECT_EQ(w.text, arithmetic_worked(c.a, c.op, c.b, true));
    const bool changed = w.text != c.text;
    const bool wrong = w.text.find("\n#### " + std::to_string(c.answer) + "\n") == std::string::npos;
    EXPECT_EQ(changed, wrong) << w.text;  // a slip that mattered always ends in a wrong answer
    affected += changed;
    EXPECT_TRUE(h.text == c.text || h.text == w.text);
    slipped += h.text != c.text;
  }
  EXPECT_GT(affected, 600);  // 1-2 digit + and -: about 40% carry or borrow
  EXPECT_NEAR(static_cast<double>(slipped) / affected, 0.5, 0.06);
}

TEST(Corpora, ArithmeticDigitCountsAndOps) {
  ArithmeticOptions o;
  o.min_digits = 4;
  o.max_digits = 4;
  o.ops = "*";
  for (uint64_t s = 0; s < 200; ++s) {
    const ArithmeticProblem p = make_arithmetic(s, o);
    EXPECT_EQ(p.op, '*');
    EXPECT_GE(p.a, 1000);
    EXPECT_LE(p.a, 9999);
    EXPECT_GE(p.b, 1000);
    EXPECT_LE(p.b, 9999);
  }
}

TEST(Corpora, PasskeyPlacement) {
  for (int64_t chars : {0, 50, 1000, 20000}) {
    for (double depth : {0.0, 0.25, 0.5, 1.0}) {
      const PasskeySample p = make_passkey(17 + chars, chars, depth);
      const std::string key = std::to_string(p.passkey);
      ASSERT_EQ(key.size(), 5u);
      EXPECT_EQ(p.answer, " " + key);
      const std::string sentence = "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
      ASSERT_EQ(p.prompt.compare(p.key_offset, sentence.size(), sentence), 0) << p.prompt;
      const std::string question = " What is the pass key? The pass key is";
      ASSERT_EQ(p.prompt.substr(p.prompt.size() - question.size()), question);
      // Filler: whole sentences, at most `chars` characters and within one sentence of it.
      const int64_t filler = static_cast<int64_t>(p.prompt.size() - question.size() - sentence.size()) -
                             (chars >= 19 ? 1 : 0);  // the space joining key sentence and filler
      EXPECT_LE(filler, chars);
      EXPECT_GT(filler, chars - 23);
      // The key sits at the asked depth, to within one filler sentence (<= 22 characters).
      if (filler > 0) {
        EXPECT_NEAR(static_cast<double>(p.key_offset), depth * static_cast<double>(filler), 22.0);
      }
      EXPECT_EQ(p.text(), p.prompt + p.answer);
    }
  }
  EXPECT_EQ(make_passkey(3, 500, 0.3).text(), make_passkey(3, 500, 0.3).text());
  EXPECT_NE(make_passkey(3, 500, 0.3).passkey, make_passkey(4, 500, 0.3).passkey);
  EXPECT_EQ(make_passkey(3, 500, 0.0).key_offset, 0);
}

TEST(Corpora, DeterministicAndIndependentOfCount) {
  CorpusOptions o;
  for (CorpusTask t : {CorpusTask::kArithmetic, CorpusTask::kPasskey, CorpusTask::kMix}) {
    std::vector<std::string> a, b;
    for (int64_t i = 0; i < 20; ++i) {
      a.push_back(corpus_document(t, 5, i, o));
      b.push_back(corpus_document(t, 6, i, o));
      EXPECT_EQ(a.back(), corpus_document(t, 5, i, o));
    }
    EXPECT_NE(a, b) << corpus_task_name(t);
  }
  TempDir dir;
  ASSERT_TRUE(write_corpus_jsonl(CorpusTask::kMix, 10, 1, o, dir.file("a.jsonl")).ok());
  ASSERT_TRUE(write_corpus_jsonl(CorpusTask::kMix, 10, 1, o, dir.file("b.jsonl")).ok());
  ASSERT_TRUE(write_corpus_jsonl(CorpusTask::kMix, 4, 1, o, dir.file("c.jsonl")).ok());
  const std::string a = *read_file(dir.file("a.jsonl")), c = *read_file(dir.file("c.jsonl"));
  EXPECT_EQ(a, *read_file(dir.file("b.jsonl")));
  EXPECT_EQ(a.substr(0, c.size()), c);  // the first 4 documents do not depend on n
}

TEST(Corpora, MixProportions) {
  CorpusOptions o;
  o.mix_arithmetic = 0.5;
  o.mix_passkey = 0.2;
  o.mix_prose = 0.3;
  o.passkey_chars = 100;
  const int64_t n = 3000;
  int64_t arith = 0, passkey = 0, prose = 0;
  for (int64_t i = 0; i < n; ++i) {
    const std::string d = corpus_document(CorpusTask::kMix, 77, i, o);
    if (d.rfind("Q: ", 0) == 0) ++arith;
    else if (d.find("The pass key is") != std::string::npos) ++passkey;
    else ++prose;
  }
  // Each count is Binomial(n, p); 5 sigma keeps a false failure below 1e-6.
  EXPECT_NEAR(static_cast<double>(arith), n * 0.5, 5 * std::sqrt(n * 0.25));
  EXPECT_NEAR(static_cast<double>(passkey), n * 0.2, 5 * std::sqrt(n * 0.16));
  EXPECT_NEAR(static_cast<double>(prose), n * 0.3, 5 * std::sqrt(n * 0.21));
  o.mix_passkey = 0;
  o.mix_prose = 0;
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(corpus_document(CorpusTask::kMix, 1, i, o).rfind("Q: ", 0), 0u);
}

TEST(Corpora, ProseLength) {
  EXPECT_FALSE(make_prose(1, 0).empty());
  const std::string p = make_prose(1, 500);
  EXPECT_GE(p.size(), 500u);
  EXPECT_LT(p.size(), 600u);
  EXPECT_EQ(p.back(), '.');
}

TEST(Corpora, JsonlPreparesAndBadOptionsAreRejected) {
  TempDir dir;
  CorpusOptions o;
  ASSERT_TRUE(write_corpus_jsonl(CorpusTask::kArithmetic, 25, 3, o, dir.file("a.jsonl")).ok());
  TokenEncoder enc;
  enc.vocab_size = 256;
  enc.encode = [](std::string_view t) { return std::vector<int32_t>(t.begin(), t.end()); };
  PrepareOptions po;
  po.inputs = {dir.file("a.jsonl")};
  po.out_dir = dir.file("data");
  auto r = data_prepare(enc, po);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->documents, 25);
  EXPECT_EQ(r->skipped, 0);

  EXPECT_EQ(write_corpus_jsonl(CorpusTask::kMix, 0, 1, o, dir.file("x.jsonl")).code(), StatusCode::kInvalidArgument);
  CorpusOptions bad = o;
  bad.arithmetic.max_digits = 10;
  EXPECT_EQ(write_corpus_jsonl(CorpusTask::kArithmetic, 1, 1, bad, dir.file("x.jsonl")).code(), StatusCode::kInvalidArgument);
  bad = o;
  bad.passkey_depth = 1.5;
  EXPECT_EQ(corpus_options_validate(bad).code(), StatusCode::kInvalidArgument);
  bad = o;
  bad.mix_arithmetic = bad.mix_passkey = bad.mix_prose = 0;
  EXPECT_EQ(corpus_options_validate(bad).code(), StatusCode::kInvalidArgument);
  bad = o;
  bad.arithmetic.teacher_slip = 1.5;
  EXPECT_EQ(corpus_options_validate(bad).code(), StatusCode::kInvalidArgument);
  bad = o;
  bad.arithmetic.ops = "+/";
  EXPECT_EQ(corpus_options_validate(bad).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.jsonl")));
  EXPECT_EQ(corpus_task_parse("poetry").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*corpus_task_parse("passkey"), CorpusTask::kPasskey);
}

}  // namespace
}  // namespace mariana

namespace mariana {

TEST(Corpora, ArithmeticSplitsAreDisjointAndHeldOutIsATenth) {
  ArithmeticOptions train, held;
  held.split = ArithmeticSplit::kHeldOut;
  int64_t held_count = 0, total = 0;
  for (int64_t a = 0; a < 100; ++a)
    for (int64_t b = 0; b < 100; ++b)
      for (char op : std::string("+-*")) {
        held_count += arithmetic_held_out(a, op, b);
        ++total;
      }
  EXPECT_NEAR(static_cast<double>(held_count) / total, 0.1, 0.01);
  for (uint64_t s = 0; s < 2000; ++s) {
    const ArithmeticProblem t = make_arithmetic(s, train), h = make_arithmetic(s, held);
    ASSERT_FALSE(arithmetic_held_out(t.a, t.op, t.b)) << t.text;
    ASSERT_TRUE(arithmetic_held_out(h.a, h.op, h.b)) << h.text;
  }
  // The training corpus (mix and arithmetic) never contains a held-out problem.
  CorpusOptions o;
  for (int64_t i = 0; i < 500; ++i) {
    const std::string doc = corpus_document(CorpusTask::kArithmetic, 3, i, o);
    long long a = 0, b = 0;
    char op = 0;
    ASSERT_EQ(std::sscanf(doc.c_str(), "Q: %lld %c %lld", &a, &op, &b), 3) << doc;
    ASSERT_FALSE(arithmetic_held_out(a, op, b)) << doc;
  }
}

}  // namespace mariana
