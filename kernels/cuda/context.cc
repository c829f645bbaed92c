// Lazily created per-(thread, device) cuBLAS handles and scratch buffers; see context.h.
#include "kernels/cuda/context.h"

#include <vector>

#include "kernels/cuda/cuda_check.h"

namespace mariana::cuda {
namespace {

struct DeviceState {
  cublasHandle_t cublas = nullptr;
  void* scratch = nullptr;
  std::size_t scratch_bytes = 0;
};

// One per thread. Thread-local destructors run before static destructors and atexit handlers,
// so the CUDA runtime is still up when the main thread's handles are released. Errors on release
// are ignored on purpose: at exit there is nothing useful to do with them.
struct ThreadState {
  std::vector<DeviceState> devices;

  ~ThreadState() {
    int current = 0;
    const bool have_current = cudaGetDevice(&current) == cudaSuccess;
    for (int d = 0; d < static_cast<int>(devices.size()); ++d) {
      DeviceState& s = devices[d];
      if (s.cublas == nullptr && s.scratch == nullptr) continue;
      if (cudaSetDevice(d) != cudaSuccess) continue;
      if (s.cublas != nullptr) cublasDestroy(s.cublas);
      if (s.scratch != nullptr) cudaFree(s.scratch);
    }
    if (have_current) cudaSetDevice(current);
    cudaGetLastError();
  }

  DeviceState& current() {
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    if (device >= static_cast<int>(devices.size())) devices.resize(device + 1);
    return devices[device];
  }
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

}  // namespace

cublasHandle_t cublas_handle() {
  DeviceState& s = thread_state().current();
  if (s.cublas == nullptr) {
    CUBLAS_CHECK(cublasCreate(&s.cublas));
    CUBLAS_CHECK(cublasSetMathMode(s.cublas, CUBLAS_DEFAULT_MATH));
    CUBLAS_CHECK(cublasSetPointerMode(s.cublas, CUBLAS_POINTER_MODE_HOST));
  }
  return s.cublas;
}

void* scratch(std::size_t bytes) {
  DeviceState& s = thread_state().current();
  if (bytes > s.scratch_bytes) {
    if (s.scratch != nullptr) CUDA_CHECK(cudaFree(s.scratch));
    s.scratch = nullptr;
    s.scratch_bytes = 0;
    CUDA_CHECK(cudaMalloc(&s.scratch, bytes));
    s.scratch_bytes = bytes;
  }
  return s.scratch;
}

}  // namespace mariana::cuda
