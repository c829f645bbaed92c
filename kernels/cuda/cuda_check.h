// Error checks for the CUDA backend: CUDA_CHECK and CUBLAS_CHECK abort with file:line and the
// library's error string (bugs, not conditions the world causes: STYLE.md habit 6), and
// cuda_device_usable(), which tests and benchmarks use to skip cleanly on machines without a GPU.
#pragma once

#include <cstdio>
#include <cstdlib>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#define CUDA_CHECK(expr)                                                                   \
  do {                                                                                     \
    const cudaError_t _cuda_err = (expr);                                                  \
    if (_cuda_err != cudaSuccess) {                                                        \
      std::fprintf(stderr, "%s:%d: CUDA_CHECK failed: %s: %s (%s)\n", __FILE__, __LINE__, \
                   #expr, cudaGetErrorString(_cuda_err), cudaGetErrorName(_cuda_err));     \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                     \
  do {                                                                                         \
    const cublasStatus_t _cublas_st = (expr);                                                  \
    if (_cublas_st != CUBLAS_STATUS_SUCCESS) {                                                 \
      std::fprintf(stderr, "%s:%d: CUBLAS_CHECK failed: %s: %s (%d)\n", __FILE__, __LINE__,   \
                   #expr, cublasGetStatusString(_cublas_st), static_cast<int>(_cublas_st));    \
      std::abort();                                                                            \
    }                                                                                          \
  } while (0)

// After a kernel launch: catches launch-configuration errors at the launch site. Asynchronous
// faults inside the kernel surface at the next synchronising call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace mariana::cuda {

// True only if cudaGetDeviceCount succeeds with a count > 0. Any error counts as "no device":
// without a driver it is cudaErrorInsufficientDriver, not cudaErrorNoDevice
// (docs/dependencies.md#no-driver-is-not-no-device). The error is cleared so that it does not stick to the next CUDA call. The answer
// is computed once per process (the device set cannot change after the runtime initialises).
bool cuda_device_usable();

}  // namespace mariana::cuda
