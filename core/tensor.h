// Tensor: a dtype, a contiguous row-major shape and a device, over memory that it owns or views.
// Tensors carry data across file and process boundaries (safetensors, checkpoints, comm); the
// kernels themselves take raw pointers plus a dims struct (see kernels/ops.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace mariana {

enum class Device : uint8_t { kCPU, kCUDA };

class Tensor {
 public:
  Tensor() = default;
  // Owning, zero-filled, 64-byte aligned host memory.
  static Tensor zeros(DType dtype, std::vector<int64_t> shape);
  // Non-owning view over memory that outlives the tensor.
  static Tensor view(void* data, DType dtype, std::vector<int64_t> shape, Device device = Device::kCPU);

  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int dim() const { return static_cast<int>(shape_.size()); }
  int64_t size(int i) const { return shape_.at(static_cast<size_t>(i)); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool owning() const { return storage_ != nullptr; }
  bool defined() const { return data_ != nullptr || numel() == 0; }

  void* data() { return data_; }
  const void* data() const { return data_; }
  template <typename T> T* data_as() { return static_cast<T*>(data_); }
  template <typename T> const T* data_as() const { return static_cast<const T*>(data_); }

  // "[4, 16]"
  static std::string shape_string(const std::vector<int64_t>& shape);

 private:
  std::shared_ptr<void> storage_;
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCPU;
  std::vector<int64_t> shape_;
};

}  // namespace mariana
