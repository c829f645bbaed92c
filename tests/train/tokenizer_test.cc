// The byte-level BPE tokenizer: pre-tokenizer splits (expected values printed by HF tokenizers
// 0.20.3's ByteLevel pre-tokenizer), exact round trips on random bytes and on a text corpus, merges
// worked out by hand on small corpora, encode against a naive BPE, save/load identity, special
// tokens and the errors a bad tokenizer.json gets.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "train/tokenizer.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;
using Merges = std::vector<std::pair<std::string, std::string>>;

// A seeded pseudo-English corpus: words, numbers, punctuation, contractions, newlines and a few
// accented words.
std::string make_corpus(size_t bytes, uint32_t seed) {
  static const char* kWords[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "token", "tokenizer",
                                 "merge", "merges", "lower", "lowest", "newer", "wider", "byte", "pair", "encoding",
                                 "Mariana", "model", "café", "über", "naïve", "résumé", "it's", "we're", "don't", "I'll"};
  static const char* kPunct[] = {".", ",", "!", "?", ";", ":", " -", " (x)", "\"", "...", "'"};
  std::mt19937 rng(seed);
  std::string out;
  while (out.size() < bytes) {
    const uint32_t r = rng() % 100;
    if (r < 70) {
      out += kWords[rng() % std::size(kWords)];
    } else if (r < 80) {
      out += std::to_string(rng() % 100000);
    } else if (r < 90) {
      out += kPunct[rng() % std::size(kPunct)];
    } else if (r < 95) {
      out += "\n";
    } else {
      out += "  ";
    }
    out += rng() % 7 == 0 ? "\n" : " ";
  }
  return out;
}

// Strings that stress byte-level handling: invalid UTF-8, NULs, long runs, mixed classes.
std::string random_bytes(std::mt19937& rng) {
  std::string s;
  const uint32_t kind = rng() % 6;
  const size_t len = rng() % 300;
  switch (kind) {
    case 0:  // uniform bytes
      for (size_t i = 0; i < len; ++i) s.push_back(static_cast<char>(rng() & 0xFF));
      break;
    case 1:  // long run of one byte (letters, spaces, NULs, 0xFF)
      s.assign(len * 20, "a \0\xff\n"[rng() % 5]);
      break;
    case 2: {  // text fragments with bytes thrown in
      const std::string text = make_corpus(len, rng());
      for (char c : text) {
        s.push_back(rng() % 10 == 0 ? static_cast<char>(rng() & 0xFF) : c);
      }
      break;
    }
    case 3:  // truncated and overlong UTF-8 sequences, surrogates
      for (size_t i = 0; i < len / 3; ++i) {
        static const char* kBad[] = {"\xC3", "\xE2\x82", "\xF0\x9F\x98", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80", "é", "\xF0\x9F\x98\x80"};
        s += kBad[rng() % std::size(kBad)];
      }
      break;
    case 4:  // whitespace mixtures
      for (size_t i = 0; i < len; ++i) s.push_back(" \t\n\r\x0b\x0cx'"[rng() % 8]);
      break;
    default:
      s = "";
  }
  return s;
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    corpus_ = new std::string(make_corpus(200000, 7));
    TokenizerTrainOptions opt;
    opt.vocab_size = 1000;
    auto t = Tokenizer::train_from_texts({*corpus_}, opt);
    ASSERT_TRUE(t.ok()) << t.status().to_string();
    tok_ = new Tokenizer(std::move(t).value());
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete corpus_;
  }
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mariana_tok_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string p(const std::string& rel) const { return (dir_ / rel).string(); }
  void write(const std::string& rel, const std::string& text) const { std::ofstream(p(rel), std::ios::binary) << text; }

  static std::string* corpus_;
  static Tokenizer* tok_;
  fs::path dir_;
};
std::string* TokenizerTest::corpus_ = nullptr;
Tokenizer* TokenizerTest::tok_ = nullptr;

std::vector<std::string> pieces(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view v : tokenizer_pretokenize(text)) out.emplace_back(v);
  return out;
}

TEST(TokenizerPretokenize, MatchesHfByteLevelSplit) {
  // tokenizers 0.20.3: pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True).
  EXPECT_EQ(pieces("Hello  world's 123  \n\n  x\t é ü 12abc ?!! '  's 'S"),
            (std::vector<std::string>{"Hello", " ", " world", "'s", " 123", "  \n\n ", " x", "\t", " é", " ü", " 12", "abc",
                                      " ?!!", " '", " ", " '", "s", " '", "S"}));
  EXPECT_EQ(pieces("I'll we're they've I'm he'd don't 'LL"),
            (std::vector<std::string>{"I", "'ll", " we", "'re", " they", "'ve", " I", "'m", " he", "'d", " don", "'t", " '", "LL"}));
  // White_Space beyond ASCII (U+00A0, U+2003) splits; U+200B (a format character) does not count as space.
  EXPECT_EQ(pieces("a \u00a0b"), (std::vector<std::string>{"a", " ", "\u00a0", "b"}));
  EXPECT_EQ(pieces("a \u2003b"), (std::vector<std::string>{"a", " ", "\u2003", "b"}));
  EXPECT_EQ(pieces("a \u200bb"), (std::vector<std::string>{"a", " \u200b", "b"}));
  EXPECT_EQ(pieces("x\u00d7y\u00b2z\u2019w"), (std::vector<std::string>{"x", "\u00d7", "y", "\u00b2", "z", "\u2019", "w"}));
  EXPECT_EQ(pieces("trailing  "), (std::vector<std::string>{"trailing", "  "}));
  EXPECT_EQ(pieces("\t\tx"), (std::vector<std::string>{"\t", "\t", "x"}));
  EXPECT_EQ(pieces(""), std::vector<std::string>{});
  // Bytes that are not valid UTF-8 match no class: each run of them is a piece of its own.
  EXPECT_EQ(pieces("ab\xff\xfe!cd \x80"), (std::vector<std::string>{"ab", "\xff\xfe", "!", "cd", " ", "\x80"}));
}

// Unicode classes beyond Latin-1, where the hand-written split of earlier versions took every
// code point for a letter. Expected pieces from tokenizers 0.20.3 (Split with the same regex).
TEST(TokenizerPretokenize, MatchesHfOnMarksIndicCjkDigitsAndSpaces) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces("cafe\u0301 नमस्ते தமிழ் ไทย"),
            (V{"cafe", "\u0301", " नमस", "\u094d", "त", "\u0947", " தம", "\u0bbf", "ழ", "\u0bcd", " ไทย"}));
  EXPECT_EQ(pieces("你好，世界！「引用」。"), (V{"你好", "，", "世界", "！「", "引用", "」。"}));
  EXPECT_EQ(pieces("١٢٣ ٤٥ ０１２ x²"), (V{"١٢٣", " ٤٥", " ０１２", " x", "²"}));
  // U+180E is not White_Space (PCRE2's own \s would take it); U+3000 and U+00A0 are.
  EXPECT_EQ(pieces("a\u180eb\u3000c\u00a0 d"), (V{"a", "\u180e", "b", "\u3000", "c", "\u00a0", " d"}));
  EXPECT_EQ(pieces("👨\u200d👩\u200d👧 ok"), (V{"👨\u200d👩\u200d👧", " ok"}));
}

TEST(TokenizerPretokenize, PiecesConcatenateToTheInput) {
  std::mt19937 rng(1);
  for (int i = 0; i < 1000; ++i) {
    const std::string s = random_bytes(rng);
    std::string joined;
    for (std::string_view v : tokenizer_pretokenize(s)) {
      ASSERT_FALSE(v.empty());
      joined += v;
    }
    ASSERT_EQ(joined, s);
  }
}

TEST_F(TokenizerTest, RoundTripsRandomBytes) {
  std::mt19937 rng(42);
  for (int i = 0; i < 1000; ++i) {
    const std::string s = random_bytes(rng);
    const std::vector<int32_t> ids = tok_->encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok_->vocab_size() - kNumSpecialTokens);
    ASSERT_EQ(tok_->decode(ids), s) << "case " << i;
  }
  const std::string nuls(1000, '\0');
  EXPECT_EQ(tok_->decode(tok_->encode(nuls)), nuls);
}

TEST_F(TokenizerTest, RoundTripsTheCorpusAndCompresses) {
  const std::vector<int32_t> ids = tok_->encode(*corpus_);
  EXPECT_EQ(tok_->decode(ids), *corpus_);
  // 1000 tokens on a 29-word vocabulary: nearly every word is one token.
  EXPECT_LT(ids.size(), corpus_->size() / 3);
  const std::string other = make_corpus(50000, 99);
  EXPECT_EQ(tok_->decode(tok_->encode(other)), other);
}

// The classic BPE example: one word, three merges above min_frequency 2.
TEST(TokenizerTrain, KnownMergesOnAaabdaaabac) {
  TokenizerTrainOptions opt;
  opt.vocab_size = 1000;
  opt.min_frequency = 2;
  auto t = Tokenizer::train_from_texts({"aaabdaaabac"}, opt);
  ASSERT_TRUE(t.ok());
  // counts: aa 4 -> merge; then (aa,a) 2 and (a,b) 2 tie, "a" < "aa" so (a,b); then (aa,ab) 2.
  EXPECT_EQ(t->merges(), (Merges{{"a", "a"}, {"a", "b"}, {"aa", "ab"}}));
  EXPECT_EQ(t->vocab_size(), 256 + 3 + kNumSpecialTokens);
  EXPECT_EQ(t->token_bytes(256), "aa");
  EXPECT_EQ(t->token_bytes(258), "aaab");
  const std::vector<int32_t> ids = t->encode("aaabdaaabac");
  EXPECT_EQ(ids, (std::vector<int32_t>{258, 'd', 258, 'a', 'c'}));
}

TEST(TokenizerTrain, KnownMergesOnLowLowerNewestWidest) {
  std::string text = "low";
  for (int i = 0; i < 4; ++i) text += " low";
  for (int i = 0; i < 2; ++i) text += " lower";
  for (int i = 0; i < 6; ++i) text += " newest";
  for (int i = 0; i < 3; ++i) text += " widest";
  TokenizerTrainOptions opt;
  opt.vocab_size = 1000;
  auto t = Tokenizer::train_from_texts({text}, opt);
  ASSERT_TRUE(t.ok());
  // Words: "low" 1, " low" 4, " lower" 2, " newest" 6, " widest" 3. Pair counts: es 9, st 9 (tie:
  // "e" < "s"), then est 9; lo 7 = ow 7 ("l" < "o"); low 7; then five pairs at 6 ordered by left
  // then right bytes: (" ", "low") < (" ", "n"); then (" n", "e"), (" ne", "w"), (" new", "est").
  const Merges want = {{"e", "s"},     {"es", "t"},   {"l", "o"},     {"lo", "w"},    {" ", "low"},
                       {" ", "n"},     {" n", "e"},   {" ne", "w"},   {" new", "est"}, {" ", "w"}};
  const Merges got = t->merges();
  ASSERT_GE(got.size(), want.size());
  EXPECT_EQ(Merges(got.begin(), got.begin() + want.size()), want);
  EXPECT_EQ(t->encode(" newest low"), (std::vector<int32_t>{256 + 8, 256 + 4}));
}

TEST(TokenizerTrain, StopsAtVocabSizeAndIsDeterministic) {
  const std::string corpus = make_corpus(50000, 3);
  TokenizerTrainOptions opt;
  opt.vocab_size = 300;
  auto a = Tokenizer::train_from_texts({corpus}, opt);
  auto b = Tokenizer::train_from_texts({corpus}, opt);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->vocab_size(), 300);
  EXPECT_GE(a->num_merges(), 300 - 256 - kNumSpecialTokens);  // more if a merge re-created a token
  EXPECT_EQ(a->merges(), b->merges());
}

TEST(TokenizerTrain, MinFrequencyIsRespected) {
  TokenizerTrainOptions opt;
  opt.vocab_size = 1000;
  opt.min_frequency = 3;
  auto t = Tokenizer::train_from_texts({"ab ab ab cd cd"}, opt);
  ASSERT_TRUE(t.ok());
  // (a,b) 3 and (" ", "a") 2: only the first reaches 3.
  EXPECT_EQ(t->merges(), (Merges{{"a", "b"}}));
}

TEST(TokenizerTrain, RejectsAVocabTooSmallForBytesAndSpecials) {
  TokenizerTrainOptions opt;
  opt.vocab_size = 256 + kNumSpecialTokens - 1;
  auto t = Tokenizer::train_from_texts({"abc"}, opt);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("vocab_size"), std::string::npos);
  opt.vocab_size = 256 + kNumSpecialTokens;
  auto ok = Tokenizer::train_from_texts({"abc"}, opt);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->num_merges(), 0);
}

// Naive BPE from the merge list: apply the lowest-ranked adjacent pair, leftmost first, until none.
using RankMap = std::map<std::pair<std::string, std::string>, size_t>;
std::vector<std::string> naive_bpe(const RankMap& rank, std::string_view word) {
  std::vector<std::string> syms;
  for (char c : word) syms.emplace_back(1, c);
  for (;;) {
    size_t best = SIZE_MAX, at = 0;
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
      auto it = rank.find({syms[i], syms[i + 1]});
      if (it != rank.end() && it->second < best) best = it->second, at = i;
    }
    if (best == SIZE_MAX) return syms;
    syms[at] += syms[at + 1];
    syms.erase(syms.begin() + at + 1);
  }
}

TEST_F(TokenizerTest, EncodeMatchesNaiveBpe) {
  RankMap rank;
  const Merges merges = tok_->merges();
  for (size_t r = 0; r < merges.size(); ++r) rank.emplace(merges[r], r);
  std::mt19937 rng(5);
  const std::string sample = make_corpus(20000, 11);
  std::vector<std::string_view> words = tokenizer_pretokenize(sample);
  std::vector<std::string> extra;
  for (int i = 0; i < 200; ++i) extra.push_back(random_bytes(rng).substr(0, 60));
  for (const std::string& e : extra) {
    for (std::string_view v : tokenizer_pretokenize(e)) words.push_back(v);
  }
  for (std::string_view w : words) {
    std::vector<std::string> got;
    for (int32_t id : tok_->encode(w)) got.push_back(tok_->token_bytes(id));
    ASSERT_EQ(got, naive_bpe(rank, w)) << "word '" << w << "'";
  }
}

TEST_F(TokenizerTest, EncodeIsThreadSafe) {
  const std::string text = make_corpus(100000, 13);
  const std::vector<int32_t> want = Tokenizer(*tok_).encode(text);
  // A fresh load has a cold cache: four threads fill it at once.
  ASSERT_TRUE(tok_->save(p("t.json")).ok());
  auto fresh = Tokenizer::load(p("t.json"));
  ASSERT_TRUE(fresh.ok());
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&, i] { got[i] = fresh->encode(text); });
  for (auto& th : threads) th.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

TEST_F(TokenizerTest, SaveLoadGivesSameIdsAndByteIdenticalResave) {
  ASSERT_TRUE(tok_->save(p("a.json")).ok());
  auto loaded = Tokenizer::load(p("a.json"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  ASSERT_TRUE(loaded->save(p("b.json")).ok());
  EXPECT_EQ(read_file(p("a.json")).value(), read_file(p("b.json")).value());
  EXPECT_EQ(loaded->vocab_size(), tok_->vocab_size());
  EXPECT_EQ(loaded->merges(), tok_->merges());
  for (int s = 0; s < kNumSpecialTokens; ++s) {
    EXPECT_EQ(loaded->special_id(static_cast<SpecialToken>(s)), tok_->special_id(static_cast<SpecialToken>(s)));
  }
  EXPECT_EQ(loaded->encode(*corpus_), tok_->encode(*corpus_));
  std::mt19937 rng(8);
  for (int i = 0; i < 200; ++i) {
    const std::string s = random_bytes(rng);
    ASSERT_EQ(loaded->encode(s), tok_->encode(s));
  }
}

TEST_F(TokenizerTest, LoadsTheOlderSpaceSeparatedMergeForm) {
  ASSERT_TRUE(tok_->save(p("a.json")).ok());
  nlohmann::json j = nlohmann::json::parse(read_file(p("a.json")).value());
  // ["Ġ", "t"] -> "Ġ t", the form tokenizers < 0.20 writes.
  for (auto& m : j["model"]["merges"]) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const std::string out = j.dump(2);
  write("legacy.json", out);
  auto loaded = Tokenizer::load(p("legacy.json"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  EXPECT_EQ(loaded->merges(), tok_->merges());
}

TEST_F(TokenizerTest, SpecialTokensAreTheLastIdsAndDecodeToTheirText) {
  const int64_t v = tok_->vocab_size();
  for (int s = 0; s < kNumSpecialTokens; ++s) {
    const auto t = static_cast<SpecialToken>(s);
    EXPECT_EQ(tok_->special_id(t), v - kNumSpecialTokens + s);
    EXPECT_EQ(tok_->decode({tok_->special_id(t)}), special_token_text(t));
  }
  EXPECT_EQ(tok_->bos_id(), v - 8);
  EXPECT_EQ(tok_->eos_id(), v - 7);
  EXPECT_EQ(tok_->pad_id(), v - 1);
  EXPECT_STREQ(special_token_text(SpecialToken::kBos), "<｜begin▁of▁sentence｜>");
  EXPECT_STREQ(special_token_text(SpecialToken::kPad), "<｜▁pad▁｜>");
  const std::vector<int32_t> ids = tok_->encode("hello");
  std::vector<int32_t> framed = {tok_->bos_id()};
  framed.insert(framed.end(), ids.begin(), ids.end());
  framed.push_back(tok_->eos_id());
  framed.push_back(-1);       // out of range: skipped
  framed.push_back(1 << 30);  // out of range: skipped
  EXPECT_EQ(tok_->decode(framed), "<｜begin▁of▁sentence｜>hello<｜end▁of▁sentence｜>");
  // Special-token text in the input is the special token for encode() (as HF), ordinary bytes for
  // encode_ordinary().
  const std::string eos_text = std::string("x") + special_token_text(SpecialToken::kEos) + "y";
  EXPECT_EQ(tok_->encode(eos_text), (std::vector<int32_t>{'x', tok_->eos_id(), 'y'}));
  const std::vector<int32_t> plain = tok_->encode_ordinary(eos_text);
  for (int32_t id : plain) EXPECT_LT(id, v - kNumSpecialTokens);
  EXPECT_EQ(tok_->decode(plain), eos_text);
}

TEST_F(TokenizerTest, TrainsFromTextAndJsonlFiles) {
  write("a.txt", "low lower lowest\n");
  write("b.jsonl", "{\"text\": \"low lower\"}\n\n{\"text\": \"newer wider\"}\n");
  TokenizerTrainOptions opt;
  opt.vocab_size = 300;
  opt.min_frequency = 1;
  auto t = Tokenizer::train({p("a.txt"), p("b.jsonl")}, opt);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_GT(t->num_merges(), 0);
  write("bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": \"x\"}\n");
  auto bad = Tokenizer::train({p("bad.jsonl")}, opt);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(p("bad.jsonl") + ":2: missing field 'text'"), std::string::npos) << bad.status().to_string();
  write("broken.jsonl", "{\"text\": \n");
  auto broken = Tokenizer::train({p("broken.jsonl")}, opt);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.status().message().find(p("broken.jsonl") + ":1: invalid JSON"), std::string::npos);
  auto missing = Tokenizer::train({p("nope.txt")}, opt);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

// A DeepSeek-V3-shaped file: the pre-tokenizer is a Sequence of Splits then ByteLevel without its
// regex, and added tokens beyond Mariana's (special or not) are matched in the text.
TEST_F(TokenizerTest, LoadsSplitSequencesAndAddedTokens) {
  ASSERT_TRUE(tok_->save(p("t.json")).ok());
  nlohmann::json j = nlohmann::json::parse(read_file(p("t.json")).value());
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", nlohmann::json::array()}};
  j["pre_tokenizer"] = nlohmann::json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
      {"type": "Split", "pattern": {"String": "--"}, "behavior": "Removed", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})");
  const int64_t v = tok_->vocab_size();
  j["added_tokens"].push_back({{"id", v}, {"content", "<think>"}, {"single_word", false}, {"lstrip", false},
                               {"rstrip", false}, {"normalized", true}, {"special", false}});
  write("ds.json", j.dump());
  auto t = Tokenizer::load(p("ds.json"));
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->vocab_size(), v + 1);
  // "12345" -> "123" | "45"; "--" is removed.
  auto spelled = [&](std::string_view text) {
    std::vector<std::string> out;
    for (int32_t id : t->encode(text)) out.push_back(t->token_bytes(id));
    return out;
  };
  const std::vector<int32_t> ids = t->encode("a<think>12345--b");
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[1], v);
  EXPECT_EQ(t->decode(ids), "a<think>12345b");
  // No token crosses the boundary after "123".
  std::vector<size_t> ends;
  for (const std::string& piece : spelled("12345")) ends.push_back((ends.empty() ? 0 : ends.back()) + piece.size());
  EXPECT_NE(std::find(ends.begin(), ends.end(), 3u), ends.end());
  EXPECT_EQ(t->encode_ordinary("<think>"), tok_->encode_ordinary("<think>"));
  // Resaved, it keeps the pre-tokenizer and the added token.
  ASSERT_TRUE(t->save(p("ds2.json")).ok());
  auto again = Tokenizer::load(p("ds2.json"));
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(again->encode("a<think>12345--b xyz"), t->encode("a<think>12345--b xyz"));
}

// Saves the shared tokenizer, applies `edit` to its JSON text and loads it back.
class TokenizerBadJson : public TokenizerTest {
 protected:
  Status load_edited(const std::function<void(std::string&)>& edit) {
    EXPECT_TRUE(tok_->save(p("t.json")).ok());
    std::string text = read_file(p("t.json")).value();
    edit(text);
    write("bad.json", text);
    auto t = Tokenizer::load(p("bad.json"));
    return t.ok() ? Status::Ok() : t.status();
  }
  static void replace(std::string& s, const std::string& from, const std::string& to) {
    const size_t at = s.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    s.replace(at, from.size(), to);
  }
  void expect_error(const Status& st, const std::string& field) {
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
    EXPECT_NE(st.message().find(p("bad.json")), std::string::npos) << st.to_string();
    EXPECT_NE(st.message().find(field), std::string::npos) << st.to_string();
  }
};

TEST_F(TokenizerBadJson, MissingVocab) {
  expect_error(load_edited([](std::string& s) { replace(s, "\"vocab\": {", "\"vocab_gone\": {"); }), "'model.vocab'");
}

TEST_F(TokenizerBadJson, MergeReferencingAnUnknownToken) {
  expect_error(load_edited([](std::string& s) { replace(s, "\"merges\": [\n      [", "\"merges\": [\n      [\"nosuchtoken\", \"x\"], ["); }),
               "'model.merges[0]'");
}

TEST_F(TokenizerBadJson, MergedTokenNotInVocab) {
  // "Z" + "Z" is not a token of this corpus' vocab.
  expect_error(load_edited([](std::string& s) { replace(s, "\"merges\": [\n      [", "\"merges\": [\n      [\"Z\", \"Z\"], ["); }),
               "merged token \"ZZ\"");
}

TEST_F(TokenizerBadJson, WrongTypes) {
  expect_error(load_edited([](std::string& s) { replace(s, "\"vocab\": {", "\"vocab\": [], \"x\": {"); }), "'model.vocab': expected an object");
  expect_error(load_edited([](std::string& s) { replace(s, "\"merges\": [", "\"merges\": 3, \"x\": ["); }), "'model.merges': expected an array");
  expect_error(load_edited([](std::string& s) { replace(s, "\"!\": 33", "\"!\": \"thirty-three\""); }), "'model.vocab.!'");
  expect_error(load_edited([](std::string& s) { replace(s, "\"type\": \"BPE\"", "\"type\": \"WordPiece\""); }), "'model.type'");
  expect_error(load_edited([](std::string& s) { replace(s, "\"add_prefix_space\": false", "\"add_prefix_space\": true"); }),
               "'pre_tokenizer.add_prefix_space'");
  expect_error(load_edited([](std::string& s) { replace(s, "\"normalizer\": null", "\"normalizer\": {\"type\": \"NFC\"}"); }),
               "'normalizer.type': normalizer \"NFC\" is not supported");
}

TEST_F(TokenizerBadJson, MissingSpecialTokenAndGapsInIds) {
  expect_error(load_edited([](std::string& s) { replace(s, "\"content\":\"<｜User｜>\"", "\"content\":\"<｜Someone｜>\""); }),
               "missing special token \"<｜User｜>\"");
  expect_error(load_edited([](std::string& s) { replace(s, "\"!\": 33", "\"!\": 100000"); }), "no token has id");
  // Id 33 spells two NUL bytes instead of "!": byte 33 has no token left.
  expect_error(load_edited([](std::string& s) { replace(s, "\"!\": 33", "\"\u0100\u0100\": 33"); }), "byte 33");
}

TEST_F(TokenizerBadJson, PreTokenizersAndAddedTokensItCannotReproduce) {
  auto pre = [&](const std::string& json) {
    return load_edited([&](std::string& s) {
      replace(s, "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": true}", json);
    });
  };
  const std::string bl = "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}";
  expect_error(pre("{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}, "
                   "\"behavior\": \"Isolated\"}, " + bl + "]}"),
               "'pre_tokenizer.pretokenizers[0].pattern.Regex': escape \\w is not supported");
  expect_error(pre("{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
                   "\"behavior\": \"Isolated\"}, " + bl + "]}"),
               "'pre_tokenizer.pretokenizers[0].pattern.Regex'");
  expect_error(pre("{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, "
                   "\"behavior\": \"Sideways\"}, " + bl + "]}"),
               "'pre_tokenizer.pretokenizers[0].behavior'");
  expect_error(pre("{\"type\": \"Sequence\", \"pretokenizers\": [" + bl + ", {\"type\": \"Digits\"}]}"),
               "'pre_tokenizer.pretokenizers[1].type': a pre-tokenizer after ByteLevel");
  expect_error(pre("{\"type\": \"Metaspace\"}"), "'pre_tokenizer.type': pre-tokenizer \"Metaspace\" is not supported");
  expect_error(pre("{\"type\": \"Digits\"}"), "'pre_tokenizer': expected a ByteLevel");
  expect_error(load_edited([](std::string& s) { replace(s, "\"lstrip\":false", "\"lstrip\":true"); }), "'added_tokens[0].lstrip'");
  expect_error(load_edited([](std::string& s) {
                 replace(s, "\"normalizer\": null", "\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}]}");
               }),
               "'normalizer.normalizers[0].type'");
}

TEST_F(TokenizerBadJson, NotJsonAndMissingFile) {
  write("bad.json", "{\"model\": ");
  auto t = Tokenizer::load(p("bad.json"));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find(p("bad.json") + ":1:"), std::string::npos) << t.status().to_string();
  auto m = Tokenizer::load(p("missing.json"));
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace mariana
