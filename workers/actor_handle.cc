// ActorHandle (see actor_handle.h).
#include "workers/actor_handle.h"

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "proto/host.h"

namespace mariana::workers {

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

ActorHandle::ActorHandle(std::string controller, std::string token, std::string job_id, std::string role,
                         int64_t index, proto::CurveClientKeys curve)
    : controller_(std::move(controller)),
      token_(std::move(token)),
      job_id_(std::move(job_id)),
      role_(std::move(role)),
      index_(index),
      curve_(std::move(curve)) {
  ctl_ = std::make_unique<proto::RpcClient>(ctx_, controller_, token_, "", curve_.enabled() ? &curve_ : nullptr);
}

std::optional<int64_t> role_index_of(const std::string& actor_name, const std::string& role) {
  const std::string mark = "/" + role + "/";
  const size_t at = actor_name.rfind(mark);
  if (at == std::string::npos) return std::nullopt;
  const std::string tail = actor_name.substr(at + mark.size());
  if (tail.empty() || tail.size() > 9 || tail.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  return std::stoll(tail);
}

Status ActorHandle::resolve(int64_t after, int64_t deadline_ms) {
  const std::string what = "actor " + role_ + "/" + std::to_string(index_) + " of job " + job_id_;
  for (;;) {
    const int64_t left = deadline_ms - now_ms();
    if (left <= 0) return Status(StatusCode::kDeadlineExceeded, what + ": no ALIVE incarnation within the deadline");
    auto actors = proto::query_controller(*ctl_, "actors", "", static_cast<int>(std::min<int64_t>(left, 5000)));
    if (actors.ok() && actors.value().is_array()) {
      bool found = false;
      for (const auto& a : actors.value()) {
        if (a.value("job_id", "") != job_id_ || role_index_of(a.value("name", ""), role_) != index_) continue;
        found = true;
        if (a.value("state", "") == "DEAD") return Unavailable(what + " is DEAD: " + a.value("death_cause", ""));
        const int64_t inc = a.value("incarnation", int64_t{0});
        if (a.value("state", "") != "ALIVE" || inc <= after) break;
        actor_id_ = a.value("id", "");
        incarnation_ = static_cast<uint32_t>(inc);
        endpoint_ = proto::actor_endpoint(a.value("address", ""), a.value("local_address", ""), a.value("host_id", ""));
        resolved_ = true;
        return Status::Ok();
      }
      if (!found) return NotFound(what + ": the job has no such actor");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Result<bool> ActorHandle::moved_on() {
  auto a = proto::query_controller(*ctl_, "actor", actor_id_, 2000);
  if (!a.ok() || !a.value().is_object()) return false;  // cannot tell: keep waiting for the reply
  return a.value().value("state", "") != "ALIVE" ||
         a.value().value("incarnation", int64_t{0}) != static_cast<int64_t>(incarnation_);
}

Result<std::string> ActorHandle::call(const std::string& method, const std::string& args, int timeout_ms) {
  const int64_t deadline = now_ms() + timeout_ms;
  if (!resolved_) MARIANA_RETURN_IF_ERROR(resolve(-1, deadline));
  for (;;) {
    // One attempt on the resolved incarnation: wait for its reply as long as the controller still
    // sees that incarnation ALIVE (a long method is waited for, never sent twice to one incarnation).
    proto::RpcClient direct(ctx_, endpoint_, token_);
    const uint64_t id = direct.send([&](proto::Envelope::Payload::Builder p) {
      auto c = p.initActorCall();
      c.setActorId(actor_id_);
      c.setIncarnation(incarnation_);
      c.setMethod(method);
      c.setArgs(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(args.data()), args.size()));
    });
    for (;;) {
      const int64_t left = deadline - now_ms();
      if (left <= 0)
        return Status(StatusCode::kDeadlineExceeded, "actor " + actor_id_ + ": no reply to " + method + " within " +
                                                         std::to_string(timeout_ms) + " ms");
      auto reply = direct.recv(static_cast<int>(std::min<int64_t>(left, 250)));
      if (reply.ok()) {
        if (reply.value().request_id() != id) continue;
        if (reply.value().payload().which() != proto::Envelope::Payload::ACTOR_RETURN) break;
        auto ret = reply.value().payload().getActorReturn();
        const std::string error = ret.getError().cStr();
        if (ret.getCode() == 0)
          return std::string(reinterpret_cast<const char*>(ret.getResult().begin()), ret.getResult().size());
        const bool stale = ret.getCode() == static_cast<uint16_t>(StatusCode::kFailedPrecondition) &&
                           error.rfind("this worker hosts ", 0) == 0;  // worker.cc: another incarnation
        if (!stale) return Status(static_cast<StatusCode>(ret.getCode()), error);
        break;
      }
      MARIANA_ASSIGN_OR_RETURN(bool gone, moved_on());
      if (gone) break;
    }
    // That incarnation will not answer: call the next one.
    MARIANA_RETURN_IF_ERROR(resolve(incarnation_, deadline));
  }
}

}  // namespace mariana::workers
