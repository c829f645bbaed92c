// DataLoader: exact packing and document starts on a hand-made case, the invariants the model
// checks on random data, FIM rate and form, deterministic shuffling, bit-exact resume, and
// DataLoss on corrupt shards.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/file_util.h"
#include "core/philox.h"
#include "tests/core/temp_dir.h"
#include "train/data.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

constexpr int32_t kBos = 0, kEos = 1, kFimBegin = 2, kFimHole = 3, kFimEnd = 4;

TokenEncoder fake_encoder(int64_t vocab) {
  TokenEncoder e;
  e.vocab_size = vocab;
  e.encode = [](std::string_view text) {
    std::vector<int32_t> ids;
    std::istringstream in{std::string(text)};
    int32_t v;
    while (in >> v) ids.push_back(v);
    return ids;
  };
  return e;
}

// Prepares `docs` (token ids, each non-empty) into <dir>/data through data_prepare.
std::string make_data(const TempDir& dir, const std::vector<std::vector<int32_t>>& docs, int64_t vocab = 1000,
                      int64_t shard_tokens = 1 << 20) {
  std::string lines;
  for (const auto& d : docs) {
    std::string t;
    for (int32_t v : d) t += std::to_string(v) + " ";
    lines += "{\"text\": \"" + t + "\"}\n";
  }
  EXPECT_TRUE(write_file_atomic(dir.file("docs.jsonl"), lines).ok());
  PrepareOptions po;
  po.inputs = {dir.file("docs.jsonl")};
  po.out_dir = dir.file("data");
  po.shard_tokens = shard_tokens;
  auto r = data_prepare(fake_encoder(vocab), po);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return po.out_dir;
}

// Documents of 1..max_len tokens with ids >= 10, so they never look like a special token.
std::vector<std::vector<int32_t>> random_docs(int64_t n, int64_t max_len, uint64_t seed) {
  PhiloxStream rng(seed, 7);
  std::vector<std::vector<int32_t>> docs(static_cast<size_t>(n));
  for (auto& d : docs) {
    const int64_t len = 1 + rng.next_u32() % max_len;
    for (int64_t i = 0; i < len; ++i) d.push_back(static_cast<int32_t>(10 + rng.next_u32() % 990));
  }
  return docs;
}

LoaderOptions loader_options(const std::string& data_dir, int64_t S, uint64_t seed, double fim_rate) {
  LoaderOptions o;
  o.data_dir = data_dir;
  o.seq_len = S;
  o.seed = seed;
  o.fim_rate = fim_rate;
  o.bos = kBos;
  o.eos = kEos;
  o.fim_begin = kFimBegin;
  o.fim_hole = kFimHole;
  o.fim_end = kFimEnd;
  return o;
}

// The checks the model makes (model.cc validate_batch) plus the target rule: the next token of
// the same segment, −1 at a segment's end.
void expect_valid_batch(const Batch& b) {
  for (int64_t r = 0; r < b.B; ++r) {
    for (int64_t i = 0; i < b.S; ++i) {
      const int64_t t = r * b.S + i;
      const int32_t ds = b.doc_start[t];
      ASSERT_TRUE(i == 0 ? ds == 0 : (ds == i || ds == b.doc_start[t - 1])) << "row " << r << " pos " << i;
      const bool same_next = i + 1 < b.S && b.doc_start[t + 1] == ds;
      ASSERT_EQ(b.targets[t], same_next ? b.tokens[t + 1] : -1) << "row " << r << " pos " << i;
    }
  }
}

TEST(DataLoader, PacksHandMadeDocumentsExactly) {
  TempDir dir;
  // Three documents: A (3 tokens), B (7 tokens: spans rows 0-1), C (1 token: its EOS opens row 2).
  const std::string data = make_data(dir, {{10, 11, 12}, {20, 21, 22, 23, 24, 25, 26}, {30}});
  LoaderOptions o = loader_options(data, 8, 0, 0.0);
  o.shuffle = false;
  auto dl = DataLoader::open(o);
  ASSERT_TRUE(dl.ok()) << dl.status().to_string();
  Batch b;
  ASSERT_TRUE(dl->next(3, &b).ok());
  EXPECT_EQ(b.B, 3);
  EXPECT_EQ(b.S, 8);
  // Row 0: BOS A EOS | BOS 20 21 (B continues in row 1).
  // Row 1: 22..26 EOS (B's continuation, doc_start 0) | BOS 30 (C; its EOS goes to row 2).
  // Row 2: EOS (C's continuation) | epoch 1: BOS A EOS | BOS 20.
  const std::vector<int32_t> tokens = {
      0, 10, 11, 12, 1, 0, 20, 21,
      22, 23, 24, 25, 26, 1, 0, 30,
      1, 0, 10, 11, 12, 1, 0, 20};
  const std::vector<int32_t> targets = {
      10, 11, 12, 1, -1, 20, 21, -1,
      23, 24, 25, 26, 1, -1, 30, -1,
      -1, 10, 11, 12, 1, -1, 20, -1};
  const std::vector<int32_t> doc_start = {
      0, 0, 0, 0, 0, 5, 5, 5,
      0, 0, 0, 0, 0, 0, 6, 6,
      0, 1, 1, 1, 1, 1, 6, 6};
  EXPECT_EQ(b.tokens, tokens);
  EXPECT_EQ(b.targets, targets);
  EXPECT_EQ(b.doc_start, doc_start);
  EXPECT_EQ(dl->epoch(), 1);
  // One more row: the rest of B, then C.
  ASSERT_TRUE(dl->next(1, &b).ok());
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{21, 22, 23, 24, 25, 26, 1, 0}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{22, 23, 24, 25, 26, 1, -1, -1}));
  EXPECT_EQ(b.doc_start, (std::vector<int32_t>{0, 0, 0, 0, 0, 0, 0, 7}));
}

TEST(DataLoader, StreamIsTheEpochOrderOfDocumentSequences) {
  TempDir dir;
  const auto docs = random_docs(50, 30, 1);
  const std::string data = make_data(dir, docs, 1000, 200);  // several shards
  const LoaderOptions o = loader_options(data, 16, 42, 0.3);
  auto dl = DataLoader::open(o);
  ASSERT_TRUE(dl.ok()) << dl.status().to_string();
  // Expected stream: two epochs of sequences in each epoch's order.
  std::vector<int32_t> want;
  for (int64_t e = 0; e < 2; ++e)
    for (int64_t d : data_epoch_order(42, e, 50))
      for (int32_t t : data_document_sequence(docs[d].data(), static_cast<int64_t>(docs[d].size()), d, e, o)) want.push_back(t);
  std::vector<int32_t> got;
  Batch b;
  while (got.size() < want.size()) {
    ASSERT_TRUE(dl->next(3, &b).ok());
    expect_valid_batch(b);
    got.insert(got.end(), b.tokens.begin(), b.tokens.end());
  }
  got.resize(want.size());
  EXPECT_EQ(got, want);
}

TEST(DataLoader, FimRateWithinBinomialTolerance) {
  LoaderOptions o;
  o.seed = 123;
  const int64_t n = 20000;
  for (double rate : {0.1, 0.5}) {
    o.fim_rate = rate;
    int64_t fim = 0;
    for (int64_t d = 0; d < n; ++d) fim += data_document_is_fim(d, 0, o) ? 1 : 0;
    // Each document is an independent Bernoulli(rate) draw: the count is Binomial(n, rate). 5 sigma
    // (sqrt(n p (1-p)) = 42 at 0.1) makes a false failure a ~6e-7 event for a correct generator.
    const double sigma = std::sqrt(n * rate * (1 - rate));
    EXPECT_NEAR(static_cast<double>(fim), n * rate, 5 * sigma) << "rate " << rate;
  }
  o.fim_rate = 0;
  for (int64_t d = 0; d < 1000; ++d) EXPECT_FALSE(data_document_is_fim(d, 0, o));
  o.fim_rate = 1;
  for (int64_t d = 0; d < 1000; ++d) EXPECT_TRUE(data_document_is_fim(d, 0, o));
  // The decision is per (document, epoch): a document is not FIM in every epoch.
  o.fim_rate = 0.5;
  int64_t same = 0;
  for (int64_t d = 0; d < 2000; ++d) same += data_document_is_fim(d, 0, o) == data_document_is_fim(d, 1, o);
  EXPECT_NEAR(static_cast<double>(same), 1000.0, 5 * std::sqrt(2000 * 0.25));
}

TEST(DataLoader, FimRateThroughTheLoader) {
  TempDir dir;
  const int64_t n = 4000;
  const std::string data = make_data(dir, random_docs(n, 4, 3));
  auto dl = DataLoader::open(loader_options(data, 64, 9, 0.1));
  ASSERT_TRUE(dl.ok());
  int64_t begins = 0, bos = 0;
  Batch b;
  while (bos < n) {
    ASSERT_TRUE(dl->next(8, &b).ok());
    for (size_t i = 0; i < b.tokens.size() && bos < n; ++i) {
      if (b.tokens[i] == kBos) ++bos;
      if (b.tokens[i] == kFimBegin) ++begins;
    }
  }
  // Binomial(4000, 0.1): sigma 19; 5 sigma as above. (The last document's <fim_begin> may fall
  // just past the cut: at most 1 off.)
  EXPECT_NEAR(static_cast<double>(begins), 400.0, 5 * std::sqrt(n * 0.09) + 1);
}

TEST(DataLoader, FimIsAPermutationOfTheDocumentPlusSentinels) {
  LoaderOptions o;
  o.seed = 5;
  o.fim_rate = 1;
  o.bos = kBos;
  o.eos = kEos;
  o.fim_begin = kFimBegin;
  o.fim_hole = kFimHole;
  o.fim_end = kFimEnd;
  const auto docs = random_docs(2000, 40, 11);
  int64_t empty_prefix = 0, empty_middle = 0, empty_suffix = 0, middle_total = 0, size_total = 0;
  for (int64_t d = 0; d < 2000; ++d) {
    const auto& doc = docs[d];
    const auto seq = data_document_sequence(doc.data(), static_cast<int64_t>(doc.size()), d, 0, o);
    ASSERT_EQ(seq.size(), doc.size() + 5);
    ASSERT_EQ(seq[0], kBos);
    ASSERT_EQ(seq[1], kFimBegin);
    ASSERT_EQ(seq.back(), kEos);
    const auto hole = std::find(seq.begin(), seq.end(), kFimHole);
    const auto end = std::find(seq.begin(), seq.end(), kFimEnd);
    ASSERT_TRUE(hole != seq.end() && end != seq.end() && hole < end);
    const std::vector<int32_t> prefix(seq.begin() + 2, hole), suffix(hole + 1, end), middle(end + 1, seq.end() - 1);
    std::vector<int32_t> joined = prefix;
    joined.insert(joined.end(), middle.begin(), middle.end());
    joined.insert(joined.end(), suffix.begin(), suffix.end());
    ASSERT_EQ(joined, doc) << "document " << d;  // prefix|middle|suffix is the document
    empty_prefix += prefix.empty();
    empty_middle += middle.empty();
    empty_suffix += suffix.empty();
    middle_total += static_cast<int64_t>(middle.size());
    size_total += static_cast<int64_t>(doc.size());
  }
  // Two uniform cuts: the middle averages about a third of the document, and every part is
  // sometimes empty and mostly not.
  EXPECT_NEAR(static_cast<double>(middle_total) / static_cast<double>(size_total), 1.0 / 3, 0.05);
  for (int64_t e : {empty_prefix, empty_middle, empty_suffix}) {
    EXPECT_GT(e, 0);
    EXPECT_LT(e, 600);
  }
  o.fim_rate = 0;
  const auto plain = data_document_sequence(docs[0].data(), static_cast<int64_t>(docs[0].size()), 0, 0, o);
  std::vector<int32_t> want = {kBos};
  want.insert(want.end(), docs[0].begin(), docs[0].end());
  want.push_back(kEos);
  EXPECT_EQ(plain, want);
}

TEST(DataLoader, ShuffleIsDeterministicFromTheSeed) {
  const auto a = data_epoch_order(7, 0, 1000);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);               // a permutation
  EXPECT_NE(a, iota);                    // and not the identity
  EXPECT_EQ(a, data_epoch_order(7, 0, 1000));
  EXPECT_NE(a, data_epoch_order(8, 0, 1000));
  EXPECT_NE(a, data_epoch_order(7, 1, 1000));

  TempDir dir;
  const std::string data = make_data(dir, random_docs(100, 10, 2));
  auto first = [&](uint64_t seed) {
    auto dl = DataLoader::open(loader_options(data, 32, seed, 0.1));
    EXPECT_TRUE(dl.ok());
    Batch b;
    EXPECT_TRUE(dl->next(4, &b).ok());
    return b.tokens;
  };
  EXPECT_EQ(first(1), first(1));
  EXPECT_NE(first(1), first(2));
}

TEST(DataLoader, ResumeIsBitExact) {
  TempDir dir;
  const std::string data = make_data(dir, random_docs(40, 25, 4), 1000, 100);
  const LoaderOptions o = loader_options(data, 24, 99, 0.5);
  const int64_t total = 30, rows = 3;  // about 5 epochs: the split points cross epoch boundaries
  auto ref = DataLoader::open(o);
  ASSERT_TRUE(ref.ok());
  std::vector<Batch> want(total);
  for (auto& b : want) ASSERT_TRUE(ref->next(rows, &b).ok());
  ASSERT_GE(ref->epoch(), 3);
  for (int64_t n : {0, 1, 7, 13, 29}) {
    auto a = DataLoader::open(o);
    ASSERT_TRUE(a.ok());
    Batch b;
    for (int64_t i = 0; i < n; ++i) ASSERT_TRUE(a->next(rows, &b).ok());
    // Through text, as a checkpoint would carry it.
    const nlohmann::json state = nlohmann::json::parse(a->state().dump());
    auto c = DataLoader::open(o);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c->restore(state).ok()) << state.dump();
    EXPECT_EQ(c->epoch(), a->epoch());
    for (int64_t i = n; i < total; ++i) {
      ASSERT_TRUE(c->next(rows, &b).ok());
      ASSERT_EQ(b.tokens, want[i].tokens) << "resumed at " << n << ", batch " << i;
      ASSERT_EQ(b.targets, want[i].targets) << "resumed at " << n << ", batch " << i;
      ASSERT_EQ(b.doc_start, want[i].doc_start) << "resumed at " << n << ", batch " << i;
    }
  }
}

TEST(DataLoader, RestoreRejectsAForeignState) {
  TempDir dir;
  const std::string data = make_data(dir, random_docs(20, 10, 5));
  auto a = DataLoader::open(loader_options(data, 16, 1, 0.1));
  ASSERT_TRUE(a.ok());
  Batch b;
  ASSERT_TRUE(a->next(2, &b).ok());
  const nlohmann::json good = a->state();
  auto other_seed = DataLoader::open(loader_options(data, 16, 2, 0.1));
  ASSERT_TRUE(other_seed.ok());
  Status st = other_seed->restore(good);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("seed"), std::string::npos) << st.message();
  auto c = DataLoader::open(loader_options(data, 16, 1, 0.1));
  ASSERT_TRUE(c.ok());
  nlohmann::json bad = good;
  bad["offset"] = 100000;
  EXPECT_EQ(c->restore(bad).code(), StatusCode::kInvalidArgument);
  bad = good;
  bad["cursor"] = 20;
  EXPECT_EQ(c->restore(bad).code(), StatusCode::kInvalidArgument);
  bad = good;
  bad.erase("epoch");
  EXPECT_FALSE(c->restore(bad).ok());
  bad = good;
  bad["data_xxh64"] = "0000000000000000";
  EXPECT_EQ(c->restore(bad).code(), StatusCode::kInvalidArgument);
  // A failed restore leaves the loader where it was: still at the start.
  Batch fresh, again;
  ASSERT_TRUE(c->next(2, &fresh).ok());
  auto d = DataLoader::open(loader_options(data, 16, 1, 0.1));
  ASSERT_TRUE(d->next(2, &again).ok());
  EXPECT_EQ(fresh.tokens, again.tokens);
}

TEST(DataLoader, OpenRejectsBadOptions) {
  TempDir dir;
  const std::string data = make_data(dir, {{10, 11}}, 300);
  EXPECT_EQ(DataLoader::open(loader_options(dir.file("nowhere"), 8, 0, 0.1)).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(DataLoader::open(loader_options(data, 0, 0, 0.1)).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DataLoader::open(loader_options(data, 8, 0, 1.5)).status().code(), StatusCode::kInvalidArgument);
  LoaderOptions o = loader_options(data, 8, 0, 0.1);
  o.fim_end = 300;  // outside the data's vocabulary of 300
  auto r = DataLoader::open(o);
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("fim_end"), std::string::npos);
  auto dl = DataLoader::open(loader_options(data, 8, 0, 0.1));
  ASSERT_TRUE(dl.ok());
  Batch b;
  EXPECT_EQ(dl->next(0, &b).code(), StatusCode::kInvalidArgument);
}

TEST(DataLoader, WideVocabularyRoundTrips) {
  TempDir dir;
  const std::string data = make_data(dir, {{70000, 65536, 12}}, 70001);
  LoaderOptions o = loader_options(data, 5, 0, 0.0);
  auto dl = DataLoader::open(o);
  ASSERT_TRUE(dl.ok()) << dl.status().to_string();
  Batch b;
  ASSERT_TRUE(dl->next(1, &b).ok());
  EXPECT_EQ(b.tokens, (std::vector<int32_t>{0, 70000, 65536, 12, 1}));
}

// The loader refuses damaged data directories, naming the damaged file.
class DataLoaderCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    data_ = make_data(dir_, random_docs(30, 10, 6), 1000, 50);
    shard_ = data_ + "/shard_00001.bin";
    bytes_ = *read_file(shard_);
  }
  void expect_data_loss(const std::string& needle) {
    auto r = DataLoader::open(loader_options(data_, 8, 0, 0.1));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().to_string();
    EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
  }
  TempDir dir_;
  std::string data_, shard_, bytes_;
};

TEST_F(DataLoaderCorruption, FlippedByte) {
  std::string b = bytes_;
  b[b.size() / 2] ^= 0x20;
  ASSERT_TRUE(write_file_atomic(shard_, b).ok());
  expect_data_loss(shard_);
}

TEST_F(DataLoaderCorruption, Truncated) {
  ASSERT_TRUE(write_file_atomic(shard_, bytes_.substr(0, bytes_.size() - 2)).ok());
  expect_data_loss(shard_);
}

TEST_F(DataLoaderCorruption, WrongHeader) {
  std::string b = bytes_;
  b[3] = '?';
  ASSERT_TRUE(write_file_atomic(shard_, b).ok());
  expect_data_loss(shard_);
}

TEST_F(DataLoaderCorruption, ShardSwappedForAnotherValidShard) {
  // A valid shard that is not the one the index describes.
  fs::copy_file(data_ + "/shard_00000.bin", shard_, fs::copy_options::overwrite_existing);
  expect_data_loss(shard_);
}

TEST_F(DataLoaderCorruption, MissingShardIsNotFound) {
  fs::remove(shard_);
  auto r = DataLoader::open(loader_options(data_, 8, 0, 0.1));
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(shard_), std::string::npos);
}

TEST_F(DataLoaderCorruption, IndexTotalsDisagree) {
  auto index = nlohmann::json::parse(*read_file(data_ + "/index.json"));
  index["tokens"] = index["tokens"].get<int64_t>() + 1;
  ASSERT_TRUE(write_file_atomic(data_ + "/index.json", index.dump()).ok());
  expect_data_loss("index.json");
}

}  // namespace
}  // namespace mariana
