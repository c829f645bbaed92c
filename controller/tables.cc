// Table records: names of states and JSON (de)serialization.
#include "controller/tables.h"

#include <cstdio>

namespace mariana::controller {

bool resources_fit(const Resources& need, const Resources& available) {
  for (auto& [name, amount] : need) {
    if (amount <= 0) continue;
    auto it = available.find(name);
    const double have = it == available.end() ? 0.0 : it->second;
    if (have + 1e-9 < amount) return false;
  }
  return true;
}

void resources_add(Resources& into, const Resources& r, double sign) {
  for (auto& [name, amount] : r) into[name] += sign * amount;
}

std::string resources_string(const Resources& r) {
  std::string s = "{";
  for (auto& [name, amount] : r) {
    if (s.size() > 1) s += ", ";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", amount);
    s += name + ": " + buf;
  }
  return s + "}";
}

const char* node_state_name(NodeState s) { return s == NodeState::kAlive ? "ALIVE" : "DEAD"; }

const char* actor_state_name(ActorState s) {
  switch (s) {
    case ActorState::kPendingCreation: return "PENDING_CREATION";
    case ActorState::kAlive: return "ALIVE";
    case ActorState::kRestarting: return "RESTARTING";
    case ActorState::kDead: return "DEAD";
  }
  return "?";
}

const char* pg_state_name(PgState s) {
  switch (s) {
    case PgState::kPending: return "PENDING";
    case PgState::kCreated: return "CREATED";
    case PgState::kRescheduling: return "RESCHEDULING";
    case PgState::kRemoved: return "REMOVED";
  }
  return "?";
}

const char* pg_strategy_name(PgStrategy s) {
  switch (s) {
    case PgStrategy::kPack: return "PACK";
    case PgStrategy::kSpread: return "SPREAD";
    case PgStrategy::kStrictPack: return "STRICT_PACK";
    case PgStrategy::kStrictSpread: return "STRICT_SPREAD";
  }
  return "?";
}

Result<PgStrategy> pg_strategy_parse(const std::string& s) {
  if (s == "PACK") return PgStrategy::kPack;
  if (s == "SPREAD") return PgStrategy::kSpread;
  if (s == "STRICT_PACK") return PgStrategy::kStrictPack;
  if (s == "STRICT_SPREAD") return PgStrategy::kStrictSpread;
  return InvalidArgument("unknown placement strategy \"" + s + "\" (expected PACK, SPREAD, STRICT_PACK or STRICT_SPREAD)");
}

const char* job_state_name(JobState s) {
  switch (s) {
    case JobState::kPending: return "PENDING";
    case JobState::kRunning: return "RUNNING";
    case JobState::kSucceeded: return "SUCCEEDED";
    case JobState::kFailed: return "FAILED";
    case JobState::kStopped: return "STOPPED";
  }
  return "?";
}

bool job_state_terminal(JobState s) {
  return s == JobState::kSucceeded || s == JobState::kFailed || s == JobState::kStopped;
}

namespace {

template <typename E>
Result<E> enum_from(const std::string& name, const char* (*fn)(E), int n, const std::string& what) {
  for (int i = 0; i < n; ++i)
    if (name == fn(static_cast<E>(i))) return static_cast<E>(i);
  return DataLoss(what + ": unknown state \"" + name + "\"");
}

Result<nlohmann::json> parse(const std::string& text, const std::string& what) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return DataLoss(what + ": record is not a JSON object");
  return j;
}

// Reads fields with nlohmann's typed get; a type mismatch becomes DataLoss naming the record.
template <typename F>
Status guarded(const std::string& what, F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return DataLoss(what + ": " + e.what());
  }
  return Status::Ok();
}

}  // namespace

nlohmann::json to_json(const NodeRecord& r) {
  return {{"id", r.id},           {"hostname", r.hostname},
          {"pid", r.pid},         {"total", r.total},
          {"actor_classes", r.actor_classes},
          {"log_dir", r.log_dir}, {"state", node_state_name(r.state)},
          {"death_cause", r.death_cause}, {"registered_wall_ms", r.registered_wall_ms}};
}

nlohmann::json to_json(const ActorRecord& r) {
  return {{"id", r.id},
          {"class", r.class_name},
          {"args", r.args},
          {"name", r.name},
          {"job_id", r.job_id},
          {"demand", r.demand},
          {"max_restarts", r.max_restarts},
          {"restart_window_ms", r.restart_window_ms},
          {"failure_wall_ms", r.failure_wall_ms},
          {"max_task_retries", r.max_task_retries},
          {"pg_id", r.pg_id},
          {"bundle_index", r.bundle_index},
          {"state", actor_state_name(r.state)},
          {"incarnation", r.incarnation},
          {"num_restarts", r.num_restarts},
          {"node_id", r.node_id},
          {"address", r.address},
          {"local_address", r.local_address},
          {"host_id", r.host_id},
          {"pid", r.pid},
          {"death_cause", r.death_cause},
          {"last_failure", r.last_failure},
          {"created_wall_ms", r.created_wall_ms}};
}

nlohmann::json to_json(const PgRecord& r) {
  return {{"id", r.id},
          {"name", r.name},
          {"job_id", r.job_id},
          {"strategy", pg_strategy_name(r.strategy)},
          {"bundles", r.bundles},
          {"bundle_nodes", r.bundle_nodes},
          {"state", pg_state_name(r.state)}};
}

nlohmann::json to_json(const JobRecord& r) {
  return {{"id", r.id},
          {"name", r.name},
          {"kind", r.kind},
          {"spec_toml", r.spec_toml},
          {"spec_path", r.spec_path},
          {"state", job_state_name(r.state)},
          {"message", r.message},
          {"submitted_wall_ms", r.submitted_wall_ms},
          {"started_wall_ms", r.started_wall_ms},
          {"ended_wall_ms", r.ended_wall_ms},
          {"pg_id", r.pg_id},
          {"actor_ids", r.actor_ids},
          {"step", r.step},
          {"total_steps", r.total_steps},
          {"last_metrics", r.last_metrics},
          {"checkpoints", r.checkpoints},
          {"run_dir", r.run_dir},
          {"last_checkpoint", r.last_checkpoint},
          {"last_checkpoint_step", r.last_checkpoint_step},
          {"parent", r.parent},
          {"stage_jobs", r.stage_jobs}};
}

Result<NodeRecord> node_from_json(const std::string& text, const std::string& what) {
  MARIANA_ASSIGN_OR_RETURN(auto j, parse(text, what));
  NodeRecord r;
  std::string state;
  MARIANA_RETURN_IF_ERROR(guarded(what, [&] {
    r.id = j.at("id").get<std::string>();
    r.hostname = j.value("hostname", "");
    r.pid = j.value("pid", 0u);
    r.total = j.value("total", Resources{});
    r.actor_classes = j.value("actor_classes", std::vector<std::string>{});
    r.log_dir = j.value("log_dir", "");
    state = j.at("state").get<std::string>();
    r.death_cause = j.value("death_cause", "");
    r.registered_wall_ms = j.value("registered_wall_ms", int64_t{0});
  }));
  MARIANA_ASSIGN_OR_RETURN(r.state, enum_from<NodeState>(state, node_state_name, 2, what));
  return r;
}

Result<ActorRecord> actor_from_json(const std::string& text, const std::string& what) {
  MARIANA_ASSIGN_OR_RETURN(auto j, parse(text, what));
  ActorRecord r;
  std::string state;
  MARIANA_RETURN_IF_ERROR(guarded(what, [&] {
    r.id = j.at("id").get<std::string>();
    r.class_name = j.at("class").get<std::string>();
    r.args = j.value("args", "");
    r.name = j.value("name", "");
    r.job_id = j.value("job_id", "");
    r.demand = j.value("demand", Resources{});
    r.max_restarts = j.value("max_restarts", 0);
    r.restart_window_ms = j.value("restart_window_ms", int64_t{0});
    r.failure_wall_ms = j.value("failure_wall_ms", std::vector<int64_t>{});
    r.max_task_retries = j.value("max_task_retries", 0);
    r.pg_id = j.value("pg_id", "");
    r.bundle_index = j.value("bundle_index", -1);
    state = j.at("state").get<std::string>();
    r.incarnation = j.value("incarnation", 0u);
    r.num_restarts = j.value("num_restarts", 0u);
    r.node_id = j.value("node_id", "");
    r.address = j.value("address", "");
    r.local_address = j.value("local_address", "");
    r.host_id = j.value("host_id", "");
    r.pid = j.value("pid", 0u);
    r.death_cause = j.value("death_cause", "");
    r.last_failure = j.value("last_failure", "");
    r.created_wall_ms = j.value("created_wall_ms", int64_t{0});
  }));
  MARIANA_ASSIGN_OR_RETURN(r.state, enum_from<ActorState>(state, actor_state_name, 4, what));
  return r;
}

Result<PgRecord> pg_from_json(const std::string& text, const std::string& what) {
  MARIANA_ASSIGN_OR_RETURN(auto j, parse(text, what));
  PgRecord r;
  std::string state, strategy;
  MARIANA_RETURN_IF_ERROR(guarded(what, [&] {
    r.id = j.at("id").get<std::string>();
    r.name = j.value("name", "");
    r.job_id = j.value("job_id", "");
    strategy = j.at("strategy").get<std::string>();
    r.bundles = j.at("bundles").get<std::vector<Resources>>();
    r.bundle_nodes = j.at("bundle_nodes").get<std::vector<std::string>>();
    state = j.at("state").get<std::string>();
  }));
  if (r.bundle_nodes.size() != r.bundles.size()) return DataLoss(what + ": bundle_nodes and bundles differ in length");
  MARIANA_ASSIGN_OR_RETURN(r.state, enum_from<PgState>(state, pg_state_name, 4, what));
  auto st = pg_strategy_parse(strategy);
  if (!st.ok()) return DataLoss(what + ": " + st.status().message());
  r.strategy = st.value();
  return r;
}

Result<JobRecord> job_from_json(const std::string& text, const std::string& what) {
  MARIANA_ASSIGN_OR_RETURN(auto j, parse(text, what));
  JobRecord r;
  std::string state;
  MARIANA_RETURN_IF_ERROR(guarded(what, [&] {
    r.id = j.at("id").get<std::string>();
    r.name = j.value("name", "");
    r.kind = j.at("kind").get<std::string>();
    r.spec_toml = j.value("spec_toml", "");
    r.spec_path = j.value("spec_path", "");
    state = j.at("state").get<std::string>();
    r.message = j.value("message", "");
    r.submitted_wall_ms = j.value("submitted_wall_ms", int64_t{0});
    r.started_wall_ms = j.value("started_wall_ms", int64_t{0});
    r.ended_wall_ms = j.value("ended_wall_ms", int64_t{0});
    r.pg_id = j.value("pg_id", "");
    r.actor_ids = j.value("actor_ids", std::vector<std::string>{});
    r.step = j.value("step", int64_t{0});
    r.total_steps = j.value("total_steps", int64_t{0});
    r.last_metrics = j.value("last_metrics", nlohmann::json::object());
    r.checkpoints = j.value("checkpoints", int64_t{0});
    r.run_dir = j.value("run_dir", "");
    r.last_checkpoint = j.value("last_checkpoint", "");
    r.last_checkpoint_step = j.value("last_checkpoint_step", int64_t{0});
    r.parent = j.value("parent", "");
    r.stage_jobs = j.value("stage_jobs", std::vector<std::string>{});
  }));
  MARIANA_ASSIGN_OR_RETURN(r.state, enum_from<JobState>(state, job_state_name, 5, what));
  return r;
}

}  // namespace mariana::controller
