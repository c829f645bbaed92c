// Clock: milliseconds on a monotonic clock, behind an interface so that liveness timeouts can be
// driven by a FakeClock in unit tests. SteadyClock is the real one; main() wires it.
#pragma once

#include <chrono>
#include <cstdint>

namespace mariana {

// Wall-clock milliseconds since the Unix epoch (for records shown to users and for windows that
// must survive a restart of the process, never for timeouts).
inline int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t now_ms() const = 0;
  // Wall time as this clock sees it: the real one, or a fake that advances with now_ms().
  virtual int64_t wall_now_ms() const { return wall_ms(); }
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
  int64_t wall_now_ms() const override { return 1'700'000'000'000 + now_; }
  void advance(int64_t ms) { now_ += ms; }
  void set(int64_t ms) { now_ = ms; }

 private:
  int64_t now_ = 1'000'000;
};

}  // namespace mariana
