// Parity of the CUDA ops (mariana::cuda) with the CPU backend (mariana::cpu) on random inputs.
// Every test skips on a machine without a usable CUDA device. Tolerances are worst-case
// forward-error bounds of fp32 summation (both backends sum in a different order), computed per
// element from the inputs, so they are tight where values are small and never flaky.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/ops.h"

namespace mariana {
namespace {

using cuda::cuda_device_usable;

constexpr double kU = 0x1p-24;  // unit roundoff of fp32

// γ_n = n·u / (1 − n·u): bound on the relative error of an n-term fp32 sum (Higham, §3.1).
double gamma_n(double n) { return n * kU / (1.0 - n * kU); }

// Device memory holding `n` floats; `offset` floats of padding in front let a test hand the op a
// pointer that is not 16-byte aligned.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n, size_t offset = 0) : n_(n), offset_(offset) {
    CUDA_CHECK(cudaMalloc(&base_, sizeof(float) * (n + offset + 1)));
  }
  explicit DeviceBuffer(const std::vector<float>& host, size_t offset = 0)
      : DeviceBuffer(host.size(), offset) {
    upload(host);
  }
  ~DeviceBuffer() { cudaFree(base_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  float* get() { return base_ + offset_; }
  void upload(const std::vector<float>& host) {
    ASSERT_EQ(host.size(), n_);
    CUDA_CHECK(cudaMemcpy(get(), host.data(), sizeof(float) * n_, cudaMemcpyHostToDevice));
  }
  std::vector<float> download() {
    std::vector<float> host(n_);
    CUDA_CHECK(cudaMemcpy(host.data(), get(), sizeof(float) * n_, cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  float* base_ = nullptr;
  size_t n_;
  size_t offset_;
};

std::vector<float> random_vector(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// |got[i] − want[i]| <= tol[i] for all i; reports the count and the first few violations.
void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::vector<double>& tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  ASSERT_EQ(got.size(), tol.size()) << what;
  size_t bad = 0;
  std::string first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double diff = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (!(diff <= tol[i])) {  // also catches NaN
      if (++bad <= 5) {
        char line[160];
        std::snprintf(line, sizeof(line), "\n  [%zu] cuda %.9g cpu %.9g diff %.3g tol %.3g", i,
                      got[i], want[i], diff, tol[i]);
        first += line;
      }
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements off" << first;
}

// ---- GEMM ------------------------------------------------------------------------------------

struct GemmCase {
  bool trans_a, trans_b;
  int64_t M, N, K;
  int64_t pad;  // extra columns in every leading dimension (tests the stride arguments)
  float alpha, beta;
};

void PrintTo(const GemmCase& c, std::ostream* os) {
  *os << (c.trans_a ? "T" : "N") << (c.trans_b ? "T" : "N") << " M=" << c.M << " N=" << c.N
      << " K=" << c.K << " pad=" << c.pad << " alpha=" << c.alpha << " beta=" << c.beta;
}

std::string gemm_case_name(const testing::TestParamInfo<GemmCase>& info) {
  const GemmCase& c = info.param;
  return std::string(c.trans_a ? "T" : "N") + (c.trans_b ? "T" : "N") + "_" +
         std::to_string(c.M) + "x" + std::to_string(c.N) + "x" + std::to_string(c.K) + "_pad" +
         std::to_string(c.pad) + (c.beta != 0.0f ? "_beta" : "") + "_" +
         std::to_string(info.index);
}

class CudaGemmTest : public testing::TestWithParam<GemmCase> {};

TEST_P(CudaGemmTest, MatchesCpu) {
  if (!cuda_device_usable()) GTEST_SKIP() << "no usable CUDA device";
  const GemmCase c = GetParam();
  // Stored shapes: A is [M,K] or [K,M] when trans_a; B is [K,N] or [N,K] when trans_b.
  const int64_t a_rows = c.trans_a ? c.K : c.M, a_cols = c.trans_a ? c.M : c.K;
  const int64_t b_rows = c.trans_b ? c.N : c.K, b_cols = c.trans_b ? c.K : c.N;
  const int64_t lda = a_cols + c.pad, ldb = b_cols + c.pad, ldc = c.N + c.pad;
  const std::vector<float> A = random_vector(a_rows * lda, 1);
  const std::vector<float> B = random_vector(b_rows * ldb, 2);
  const std::vector<float> C0 = random_vector(c.M * ldc, 3);

  std::vector<float> want = C0;
  cpu::gemm(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, A.data(), lda, B.data(), ldb, c.beta,
            want.data(), ldc);

  DeviceBuffer dA(A), dB(B), dC(C0);
  cuda::gemm(c.trans_a, c.trans_b, c.M, c.N, c.K, c.alpha, dA.get(), lda, dB.get(), ldb, c.beta,
             dC.get(), ldc);
  const std::vector<float> got = dC.download();

  // Tolerance: each backend's result is within γ_{K+2}·(|α|·Σ_k|a_ik||b_kj| + |β|·|c_ij|) of the
  // exact value (K products summed, then the α and β terms), so the two differ by at most twice
  // that. Padding columns must come back untouched (tolerance 0).
  std::vector<double> tol(got.size(), 0.0);
  auto a_at = [&](int64_t i, int64_t k) { return c.trans_a ? A[k * lda + i] : A[i * lda + k]; };
  auto b_at = [&](int64_t k, int64_t j) { return c.trans_b ? B[j * ldb + k] : B[k * ldb + j]; };
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t j = 0; j < c.N; ++j) {
      double abs_sum = 0.0;
      for (int64_t k = 0; k < c.K; ++k) abs_sum += std::fabs(a_at(i, k)) * std::fabs(b_at(k, j));
      const double mag = std::fabs(c.alpha) * abs_sum + std::fabs(c.beta) * std::fabs(C0[i * ldc + j]);
      tol[i * ldc + j] = 2.0 * gamma_n(static_cast<double>(c.K + 2)) * mag;
    }
  }
  expect_close(got, want, tol, "gemm C");
}

INSTANTIATE_TEST_SUITE_P(
    AllTransposes, CudaGemmTest,
    testing::Values(
        // The four transpose combinations on odd sizes, contiguous and strided, β = 0 and β ≠ 0.
        GemmCase{false, false, 37, 53, 29, 0, 1.0f, 0.0f},
        GemmCase{false, true, 37, 53, 29, 0, 1.0f, 0.0f},
        GemmCase{true, false, 37, 53, 29, 0, 1.0f, 0.0f},
        GemmCase{true, true, 37, 53, 29, 0, 1.0f, 0.0f},
        GemmCase{false, false, 37, 53, 29, 3, 0.75f, -1.25f},
        GemmCase{false, true, 37, 53, 29, 3, 0.75f, -1.25f},
        GemmCase{true, false, 37, 53, 29, 3, 0.75f, -1.25f},
        GemmCase{true, true, 37, 53, 29, 3, 0.75f, -1.25f},
        // Larger, with K long enough for cuBLAS to split it.
        GemmCase{false, false, 129, 67, 1031, 1, -0.5f, 2.0f},
        GemmCase{true, true, 129, 67, 1031, 1, -0.5f, 2.0f},
        // Degenerate shapes: vector-like, K = 0 (C = β·C) and α = 0.
        GemmCase{false, true, 1, 17, 33, 0, 1.0f, 0.5f},
        GemmCase{true, false, 19, 1, 33, 0, 1.0f, 0.5f},
        GemmCase{false, false, 7, 9, 0, 0, 1.0f, 0.5f},
        GemmCase{false, false, 7, 9, 0, 2, 1.0f, 0.0f},
        GemmCase{true, false, 7, 9, 5, 0, 0.0f, 3.0f}),
    gemm_case_name);

// ---- Linear ----------------------------------------------------------------------------------

// Σ_k |x_ik||y_jk| for row-major x[m,k], y[n,k]: the magnitude that bounds a dot product's error.
std::vector<double> abs_dot_rows(const std::vector<float>& x, const std::vector<float>& y,
                                 int64_t m, int64_t n, int64_t k) {
  std::vector<double> out(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t l = 0; l < k; ++l) out[i * n + j] += std::fabs(x[i * k + l]) * std::fabs(y[j * k + l]);
  return out;
}

std::vector<float> transpose(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> t(x.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = x[i * cols + j];
  return t;
}

TEST(CudaLinear, ForwardMatchesCpu) {
  if (!cuda_device_usable()) GTEST_SKIP() << "no usable CUDA device";
  const int64_t T = 45, in = 77, out = 31;
  const std::vector<float> x = random_vector(T * in, 11), W = random_vector(out * in, 12);
  // The device y starts as NaN: linear_forward overwrites (β = 0), so nothing may leak through.
  // The CPU oracle gets zeros, so this checks the CUDA side only.
  std::vector<float> want(T * out, 0.0f);
  cpu::linear_forward(want.data(), x.data(), W.data(), T, in, out);
  DeviceBuffer dx(x), dW(W), dy(std::vector<float>(T * out, std::nanf("")));
  cuda::linear_forward(dy.get(), dx.get(), dW.get(), T, in, out);

  // Tolerance: 2·γ_in·Σ|x||W| per element (two fp32 dot products of length `in`).
  std::vector<double> tol = abs_dot_rows(x, W, T, out, in);
  for (double& t : tol) t *= 2.0 * gamma_n(static_cast<double>(in));
  expect_close(dy.download(), want, tol, "linear_forward y");
}

// Runs linear_backward on both backends from the same non-zero dx, dW (it accumulates) and
// compares; with_dx / with_dW pass null for the other output.
void check_linear_backward(bool with_dx, bool with_dW) {
  const int64_t T = 53, in = 41, out = 27;
  const std::vector<float> x = random_vector(T * in, 21), W = random_vector(out * in, 22);
  const std::vector<float> dy = random_vector(T * out, 23);
  const std::vector<float> dx0 = random_vector(T * in, 24), dW0 = random_vector(out * in, 25);

  std::vector<float> want_dx = dx0, want_dW = dW0;
  cpu::linear_backward(with_dx ? want_dx.data() : nullptr, with_dW ? want_dW.data() : nullptr,
                       dy.data(), x.data(), W.data(), T, in, out);

  DeviceBuffer d_x(x), d_W(W), d_dy(dy), d_dx(dx0), d_dW(dW0);
  cuda::linear_backward(with_dx ? d_dx.get() : nullptr, with_dW ? d_dW.get() : nullptr,
                        d_dy.get(), d_x.get(), d_W.get(), T, in, out);

  // Tolerance: dx = dy·W sums `out` products, dW = dyᵀ·x sums T products, each plus the old
  // value: 2·γ_{n+1}·(Σ|·||·| + |old|). A skipped output must come back bit-identical.
  if (with_dx) {
    const std::vector<float> Wt = transpose(W, out, in);  // [in, out]
    std::vector<double> tol = abs_dot_rows(dy, Wt, T, in, out);
    for (size_t i = 0; i < tol.size(); ++i)
      tol[i] = 2.0 * gamma_n(static_cast<double>(out + 1)) * (tol[i] + std::fabs(dx0[i]));
    expect_close(d_dx.download(), want_dx, tol, "linear_backward dx");
  } else {
    expect_close(d_dx.download(), dx0, std::vector<double>(dx0.size(), 0.0), "untouched dx");
  }
  if (with_dW) {
    const std::vector<float> dyt = transpose(dy, T, out), xt = transpose(x, T, in);
    std::vector<double> tol = abs_dot_rows(dyt, xt, out, in, T);
    for (size_t i = 0; i < tol.size(); ++i)
      tol[i] = 2.0 * gamma_n(static_cast<double>(T + 1)) * (tol[i] + std::fabs(dW0[i]));
    expect_close(d_dW.download(), want_dW, tol, "linear_backward dW");
  } else {
    expect_close(d_dW.download(), dW0, std::vector<double>(dW0.size(), 0.0), "untouched dW");
  }
}

TEST(CudaLinear, BackwardMatchesCpu) {
  if (!cuda_device_usable()) GTEST_SKIP() << "no usable CUDA device";
  check_linear_backward(true, true);
}

TEST(CudaLinear, BackwardSkipsNullDx) {
  if (!cuda_device_usable()) GTEST_SKIP() << "no usable CUDA device";
  check_linear_backward(false, true);
}

TEST(CudaLinear, BackwardSkipsNullDw) {
  if (!cuda_device_usable()) GTEST_SKIP() << "no usable CUDA device";
  check_linear_backward(true, false);
}

// The cuBLAS handle is per thread: a second thread gets its own and computes the same result.
TEST(CudaLinear, ForwardOnAnotherThread) {
  if (!cuda_device_usable()) GTEST_SKIP() << "no usable CUDA device";
  const int64_t T = 16, in = 24, out = 8;
  const std::vector<float> x = random_vector(T * in, 31), W = random_vector(out * in, 32);
  DeviceBuffer dx(x), dW(W), dy_main(T * out), dy_thread(T * out);
  cuda::linear_forward(dy_main.get(), dx.get(), dW.get(), T, in, out);
  std::thread worker([&] {
    cuda::linear_forward(dy_thread.get(), dx.get(), dW.get(), T, in, out);
    CUDA_CHECK(cudaDeviceSynchronize());
  });
  worker.join();
  // Same shapes, same library, same default math: the results are bit-identical.
  expect_close(dy_thread.download(), dy_main.download(), std::vector<double>(T * out, 0.0),
               "linear_forward on a second thread");
}

// ---- RMSNorm ---------------------------------------------------------------------------------

struct RmsnormCase {
  int64_t T, C;
  size_t offset;  // floats of misalignment of every device pointer (1 forces the scalar path)
};

void PrintTo(const RmsnormCase& c, std::ostream* os) {
  *os << "T=" << c.T << " C=" << c.C << " offset=" << c.offset;
}

std::string rmsnorm_case_name(const testing::TestParamInfo<RmsnormCase>& info) {
  return "T" + std::to_string(info.param.T) + "_C" + std::to_string(info.param.C) + "_off" +
         std::to_string(info.param.offset);
}

class CudaRmsnormTest : public testing::TestWithParam<RmsnormCase> {};

TEST_P(CudaRmsnormTest, ForwardMatchesCpu) {
  if (!cuda_device_usable()) GTEST_SKIP() << "no usable CUDA device";
  const auto [T, C, off] = GetParam();
  const float eps = 1e-6f;
  // Inputs away from zero-mean-square rows; weights around 1 like a trained norm.
  const std::vector<float> x = random_vector(T * C, 41, -2.0f, 2.0f);
  const std::vector<float> w = random_vector(C, 42, 0.5f, 1.5f);

  std::vector<float> want_out(T * C), want_rstd(T);
  cpu::rmsnorm_forward(want_out.data(), want_rstd.data(), x.data(), w.data(), T, C, eps);

  DeviceBuffer d_x(x, off), d_w(w, off), d_out(T * C, off), d_rstd(T, off);
  cuda::rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), T, C, eps);

  // Tolerance: mean(x²) sums C positive terms, relative error <= γ_C in each backend; the
  // square root halves it; the /C, +eps, sqrt, divide and the two products of `out` add about
  // 6u. So rstd and out agree to a relative 2·(γ_C/2 + 8u) = γ_C + 16u (8u: headroom for a
  // backend that orders the products differently).
  const double rel = gamma_n(static_cast<double>(C)) + 16.0 * kU;
  std::vector<double> tol_rstd(T), tol_out(T * C);
  for (int64_t i = 0; i < T; ++i) tol_rstd[i] = rel * std::fabs(want_rstd[i]);
  for (int64_t i = 0; i < T * C; ++i) tol_out[i] = rel * std::fabs(want_out[i]);
  expect_close(d_rstd.download(), want_rstd, tol_rstd, "rmsnorm_forward rstd");
  expect_close(d_out.download(), want_out, tol_out, "rmsnorm_forward out");
}

TEST_P(CudaRmsnormTest, BackwardMatchesCpu) {
  if (!cuda_device_usable()) GTEST_SKIP() << "no usable CUDA device";
  const auto [T, C, off] = GetParam();
  const float eps = 1e-6f;
  const std::vector<float> x = random_vector(T * C, 51, -2.0f, 2.0f);
  const std::vector<float> w = random_vector(C, 52, 0.5f, 1.5f);
  const std::vector<float> dout = random_vector(T * C, 53);
  const std::vector<float> din0 = random_vector(T * C, 54), dw0 = random_vector(C, 55);

  // Both backends get the CPU forward's rstd, so only the backward's own rounding differs.
  std::vector<float> out(T * C), rstd(T);
  cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), T, C, eps);
  std::vector<float> want_din = din0, want_dw = dw0;
  cpu::rmsnorm_backward(want_din.data(), want_dw.data(), dout.data(), x.data(), w.data(),
                        rstd.data(), T, C);

  DeviceBuffer d_x(x, off), d_w(w, off), d_dout(dout, off), d_rstd(rstd, off);
  DeviceBuffer d_din(din0, off), d_dw(dw0, off);
  cuda::rmsnorm_backward(d_din.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(),
                         d_rstd.get(), T, C);

  // Tolerance for din[t,c] = old + r·g_c·w_c − r³/C·x_c·Σ g·w·x: the row sum has relative error
  // <= γ_C against Σ|g·w·x| in each backend; every other step adds a few u of its own term:
  //   2·(γ_C·r³/C·|x_c|·Σ|g·w·x| + 8u·(|old| + r·|g_c·w_c| + r³/C·|x_c|·Σ|g·w·x|)).
  std::vector<double> tol_din(T * C);
  for (int64_t t = 0; t < T; ++t) {
    const double r = rstd[t];
    double abs_dot = 0.0;
    for (int64_t c = 0; c < C; ++c)
      abs_dot += std::fabs(double(dout[t * C + c]) * w[c] * x[t * C + c]);
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = t * C + c;
      const double corr = r * r * r / C * std::fabs(x[i]) * abs_dot;
      const double direct = r * std::fabs(double(dout[i]) * w[c]);
      tol_din[i] = 2.0 * (gamma_n(static_cast<double>(C)) * corr +
                          8.0 * kU * (std::fabs(din0[i]) + direct + corr));
    }
  }
  // Tolerance for dweight[c] = old + Σ_t dout·x·r: a T-term sum (plus the old value), each term
  // with a couple of roundings: 2·γ_{T+3}·(|old| + Σ_t|dout·x·r|).
  std::vector<double> tol_dw(C);
  for (int64_t c = 0; c < C; ++c) {
    double abs_sum = std::fabs(dw0[c]);
    for (int64_t t = 0; t < T; ++t) abs_sum += std::fabs(double(dout[t * C + c]) * x[t * C + c] * rstd[t]);
    tol_dw[c] = 2.0 * gamma_n(static_cast<double>(T + 3)) * abs_sum;
  }
  expect_close(d_din.download(), want_din, tol_din, "rmsnorm_backward din");
  expect_close(d_dw.download(), want_dw, tol_dw, "rmsnorm_backward dweight");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaRmsnormTest,
    testing::Values(RmsnormCase{1, 8, 0},        // a single row
                    RmsnormCase{67, 1024, 0},    // float4 path; 3 dweight chunks, last partial
                    RmsnormCase{67, 1024, 1},    // misaligned pointers: scalar path
                    RmsnormCase{40, 1023, 0},    // C not a multiple of 4: scalar path
                    RmsnormCase{1500, 96, 0},    // 47 dweight chunks of 32 rows
                    RmsnormCase{40000, 12, 0},   // > 1024·32 rows: 1000 chunks of 40 rows
                    RmsnormCase{3, 7168, 0}),    // DeepSeek-V3's hidden_size
    rmsnorm_case_name);

// dweight is summed in a fixed order (no atomics): two runs give bit-identical results, as do
// din with or without dweight requested.
TEST(CudaRmsnorm, BackwardIsDeterministic) {
  if (!cuda_device_usable()) GTEST_SKIP() << "no usable CUDA device";
  const int64_t T = 4099, C = 512;
  const std::vector<float> x = random_vector(T * C, 61), w = random_vector(C, 62, 0.5f, 1.5f);
  const std::vector<float> dout = random_vector(T * C, 63);
  const std::vector<float> zeros_tc(T * C, 0.0f), zeros_c(C, 0.0f);
  DeviceBuffer d_x(x), d_w(w), d_dout(dout), d_out(T * C), d_rstd(T);
  cuda::rmsnorm_forward(d_out.get(), d_rstd.get(), d_x.get(), d_w.get(), T, C, 1e-6f);

  std::vector<float> din[2], dw[2];
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer d_din(zeros_tc), d_dw(zeros_c);
    cuda::rmsnorm_backward(d_din.get(), d_dw.get(), d_dout.get(), d_x.get(), d_w.get(),
                           d_rstd.get(), T, C);
    din[run] = d_din.download();
    dw[run] = d_dw.download();
  }
  DeviceBuffer d_din_only(zeros_tc);
  cuda::rmsnorm_backward(d_din_only.get(), nullptr, d_dout.get(), d_x.get(), d_w.get(),
                         d_rstd.get(), T, C);
  const std::vector<double> exact_tc(T * C, 0.0), exact_c(C, 0.0);
  expect_close(din[1], din[0], exact_tc, "din, second run");
  expect_close(dw[1], dw[0], exact_c, "dweight, second run");
  expect_close(d_din_only.download(), din[0], exact_tc, "din without dweight");
}

}  // namespace
}  // namespace mariana
