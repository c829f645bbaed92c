// The controller process: binds the ROUTER socket, opens the RocksDB state store under the state
// dir, writes the cluster token (DIR/cluster.token, mode 0600) and the bound address
// (DIR/controller.addr), serves Prometheus text at http://HOST:PORT/metrics from a helper thread
// (it only reads a snapshot the loop publishes), and runs the event loop that owns Controller.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "controller/controller.h"
#include "core/status.h"

namespace mariana::controller {

constexpr int kDefaultMetricsPort = 7766;

struct ServerOptions {
  std::string listen = "tcp://127.0.0.1:7765";  // "tcp://127.0.0.1:*" binds an ephemeral port
  std::string state_dir;
  // The HTTP port of /metrics on 127.0.0.1 (written to DIR/metrics.port): kDefaultMetricsPort
  // unless set; 0: any free port; -1: no HTTP endpoint. A busy port is an error naming the flag.
  int metrics_port = kDefaultMetricsPort;
  // ZMQ_HANDSHAKE_IVL: a connection that has not finished the ZMTP (and CURVE) handshake by then
  // is dropped, so idle connections cannot hold file descriptors.
  int handshake_timeout_ms = 5000;
  // Client TCP connections held at once; 0: the open-file limit (raised to the hard limit at
  // start) less a reserve for the state store. Connections past it are closed on arrival.
  int64_t max_connections = 0;
  ControllerOptions controller;
  // Called once on the loop's thread when the state is loaded and the socket bound (with the
  // bound endpoint), before the first frame is served: `run` and `--detach` wait for it.
  std::function<void(const std::string& address)> on_ready;
};

// Reads DIR/cluster.token, creating it (32 random bytes as hex, mode 0600) when missing.
Result<std::string> cluster_token_ensure(const std::string& state_dir);

// Salvages the state in DIR/db that the controller refuses to start on (RocksStateStore::repair):
// what can be read is kept, the commit cross-check is reset, acknowledged state may be lost.
// Returns what was kept. Must not run while a controller uses DIR (RocksDB's lock refuses it).
Result<std::string> controller_repair(const std::string& state_dir);

// Runs until *stop becomes true (a signal handler sets it) or a state commit fails.
Status controller_run(const ServerOptions& options, const std::atomic<bool>* stop);

}  // namespace mariana::controller
