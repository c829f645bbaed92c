// ProcessLauncher: how an agent starts, signals and reaps worker processes. PosixLauncher forks
// and execs, sends the child's stdout/stderr to log files, and asks the kernel to SIGKILL the
// child when the agent dies (PR_SET_PDEATHSIG), so a killed agent leaves no orphan workers.
// FakeLauncher (in tests) records spawns and lets a test decide exits.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace mariana::workers {

struct ProcessExit {
  int pid = 0;
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
};

class ProcessLauncher {
 public:
  virtual ~ProcessLauncher() = default;
  // Starts argv[0] with argv; returns the pid.
  virtual Result<int> spawn(const std::vector<std::string>& argv, const std::string& stdout_path,
                            const std::string& stderr_path) = 0;
  virtual void signal(int pid, int sig) = 0;
  // Children that exited since the last call (non-blocking).
  virtual std::vector<ProcessExit> reap() = 0;
};

class PosixLauncher final : public ProcessLauncher {
 public:
  Result<int> spawn(const std::vector<std::string>& argv, const std::string& stdout_path,
                    const std::string& stderr_path) override;
  void signal(int pid, int sig) override;
  std::vector<ProcessExit> reap() override;
};

}  // namespace mariana::workers
