// ActorMesh (see actor_mesh.h).
#include "workers/actor_mesh.h"

#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "proto/client.h"

namespace mariana::workers {

Result<ActorMesh> ActorMesh::resolve(const std::string& controller, const std::string& token, const std::string& job_id,
                                     const std::string& role, int timeout_ms, proto::CurveClientKeys curve) {
  zmq::context_t ctx(1);
  proto::RpcClient ctl(ctx, controller, token, "", curve.enabled() ? &curve : nullptr);
  MARIANA_ASSIGN_OR_RETURN(nlohmann::json actors, proto::query_controller(ctl, "actors", "", timeout_ms));
  std::set<int64_t> indices;  // the role's actors, by the index in their names
  for (const auto& a : actors.is_array() ? actors : nlohmann::json::array())
    if (a.value("job_id", "") == job_id)
      if (auto i = role_index_of(a.value("name", ""), role)) indices.insert(*i);
  if (indices.empty()) return NotFound("job " + job_id + " has no actor in role \"" + role + "\"");
  if (*indices.rbegin() != static_cast<int64_t>(indices.size()) - 1)
    return Internal("job " + job_id + ", role " + role + ": indices are not 0.." + std::to_string(indices.size() - 1));
  ActorMesh mesh;
  for (int64_t i : indices)
    mesh.handles_.push_back(std::make_unique<ActorHandle>(controller, token, job_id, role, i, curve));
  return mesh;
}

Result<std::vector<std::string>> ActorMesh::call(const std::string& method, const std::vector<std::string>& args,
                                                 int timeout_ms) {
  const size_t n = handles_.size();
  if (args.size() != 1 && args.size() != n)
    return InvalidArgument("actor mesh: " + std::to_string(args.size()) + " arguments for " + std::to_string(n) +
                           " actors (give one for all, or one each)");
  std::vector<Result<std::string>> results(n, Status(StatusCode::kInternal, "not called"));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i)
    threads.emplace_back([&, i] { results[i] = handles_[i]->call(method, args.size() == 1 ? args[0] : args[i], timeout_ms); });
  for (auto& t : threads) t.join();
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    if (!results[i].ok())
      return Status(results[i].status().code(), "actor " + std::to_string(i) + " of the mesh: " + results[i].status().message());
    out.push_back(std::move(results[i]).value());
  }
  return out;
}

}  // namespace mariana::workers
