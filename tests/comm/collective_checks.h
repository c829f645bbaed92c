// check_collectives(): every collective at several sizes on one rank of a group, against the result
// computed here from every rank's deterministic input. Shared by the Gloo tests (host buffers) and
// the NCCL tests (device buffers, through a BufferSpace of their own).
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <span>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace mariana::comm {

// Where a check's buffers live. put() makes a buffer holding `values` that stays valid as long as
// the space; get() reads one back.
class BufferSpace {
 public:
  virtual ~BufferSpace() = default;
  virtual std::span<float> put(const std::vector<float>& values) = 0;
  virtual std::vector<float> get(std::span<const float> buffer) = 0;
};

// Host memory, for CPU backends.
class HostBufferSpace final : public BufferSpace {
 public:
  std::span<float> put(const std::vector<float>& values) override { return buffers_.emplace_back(values); }
  std::vector<float> get(std::span<const float> buffer) override { return {buffer.begin(), buffer.end()}; }

 private:
  std::deque<std::vector<float>> buffers_;
};

// Rank r's input element i for collective `salt`: multiples of 0.5 below 2^11, so every sum over
// up to 4 ranks is exact in fp32 whatever order a backend adds in, and results compare with ==.
inline float input(int rank, size_t i, int salt) {
  return static_cast<float>((rank * 131 + static_cast<long long>(i) * 7 + salt * 17) % 1000) * 0.5f;
}
inline std::vector<float> inputs(int rank, size_t n, int salt) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = input(rank, i, salt);
  return v;
}
// all_to_all_v: how many floats rank src sends rank dst (zeros included), and their values.
inline int64_t a2a_count(int src, int dst, int64_t scale) { return ((src * 7 + dst * 3) % 5) * scale; }
inline float a2a_value(int src, int dst, int64_t j) { return static_cast<float>(src * 1000000 + dst * 10000 + j); }

// The first mismatch of `got` against `want`, or "".
inline std::string compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return what + ": size " + std::to_string(got.size()) + " != " + std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return what + ": element " + std::to_string(i) + " is " + std::to_string(got[i]) + ", expected " +
             std::to_string(want[i]);
    }
  }
  return "";
}

// Every collective at every size on one rank of an n-rank group, buffers in `space`; "" when all
// match, else the first mismatch or failure.
inline std::string check_collectives(Communicator& c, BufferSpace& space) {
  const int n = c.size(), me = c.rank();
  int salt = 0;
  for (size_t len : {size_t{0}, size_t{1}, size_t{7}, size_t{1001}, size_t{1} << 20}) {
    const std::string at = " (len " + std::to_string(len) + ")";
    ++salt;
    {  // allreduce
      const std::span<float> data = space.put(inputs(me, len, salt));
      std::vector<float> want(len, 0.0f);
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < len; ++i) want[i] += input(r, i, salt);
      if (Status st = c.allreduce_sum(data); !st.ok()) return st.to_string();
      if (std::string e = compare("allreduce_sum" + at, space.get(data), want); !e.empty()) return e;
    }
    for (int again = 0; again < 2; ++again) {  // reduce-scatter, `len` floats per rank, twice (the
      ++salt;                                   // second call reuses Gloo's algorithm object)
      const std::span<float> in = space.put(inputs(me, len * n, salt)), out = space.put(std::vector<float>(len, -1.0f));
      std::vector<float> want(len, 0.0f);
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < len; ++i) want[i] += input(r, me * len + i, salt);
      if (Status st = c.reduce_scatter_sum(in, out); !st.ok()) return st.to_string();
      if (std::string e = compare("reduce_scatter_sum" + at, space.get(out), want); !e.empty()) return e;
    }
    ++salt;
    {  // all-gather
      const std::span<float> in = space.put(inputs(me, len, salt)), out = space.put(std::vector<float>(len * n, -1.0f));
      std::vector<float> want;
      for (int r = 0; r < n; ++r) {
        const std::vector<float> block = inputs(r, len, salt);
        want.insert(want.end(), block.begin(), block.end());
      }
      if (Status st = c.all_gather(in, out); !st.ok()) return st.to_string();
      if (std::string e = compare("all_gather" + at, space.get(out), want); !e.empty()) return e;
    }
    ++salt;
    {  // broadcast from the last rank
      const std::span<float> data = space.put(inputs(me, len, salt));
      if (Status st = c.broadcast(data, n - 1); !st.ok()) return st.to_string();
      if (std::string e = compare("broadcast" + at, space.get(data), inputs(n - 1, len, salt)); !e.empty()) return e;
    }
    {  // all-to-all-v, uneven counts with zeros, scaled by len
      const int64_t scale = static_cast<int64_t>(std::max<size_t>(len / 4, len ? 1 : 0));
      std::vector<int64_t> send_counts(n), recv_counts(n);
      std::vector<float> in, want;
      for (int r = 0; r < n; ++r) {
        send_counts[r] = a2a_count(me, r, scale);
        recv_counts[r] = a2a_count(r, me, scale);
        for (int64_t j = 0; j < send_counts[r]; ++j) in.push_back(a2a_value(me, r, j));
        for (int64_t j = 0; j < recv_counts[r]; ++j) want.push_back(a2a_value(r, me, j));
      }
      const std::span<float> in_buffer = space.put(in), out = space.put(std::vector<float>(want.size(), -1.0f));
      if (Status st = c.all_to_all_v(in_buffer, send_counts, out, recv_counts); !st.ok()) return st.to_string();
      if (std::string e = compare("all_to_all_v" + at, space.get(out), want); !e.empty()) return e;
    }
  }
  if (Status st = c.barrier(); !st.ok()) return st.to_string();
  return "";
}

// The same with host buffers.
inline std::string check_collectives(Communicator& c) {
  HostBufferSpace host;
  return check_collectives(c, host);
}

}  // namespace mariana::comm
