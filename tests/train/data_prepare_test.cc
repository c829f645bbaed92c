// data_prepare: text and JSONL inputs become shards + index; every bad input gives the promised
// error with file and line, or is skipped and counted with skip_bad; a failed prepare writes nothing.
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/file_util.h"
#include "core/json_util.h"
#include "tests/core/temp_dir.h"
#include "train/data.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

// A stand-in tokenizer: the text is whitespace-separated token ids ("10 11 12").
TokenEncoder fake_encoder(int64_t vocab = 1000) {
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

class PrepareTest : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& bytes) {
    const std::string p = dir_.file(name);
    EXPECT_TRUE(write_file_atomic(p, bytes).ok());
    return p;
  }
  PrepareOptions options(std::vector<std::string> inputs, bool skip_bad = false) {
    PrepareOptions o;
    o.inputs = std::move(inputs);
    o.out_dir = dir_.file("out");
    o.skip_bad = skip_bad;
    return o;
  }
  // Nothing at the target and no temporary directory left beside it.
  void expect_nothing_written() {
    EXPECT_FALSE(fs::exists(dir_.file("out")));
    for (const auto& e : fs::directory_iterator(dir_.path()))
      EXPECT_EQ(e.path().filename().string().rfind(".out", 0), std::string::npos) << e.path();
  }
  // The error, its code, and that the message carries `where` (file and line). `good_docs`: the
  // good documents in `inputs` besides the bad one.
  void expect_error(const std::vector<std::string>& inputs, StatusCode code, const std::string& where,
                    const std::string& reason, int64_t good_docs = 0) {
    auto r = data_prepare(fake_encoder(), options(inputs));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << r.status().to_string();
    EXPECT_NE(r.status().message().find(where), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(reason), std::string::npos) << r.status().message();
    expect_nothing_written();
    // With skip_bad the same input is skipped, counted and located; the good document survives.
    std::vector<std::string> with_good = inputs;
    with_good.push_back(good_);
    auto s = data_prepare(fake_encoder(), options(with_good, true));
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    EXPECT_EQ(s->skipped, 1);
    EXPECT_EQ(s->documents, good_docs + 1);
    ASSERT_EQ(s->skipped_where.size(), 1u);
    EXPECT_NE(s->skipped_where[0].find(where), std::string::npos) << s->skipped_where[0];
    fs::remove_all(dir_.file("out"));
  }
  void SetUp() override { good_ = write("good.txt", "7 8 9"); }
  TempDir dir_;
  std::string good_;
};

TEST_F(PrepareTest, TextAndJsonlBecomeShardsAndIndex) {
  const std::string a = write("a.txt", "10 11 12\n");
  const std::string b = write("b.jsonl", "{\"text\": \"20 21\"}\n\n{\"text\": \"30\", \"id\": 5}\r\n{\"text\":\"40 41 42 43\"}");
  auto r = data_prepare(fake_encoder(), options({a, b}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->documents, 4);
  EXPECT_EQ(r->tokens, 10);
  EXPECT_EQ(r->skipped, 0);
  EXPECT_EQ(r->shards, 1);

  auto index = json_load_file(dir_.file("out/index.json"));
  ASSERT_TRUE(index.ok());
  EXPECT_EQ((*index)["format"], "mariana-token-shards");
  EXPECT_EQ((*index)["vocab_size"], 1000);
  EXPECT_EQ((*index)["token_bytes"], 2);
  EXPECT_EQ((*index)["documents"], 4);
  EXPECT_EQ((*index)["tokens"], 10);
  auto shard = TokenShard::open(dir_.file("out/shard_00000.bin"));
  ASSERT_TRUE(shard.ok()) << shard.status().to_string();
  std::vector<int32_t> all;
  for (int64_t d = 0; d < shard->num_documents(); ++d) shard->doc_tokens(d, &all);
  EXPECT_EQ(all, (std::vector<int32_t>{10, 11, 12, 20, 21, 30, 40, 41, 42, 43}));
  EXPECT_EQ(shard->doc_size(3), 4);
}

TEST_F(PrepareTest, SplitsIntoShardsOfWholeDocuments) {
  std::string lines;
  for (int i = 0; i < 10; ++i) lines += "{\"text\": \"1 2 3\"}\n";
  auto o = options({write("d.jsonl", lines)});
  o.shard_tokens = 7;  // a shard closes once it holds >= 7 tokens: 3 documents (9 tokens) each
  auto r = data_prepare(fake_encoder(), o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->shards, 4);
  auto last = TokenShard::open(dir_.file("out/shard_00003.bin"));
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->num_documents(), 1);
  LoaderOptions lo;
  lo.data_dir = dir_.file("out");
  auto dl = DataLoader::open(lo);
  ASSERT_TRUE(dl.ok()) << dl.status().to_string();
  EXPECT_EQ(dl->num_documents(), 10);
  EXPECT_EQ(dl->num_tokens(), 30);
}

TEST_F(PrepareTest, InvalidJsonLineNamesFileAndLine) {
  const std::string p = write("bad.jsonl", "{\"text\": \"1 2\"}\n{\"text\": \"3\"\n");
  expect_error({p}, StatusCode::kInvalidArgument, p + ":2: ", "invalid JSON", 1);
}

TEST_F(PrepareTest, MissingTextFieldNamesFileAndLine) {
  const std::string p = write("bad.jsonl", "{\"text\": \"1 2\"}\n\n{\"txt\": \"3\"}\n");
  expect_error({p}, StatusCode::kInvalidArgument, p + ":3: ", "missing field 'text'", 1);
}

TEST_F(PrepareTest, NonStringTextNamesFileAndLine) {
  const std::string p = write("bad.jsonl", "{\"text\": 5}\n");
  expect_error({p}, StatusCode::kInvalidArgument, p + ":1: ", "expected a string, got number 5");
}

TEST_F(PrepareTest, NonObjectLineNamesFileAndLine) {
  const std::string p = write("bad.jsonl", "[\"text\"]\n");
  expect_error({p}, StatusCode::kInvalidArgument, p + ":1: ", "expected a JSON object");
}

TEST_F(PrepareTest, EmptyTextNamesFileAndLine) {
  const std::string p = write("bad.jsonl", "{\"text\": \"\"}\n");
  expect_error({p}, StatusCode::kInvalidArgument, p + ":1: ", "'text' is empty");
}

TEST_F(PrepareTest, EmptyFilesAreErrors) {
  const std::string t = write("empty.txt", "");
  expect_error({t}, StatusCode::kInvalidArgument, t + ": ", "empty file");
  const std::string j = write("empty.jsonl", "\n  \n");
  expect_error({j}, StatusCode::kInvalidArgument, j + ": ", "empty file");
}

TEST_F(PrepareTest, UnreadableFilesAreErrors) {
  const std::string missing = dir_.file("missing.txt");
  expect_error({missing}, StatusCode::kNotFound, missing, "No such file");
  fs::create_directory(dir_.file("adir.jsonl"));
  expect_error({dir_.file("adir.jsonl")}, StatusCode::kInvalidArgument, dir_.file("adir.jsonl"), "unreadable");
  const std::string other = write("x.csv", "1 2");
  expect_error({other}, StatusCode::kInvalidArgument, other, "unsupported input type");
}

TEST_F(PrepareTest, SkipBadCountsEveryBadLine) {
  const std::string p = write("mixed.jsonl",
                              "{\"text\": \"1\"}\nnot json\n{\"text\": \"2\"}\n{\"no\": 1}\n{\"text\": null}\n{\"text\": \"3\"}\n");
  auto r = data_prepare(fake_encoder(), options({p, dir_.file("gone.txt")}, true));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->documents, 3);
  EXPECT_EQ(r->skipped, 4);
  ASSERT_EQ(r->skipped_where.size(), 4u);
  EXPECT_EQ(r->skipped_where[0].rfind(p + ":2: invalid JSON", 0), 0u) << r->skipped_where[0];
  EXPECT_EQ(r->skipped_where[1], p + ":4: missing field 'text'");
  EXPECT_EQ(r->skipped_where[2], p + ":5: field 'text': expected a string, got null");
  EXPECT_EQ(r->skipped_where[3].rfind(dir_.file("gone.txt"), 0), 0u);
}

TEST_F(PrepareTest, AllBadIsAnErrorEvenWhenSkipping) {
  const std::string p = write("bad.jsonl", "nope\n");
  auto r = data_prepare(fake_encoder(), options({p}, true));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("no documents"), std::string::npos);
  expect_nothing_written();
}

TEST_F(PrepareTest, ReplacesADataDirectoryButNotOtherDirectories) {
  ASSERT_TRUE(data_prepare(fake_encoder(), options({write("a.txt", "1 2 3")})).ok());
  auto r = data_prepare(fake_encoder(), options({write("b.txt", "4 5")}));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  LoaderOptions lo;
  lo.data_dir = dir_.file("out");
  auto dl = DataLoader::open(lo);
  ASSERT_TRUE(dl.ok());
  EXPECT_EQ(dl->num_tokens(), 2);
  // A failed prepare leaves the old data directory as it was.
  ASSERT_FALSE(data_prepare(fake_encoder(), options({dir_.file("missing.txt")})).ok());
  EXPECT_TRUE(DataLoader::open(lo).ok());

  fs::create_directory(dir_.file("notdata"));
  ASSERT_TRUE(write_file_atomic(dir_.file("notdata/keep.txt"), "precious").ok());
  auto o = options({dir_.file("b.txt")});
  o.out_dir = dir_.file("notdata") + "/";
  auto bad = data_prepare(fake_encoder(), o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(fs::exists(dir_.file("notdata/keep.txt")));
}

TEST_F(PrepareTest, TokenizerIdsOutsideVocabularyAreInternal) {
  auto r = data_prepare(fake_encoder(10), options({write("a.txt", "3 12")}));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  expect_nothing_written();
}

}  // namespace
}  // namespace mariana
