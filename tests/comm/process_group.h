// Runs one function per rank in forked child processes and collects what each reported, bounded
// by a deadline so a hanging collective fails the test instead of hanging CI.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace mariana::comm {

// What a rank reported: its body's return value ("" = all checks passed), or why it has none.
struct RankOutcome {
  bool exited = false;  // false: killed at the deadline (or by a signal)
  std::string report;
};

// Forks `n` children; child r runs body(r) and writes its return value to dir/report.<r>. The
// children in `must_exit` (all when empty) are waited for until `deadline`; then every child still
// alive is killed with SIGKILL (a stopped child included). Each child also arms alarm(), so it dies
// by itself should the parent die first.
inline std::vector<RankOutcome> run_ranks(int n, const std::string& dir, const std::function<std::string(int)>& body,
                                          std::chrono::seconds deadline, std::vector<int> must_exit = {}) {
  if (must_exit.empty()) {
    for (int r = 0; r < n; ++r) must_exit.push_back(r);
  }
  std::vector<pid_t> pids(n, -1);
  for (int r = 0; r < n; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(static_cast<unsigned>(deadline.count()) + 5);
      const std::string report = body(r);
      std::ofstream(dir + "/report." + std::to_string(r)) << report;
      ::_exit(0);
    }
    pids[r] = pid;
  }
  std::vector<RankOutcome> outcomes(n);
  std::vector<bool> reaped(n, false);
  const auto end = std::chrono::steady_clock::now() + deadline;
  auto pending = [&] {
    for (int r : must_exit)
      if (!reaped[r]) return true;
    return false;
  };
  auto reap = [&](int r, int options) {
    int status = 0;
    if (!reaped[r] && ::waitpid(pids[r], &status, options) == pids[r]) {
      reaped[r] = true;
      outcomes[r].exited = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
  };
  while (pending() && std::chrono::steady_clock::now() < end) {
    for (int r = 0; r < n; ++r) reap(r, WNOHANG);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (int r = 0; r < n; ++r) {
    if (!reaped[r]) {
      ::kill(pids[r], SIGKILL);
      reap(r, 0);
      outcomes[r].exited = false;
    }
    std::ifstream in(dir + "/report." + std::to_string(r));
    std::stringstream ss;
    ss << in.rdbuf();
    if (outcomes[r].exited) outcomes[r].report = ss.str();
  }
  return outcomes;
}

}  // namespace mariana::comm
