// Where a client verb finds the controller and its token, and a small client for the monitoring
// queries. Shared by the cluster verbs (cluster_commands.cc) and `mariana bench actors`.
#pragma once

#include <memory>
#include <string>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "core/status.h"
#include "proto/client.h"

namespace mariana::cli {

struct ClientTarget {
  std::string address;
  std::string token;
  std::string token_file;
};

// From --controller/--token-file, MARIANA_CONTROLLER/MARIANA_TOKEN_FILE, or --state-dir DIR
// (DIR/controller.addr and DIR/cluster.token).
Result<ClientTarget> client_target(const cxxopts::ParseResult& r);
Result<ClientTarget> client_target_from_state_dir(const std::string& dir);

class ClusterClient {
 public:
  explicit ClusterClient(const ClientTarget& t) : ctx_(1), rpc_(ctx_, t.address, t.token) {}
  proto::RpcClient& rpc() { return rpc_; }
  zmq::context_t& context() { return ctx_; }
  // One monitoring query ("status", "nodes", "actors", "actor", "jobs", "job", "metrics").
  Result<nlohmann::json> query(const std::string& what, const std::string& id, int timeout_ms);

 private:
  zmq::context_t ctx_;
  proto::RpcClient rpc_;
};

}  // namespace mariana::cli
