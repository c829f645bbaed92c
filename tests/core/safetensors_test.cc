// safetensors: round trips, byte-exact agreement with the Python library's writer, and one test per
// way a file can be corrupt (each a DataLoss naming the file and, where there is one, the tensor).
#include "core/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "core/file_util.h"
#include "tests/core/temp_dir.h"

namespace mariana {
namespace {

using ::testing::HasSubstr;

using Named = std::vector<std::pair<std::string, Tensor>>;

template <typename T>
Tensor make(DType dtype, std::vector<int64_t> shape, std::vector<T> values) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  EXPECT_EQ(t.nbytes(), values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.data(), values.data(), t.nbytes());
  return t;
}

std::string le64(uint64_t n) { return std::string(reinterpret_cast<const char*>(&n), 8); }

// A file from a hand-written header (no padding needed) and data bytes.
std::string raw_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && (a.nbytes() == 0 || std::memcmp(a.data(), b.data(), a.nbytes()) == 0);
}

// The tensors of the Python-library fixture below.
Named fixture_tensors() {
  return {
      {"a_f64", make<double>(DType::kF64, {2}, {1.5, -2.0})},
      {"b_i64", make<int64_t>(DType::kI64, {1, 1}, {7})},
      {"w", make<float>(DType::kF32, {2, 3}, {0, 1, 2, 3, 4, 5})},
      {"c_i32", make<int32_t>(DType::kI32, {2}, {-1, 2})},
      {"scalar", make<float>(DType::kF32, {}, {3.25f})},
      {"empty", make<uint16_t>(DType::kF16, {0, 3}, {})},
      {"h", make<uint16_t>(DType::kF16, {1}, {0x3c00})},
      {"bf", make<uint16_t>(DType::kBF16, {2}, {0x3f80, 0xbf00})},
      {"i16", make<int16_t>(DType::kI16, {1}, {-3})},
      {"flag", make<uint8_t>(DType::kBool, {3}, {1, 0, 1})},
      {"u8", make<uint8_t>(DType::kU8, {1}, {255})},
      {"i8", make<int8_t>(DType::kI8, {1}, {-128})},
  };
}

// Written by safetensors 0.8.0 (safetensors.torch.save, torch 1.13) from the same tensors, with
// metadata {"format": "pt"}: the header, its 5 padding spaces, then the data.
const char* kPythonHeader =
    R"({"__metadata__":{"format":"pt"},"b_i64":{"dtype":"I64","shape":[1,1],"data_offsets":[0,8]},)"
    R"("a_f64":{"dtype":"F64","shape":[2],"data_offsets":[8,24]},"scalar":{"dtype":"F32","shape":[],)"
    R"("data_offsets":[24,28]},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[28,52]},"c_i32":)"
    R"({"dtype":"I32","shape":[2],"data_offsets":[52,60]},"bf":{"dtype":"BF16","shape":[2],)"
    R"("data_offsets":[60,64]},"empty":{"dtype":"F16","shape":[0,3],"data_offsets":[64,64]},"h":)"
    R"({"dtype":"F16","shape":[1],"data_offsets":[64,66]},"i16":{"dtype":"I16","shape":[1],)"
    R"("data_offsets":[66,68]},"i8":{"dtype":"I8","shape":[1],"data_offsets":[68,69]},"u8":)"
    R"({"dtype":"U8","shape":[1],"data_offsets":[69,70]},"flag":{"dtype":"BOOL","shape":[3],)"
    R"("data_offsets":[70,73]}}     )";
const char* kPythonData =
    "0700000000000000000000000000f83f00000000000000c000005040000000000000803f0000004000004040000080"
    "400000a040ffffffff02000000803f00bf003cfdff80ff010001";

TEST(Safetensors, SerializeMatchesThePythonLibraryByteForByte) {
  std::string header = kPythonHeader;
  ASSERT_EQ(header.size(), 728u);
  std::string want = le64(728) + header + from_hex(kPythonData);
  std::string got = safetensors_serialize(fixture_tensors(), {{"format", "pt"}});
  EXPECT_EQ(got.size(), want.size());
  EXPECT_EQ(got.substr(0, 8 + 728), want.substr(0, 8 + 728));
  EXPECT_TRUE(got == want);
}

TEST(Safetensors, EscapingMatchesThePythonLibrary) {
  // safetensors 0.8.0: save({"é\"x": zeros(1)}, metadata={"k": "ü\n"}); UTF-8 stays raw.
  std::string want_header = "{\"__metadata__\":{\"k\":\"\xc3\xbc\\n\"},\"\xc3\xa9\\\"x\":{\"dtype\":\"F32\","
                            "\"shape\":[1],\"data_offsets\":[0,4]}}  ";
  std::string got = safetensors_serialize({{"\xc3\xa9\"x", Tensor::zeros(DType::kF32, {1})}}, {{"k", "\xc3\xbc\n"}});
  EXPECT_EQ(got, le64(want_header.size()) + want_header + std::string(4, '\0'));
  Result<SafetensorsFile> f = SafetensorsFile::parse(got, "esc.safetensors");
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_NE(f->find("\xc3\xa9\"x"), nullptr);
  EXPECT_EQ(f->metadata().at("k"), "\xc3\xbc\n");
}

TEST(Safetensors, RoundTripThroughAFile) {
  TempDir dir;
  std::string path = dir.file("m.safetensors");
  Named tensors = fixture_tensors();
  tensors.emplace_back("fp8", make<uint8_t>(DType::kF8E4M3, {2, 2}, {0x38, 0x7e, 0xfe, 0x01}));
  tensors.emplace_back("fp8b", make<uint8_t>(DType::kF8E5M2, {1}, {0x3c}));
  tensors.emplace_back("empty2", Tensor::zeros(DType::kF32, {5, 0}));
  std::map<std::string, std::string> md = {{"format", "pt"}, {"step", "12"}};
  ASSERT_TRUE(safetensors_write(path, tensors, md).ok());

  Result<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->path(), path);
  EXPECT_EQ(f->metadata(), md);
  ASSERT_EQ(f->entries().size(), tensors.size());
  for (size_t i = 1; i < f->entries().size(); ++i) {
    EXPECT_LE(f->entries()[i - 1].end, f->entries()[i].begin) << "entries not in data-offset order";
  }
  for (const auto& [name, t] : tensors) {
    const SafetensorsEntry* e = f->find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->name, name);
    EXPECT_EQ(e->dtype, t.dtype()) << name;
    EXPECT_EQ(e->shape, t.shape()) << name;
    EXPECT_EQ(e->end - e->begin, t.nbytes()) << name;
    Tensor v = f->view(*e);
    EXPECT_FALSE(v.owning());
    EXPECT_EQ(v.dtype(), t.dtype());
    EXPECT_EQ(v.shape(), t.shape());
    EXPECT_TRUE(same_bytes(v, t)) << name;
    // The writer's order (size descending) keeps every tensor naturally aligned.
    EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % dtype_size(t.dtype()), 0u) << name;
  }
  EXPECT_EQ(f->find("absent"), nullptr);
}

TEST(Safetensors, SerializeParseSerializeIsIdentical) {
  for (const auto& md : {std::map<std::string, std::string>{}, std::map<std::string, std::string>{{"a", "b"}, {"c", ""}}}) {
    std::string bytes = safetensors_serialize(fixture_tensors(), md);
    Result<SafetensorsFile> f = SafetensorsFile::parse(bytes, "mem");
    ASSERT_TRUE(f.ok()) << f.status().to_string();
    Named again;
    for (const SafetensorsEntry& e : f->entries()) again.emplace_back(e.name, f->view(e));
    EXPECT_TRUE(safetensors_serialize(again, f->metadata()) == bytes);
  }
}

TEST(Safetensors, HeaderIsPaddedAndMetadataOmittedWhenEmpty) {
  std::string bytes = safetensors_serialize({});
  EXPECT_EQ(bytes, le64(8) + "{}      ");
  bytes = safetensors_serialize({{"x", Tensor::zeros(DType::kF32, {1})}});
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string body = R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";  // 54 bytes
  EXPECT_EQ(n, 56u);
  EXPECT_EQ(bytes.substr(8, n), body + "  ");
  Result<SafetensorsFile> f = SafetensorsFile::parse(safetensors_serialize({}), "empty");
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->entries().empty());
}

TEST(Safetensors, ViewsAreCopyOnWrite) {
  TempDir dir;
  std::string path = dir.file("m.safetensors");
  ASSERT_TRUE(safetensors_write(path, {{"x", make<float>(DType::kF32, {2}, {1, 2})}}).ok());
  std::string before = *read_file(path);
  {
    Result<SafetensorsFile> f = SafetensorsFile::open(path);
    ASSERT_TRUE(f.ok());
    Tensor v = f->view(*f->find("x"));
    v.data_as<float>()[0] = 99;
    EXPECT_EQ(f->view(*f->find("x")).data_as<float>()[0], 99);
    SafetensorsFile copy = *f;  // copies share the bytes
    EXPECT_EQ(copy.view(*copy.find("x")).data(), v.data());
  }
  EXPECT_EQ(*read_file(path), before);
}

TEST(Safetensors, WriteRejectsBadArguments) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  float x = 0;
  struct Case {
    Named tensors;
    const char* expect;
  } cases[] = {
      {{{"a", Tensor::zeros(DType::kF32, {1})}, {"a", Tensor::zeros(DType::kF32, {1})}}, "name given twice"},
      {{{"__metadata__", Tensor::zeros(DType::kF32, {1})}}, "reserved"},
      {{{"g", Tensor::view(&x, DType::kF32, {1}, Device::kCUDA)}}, "not on the CPU"},
      {{{"u", Tensor::view(nullptr, DType::kF32, {1})}}, "has no data"},
      {{{"\xff", Tensor::zeros(DType::kF32, {1})}}, "UTF-8"},
  };
  for (const Case& c : cases) {
    Status s = safetensors_write(path, c.tensors);
    ASSERT_FALSE(s.ok()) << c.expect;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr(path));
    EXPECT_THAT(s.message(), HasSubstr(c.expect));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Safetensors, MissingFileIsNotFound) {
  TempDir dir;
  Result<SafetensorsFile> f = SafetensorsFile::open(dir.file("nope.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(f.status().message(), HasSubstr("nope.safetensors"));
}

// ---- corrupt files: each must be DataLoss, naming the file and, where there is one, the tensor ----

constexpr const char* kFile = "corrupt.safetensors";

void expect_data_loss(const std::string& bytes, const std::string& tensor, const std::string& what) {
  Result<SafetensorsFile> f = SafetensorsFile::parse(bytes, kFile);
  ASSERT_FALSE(f.ok()) << "accepted a corrupt file; expected: " << what;
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss) << f.status().to_string();
  EXPECT_THAT(f.status().message(), HasSubstr(kFile));
  if (!tensor.empty()) {
    EXPECT_THAT(f.status().message(), HasSubstr("tensor '" + tensor + "'"));
  }
  EXPECT_THAT(f.status().message(), HasSubstr(what));
}

const std::string kFourBytes(4, '\0');

TEST(SafetensorsCorrupt, ShorterThanEightBytes) {
  expect_data_loss("", "", "too short");
  expect_data_loss("abc", "", "too short");
  // Through open() too (a file too small to mmap takes the read path).
  TempDir dir;
  std::string path = dir.file("short.safetensors");
  ASSERT_TRUE(write_file_atomic(path, "1234567").ok());
  Result<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(f.status().message(), HasSubstr(path));
}

TEST(SafetensorsCorrupt, HeaderLengthBeyondTheFile) {
  expect_data_loss(le64(1000) + "{}", "", "larger than the 2 bytes after it");
}

TEST(SafetensorsCorrupt, HeaderLengthOverTheLimit) {
  expect_data_loss(le64(100'000'001) + "{}", "", "exceeds the limit");
}

TEST(SafetensorsCorrupt, HeaderNotJson) { expect_data_loss(raw_file("{\"a\": ", ""), "", "not valid JSON"); }

TEST(SafetensorsCorrupt, HeaderNotAnObject) { expect_data_loss(raw_file("[1, 2]", ""), "", "not a JSON object"); }

TEST(SafetensorsCorrupt, EntryNotAnObject) { expect_data_loss(raw_file(R"({"w": 5})", ""), "w", "not a JSON object"); }

TEST(SafetensorsCorrupt, EntryMissingDtype) {
  expect_data_loss(raw_file(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", kFourBytes), "w", "missing 'dtype'");
}

TEST(SafetensorsCorrupt, EntryMissingShape) {
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", kFourBytes), "w", "missing 'shape'");
}

TEST(SafetensorsCorrupt, EntryMissingDataOffsets) {
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[1]}})", kFourBytes), "w", "missing 'data_offsets'");
}

TEST(SafetensorsCorrupt, WrongJsonTypes) {
  expect_data_loss(raw_file(R"({"w":{"dtype":5,"shape":[1],"data_offsets":[0,4]}})", kFourBytes), "w",
                   "'dtype' is not a string");
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", kFourBytes), "w",
                   "'shape' is not an array");
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", kFourBytes), "w",
                   "non-integer");
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4]}})", kFourBytes), "w",
                   "'data_offsets' is not a pair");
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":"0,4"}})", kFourBytes), "w",
                   "'data_offsets' is not a pair");
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", kFourBytes), "w",
                   "non-negative");
}

TEST(SafetensorsCorrupt, UnknownDtype) {
  expect_data_loss(raw_file(R"({"w":{"dtype":"F128","shape":[1],"data_offsets":[0,4]}})", kFourBytes), "w",
                   "unknown dtype \"F128\"");
}

TEST(SafetensorsCorrupt, NegativeDimension) {
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", kFourBytes), "w",
                   "negative dimension -1");
}

TEST(SafetensorsCorrupt, ShapeOverflow) {
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})",
                            kFourBytes),
                   "w", "overflows");
}

TEST(SafetensorsCorrupt, EndBeforeBegin) {
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", kFourBytes), "w",
                   "end 0 < begin 4");
}

TEST(SafetensorsCorrupt, SizeDisagreesWithShape) {
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", kFourBytes), "w",
                   "hold 4 bytes but F32 [2] needs 2 x 4");
}

TEST(SafetensorsCorrupt, OffsetsBeyondTheDataBuffer) {
  expect_data_loss(raw_file(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", kFourBytes), "w",
                   "beyond the 4-byte data buffer");
}

TEST(SafetensorsCorrupt, OverlappingTensors) {
  expect_data_loss(raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                            R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                            std::string(12, '\0')),
                   "b", "overlap tensor 'a'");
}

TEST(SafetensorsCorrupt, HoleBetweenTensors) {
  expect_data_loss(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                            std::string(12, '\0')),
                   "b", "leaving a hole after tensor 'a'");
  expect_data_loss(raw_file(R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0')),
                   "b", "leaving a hole after the header");
}

TEST(SafetensorsCorrupt, TrailingBytesAfterTheLastTensor) {
  expect_data_loss(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0')), "",
                   "tensors cover 4 of the 8 data bytes (last is 'a')");
}

TEST(SafetensorsCorrupt, DuplicateNames) {
  expect_data_loss(raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                            R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            std::string(8, '\0')),
                   "a", "appears twice");
}

TEST(SafetensorsCorrupt, MetadataValueNotAString) {
  expect_data_loss(raw_file(R"({"__metadata__":{"step":12}})", ""), "", "__metadata__ value for 'step' is not a string");
  expect_data_loss(raw_file(R"({"__metadata__":["x"]})", ""), "", "__metadata__ is not a JSON object");
}

TEST(SafetensorsCorrupt, TruncatedFileOnDisk) {
  TempDir dir;
  std::string path = dir.file("trunc.safetensors");
  std::string bytes = safetensors_serialize(fixture_tensors());
  ASSERT_TRUE(write_file_atomic(path, bytes.substr(0, bytes.size() - 2)).ok());
  Result<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(f.status().message(), HasSubstr(path));
  // The last tensor in the file (BOOL "flag") now runs past the end.
  EXPECT_THAT(f.status().message(), HasSubstr("tensor 'flag'"));
  EXPECT_THAT(f.status().message(), HasSubstr("beyond"));
  // Cut inside the header.
  ASSERT_TRUE(write_file_atomic(path, bytes.substr(0, 100)).ok());
  f = SafetensorsFile::open(path);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_THAT(f.status().message(), HasSubstr("header length"));
}

TEST(SafetensorsCorrupt, FlippedHeaderByte) {
  std::string good = safetensors_serialize(fixture_tensors());
  // Break the JSON syntax: the opening brace.
  std::string bad = good;
  ASSERT_EQ(bad[8], '{');
  bad[8] ^= 0x01;
  expect_data_loss(bad, "", "not valid JSON");
  // Change a shape digit of "w" ([2,3] -> [2,7]): the byte count no longer matches.
  bad = good;
  size_t at = bad.find(R"("w":{"dtype":"F32","shape":[2,3])");
  ASSERT_NE(at, std::string::npos);
  at = bad.find("3]", at);
  bad[at] ^= 0x04;  // '3' -> '7'
  expect_data_loss(bad, "w", "F32 [2, 7] needs 14 x 4");
}

TEST(SafetensorsCorrupt, WrongOffsets) {
  std::string good = safetensors_serialize(fixture_tensors());
  // Shift c_i32 from [52,60] to [56,64]: same length, so the header is the same size; it now
  // overlaps "bf" at [60,64] and leaves a hole after "w".
  std::string bad = good;
  size_t at = bad.find("[52,60]");
  ASSERT_NE(at, std::string::npos);
  bad.replace(at, 7, "[56,64]");
  expect_data_loss(bad, "c_i32", "leaving a hole after tensor 'w'");
}

}  // namespace
}  // namespace mariana
