// Unit tests of the CPU backend's private helpers (kernels/cpu/cpu_util.h): the vectorised float
// exp and the row primitives built on it (their vector bodies and scalar tails), and e4m3 rounding
// at its edges. The op-level tests cannot see an exp that is off by 1e-5; these can.
#include "kernels/cpu/cpu_util.h"

#include <cmath>
#include <limits>

#include "tests/kernels/kernel_test_util.h"

namespace mariana {
namespace {

using namespace kernel_test;
namespace d = cpu::detail;

constexpr double kUlp = 1.0 / (1 << 23);  // float ulp at 1

TEST(CpuUtil, ExpWithinThreeUlpOverTheNormalRange) {
  // Sweep [-87, 88] densely through both the vector (16- and 8-wide) and the scalar path. The
  // Cephes polynomial is good to ~1.5 ulp; 3 ulp relative leaves room and still catches a wrong
  // coefficient (a 1e-4 change in one coefficient is an error of ~1e-5, 100 ulp).
  const int64_t n = 175001;
  std::vector<float> x(n), y(n);
  for (int64_t i = 0; i < n; ++i) x[i] = float(-87.0 + 175.0 * double(i) / double(n - 1));
  d::exp_shift_sum(y.data(), x.data(), n, 0.0f);
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double want = std::exp(double(x[i]));
    worst = std::max(worst, std::fabs(double(y[i]) - want) / want);
    ASSERT_EQ(y[i], d::exp1(x[i])) << "vector and scalar paths must agree at x = " << x[i];
  }
  EXPECT_LE(worst, 3 * kUlp);
  // Range ends: far below → exactly 0 (no denormal garbage), above 88 → clamped to e^88 (finite).
  EXPECT_EQ(d::exp1(-88.0f), 0.0f);
  EXPECT_EQ(d::exp1(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isfinite(d::exp1(100.0f)));
  EXPECT_EQ(d::exp1(0.0f), 1.0f);
}

TEST(CpuUtil, RowPrimitivesHandleEveryTailLength) {
  for (int64_t n = 1; n <= 40; ++n) {
    SCOPED_TRACE(testing::Message() << "n = " << n);
    const Vec xd = randn(n, 500 + n, 3.0);
    std::vector<float> x(xd.begin(), xd.end()), y(n), acc(n, 1.0f);
    x[n - 1] = 50.0f;  // the maximum in the scalar tail
    EXPECT_EQ(d::row_max(x.data(), n), 50.0f);
    double want = 0;
    for (int64_t j = 0; j < n; ++j) want += std::exp(double(x[j]) - 50.0);
    // n terms each within 3 ulp, summed in float: ≤ (n + 3) ulp relative.
    const float s = d::exp_shift_sum(y.data(), x.data(), n, 50.0f);
    EXPECT_NEAR(s, want, (n + 3) * kUlp * want);
    EXPECT_EQ(d::exp_shift_sum(static_cast<float*>(nullptr), x.data(), n, 50.0f), s);
    d::exp_shift_axpy(acc.data(), x.data(), n, 50.0f, 2.0f);
    for (int64_t j = 0; j < n; ++j) EXPECT_NEAR(acc[j], 1.0 + 2.0 * y[j], 2 * kUlp * (1.0 + 2.0 * y[j])) << j;
    std::vector<float> sg(n);
    d::sigmoid(sg.data(), x.data(), n);
    for (int64_t j = 0; j < n; ++j) EXPECT_NEAR(sg[j], 1.0 / (1.0 + std::exp(-double(x[j]))), 4 * kUlp) << j;
  }
  EXPECT_EQ(d::row_max(static_cast<const float*>(nullptr), 0), -std::numeric_limits<float>::infinity());
}

TEST(CpuUtil, E4m3RoundEdges) {
  EXPECT_EQ(d::e4m3_round(448.0f), 448.0f);
  EXPECT_EQ(d::e4m3_round(463.9f), 448.0f);    // rounds down to the max
  EXPECT_EQ(d::e4m3_round(470.0f), 448.0f);    // would round to 480: saturates
  EXPECT_EQ(d::e4m3_round(1e30f), 448.0f);
  EXPECT_EQ(d::e4m3_round(-1e30), -448.0);
  EXPECT_EQ(d::e4m3_round(std::numeric_limits<float>::infinity()), 448.0f);
  EXPECT_TRUE(std::isnan(d::e4m3_round(std::nanf(""))));
  EXPECT_EQ(d::e4m3_round(0x1.ep-7), 0x1p-6);  // top subnormal region rounds up into the normals
  EXPECT_EQ(d::e4m3_round(0x1p-10), 0.0);      // exactly half the smallest subnormal: to even (0)
  EXPECT_EQ(d::e4m3_round(0x1.0000001p-10), 0x1p-9);
  EXPECT_TRUE(std::signbit(d::e4m3_round(-0x1p-12f)));  // −tiny → −0
  // fp8_scale: exact powers of two stay, others round up.
  EXPECT_EQ(d::fp8_scale(448.0, true), 1.0);
  EXPECT_EQ(d::fp8_scale(449.0, true), 2.0);
  EXPECT_EQ(d::fp8_scale(0.0f, false), 1e-4f / 448);
}

}  // namespace
}  // namespace mariana
