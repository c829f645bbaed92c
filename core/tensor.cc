// Tensor construction: owning zero-filled 64-byte aligned host storage (shared_ptr with an aligned
// free, so copies of a Tensor share the memory) and non-owning views. No arithmetic lives here.
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <limits>

namespace mariana {

namespace {

constexpr size_t kAlignment = 64;

int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    MARIANA_CHECK(d >= 0);
    MARIANA_CHECK(d == 0 || n <= std::numeric_limits<int64_t>::max() / d);
    n *= d;
  }
  return n;
}

}  // namespace

Tensor Tensor::zeros(DType dtype, std::vector<int64_t> shape) {
  int64_t n = checked_numel(shape);
  size_t elem = dtype_size(dtype);
  MARIANA_CHECK(static_cast<uint64_t>(n) <= std::numeric_limits<size_t>::max() / elem - kAlignment);
  size_t bytes = static_cast<size_t>(n) * elem;
  // aligned_alloc wants a size that is a multiple of the alignment; an empty tensor still gets one
  // block so that data() is never null for an owning tensor.
  size_t alloc = bytes == 0 ? kAlignment : (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, alloc);
  MARIANA_CHECK(p != nullptr);
  std::memset(p, 0, alloc);
  Tensor t;
  t.storage_ = std::shared_ptr<void>(p, [](void* q) { std::free(q); });
  t.data_ = p;
  t.dtype_ = dtype;
  t.device_ = Device::kCPU;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::view(void* data, DType dtype, std::vector<int64_t> shape, Device device) {
  checked_numel(shape);
  Tensor t;
  t.data_ = data;
  t.dtype_ = dtype;
  t.device_ = device;
  t.shape_ = std::move(shape);
  return t;
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

std::string Tensor::shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += "]";
  return s;
}

}  // namespace mariana
