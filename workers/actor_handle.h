// ActorHandle: a caller's handle on one actor of a [[roles]] job, named by (job id, role, index),
// from a client or from inside another actor (build it from this_worker()'s controller and token).
// call() resolves the actor through the controller (its ALIVE incarnation and endpoint: the Unix
// socket on the same host, else tcp), calls it directly and waits for the reply for as long as the
// controller sees that incarnation ALIVE; when the incarnation is gone (its worker died, or it
// refuses a call meant for an older incarnation) it waits for a newer one and calls that, until
// the deadline. A method's own error is returned as it is, never
// retried. A retried call may run twice on an actor that died after running it (at-least-once, as
// Ray's max_task_retries): give the retry to methods that are safe to repeat.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "core/status.h"
#include "proto/client.h"
#include "proto/curve.h"

namespace mariana::workers {

// The index of a [[roles]] job's actor named "<job name>/<role>/<index>" when its role is `role`;
// nullopt for any other name. The one reading of the names the controller gives (job_driver.cc).
std::optional<int64_t> role_index_of(const std::string& actor_name, const std::string& role);

class ActorHandle {
 public:
  ActorHandle(std::string controller, std::string token, std::string job_id, std::string role, int64_t index,
              proto::CurveClientKeys curve = {});

  // The method's result bytes. DeadlineExceeded naming the actor when no incarnation answered
  // within timeout_ms; NotFound when the job has no such role or index; the method's own error.
  Result<std::string> call(const std::string& method, const std::string& args, int timeout_ms = 30000);
  // The actor's id and incarnation of the last resolve ("" / 0 before the first).
  const std::string& actor_id() const { return actor_id_; }
  uint32_t incarnation() const { return incarnation_; }

 private:
  // Waits (until `deadline_ms` on the steady clock) for the actor to be ALIVE in an incarnation
  // above `after` (−1: any) and records its id, incarnation and endpoint.
  Status resolve(int64_t after, int64_t deadline_ms);
  // Whether the controller no longer sees the resolved incarnation ALIVE (false when it cannot tell).
  Result<bool> moved_on();

  std::string controller_, token_, job_id_, role_;
  int64_t index_;
  proto::CurveClientKeys curve_;
  zmq::context_t ctx_{1};
  std::unique_ptr<proto::RpcClient> ctl_;
  std::string actor_id_, endpoint_;
  uint32_t incarnation_ = 0;
  bool resolved_ = false;
};

}  // namespace mariana::workers
