// Tensor: owning storage is zeroed, 64-byte aligned and shared between copies; views alias the
// memory they were given; shape helpers.
#include "core/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>

namespace mariana {
namespace {

TEST(Tensor, ZerosIsZeroedAlignedAndOwning) {
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF64, DType::kU8}) {
    Tensor t = Tensor::zeros(dt, {3, 5, 7});
    EXPECT_TRUE(t.owning());
    EXPECT_TRUE(t.defined());
    EXPECT_EQ(t.dtype(), dt);
    EXPECT_EQ(t.device(), Device::kCPU);
    EXPECT_EQ(t.numel(), 105);
    EXPECT_EQ(t.nbytes(), 105 * dtype_size(dt));
    EXPECT_EQ(t.dim(), 3);
    EXPECT_EQ(t.size(1), 5);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
    const auto* p = t.data_as<uint8_t>();
    for (size_t i = 0; i < t.nbytes(); ++i) ASSERT_EQ(p[i], 0) << i;
  }
}

TEST(Tensor, ZeroDimAndEmpty) {
  Tensor scalar = Tensor::zeros(DType::kF32, {});
  EXPECT_EQ(scalar.dim(), 0);
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.nbytes(), 4u);
  EXPECT_NE(scalar.data(), nullptr);

  Tensor empty = Tensor::zeros(DType::kF32, {4, 0});
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_EQ(empty.nbytes(), 0u);
  EXPECT_TRUE(empty.defined());
  EXPECT_TRUE(empty.owning());
}

TEST(Tensor, CopiesShareStorage) {
  Tensor a = Tensor::zeros(DType::kF32, {8});
  Tensor b = a;
  b.data_as<float>()[3] = 2.5f;
  EXPECT_EQ(a.data_as<float>()[3], 2.5f);
  EXPECT_EQ(a.data(), b.data());
  // The storage outlives the original handle.
  a = Tensor();
  EXPECT_EQ(b.data_as<float>()[3], 2.5f);
}

TEST(Tensor, ViewAliasesGivenMemory) {
  float buf[6] = {1, 2, 3, 4, 5, 6};
  Tensor v = Tensor::view(buf, DType::kF32, {2, 3});
  EXPECT_FALSE(v.owning());
  EXPECT_TRUE(v.defined());
  EXPECT_EQ(v.data(), buf);
  EXPECT_EQ(v.numel(), 6);
  v.data_as<float>()[4] = 50;
  EXPECT_EQ(buf[4], 50);
  Tensor cuda = Tensor::view(buf, DType::kF32, {6}, Device::kCUDA);
  EXPECT_EQ(cuda.device(), Device::kCUDA);
}

TEST(Tensor, DefaultIsUndefined) {
  Tensor t;
  EXPECT_FALSE(t.owning());
  // Default shape is {} (one element) with no data.
  EXPECT_FALSE(t.defined());
}

TEST(Tensor, ShapeString) {
  EXPECT_EQ(Tensor::shape_string({}), "[]");
  EXPECT_EQ(Tensor::shape_string({4}), "[4]");
  EXPECT_EQ(Tensor::shape_string({4, 16, 0}), "[4, 16, 0]");
}

TEST(TensorDeathTest, NegativeDimensionAborts) {
  EXPECT_DEATH(Tensor::zeros(DType::kF32, {2, -1}), "MARIANA_CHECK");
}

}  // namespace
}  // namespace mariana
