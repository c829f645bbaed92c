// Token shard writer/reader (train/shard_format.md): round trips in both token widths, and every
// kind of corruption is DataLoss naming the file, including headers whose checksum was recomputed.
#include <xxhash.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/file_util.h"
#include "tests/core/temp_dir.h"
#include "train/data.h"

namespace mariana {
namespace {

std::vector<int32_t> read_all(const TokenShard& s) {
  std::vector<int32_t> out;
  for (int64_t d = 0; d < s.num_documents(); ++d) s.doc_tokens(d, &out);
  return out;
}

void put_u64(std::string* s, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) (*s)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
// Re-seals a (deliberately inconsistent) shard: body and header checksums recomputed.
void reseal(std::string* b) {
  put_u64(b, 40, XXH64(b->data() + 64, b->size() - 64, 0));
  put_u64(b, 56, XXH64(b->data(), 56, 0));
}

void expect_data_loss(const std::string& path, const std::string& needle) {
  Result<TokenShard> r = TokenShard::open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().to_string();
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
}

class ShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("s.bin");
    auto h = shard_write(path_, 100, {0, 3, 3, 7}, {10, 11, 12, 20, 21, 22, 99});
    ASSERT_TRUE(h.ok()) << h.status().to_string();
    bytes_ = *read_file(path_);
  }
  void rewrite(const std::string& b) { ASSERT_TRUE(write_file_atomic(path_, b).ok()); }
  TempDir dir_;
  std::string path_, bytes_;
};

TEST_F(ShardTest, RoundTripU16) {
  auto s = TokenShard::open(path_);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->header().token_bytes, 2);
  EXPECT_EQ(s->header().vocab_size, 100);
  EXPECT_EQ(s->num_documents(), 3);
  EXPECT_EQ(s->doc_size(0), 3);
  EXPECT_EQ(s->doc_size(1), 0);
  EXPECT_EQ(s->doc_size(2), 4);
  EXPECT_EQ(read_all(*s), (std::vector<int32_t>{10, 11, 12, 20, 21, 22, 99}));
  EXPECT_EQ(static_cast<int64_t>(bytes_.size()), 64 + 8 * 4 + 2 * 7);
  EXPECT_EQ(bytes_.substr(0, 8), "MRNSHARD");
}

TEST_F(ShardTest, RoundTripU32AboveU16Vocab) {
  const std::string p = dir_.file("big.bin");
  ASSERT_TRUE(shard_write(p, 70000, {0, 2}, {65535, 69999}).ok());
  auto s = TokenShard::open(p);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->header().token_bytes, 4);
  EXPECT_EQ(read_all(*s), (std::vector<int32_t>{65535, 69999}));
  // Exactly 65536 still fits u16.
  ASSERT_TRUE(shard_write(p, 65536, {0, 1}, {65535}).ok());
  auto s2 = TokenShard::open(p);
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(s2->header().token_bytes, 2);
  EXPECT_EQ(read_all(*s2), (std::vector<int32_t>{65535}));
}

TEST_F(ShardTest, WriterRejectsBadArguments) {
  EXPECT_EQ(shard_write(dir_.file("x.bin"), 10, {0, 2}, {3, 10}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(shard_write(dir_.file("x.bin"), 10, {0, 3}, {3, 4}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(shard_write(dir_.file("x.bin"), 10, {0, 2, 1, 2}, {3, 4}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(shard_write(dir_.file("x.bin"), 10, {}, {}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(ShardTest, MissingFileIsNotFound) {
  EXPECT_EQ(TokenShard::open(dir_.file("nope.bin")).status().code(), StatusCode::kNotFound);
}

TEST_F(ShardTest, FlippedBodyByteIsDataLoss) {
  for (size_t at : {size_t{64}, size_t{64 + 8 * 4 + 3}, bytes_.size() - 1}) {
    std::string b = bytes_;
    b[at] ^= 0x01;
    rewrite(b);
    expect_data_loss(path_, "body checksum");
  }
}

TEST_F(ShardTest, FlippedHeaderByteIsDataLoss) {
  for (size_t at : {size_t{16}, size_t{24}, size_t{32}, size_t{40}, size_t{60}}) {
    std::string b = bytes_;
    b[at] ^= 0x04;
    rewrite(b);
    expect_data_loss(path_, "header checksum");
  }
}

TEST_F(ShardTest, WrongMagicAndVersionAreDataLoss) {
  std::string b = bytes_;
  b[0] = 'X';
  rewrite(b);
  expect_data_loss(path_, "magic");
  b = bytes_;
  b[8] = 2;
  rewrite(b);
  expect_data_loss(path_, "version 2");
}

TEST_F(ShardTest, TruncatedIsDataLoss) {
  rewrite(bytes_.substr(0, bytes_.size() - 1));
  expect_data_loss(path_, "implies");
  rewrite(bytes_.substr(0, 40));
  expect_data_loss(path_, "too short");
  rewrite("");
  expect_data_loss(path_, "too short");
  rewrite(bytes_ + "x");  // trailing bytes are as wrong as missing ones
  expect_data_loss(path_, "implies");
}

// Inconsistent contents under valid checksums: the structural checks catch them on their own.
TEST_F(ShardTest, ResealedInconsistenciesAreDataLoss) {
  std::string b = bytes_;
  put_u64(&b, 32, 8);  // one token more than stored
  reseal(&b);
  rewrite(b);
  expect_data_loss(path_, "implies");

  b = bytes_;
  put_u64(&b, 24, uint64_t{1} << 62);  // absurd document count, no overflow
  reseal(&b);
  rewrite(b);
  expect_data_loss(path_, "more than the file can hold");

  b = bytes_;
  put_u64(&b, 64 + 8 * 1, 5);  // offsets 0, 5, 3, 7: not monotonic
  reseal(&b);
  rewrite(b);
  expect_data_loss(path_, "monotonic");

  b = bytes_;
  put_u64(&b, 64, 1);  // offsets[0] != 0
  reseal(&b);
  rewrite(b);
  expect_data_loss(path_, "offsets[0]");

  b = bytes_;
  b[64 + 8 * 4 + 2 * 6] = 100;  // last token 100 in a vocabulary of 100
  reseal(&b);
  rewrite(b);
  expect_data_loss(path_, "outside the vocabulary");

  b = bytes_;
  b[12] = 4;  // u32 tokens claimed for a u16 vocabulary
  reseal(&b);
  rewrite(b);
  expect_data_loss(path_, "token_bytes");
}

}  // namespace
}  // namespace mariana
