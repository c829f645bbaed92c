// .npy writer: header layout numpy reads, data bytes verbatim.
#include <gtest/gtest.h>

#include <cstring>

#include "core/npy.h"

namespace mariana {
namespace {

TEST(Npy, HeaderIsNumpyV1AndAligned) {
  const float data[6] = {1, 2, 3, 4, 5, 6};
  const std::string b = npy_serialize_f32(data, {2, 3});
  ASSERT_EQ(b.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t hl = static_cast<uint8_t>(b[8]) | (static_cast<uint8_t>(b[9]) << 8);
  EXPECT_EQ((10 + hl) % 64, 0u);
  const std::string header = b.substr(10, hl);
  EXPECT_NE(header.find("'descr': '<f4'"), std::string::npos);
  EXPECT_NE(header.find("'shape': (2, 3)"), std::string::npos);
  EXPECT_EQ(header.back(), '\n');
  ASSERT_EQ(b.size(), 10 + hl + sizeof(data));
  EXPECT_EQ(std::memcmp(b.data() + 10 + hl, data, sizeof(data)), 0);
}

TEST(Npy, OneDimensionalShapeHasTrailingComma) {
  const float data[3] = {1, 2, 3};
  const std::string b = npy_serialize_f32(data, {3});
  EXPECT_NE(b.find("'shape': (3,)"), std::string::npos);
}

}  // namespace
}  // namespace mariana
