// ControllerKvStore: the comm::Store (comm/store.h) over the controller's key-value table, so the
// ranks of a gang rendezvous through the controller they already talk to (kvPut / kvGet, one
// synchronous call each, durable in the controller's RocksDB before it answers).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "comm/store.h"
#include "proto/client.h"
#include "proto/curve.h"

namespace mariana::workers {

class ControllerKvStore final : public comm::Store {
 public:
  // `endpoint` and `token`: the controller's address and cluster token; each call waits at most
  // call_timeout_ms for the reply (DeadlineExceeded otherwise). One thread at a time.
  // `curve`: the client keys for a controller that requires CURVE (a worker's WorkerOptions::curve).
  ControllerKvStore(const std::string& endpoint, const std::string& token, int call_timeout_ms = 5000,
                    proto::CurveClientKeys curve = {});
  ~ControllerKvStore() override;

  Status set(const std::string& key, const std::string& value) override;
  Result<std::optional<std::string>> try_get(const std::string& key) override;

 private:
  proto::CurveClientKeys curve_;  // before client_, which points to it
  zmq::context_t ctx_{1};
  std::unique_ptr<proto::RpcClient> client_;
  int call_timeout_ms_;
};

}  // namespace mariana::workers
