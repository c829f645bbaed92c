// Per-thread, per-device state the CUDA ops share: a cuBLAS handle and a grow-only scratch
// buffer, both created lazily on first use. Not a public API: only kernels/cuda/ includes it.
// Every op runs on the legacy default stream (stream 0): the op API has no stream argument yet,
// so ops are ordered among themselves and against cudaMemcpy without extra synchronisation.
#pragma once

#include <cstddef>

#include <cublas_v2.h>

namespace mariana::cuda {

// The calling thread's cuBLAS handle for the current device (cudaGetDevice). Created once per
// (thread, device) with CUBLAS_DEFAULT_MATH (true fp32, no TF32) and the default stream;
// destroyed when the thread exits.
cublasHandle_t cublas_handle();

// Device scratch of at least `bytes` on the current device, owned by the calling thread and
// reused by the next op that asks. Ops that need temporary space and have no argument for it
// use this (the op API has no workspace parameter); grows only, freed at thread exit. Valid
// until the next scratch() call on this thread; since all ops share stream 0, a kernel that
// still reads the old buffer is ordered before any later kernel writes the new one, and
// cudaFree synchronises before releasing it.
void* scratch(std::size_t bytes);

}  // namespace mariana::cuda
