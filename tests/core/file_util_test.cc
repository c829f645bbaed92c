// read_file / write_file_atomic: contents, replacement, mode, errors naming the path, and no
// temporary file left behind after a failure.
#include "core/file_util.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "tests/core/temp_dir.h"

namespace mariana {
namespace {

int count_entries(const std::string& dir) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++n;
  }
  return n;
}

TEST(FileUtil, WriteThenReadRoundTrips) {
  TempDir dir;
  std::string path = dir.file("a.bin");
  std::string bytes("hello\0world\xff", 12);
  ASSERT_TRUE(write_file_atomic(path, bytes).ok());
  Result<std::string> back = read_file(path);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  EXPECT_EQ(*back, bytes);
  EXPECT_EQ(count_entries(dir.path()), 1);  // no temporary left over
}

TEST(FileUtil, WriteReplacesAndKeepsMode) {
  TempDir dir;
  std::string path = dir.file("a.txt");
  ASSERT_TRUE(write_file_atomic(path, "first version, longer").ok());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  ASSERT_TRUE(write_file_atomic(path, "second").ok());
  EXPECT_EQ(*read_file(path), "second");
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(FileUtil, WriteEmptyAndLarge) {
  TempDir dir;
  ASSERT_TRUE(write_file_atomic(dir.file("empty"), "").ok());
  EXPECT_EQ(*read_file(dir.file("empty")), "");
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4097) big[i] = static_cast<char>(i);
  ASSERT_TRUE(write_file_atomic(dir.file("big"), big).ok());
  EXPECT_EQ(*read_file(dir.file("big")), big);
}

TEST(FileUtil, RelativePathInCurrentDirectory) {
  TempDir dir;
  std::filesystem::path old = std::filesystem::current_path();
  std::filesystem::current_path(dir.path());
  Status s = write_file_atomic("rel.txt", "x");
  std::filesystem::current_path(old);
  ASSERT_TRUE(s.ok()) << s.to_string();
  EXPECT_EQ(*read_file(dir.file("rel.txt")), "x");
}

TEST(FileUtil, WriteIntoMissingDirectoryIsNotFound) {
  TempDir dir;
  std::string path = dir.file("no/such/dir/a.txt");
  Status s = write_file_atomic(path, "x");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("No such file or directory"), std::string::npos) << s.message();
}

TEST(FileUtil, FailedRenameRemovesTheTemporary) {
  TempDir dir;
  // The target is a non-empty directory: everything succeeds up to rename(), which fails.
  std::string path = dir.file("target");
  std::filesystem::create_directory(path);
  std::ofstream(path + "/keep") << "x";
  Status s = write_file_atomic(path, "new contents");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("rename"), std::string::npos) << s.message();
  EXPECT_EQ(count_entries(dir.path()), 1) << "temporary file left behind";
}

TEST(FileUtil, ReadMissingIsNotFound) {
  TempDir dir;
  std::string path = dir.file("missing.txt");
  Result<std::string> r = read_file(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(path), std::string::npos);
}

TEST(FileUtil, ReadDirectoryFails) {
  TempDir dir;
  Result<std::string> r = read_file(dir.path());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(dir.path()), std::string::npos);
  EXPECT_NE(r.status().message().find("Is a directory"), std::string::npos) << r.status().message();
}

TEST(FileUtil, ErrnoStatusCodes) {
  EXPECT_EQ(errno_status(ENOENT, "x").code(), StatusCode::kNotFound);
  EXPECT_EQ(errno_status(EACCES, "x").code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(errno_status(ENOSPC, "x").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(errno_status(EIO, "x").code(), StatusCode::kUnavailable);
  EXPECT_EQ(errno_status(EIO, "f.bin: write").message(), "f.bin: write: Input/output error");
}

}  // namespace
}  // namespace mariana
