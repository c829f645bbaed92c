// Pid files of a cluster's long-running processes in the controller's state dir, and the verbs
// that end them: DIR/controller.pid (the controller) and DIR/agents/<node>.pid (each agent started
// with --state-dir DIR). `mariana stop`, `controller stop` and `agent stop` send SIGTERM, wait for
// the process to exit (SIGKILL after --timeout-s), and report what they stopped.
#pragma once

#include <string>

#include "core/status.h"

namespace mariana::cli {

std::string controller_pid_path(const std::string& state_dir);
std::string agent_pid_path(const std::string& state_dir, const std::string& node_id);

// Writes this process's pid to `path` atomically; PidFile's destructor removes it if it still
// names this process (a stale one left by a crash is overwritten by the next start).
class PidFile {
 public:
  PidFile() = default;
  ~PidFile();
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;
  Status write(const std::string& path);

 private:
  std::string path_;
};

int controller_stop_main(int argc, char** argv);  // mariana controller stop --state-dir DIR
int agent_stop_main(int argc, char** argv);       // mariana agent stop --state-dir DIR [--node-id N]

}  // namespace mariana::cli
