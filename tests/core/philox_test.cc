// Philox4x32-10: Random123 known-answer vectors, the block layout shared by fills and
// PhiloxStream, thread-count and length independence of the fills, and moment checks.
#include "core/philox.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

namespace mariana {
namespace {

using Words = std::array<uint32_t, 4>;

// Known-answer tests from Random123's kat_vectors (philox4x32 with 10 rounds).
TEST(Philox, Random123KnownAnswers) {
  EXPECT_EQ(philox4x32(Words{0, 0, 0, 0}, {0, 0}), (Words{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32(Words{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
            (Words{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32(Words{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
            (Words{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Philox, ShortFormsMatchTheFullForm) {
  uint64_t counter = 0x0123456789abcdefull, key = 0xfedcba9876543210ull;
  EXPECT_EQ(philox4x32(counter, key), philox4x32(Words{0x89abcdef, 0x01234567, 0, 0}, {0x76543210, 0xfedcba98}));
  EXPECT_EQ(philox_block(key, 0, counter), philox4x32(counter, key));
  EXPECT_EQ(philox_block(key, 0x1111222233334444ull, counter),
            philox4x32(Words{0x89abcdef, 0x01234567, 0x33334444, 0x11112222}, {0x76543210, 0xfedcba98}));
}

TEST(Philox, StreamReadsTheBlocksInOrderAndSeeks) {
  PhiloxStream s(42, 7);
  std::vector<uint32_t> first;
  for (int i = 0; i < 13; ++i) first.push_back(s.next_u32());
  for (uint64_t p = 0; p < 13; ++p) EXPECT_EQ(first[p], philox_block(42, 7, p / 4)[p % 4]) << p;
  EXPECT_EQ(s.position(), 13u);
  s.seek(5);
  EXPECT_EQ(s.next_u32(), first[5]);
  EXPECT_EQ(s.next_u32(), first[6]);
  // A fresh stream restored to a saved position continues identically.
  PhiloxStream t(42, 7);
  t.seek(s.position());
  for (int i = 0; i < 9; ++i) EXPECT_EQ(t.next_u32(), s.next_u32());
  // Different streams and seeds differ.
  EXPECT_NE(PhiloxStream(42, 8).next_u32(), first[0]);
  EXPECT_NE(PhiloxStream(43, 7).next_u32(), first[0]);
}

TEST(Philox, StreamUniformIsInUnitIntervalAndUsesTwoWords) {
  PhiloxStream s(1, 2);
  for (int i = 0; i < 1000; ++i) {
    double u = s.next_uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
  EXPECT_EQ(s.position(), 2000u);
}

TEST(Philox, FillUniformLayout) {
  std::vector<float> f(9);
  philox_fill_uniform(f.data(), 9, 5, 3);
  for (size_t i = 0; i < f.size(); ++i) {
    uint32_t w = philox_block(5, 3, i / 4)[i % 4];
    EXPECT_EQ(f[i], static_cast<float>(w >> 8) / 16777216.0f) << i;
  }
  std::vector<double> d(5);
  philox_fill_uniform(d.data(), 5, 5, 3);
  for (size_t i = 0; i < d.size(); ++i) {
    Words w = philox_block(5, 3, i / 2);
    uint64_t bits = (uint64_t{w[2 * (i % 2)]} << 32) | w[2 * (i % 2) + 1];
    EXPECT_EQ(d[i], static_cast<double>(bits >> 11) / 9007199254740992.0) << i;
  }
}

// Runs `fill` once with 1 OpenMP thread and once with 2, restoring the setting.
template <typename Fill>
void expect_thread_count_independent(Fill fill, int64_t n) {
  int saved = omp_get_max_threads();
  std::vector<float> one(static_cast<size_t>(n)), two(static_cast<size_t>(n));
  omp_set_num_threads(1);
  fill(one.data(), n);
  omp_set_num_threads(2);
  fill(two.data(), n);
  omp_set_num_threads(saved);
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
}

TEST(Philox, FillsAreIndependentOfThreadCount) {
  // Large enough that the parallel path (>= 4096 blocks) is taken.
  const int64_t n = 100003;
  expect_thread_count_independent([](float* p, int64_t k) { philox_fill_normal(p, k, 9, 1, 0.5f, 2.0f); }, n);
  expect_thread_count_independent([](float* p, int64_t k) { philox_fill_uniform(p, k, 9, 1); }, n);
}

TEST(Philox, FillsHaveThePrefixProperty) {
  const int64_t n = 50001;
  std::vector<float> full(n);
  philox_fill_normal(full.data(), n, 11, 4, 0.0f, 1.0f);
  for (int64_t k : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{777}, int64_t{20000}, n - 1}) {
    std::vector<float> part(static_cast<size_t>(k));
    philox_fill_normal(part.data(), k, 11, 4, 0.0f, 1.0f);
    EXPECT_EQ(std::memcmp(part.data(), full.data(), part.size() * sizeof(float)), 0) << k;
  }
  std::vector<double> dfull(n), dpart(101);
  philox_fill_uniform(dfull.data(), n, 11, 4);
  philox_fill_uniform(dpart.data(), 101, 11, 4);
  EXPECT_EQ(std::memcmp(dpart.data(), dfull.data(), dpart.size() * sizeof(double)), 0);
}

TEST(Philox, FloatNormalIsTheRoundedDoubleNormal) {
  std::vector<float> f(1001);
  std::vector<double> d(1001);
  philox_fill_normal(f.data(), 1001, 3, 0, 1.5f, 0.25f);
  philox_fill_normal(d.data(), 1001, 3, 0, 1.5, 0.25);
  for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(f[i], static_cast<float>(d[i])) << i;
}

TEST(Philox, StreamsAndSeedsGiveDifferentFills) {
  std::vector<float> a(64), b(64), c(64);
  philox_fill_uniform(a.data(), 64, 1, 0);
  philox_fill_uniform(b.data(), 64, 1, 1);
  philox_fill_uniform(c.data(), 64, 2, 0);
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
}

TEST(Philox, NormalMoments) {
  // n = 1e6 draws. The sample mean has standard error std/sqrt(n) = 1e-3 * std; the sample std has
  // standard error ~ std/sqrt(2n) = 7.1e-4 * std. Tolerances are 5 standard errors (a false failure
  // has probability < 1e-6, and the seed is fixed anyway).
  const int64_t n = 1000000;
  for (auto [mean, std] : {std::pair{0.0, 1.0}, std::pair{3.0, 2.0}}) {
    std::vector<double> x(n);
    philox_fill_normal(x.data(), n, 2024, 0, mean, std);
    double s = 0, s2 = 0, s4 = 0;
    for (double v : x) {
      s += v;
    }
    double m = s / n;
    for (double v : x) {
      s2 += (v - m) * (v - m);
      s4 += std::pow((v - m) / std, 4);
    }
    double sd = std::sqrt(s2 / (n - 1));
    EXPECT_NEAR(m, mean, 5 * std / std::sqrt(double(n)));
    EXPECT_NEAR(sd, std, 5 * std / std::sqrt(2.0 * n));
    // Kurtosis 3 (var of the 4th-moment estimate is (105 - 9)/n = 96/n): checks the shape, not
    // only the first two moments.
    EXPECT_NEAR(s4 / n, 3.0, 5 * std::sqrt(96.0 / n));
    for (double v : x) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST(Philox, UniformMoments) {
  // Uniform [0,1): mean 1/2 with standard error sqrt(1/12/n); 5 standard errors.
  const int64_t n = 1000000;
  std::vector<float> x(n);
  philox_fill_uniform(x.data(), n, 77, 0);
  double s = 0;
  for (float v : x) {
    ASSERT_GE(v, 0.0f);
    ASSERT_LT(v, 1.0f);
    s += v;
  }
  EXPECT_NEAR(s / n, 0.5, 5 * std::sqrt(1.0 / 12 / n));
}

}  // namespace
}  // namespace mariana
