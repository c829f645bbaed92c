// Shared helpers of the CPU kernel tests: seeded random inputs, float/double conversion, tolerance
// comparisons and the central finite-difference gradient check (fp64).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace mariana::kernel_test {

using Vec = std::vector<double>;
using FVec = std::vector<float>;

// Normal(0, stddev) values, rounded to float so float and double runs see identical inputs.
inline Vec randn(size_t n, uint64_t seed, double stddev = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, stddev);
  Vec v(n);
  for (auto& x : v) x = double(float(dist(rng)));
  return v;
}

inline Vec uniform(size_t n, uint64_t seed, double lo, double hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (auto& x : v) x = double(float(dist(rng)));
  return v;
}

inline std::vector<int32_t> randint(size_t n, uint64_t seed, int32_t lo, int32_t hi_inclusive) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(lo, hi_inclusive);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline FVec to_f(const Vec& v) { return FVec(v.begin(), v.end()); }
inline Vec to_d(const FVec& v) { return Vec(v.begin(), v.end()); }

inline double max_abs(const Vec& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Expects |got[i] − want[i]| <= atol + rtol·|want[i]| for every i; reports the first few misses.
inline void expect_close(const std::string& what, const Vec& got, const Vec& want, double rtol, double atol) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int misses = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    const double tol = atol + rtol * std::fabs(want[i]);
    if (!(err <= tol)) {
      if (++misses <= 5)
        ADD_FAILURE() << what << "[" << i << "]: got " << got[i] << " want " << want[i] << " (err " << err
                      << " > tol " << tol << ")";
    }
  }
  EXPECT_EQ(misses, 0) << what << ": " << misses << " of " << got.size() << " entries out of tolerance";
}

inline void expect_close(const std::string& what, const FVec& got, const Vec& want, double rtol, double atol) {
  expect_close(what, to_d(got), want, rtol, atol);
}

// Central finite differences in fp64 with h = 1e-6.
//
// The scalar being differentiated is L = Σ_j f(x)_j · R_j for a fixed random cotangent R, so the
// analytic gradient is what the backward kernel returns for dout = R. The numerical derivative is
// formed as Σ_j (f(x+h)_j − f(x−h)_j)·R_j / 2h: outputs that x_i does not touch cancel exactly
// instead of adding their rounding error to L.
//
// Tolerance |num − ana| <= 1e-6·|ana| + 1e-8, on every entry:
// - truncation error of the central difference is h²/6·|∂³L| ~ 2e-13 for O(1) inputs;
// - rounding: each output carries a few ulp (~1e-15 at magnitude O(1)), divided by 2h that is
//   ~1e-9 per affected output, and x_i affects at most a few dozen outputs with O(1) weights R:
//   <= ~1e-8 absolute, which is the atol. A wrong formula is off by O(|ana|), far above 1e-6·|ana|.
constexpr double kFdStep = 1e-6;
constexpr double kFdRtol = 1e-6;
constexpr double kFdAtol = 1e-8;

inline void expect_fd_gradient(const std::string& what, Vec& x, const std::function<Vec()>& f, const Vec& R,
                               const Vec& analytic, double rtol = kFdRtol, double atol = kFdAtol) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  Vec numeric(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double xi = x[i];
    x[i] = xi + kFdStep;
    const Vec fp = f();
    x[i] = xi - kFdStep;
    const Vec fm = f();
    x[i] = xi;
    EXPECT_EQ(fp.size(), R.size()) << what;
    double d = 0;
    for (size_t j = 0; j < fp.size(); ++j) d += (fp[j] - fm[j]) * R[j];
    numeric[i] = d / (2 * kFdStep);
  }
  expect_close(what + " (analytic vs finite differences)", analytic, numeric, rtol, atol);
  // Guard against a vacuous check: the gradient must not be identically zero.
  EXPECT_GT(max_abs(numeric), 1e-3) << what;
}

// a − b elementwise (used to strip the random prior from accumulated gradients).
inline Vec minus(const Vec& a, const Vec& b) {
  Vec r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] - b[i];
  return r;
}

}  // namespace mariana::kernel_test
