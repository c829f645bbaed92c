// ActorMesh (see actor_mesh.h).
#include "workers/actor_mesh.h"

#include <cstdlib>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "proto/client.h"

namespace mariana::workers {

Result<ActorMesh> ActorMesh::resolve(const std::string& controller, const std::string& token, const std::string& job_id,
                                     const std::string& role, int timeout_ms) {
  zmq::context_t ctx(1);
  proto::RpcClient ctl(ctx, controller, token);
  MARIANA_ASSIGN_OR_RETURN(auto reply, ctl.call(
                                           [](proto::Envelope::Payload::Builder p) {
                                             auto q = p.initQuery();
                                             q.setWhat("actors");
                                             q.setId("");
                                           },
                                           timeout_ms));
  if (reply.payload().which() != proto::Envelope::Payload::QUERY_REPLY)
    return Internal("actor mesh: unexpected reply " + proto::payload_name(reply.payload().which()));
  auto actors = nlohmann::json::parse(reply.payload().getQueryReply().getJson().cStr(), nullptr, false);
  // Names "<job name>/<role>/<index>": the indices of this role.
  const std::string mark = "/" + role + "/";
  std::set<int64_t> indices;
  for (const auto& a : actors.is_array() ? actors : nlohmann::json::array()) {
    if (a.value("job_id", "") != job_id) continue;
    const std::string name = a.value("name", "");
    const size_t at = name.rfind(mark);
    if (at == std::string::npos || name.find('/', at + mark.size()) != std::string::npos) continue;
    const std::string tail = name.substr(at + mark.size());
    if (tail.empty() || tail.find_first_not_of("0123456789") != std::string::npos) continue;
    indices.insert(std::atoll(tail.c_str()));
  }
  if (indices.empty()) return NotFound("job " + job_id + " has no actor in role \"" + role + "\"");
  if (*indices.rbegin() != static_cast<int64_t>(indices.size()) - 1)
    return Internal("job " + job_id + ", role " + role + ": indices are not 0.." + std::to_string(indices.size() - 1));
  ActorMesh mesh;
  for (int64_t i : indices) mesh.handles_.push_back(std::make_unique<ActorHandle>(controller, token, job_id, role, i));
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
