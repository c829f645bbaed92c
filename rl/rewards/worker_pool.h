// A pool of long-lived worker processes that answer one JSON line per request line on their
// stdin/stdout (a Unix socket pair), for reward scorers written in Python (math_verify). One
// process per slot, started once and kept across calls; a worker that died is restarted before
// its next request, and one that exceeds the per-call timeout is killed and restarted.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace mariana::rl {

class JsonLineWorkerPool {
 public:
  struct Options {
    std::string name = "worker";     // for messages: "<name> worker 0 (pid 123): ..."
    std::vector<std::string> argv;   // argv[0] is an absolute path to the program
    int workers = 1;
    double timeout_s = 20;           // per call
    double startup_timeout_s = 120;  // for the handshake line
    // Checks a worker's first line (its handshake); a failure aborts the start.
    std::function<Status(const nlohmann::json& handshake)> check_handshake;
  };

  // Starts every worker and reads its handshake. The check's Status, or FailedPrecondition when a
  // worker exits, says nothing valid, or is silent for startup_timeout_s.
  static Result<std::unique_ptr<JsonLineWorkerPool>> start(Options options);
  ~JsonLineWorkerPool();  // kills and reaps every worker
  JsonLineWorkerPool(const JsonLineWorkerPool&) = delete;
  JsonLineWorkerPool& operator=(const JsonLineWorkerPool&) = delete;

  // Sends `request` to a free worker (waiting for one) and returns its reply line, parsed.
  // DeadlineExceeded after timeout_s (that worker is killed and restarted); a worker that died
  // (killed from outside, or crashed) is replaced and the request retried once on the new one,
  // then Unavailable; a restart's own error when a dead worker cannot be replaced. Thread-safe.
  Result<nlohmann::json> call(const nlohmann::json& request);

  std::vector<pid_t> pids() const;  // the worker processes by slot (-1: none); exact when no call is in flight
  int64_t restarts() const;         // workers replaced since start

 private:
  struct Slot {
    pid_t pid = -1;
    int fd = -1;
    std::string buffer;  // bytes read past the last line
  };
  explicit JsonLineWorkerPool(Options options) : options_(std::move(options)) {}
  Status spawn(int index, Slot& slot);        // starts the process and reads its handshake
  void stop(Slot& slot);                      // SIGKILL, close, reap
  bool alive(Slot& slot);                     // false (and reaped) when the process has exited
  Result<std::string> read_line(int index, Slot& slot, double timeout_s);
  // One request line out, one reply line back, on a live worker (restarting a dead one first).
  Result<std::string> exchange(int index, Slot& slot, const std::string& line);
  void count_restart();
  std::string who(int index, const Slot& slot) const;

  Options options_;
  std::vector<Slot> slots_;
  mutable std::mutex mu_;
  std::condition_variable free_cv_;
  std::vector<int> free_;  // slot indices not in a call
  int64_t restarts_ = 0;
};

}  // namespace mariana::rl
