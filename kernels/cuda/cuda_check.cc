// cuda_device_usable(); the check macros are in cuda_check.h.
#include "kernels/cuda/cuda_check.h"

namespace mariana::cuda {

bool cuda_device_usable() {
  static const bool usable = [] {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    // Clear the sticky error, e.g. cudaErrorInsufficientDriver
    // (docs/dependencies.md#no-driver-is-not-no-device).
    cudaGetLastError();
    return err == cudaSuccess && count > 0;
  }();
  return usable;
}

}  // namespace mariana::cuda
