// The node agent (`mariana agent start`): registers the node's resources and actor classes with
// the controller (routing id "a/<node>"), starts a worker process per StartWorker order (keyed by
// actor and incarnation, so a repeated order is ignored), stops workers on StopWorker, reaps them
// and reports every exit at once (WorkerExited), and heartbeats. When the controller's epoch
// changes (it restarted) the agent registers again and lists the workers it still runs.
// One thread; the ProcessLauncher seam lets tests replace fork/exec.
#pragma once

#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "core/status.h"
#include "workers/process_launcher.h"

namespace mariana::workers {

struct AgentOptions {
  std::string controller;
  std::string token;
  std::string token_file;  // passed to workers
  std::string curve_file;  // CURVE client credentials ("" none), used here and passed to workers
  std::string node_id;     // empty: "node-<random>"
  std::map<std::string, double> resources;
  std::vector<std::string> actor_classes;
  std::string log_dir;        // worker logs: <log_dir>/<actor>-<incarnation>.{out,err}
  // The address this node's workers listen on for direct calls and their comm/ groups (a gang's,
  // a campaign's weights group): loopback on one machine, an address the other nodes reach on
  // several.
  std::string bind_host = "127.0.0.1";
  std::string worker_binary;  // the `mariana` binary (default /proc/self/exe)
  int64_t heartbeat_ms = 500;
};

Status agent_run(const AgentOptions& options, ProcessLauncher* launcher, const std::atomic<bool>* stop);

}  // namespace mariana::workers
