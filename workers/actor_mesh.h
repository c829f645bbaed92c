// ActorMesh: every actor of one role of a [[roles]] job, called together ("mesh calls"): one
// method on each actor at once, the results gathered in index order. Each actor is reached through
// its own ActorHandle (so each call follows its actor across restarts), on a thread of its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "workers/actor_handle.h"

namespace mariana::workers {

class ActorMesh {
 public:
  // The role's actors as the controller lists them (indices 0..n-1); NotFound when the job has
  // none in that role.
  static Result<ActorMesh> resolve(const std::string& controller, const std::string& token, const std::string& job_id,
                                   const std::string& role, int timeout_ms = 10000, proto::CurveClientKeys curve = {});
  int64_t size() const { return static_cast<int64_t>(handles_.size()); }
  // Actor i's own handle, for calls to one member (i < size()).
  ActorHandle& at(int64_t i) { return *handles_[static_cast<size_t>(i)]; }
  // `method` on every actor at once: args[i] to actor i, or args[0] to all when args has one
  // element. The results by index; else the error of the lowest index that failed, naming it.
  Result<std::vector<std::string>> call(const std::string& method, const std::vector<std::string>& args,
                                        int timeout_ms = 30000);

 private:
  std::vector<std::unique_ptr<ActorHandle>> handles_;
};

}  // namespace mariana::workers
