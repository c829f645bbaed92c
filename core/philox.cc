// Philox4x32-10 rounds, the block layout shared by the fills and PhiloxStream, and the
// OpenMP-parallel uniform and normal fills built on it.
#include "core/philox.h"

#include <cmath>
#include <numbers>

namespace mariana {

namespace {

constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kW1 = 0xBB67AE85u;  // sqrt(3) - 1

inline uint32_t lo32(uint64_t x) { return static_cast<uint32_t>(x); }
inline uint32_t hi32(uint64_t x) { return static_cast<uint32_t>(x >> 32); }

// 2^-24 and 2^-53: the spacing of the uniform grids.
constexpr double kTwoPow53Inv = 1.0 / 9007199254740992.0;
constexpr float kTwoPow24Inv = 1.0f / 16777216.0f;

inline double u53(uint32_t hi, uint32_t lo) {
  return static_cast<double>(((static_cast<uint64_t>(hi) << 32) | lo) >> 11) * kTwoPow53Inv;
}

// Box-Muller pair from one block; u1 in (0, 1] so log(u1) is finite.
inline void box_muller(const std::array<uint32_t, 4>& w, double* z0, double* z1) {
  double u1 = u53(w[0], w[1]) + kTwoPow53Inv;
  double u2 = u53(w[2], w[3]);
  double r = std::sqrt(-2.0 * std::log(u1));
  double theta = 2.0 * std::numbers::pi * u2;
  *z0 = r * std::cos(theta);
  *z1 = r * std::sin(theta);
}

// Parallel regions only pay off past a few thousand blocks.
constexpr int64_t kParallelBlocks = 4096;

template <typename T>
void fill_normal_impl(T* out, int64_t n, uint64_t seed, uint64_t stream, double mean, double std) {
  if (n <= 0) return;
  int64_t pairs = (n + 1) / 2;
#pragma omp parallel for schedule(static) if (pairs >= kParallelBlocks)
  for (int64_t p = 0; p < pairs; ++p) {
    double z0, z1;
    box_muller(philox_block(seed, stream, static_cast<uint64_t>(p)), &z0, &z1);
    out[2 * p] = static_cast<T>(mean + std * z0);
    if (2 * p + 1 < n) out[2 * p + 1] = static_cast<T>(mean + std * z1);
  }
}

}  // namespace

std::array<uint32_t, 4> philox4x32(const std::array<uint32_t, 4>& counter,
                                   const std::array<uint32_t, 2>& key) {
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {  // the key is bumped between rounds, not before the first
      k0 += kW0;
      k1 += kW1;
    }
    uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    uint32_t n0 = hi32(p1) ^ c1 ^ k0;
    uint32_t n1 = lo32(p1);
    uint32_t n2 = hi32(p0) ^ c3 ^ k1;
    uint32_t n3 = lo32(p0);
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
  }
  return {c0, c1, c2, c3};
}

std::array<uint32_t, 4> philox4x32(uint64_t counter, uint64_t key) {
  return philox4x32({lo32(counter), hi32(counter), 0u, 0u}, {lo32(key), hi32(key)});
}

std::array<uint32_t, 4> philox_block(uint64_t seed, uint64_t stream, uint64_t block) {
  return philox4x32({lo32(block), hi32(block), lo32(stream), hi32(stream)}, {lo32(seed), hi32(seed)});
}

void philox_fill_uniform(float* out, int64_t n, uint64_t seed, uint64_t stream) {
  if (n <= 0) return;
  int64_t blocks = (n + 3) / 4;
#pragma omp parallel for schedule(static) if (blocks >= kParallelBlocks)
  for (int64_t b = 0; b < blocks; ++b) {
    std::array<uint32_t, 4> w = philox_block(seed, stream, static_cast<uint64_t>(b));
    for (int64_t j = 0; j < 4 && 4 * b + j < n; ++j) {
      out[4 * b + j] = static_cast<float>(w[static_cast<size_t>(j)] >> 8) * kTwoPow24Inv;
    }
  }
}

void philox_fill_uniform(double* out, int64_t n, uint64_t seed, uint64_t stream) {
  if (n <= 0) return;
  int64_t blocks = (n + 1) / 2;
#pragma omp parallel for schedule(static) if (blocks >= kParallelBlocks)
  for (int64_t b = 0; b < blocks; ++b) {
    std::array<uint32_t, 4> w = philox_block(seed, stream, static_cast<uint64_t>(b));
    out[2 * b] = u53(w[0], w[1]);
    if (2 * b + 1 < n) out[2 * b + 1] = u53(w[2], w[3]);
  }
}

void philox_fill_normal(float* out, int64_t n, uint64_t seed, uint64_t stream, float mean, float std) {
  fill_normal_impl(out, n, seed, stream, mean, std);
}

void philox_fill_normal(double* out, int64_t n, uint64_t seed, uint64_t stream, double mean,
                        double std) {
  fill_normal_impl(out, n, seed, stream, mean, std);
}

PhiloxStream::PhiloxStream(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}

uint32_t PhiloxStream::next_u32() {
  uint64_t block = position_ / 4;
  if (block != cached_block_) {
    cache_ = philox_block(seed_, stream_, block);
    cached_block_ = block;
  }
  uint32_t w = cache_[position_ % 4];
  ++position_;
  return w;
}

double PhiloxStream::next_uniform() {
  uint32_t hi = next_u32();
  uint32_t lo = next_u32();
  return u53(hi, lo);
}

void PhiloxStream::seek(uint64_t position) { position_ = position; }

}  // namespace mariana
