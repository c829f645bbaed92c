// GPU benchmark of the CUDA backend: sgemm at 4096³ and 8192³ (TFLOP/s) and rmsnorm_forward on
// DeepSeek-V3's [16384, 7168] (GB/s), each the median of 10 timed runs (cudaEvent) after
// warm-up, one line per case. Without a usable device it says so and exits 0.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/ops.h"

namespace {

constexpr int kWarmup = 3;
constexpr int kRuns = 10;

// Median time in milliseconds of kRuns calls of `op` on the default stream, after kWarmup.
double median_ms(const std::function<void()>& op) {
  for (int i = 0; i < kWarmup; ++i) op();
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  CUDA_CHECK(cudaEventCreate(&start));
  CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  for (int i = 0; i < kRuns; ++i) {
    CUDA_CHECK(cudaEventRecord(start));
    op();
    CUDA_CHECK(cudaEventRecord(stop));
    CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(start));
  CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return (ms[kRuns / 2 - 1] + ms[kRuns / 2]) / 2.0;
}

// Device buffer of n floats, every byte 0x3c (each float ≈ 0.0115: finite, normal, so neither
// NaN/Inf nor denormal slow paths are timed).
float* device_floats(size_t n) {
  float* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, sizeof(float) * n));
  CUDA_CHECK(cudaMemset(p, 0x3c, sizeof(float) * n));
  return p;
}

void bench_sgemm(int64_t n) {
  const size_t elems = static_cast<size_t>(n) * n;
  float* A = device_floats(elems);
  float* B = device_floats(elems);
  float* C = device_floats(elems);
  const double ms = median_ms([&] {
    mariana::cuda::gemm(false, false, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
  });
  const double tflops = 2.0 * n * n * n / (ms * 1e-3) / 1e12;
  std::printf("sgemm %lldx%lldx%lld (NN, fp32): median %.3f ms, %.1f TFLOP/s\n",
              static_cast<long long>(n), static_cast<long long>(n), static_cast<long long>(n),
              ms, tflops);
  CUDA_CHECK(cudaFree(A));
  CUDA_CHECK(cudaFree(B));
  CUDA_CHECK(cudaFree(C));
}

void bench_rmsnorm_forward(int64_t T, int64_t C) {
  float* in = device_floats(static_cast<size_t>(T) * C);
  float* out = device_floats(static_cast<size_t>(T) * C);
  float* weight = device_floats(C);
  float* rstd = device_floats(T);
  const double ms = median_ms(
      [&] { mariana::cuda::rmsnorm_forward(out, rstd, in, weight, T, C, 1e-6f); });
  // Compulsory traffic: read in, write out (T·C floats each), read weight, write rstd.
  const double bytes = sizeof(float) * (2.0 * T * C + C + T);
  std::printf("rmsnorm_forward [%lld, %lld] (fp32): median %.3f ms, %.0f GB/s\n",
              static_cast<long long>(T), static_cast<long long>(C), ms, bytes / (ms * 1e-3) / 1e9);
  CUDA_CHECK(cudaFree(in));
  CUDA_CHECK(cudaFree(out));
  CUDA_CHECK(cudaFree(weight));
  CUDA_CHECK(cudaFree(rstd));
}

}  // namespace

int main() {
  if (!mariana::cuda::cuda_device_usable()) {
    std::printf("no usable CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  std::printf("device %d: %s (sm_%d%d, %d SMs)\n", device, prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);
  bench_sgemm(4096);
  bench_sgemm(8192);
  bench_rmsnorm_forward(16384, 7168);
  return 0;
}
