// Clock: milliseconds on a monotonic clock, behind an interface so that liveness timeouts can be
// driven by a FakeClock in unit tests. SteadyClock is the real one; main() wires it.
#pragma once

#include <chrono>
#include <cstdint>

namespace mariana {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t now_ms() const = 0;
};

class SteadyClock final : public Clock {
 public:
  int64_t now_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

class FakeClock final : public Clock {
 public:
  int64_t now_ms() const override { return now_; }
  void advance(int64_t ms) { now_ += ms; }
  void set(int64_t ms) { now_ = ms; }

 private:
  int64_t now_ = 1'000'000;
};

// Wall-clock milliseconds since the Unix epoch (for records shown to users, never for timeouts).
inline int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace mariana
