// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011): a
// counter-based RNG, so the value at index i is a pure function of (seed, stream, i) and parallel
// fills give the same numbers for any thread count. Not cryptographic.
#pragma once

#include <array>
#include <cstdint>

namespace mariana {

// The full form: 128-bit counter (4 words, word 0 least significant) and 64-bit key.
std::array<uint32_t, 4> philox4x32(const std::array<uint32_t, 4>& counter,
                                   const std::array<uint32_t, 2>& key);
// Counter words {lo(counter), hi(counter), 0, 0}, key words {lo(key), hi(key)}.
std::array<uint32_t, 4> philox4x32(uint64_t counter, uint64_t key);

// How Mariana's fills and streams lay out the counter: block b of stream s under seed k is
// philox4x32({lo(b), hi(b), lo(s), hi(s)}, {lo(k), hi(k)}).
std::array<uint32_t, 4> philox_block(uint64_t seed, uint64_t stream, uint64_t block);

// out[i] uniform in [0, 1), i in [0, n). float: word i%4 of block i/4, top 24 bits. double: words
// {0,1} or {2,3} of block i/2, top 53 bits of the 64. OpenMP-parallel over blocks.
void philox_fill_uniform(float* out, int64_t n, uint64_t seed, uint64_t stream);
void philox_fill_uniform(double* out, int64_t n, uint64_t seed, uint64_t stream);

// out[i] ~ Normal(mean, std), Box-Muller in double from block i/2: words {0,1} give u1 in (0, 1]
// (never log(0)), words {2,3} give u2 in [0, 1); out[2p] = r cos(2 pi u2), out[2p+1] = r sin(2 pi u2).
// The float fill is the double fill rounded to float. OpenMP-parallel over blocks.
void philox_fill_normal(float* out, int64_t n, uint64_t seed, uint64_t stream, float mean, float std);
void philox_fill_normal(double* out, int64_t n, uint64_t seed, uint64_t stream, double mean, double std);

// Sequential draws from one stream; (seed, stream, position) is the whole state, so saving
// position() and seek()ing back replays the same numbers. Word p of the stream is word p%4 of
// philox_block(seed, stream, p/4). Not thread-safe; one owner.
class PhiloxStream {
 public:
  PhiloxStream(uint64_t seed, uint64_t stream);

  uint32_t next_u32();
  // Two words (high first), top 53 bits: uniform in [0, 1).
  double next_uniform();
  // Number of 32-bit words consumed so far.
  uint64_t position() const { return position_; }
  void seek(uint64_t position);
  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }

 private:
  uint64_t seed_;
  uint64_t stream_;
  uint64_t position_ = 0;
  uint64_t cached_block_ = ~uint64_t{0};  // block index held in cache_, or none
  std::array<uint32_t, 4> cache_{};
};

}  // namespace mariana
