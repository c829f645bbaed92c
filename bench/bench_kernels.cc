// Google Benchmark micro-benchmarks of the CPU kernels (kernels/ops.h): sgemm as the yardstick,
// attention forward/backward, RMSNorm and cross-entropy. Rates are reported as counters; there
// are no timing assertions. Wall-clock time (UseRealTime) because the kernels are multi-threaded.
//   build-kernels/bench/bench_kernels --benchmark_repetitions=3 --benchmark_report_aggregates_only
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/ops.h"

namespace mariana {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed, float stddev = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// ---- sgemm: C[N,N] = A·B ------------------------------------------------------------------------
void BM_Sgemm(benchmark::State& state) {
  const int64_t N = state.range(0);
  const auto A = random_vector(N * N, 1), B = random_vector(N * N, 2);
  std::vector<float> C(N * N);
  for (auto _ : state) {
    cpu::gemm(false, false, N, N, N, 1.0f, A.data(), N, B.data(), N, 0.0f, C.data(), N);
    benchmark::DoNotOptimize(C.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(N) * N * N * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = cpu::num_threads();
}
BENCHMARK(BM_Sgemm)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- Decode GEMMs: y[M,N] = x[M,K]·W[N,K]ᵀ for M = 1..8 tokens ------------------------------------
// cpu::gemm (the skinny kernel for M <= 2, sgemm above) against cblas_sgemm called directly, on
// the small model's shapes: an expert's gate/up (N 128, K 256), the dense FFN (768 x 256), the LM
// head (4096 x 256). Args: M, N, K, path (0 = cpu::gemm, 1 = cblas_sgemm).
void BM_DecodeGemm(benchmark::State& state) {
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const bool blas = state.range(3) == 1;
  const auto x = random_vector(M * K, 3), W = random_vector(N * K, 4);
  std::vector<float> y(M * N);
  for (auto _ : state) {
    if (blas)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, x.data(), int(K), W.data(),
                  int(K), 0.0f, y.data(), int(N));
    else
      cpu::gemm(false, true, M, N, K, 1.0f, x.data(), K, W.data(), K, 0.0f, y.data(), N);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * double(M) * N * K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DecodeGemm)
    ->ArgsProduct({{1, 2, 4, 8}, {128, 768, 4096}, {256}, {0, 1}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// ---- attention: B=8, S=512, H=8, Dqk=48, Dv=32, causal, one document per sequence ---------------
// GFLOP/s counts the useful causal work: the S(S+1)/2 unmasked scores per (b, h), 2 flops per
// multiply-add. Forward: Q·Kᵀ (Dqk) and P·V (Dv). Backward: Q·Kᵀ recomputed, dO·Vᵀ, dS·K, dSᵀ·Q, Pᵀ·dO.
struct AttentionBench {
  static constexpr int64_t B = 8, S = 512, H = 8, Dqk = 48, Dv = 32, T = B * S;
  std::vector<float> q = random_vector(T * H * Dqk, 10), k = random_vector(T * H * Dqk, 11),
                     v = random_vector(T * H * Dv, 12), dout = random_vector(T * H * Dv, 13);
  std::vector<float> out = std::vector<float>(T * H * Dv), lse = std::vector<float>(T * H);
  std::vector<float> dq = std::vector<float>(T * H * Dqk), dk = std::vector<float>(T * H * Dqk),
                     dv = std::vector<float>(T * H * Dv);
  std::vector<int32_t> doc_start = std::vector<int32_t>(T, 0);
  const float scale = 1.0f / std::sqrt(float(Dqk));

  static double pairs() { return double(B) * H * S * (S + 1) / 2; }
  static double forward_flops() { return 2 * pairs() * (Dqk + Dv); }
  static double backward_flops() { return 2 * pairs() * (3 * Dqk + 2 * Dv); }

  void forward() {
    cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), doc_start.data(), B, S, H, Dqk, Dv,
                           scale);
  }
  void backward() {
    cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), q.data(), k.data(),
                            v.data(), doc_start.data(), B, S, H, Dqk, Dv, scale);
  }
};

void BM_AttentionForward(benchmark::State& state) {
  AttentionBench a;
  for (auto _ : state) {
    a.forward();
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(AttentionBench::forward_flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionForward)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_AttentionBackward(benchmark::State& state) {
  AttentionBench a;
  a.forward();
  for (auto _ : state) {
    a.backward();  // accumulates into dq/dk/dv; the values are irrelevant here
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(AttentionBench::backward_flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_AttentionForwardBackward(benchmark::State& state) {
  AttentionBench a;
  for (auto _ : state) {
    a.forward();
    a.backward();
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter((AttentionBench::forward_flops() + AttentionBench::backward_flops()) * 1e-9,
                         benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_AttentionForwardBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- RMSNorm: T=4096, C=2048 ---------------------------------------------------------------------
// GB/s counts the compulsory traffic: forward reads x and writes out (2·T·C floats); backward reads
// x and dout and read-modify-writes din (4·T·C floats).
constexpr int64_t kNormT = 4096, kNormC = 2048;

void BM_RmsnormForward(benchmark::State& state) {
  const auto x = random_vector(kNormT * kNormC, 20), w = random_vector(kNormC, 21);
  std::vector<float> y(kNormT * kNormC), rstd(kNormT);
  for (auto _ : state) {
    cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), kNormT, kNormC, 1e-6f);
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(2.0 * kNormT * kNormC * sizeof(float) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_RmsnormForward)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_RmsnormBackward(benchmark::State& state) {
  const auto x = random_vector(kNormT * kNormC, 22), w = random_vector(kNormC, 23), g = random_vector(kNormT * kNormC, 24);
  std::vector<float> y(kNormT * kNormC), rstd(kNormT), dx(kNormT * kNormC), dw(kNormC);
  cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), kNormT, kNormC, 1e-6f);
  for (auto _ : state) {
    cpu::rmsnorm_backward(dx.data(), dw.data(), g.data(), x.data(), w.data(), rstd.data(), kNormT, kNormC);
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(4.0 * kNormT * kNormC * sizeof(float) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_RmsnormBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---- Cross-entropy: T=4096 tokens × V=4096 vocabulary --------------------------------------------
// Gelem/s = logits processed per second (T·V per pass; the backward reads logits and updates dlogits).
constexpr int64_t kCeT = 4096, kCeV = 4096;

struct CrossEntropyBench {
  std::vector<float> logits = random_vector(kCeT * kCeV, 30, 3.0f), losses = std::vector<float>(kCeT),
                     lse = std::vector<float>(kCeT), dloss = std::vector<float>(kCeT, 1.0f / kCeT),
                     dlogits = std::vector<float>(kCeT * kCeV);
  std::vector<int32_t> targets;
  CrossEntropyBench() {
    std::mt19937 rng(31);
    for (int64_t t = 0; t < kCeT; ++t) targets.push_back(int32_t(rng() % kCeV));
  }
};

void BM_CrossEntropyForward(benchmark::State& state) {
  CrossEntropyBench c;
  for (auto _ : state) {
    cpu::cross_entropy_forward(c.losses.data(), c.lse.data(), c.logits.data(), c.targets.data(), kCeT, kCeV);
    benchmark::ClobberMemory();
  }
  state.counters["Gelem/s"] =
      benchmark::Counter(double(kCeT) * kCeV * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CrossEntropyForward)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_CrossEntropyForwardBackward(benchmark::State& state) {
  CrossEntropyBench c;
  for (auto _ : state) {
    cpu::cross_entropy_forward(c.losses.data(), c.lse.data(), c.logits.data(), c.targets.data(), kCeT, kCeV);
    cpu::cross_entropy_backward(c.dlogits.data(), c.dloss.data(), c.logits.data(), c.lse.data(), c.targets.data(),
                                kCeT, kCeV);
    benchmark::ClobberMemory();
  }
  state.counters["Gelem/s"] =
      benchmark::Counter(double(kCeT) * kCeV * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_CrossEntropyForwardBackward)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace mariana

BENCHMARK_MAIN();
