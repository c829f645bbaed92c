// RpcClient: one ZeroMQ DEALER socket speaking envelopes to a ROUTER (the controller or a
// worker), for the CLI, job drivers, tests and benchmarks. call() is synchronous with a timeout;
// send()/recv() pipeline many requests (replies come back in order from one worker, in any order
// from the controller; match them by request id). Not thread-safe: one client per thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "core/status.h"
#include "proto/curve.h"
#include "proto/wire.h"

namespace mariana::proto {

class RpcClient {
 public:
  using Fill = std::function<void(Envelope::Payload::Builder)>;

  // Connects (ZeroMQ connects lazily: errors surface as timeouts of the first call). `identity`
  // sets the routing id (agents and workers use fixed ones); empty = random "cli/<hex>".
  // With `curve` (keys enabled) the connection is CURVE-encrypted and authenticated (a controller
  // listening on a non-loopback address requires it).
  RpcClient(zmq::context_t& ctx, const std::string& endpoint, std::string token, std::string identity = "",
            const CurveClientKeys* curve = nullptr);

  // One request and its reply. An Error reply becomes its Status; no reply within timeout_ms is
  // DeadlineExceeded ("no reply from <endpoint> within N ms").
  Result<Frame> call(const Fill& fill, int timeout_ms);
  // Sends a request; returns its id.
  uint64_t send(const Fill& fill);
  // Sends a pre-encoded frame (built with next_id()).
  void send_raw(const std::string& frame);
  // The next reply (any id). Error replies are returned as frames (payload ERROR), not Statuses.
  Result<Frame> recv(int timeout_ms);
  uint64_t next_id() { return next_id_++; }

  const std::string& identity() const { return identity_; }
  const std::string& token() const { return token_; }
  zmq::socket_t& socket() { return sock_; }
  WireCounters& counters() { return counters_; }

 private:
  zmq::socket_t sock_;
  std::string endpoint_;
  std::string token_;
  std::string identity_;
  uint64_t next_id_ = 1;
  int rcvtimeo_ms_ = -1;  // the socket's ZMQ_RCVTIMEO (libzmq's default: none)
  WireCounters counters_;
};

// One monitoring query of the controller ("status", "nodes", "actors", "actor", "jobs", "job",
// "metrics"; `id` names the actor or job): its JSON document. DataLoss when the reply is not JSON.
Result<nlohmann::json> query_controller(RpcClient& rpc, const std::string& what, const std::string& id,
                                        int timeout_ms);

// A random lowercase hex string of `n` characters.
std::string random_hex(size_t n);

}  // namespace mariana::proto
