// Controller handlers, table changes, scheduling glue and liveness (see controller.h).
#include "controller/controller.h"

#include <algorithm>
#include <cstdio>
#include <random>
#include <set>

namespace mariana::controller {


namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

Resources resources_from(capnp::List<proto::Resource>::Reader list) {
  Resources r;
  for (auto x : list) r[text(x.getName())] += x.getAmount();
  return r;
}

Status check_resources(const Resources& r, const std::string& what) {
  for (auto& [name, amount] : r) {
    if (name.empty()) return InvalidArgument(what + ": a resource has an empty name");
    if (!(amount >= 0) || amount > 1e15)
      return InvalidArgument(what + ": resource " + name + " = " + std::to_string(amount) + " is not a valid amount");
  }
  return Status::Ok();
}

uint64_t random_u64() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

Controller::Controller(ControllerOptions options, StateStore* store, Transport* transport, const Clock* clock)
    : options_(std::move(options)), store_(store), transport_(transport), clock_(clock), epoch_(random_u64() | 1) {
  decode_options_.token = options_.token;
  next_call_id_ = (epoch_ << 16) | 1;
}

// ---------------------------------------------------------------- loading

Status Controller::load() {
  const int64_t now = clock_->now_ms();
  MARIANA_ASSIGN_OR_RETURN(auto meta, store_->scan(Table::kMeta, "next/"));
  for (auto& [k, v] : meta) id_counters_[k.substr(5)] = std::strtoull(v.c_str(), nullptr, 10);
  MARIANA_ASSIGN_OR_RETURN(auto nodes, store_->scan(Table::kNodes, ""));
  for (auto& [k, v] : nodes) {
    MARIANA_ASSIGN_OR_RETURN(auto n, node_from_json(v, "nodes/" + k));
    n.last_seen_ms = now;
    nodes_[n.id] = std::move(n);
  }
  MARIANA_ASSIGN_OR_RETURN(auto pgs, store_->scan(Table::kPlacementGroups, ""));
  for (auto& [k, v] : pgs) {
    MARIANA_ASSIGN_OR_RETURN(auto p, pg_from_json(v, "placement_groups/" + k));
    pgs_[p.id] = std::move(p);
  }
  MARIANA_ASSIGN_OR_RETURN(auto actors, store_->scan(Table::kActors, ""));
  for (auto& [k, v] : actors) {
    MARIANA_ASSIGN_OR_RETURN(auto a, actor_from_json(v, "actors/" + k));
    a.last_seen_ms = now;
    a.deadline_ms = now + options_.start_timeout_ms;
    actors_[a.id] = std::move(a);
  }
  MARIANA_ASSIGN_OR_RETURN(auto jobs, store_->scan(Table::kJobs, ""));
  for (auto& [k, v] : jobs) {
    MARIANA_ASSIGN_OR_RETURN(auto j, job_from_json(v, "jobs/" + k));
    jobs_[j.id] = std::move(j);
  }
  MARIANA_ASSIGN_OR_RETURN(auto kv, store_->scan(Table::kKv, ""));
  for (auto& [k, v] : kv) kv_[k] = v;
  for (auto& [id, j] : jobs_) {
    if (job_state_terminal(j.state)) continue;
    auto spec = job_spec_parse(j.spec_toml, j.spec_path);
    if (!spec.ok()) {
      job_finish(j, JobState::kFailed, "spec no longer valid after restart: " + spec.status().message());
      continue;
    }
    job_specs_[id] = spec.value();
  }
  // Workers being started when the controller stopped: ask their agents again (duplicates are
  // ignored by the agent, which keys workers by actor and incarnation).
  for (auto& [id, a] : actors_)
    if ((a.state == ActorState::kPendingCreation || a.state == ActorState::kRestarting) && !a.node_id.empty())
      send_start_worker(a);
  return Status::Ok();
}

// ---------------------------------------------------------------- frames

void Controller::handle_frame(const std::string& peer, const void* data, size_t size) {
  uint64_t rid = 0;
  auto frame = proto::decode_envelope(data, size, decode_options_, &counters_, &rid);
  if (!frame.ok()) {
    // No token in replies to frames that did not authenticate: never hand the secret out.
    queue(peer, proto::encode_error(rid, "controller", "", frame.status()));
    return;
  }
  dispatch(peer, frame.value());
}

void Controller::dispatch(const std::string& peer, const proto::Frame& frame) {
  const uint64_t rid = frame.request_id();
  auto p = frame.payload();
  switch (p.which()) {
    case Payload::PING: reply_ok(peer, rid); return;
    case Payload::REGISTER_NODE: handle_register_node(peer, rid, p.getRegisterNode()); return;
    case Payload::HEARTBEAT: handle_heartbeat(peer, rid, p.getHeartbeat()); return;
    case Payload::DEREGISTER_NODE: handle_deregister_node(peer, rid, p.getDeregisterNode()); return;
    case Payload::WORKER_EXITED: handle_worker_exited(peer, rid, p.getWorkerExited()); return;
    case Payload::REGISTER_WORKER: handle_register_worker(peer, rid, p.getRegisterWorker()); return;
    case Payload::CREATE_ACTOR: handle_create_actor(peer, rid, p.getCreateActor()); return;
    case Payload::WAIT_ACTOR: handle_wait_actor(peer, rid, p.getWaitActor()); return;
    case Payload::KILL_ACTOR: handle_kill_actor(peer, rid, p.getKillActor()); return;
    case Payload::CREATE_PLACEMENT_GROUP: handle_create_placement_group(peer, rid, p.getCreatePlacementGroup()); return;
    case Payload::REMOVE_PLACEMENT_GROUP: handle_remove_placement_group(peer, rid, p.getRemovePlacementGroup()); return;
    case Payload::SUBMIT_JOB: handle_submit_job(peer, rid, p.getSubmitJob()); return;
    case Payload::STOP_JOB: handle_stop_job(peer, rid, p.getStopJob()); return;
    case Payload::RESUME_JOB: handle_resume_job(peer, rid, p.getResumeJob()); return;
    case Payload::QUERY: handle_query(peer, rid, p.getQuery()); return;
    case Payload::ACTOR_RETURN: handle_actor_return(rid, p.getActorReturn()); return;
    case Payload::KV_PUT: handle_kv_put(peer, rid, p.getKvPut()); return;
    case Payload::KV_GET: handle_kv_get(peer, rid, p.getKvGet()); return;
    case Payload::ACTOR_REPORT: handle_actor_report(peer, rid, p.getActorReport()); return;
    case Payload::ERROR:
    case Payload::OK:
      return;  // a peer's answer to something we sent; nothing to do
    default:
      reply_error(peer, rid, InvalidArgument("the controller does not accept " + proto::payload_name(p.which())));
      return;
  }
}

void Controller::reply_error(const std::string& peer, uint64_t rid, const Status& st) {
  queue(peer, proto::encode_error(rid, "controller", options_.token, st));
}

void Controller::reply_ok(const std::string& peer, uint64_t rid) {
  auto m = message(rid);
  m.payload().setOk();
  queue(peer, m.bytes());
}

void Controller::reply_actor_info(const std::string& peer, uint64_t rid, const ActorRecord& a) {
  auto m = message(rid);
  auto info = m.payload().initActorInfo();
  info.setActorId(a.id);
  info.setState(actor_state_name(a.state));
  info.setAddress(a.address);
  info.setIncarnation(a.incarnation);
  info.setNodeId(a.node_id);
  info.setDeathCause(a.death_cause);
  info.setLocalAddress(a.local_address);
  info.setHostId(a.host_id);
  queue(peer, m.bytes());
}

void Controller::send_start_worker(const ActorRecord& a) {
  auto m = message(0);
  auto s = m.payload().initStartWorker();
  s.setActorId(a.id);
  s.setIncarnation(a.incarnation);
  s.setClassName(a.class_name);
  s.setJobId(a.job_id);
  s.setArgs(a.args);
  queue(agent_peer(a.node_id), m.bytes());
}

void Controller::send_stop_worker(const std::string& node_id, const std::string& actor_id, uint32_t incarnation) {
  if (node_id.empty()) return;
  auto m = message(0);
  auto s = m.payload().initStopWorker();
  s.setActorId(actor_id);
  s.setIncarnation(incarnation);
  queue(agent_peer(node_id), m.bytes());
}

Status Controller::flush() {
  if (store_->staged() > 0) {
    Status st = store_->commit();
    if (!st.ok()) {
      outbox_.clear();
      return st;
    }
    ++commits_;
  }
  for (auto& [peer, frame] : outbox_) {
    if (!transport_->send(peer, frame)) {
      ++send_failures_;
      unreachable_.insert(peer);
    }
  }
  outbox_.clear();
  return Status::Ok();
}

// ---------------------------------------------------------------- persistence

std::string Controller::next_id(const char* kind) {
  uint64_t n = ++id_counters_[kind];
  store_->put(Table::kMeta, std::string("next/") + kind, std::to_string(n));
  return std::string(kind) + "-" + std::to_string(n);
}

void Controller::persist(const NodeRecord& n) { store_->put(Table::kNodes, n.id, to_json(n).dump()); }
void Controller::persist(const ActorRecord& a) { store_->put(Table::kActors, a.id, to_json(a).dump()); }
void Controller::persist(const PgRecord& p) { store_->put(Table::kPlacementGroups, p.id, to_json(p).dump()); }
void Controller::persist(const JobRecord& j) { store_->put(Table::kJobs, j.id, to_json(j).dump()); }

void Controller::record_failure(const std::string& what) {
  recent_failures_.push_back(what);
  while (recent_failures_.size() > 20) recent_failures_.pop_front();
  std::fprintf(stderr, "controller: %s\n", what.c_str());
}

// ---------------------------------------------------------------- nodes

void Controller::handle_register_node(const std::string& peer, uint64_t rid, proto::RegisterNode::Reader m) {
  const std::string id = text(m.getNodeId());
  if (id.empty()) return reply_error(peer, rid, InvalidArgument("registerNode: empty node id"));
  if (peer != agent_peer(id))
    return reply_error(peer, rid, InvalidArgument("registerNode: an agent's routing id must be \"" + agent_peer(id) + "\""));
  Resources total = resources_from(m.getResources());
  Status rs = check_resources(total, "registerNode " + id);
  if (!rs.ok()) return reply_error(peer, rid, rs);
  NodeRecord& n = nodes_[id];
  const bool was_alive = !n.id.empty() && n.state == NodeState::kAlive;
  n.id = id;
  n.hostname = text(m.getHostname());
  n.pid = m.getPid();
  n.total = total;
  n.actor_classes.clear();
  for (auto c : m.getActorClasses()) n.actor_classes.push_back(text(c));
  n.log_dir = text(m.getLogDir());
  if (!was_alive) n.registered_wall_ms = wall_ms();
  n.state = NodeState::kAlive;
  n.death_cause.clear();
  n.last_seen_ms = clock_->now_ms();
  persist(n);

  // Reconcile the workers it runs with what the tables say.
  std::set<std::pair<std::string, uint32_t>> running;
  for (auto w : m.getWorkers()) {
    const std::string aid = text(w.getActorId());
    running.insert({aid, w.getIncarnation()});
    auto it = actors_.find(aid);
    if (it == actors_.end() || it->second.state == ActorState::kDead || it->second.incarnation != w.getIncarnation() ||
        it->second.node_id != id)
      send_stop_worker(id, aid, w.getIncarnation());
  }
  for (auto& [aid, a] : actors_) {
    if (a.node_id != id || a.state == ActorState::kDead || running.count({aid, a.incarnation})) continue;
    if (a.state == ActorState::kAlive)
      actor_died(a, "worker lost: not running on node " + id + " when its agent registered", true);
    else
      send_start_worker(a);
  }
  auto out = message(rid);
  auto r = out.payload().initRegisterNodeReply();
  r.setEpoch(epoch_);
  r.setHeartbeatMs(static_cast<uint32_t>(options_.heartbeat_ms));
  queue(peer, out.bytes());
  schedule_pending();
}

void Controller::handle_heartbeat(const std::string& peer, uint64_t rid, proto::Heartbeat::Reader m) {
  const int64_t now = clock_->now_ms();
  bool known = false;
  const std::string actor_id = text(m.getActorId());
  if (actor_id.empty()) {
    auto it = nodes_.find(text(m.getNodeId()));
    if (it != nodes_.end() && it->second.state == NodeState::kAlive && peer == agent_peer(it->first)) {
      it->second.last_seen_ms = now;
      known = true;
    }
  } else {
    auto it = actors_.find(actor_id);
    if (it != actors_.end() && it->second.state == ActorState::kAlive && it->second.incarnation == m.getIncarnation()) {
      it->second.last_seen_ms = now;
      known = true;
    }
  }
  auto out = message(rid);
  auto r = out.payload().initHeartbeatReply();
  r.setEpoch(epoch_);
  r.setKnown(known);
  queue(peer, out.bytes());
}

void Controller::handle_deregister_node(const std::string& peer, uint64_t rid, proto::DeregisterNode::Reader m) {
  const std::string id = text(m.getNodeId());
  if (peer != agent_peer(id)) return reply_error(peer, rid, PermissionDenied("deregisterNode from a non-agent peer"));
  auto it = nodes_.find(id);
  if (it != nodes_.end() && it->second.state == NodeState::kAlive) {
    const std::string reason = text(m.getReason());
    node_died(it->second, "agent stopped" + (reason.empty() ? std::string() : " (" + reason + ")"), /*drained=*/true);
    schedule_pending();
  }
  reply_ok(peer, rid);
}

void Controller::node_died(NodeRecord& n, const std::string& cause, bool drained) {
  n.state = NodeState::kDead;
  n.death_cause = cause;
  persist(n);
  record_failure("node " + n.id + " DEAD: " + cause);
  for (auto& [pid, p] : pgs_) {
    if (p.state != PgState::kCreated && p.state != PgState::kRescheduling) continue;
    bool touched = false;
    for (auto& b : p.bundle_nodes)
      if (b == n.id) {
        b.clear();
        touched = true;
      }
    if (!touched) continue;
    p.state = PgState::kRescheduling;
    persist(p);
    place_pg(p);
  }
  for (auto& [aid, a] : actors_)
    if (a.node_id == n.id && a.state != ActorState::kDead)
      actor_died(a, "node " + n.id + (drained ? " left: " : " died: ") + cause, true, /*failure=*/!drained);
}

// ---------------------------------------------------------------- workers and actors

void Controller::handle_worker_exited(const std::string& peer, uint64_t rid, proto::WorkerExited::Reader m) {
  const std::string node_id = text(m.getNodeId());
  if (peer != agent_peer(node_id)) return reply_error(peer, rid, PermissionDenied("workerExited from a non-agent peer"));
  auto it = actors_.find(text(m.getActorId()));
  if (it != actors_.end()) {
    ActorRecord& a = it->second;
    if (a.state != ActorState::kDead && a.incarnation == m.getIncarnation() && a.node_id == node_id) {
      std::string cause = m.getSignal() != 0 ? "worker killed by signal " + std::to_string(m.getSignal())
                                             : "worker exited with code " + std::to_string(m.getExitCode());
      actor_died(a, cause, true);
    }
  }
  reply_ok(peer, rid);
}

void Controller::handle_register_worker(const std::string& peer, uint64_t rid, proto::RegisterWorker::Reader m) {
  const std::string id = text(m.getActorId());
  const uint32_t inc = m.getIncarnation();
  auto out = message(rid);
  auto r = out.payload().initRegisterWorkerReply();
  r.setEpoch(epoch_);
  auto it = actors_.find(id);
  std::string reason;
  if (it == actors_.end()) reason = "unknown actor " + id;
  else if (it->second.state == ActorState::kDead) reason = "actor " + id + " is DEAD";
  else if (it->second.incarnation != inc) reason = "stale incarnation " + std::to_string(inc) + " of " + id;
  else if (it->second.node_id != text(m.getNodeId())) reason = "actor " + id + " is not placed on node " + text(m.getNodeId());
  else if (peer != worker_peer(id, inc)) reason = "a worker's routing id must be \"" + worker_peer(id, inc) + "\"";
  if (!reason.empty()) {
    r.setAccept(false);
    r.setReason(reason);
    queue(peer, out.bytes());
    return;
  }
  ActorRecord& a = it->second;
  const bool changed = a.state != ActorState::kAlive || a.address != text(m.getAddress()) || a.pid != m.getPid() ||
                       a.local_address != text(m.getLocalAddress()) || a.host_id != text(m.getHostId());
  a.state = ActorState::kAlive;
  a.address = text(m.getAddress());
  a.local_address = text(m.getLocalAddress());
  a.host_id = text(m.getHostId());
  a.pid = m.getPid();
  a.last_seen_ms = clock_->now_ms();
  a.pending_reason.clear();
  if (changed) persist(a);
  r.setAccept(true);
  queue(peer, out.bytes());
  notify_waiters(a);
  job_on_actor_alive(a);
}

Result<std::string> Controller::create_actor(ActorRecord a) {
  if (a.class_name.empty()) return InvalidArgument("createActor: empty class name");
  MARIANA_RETURN_IF_ERROR(check_resources(a.demand, "createActor"));
  if (a.max_restarts < -1 || a.max_task_retries < -1)
    return InvalidArgument("createActor: max_restarts and max_task_retries must be -1 or more");
  if (!a.pg_id.empty()) {
    auto it = pgs_.find(a.pg_id);
    if (it == pgs_.end() || it->second.state == PgState::kRemoved)
      return NotFound("createActor: placement group " + a.pg_id + " does not exist");
    if (a.bundle_index < 0 || a.bundle_index >= static_cast<int32_t>(it->second.bundles.size()))
      return InvalidArgument("createActor: bundle index " + std::to_string(a.bundle_index) + " is out of range for " +
                             a.pg_id);
  }
  a.id = next_id("actor");
  a.state = ActorState::kPendingCreation;
  a.incarnation = 0;
  a.num_restarts = 0;
  a.node_id.clear();
  a.created_wall_ms = wall_ms();
  ActorRecord& ref = actors_[a.id] = std::move(a);
  persist(ref);
  schedule_actor(ref);
  return ref.id;
}

void Controller::handle_create_actor(const std::string& peer, uint64_t rid, proto::ActorSpec::Reader m) {
  ActorRecord a;
  a.class_name = text(m.getClassName());
  a.name = text(m.getName());
  a.demand = resources_from(m.getResources());
  a.max_restarts = m.getMaxRestarts();
  a.max_task_retries = m.getMaxTaskRetries();
  a.pg_id = text(m.getPlacementGroupId());
  a.bundle_index = m.getBundleIndex();
  a.job_id = text(m.getJobId());
  a.args = text(m.getArgs());
  if (!a.args.empty()) {
    auto args = nlohmann::json::parse(a.args, nullptr, false);
    if (!args.is_object())
      return reply_error(peer, rid, InvalidArgument("createActor: field 'args': expected a JSON object, got " + a.args));
  }
  auto id = create_actor(std::move(a));
  if (!id.ok()) return reply_error(peer, rid, id.status());
  auto out = message(rid);
  out.payload().initCreateActorReply().setActorId(id.value());
  queue(peer, out.bytes());
}

void Controller::handle_wait_actor(const std::string& peer, uint64_t rid, proto::WaitActor::Reader m) {
  auto it = actors_.find(text(m.getActorId()));
  if (it == actors_.end()) return reply_error(peer, rid, NotFound("no actor " + text(m.getActorId())));
  const ActorRecord& a = it->second;
  if (a.state == ActorState::kAlive || a.state == ActorState::kDead || m.getTimeoutMs() == 0)
    return reply_actor_info(peer, rid, a);
  waiters_[a.id].push_back({peer, rid, clock_->now_ms() + std::min<int64_t>(m.getTimeoutMs(), 600000)});
}

void Controller::notify_waiters(const ActorRecord& a) {
  if (a.state != ActorState::kAlive && a.state != ActorState::kDead) return;
  auto it = waiters_.find(a.id);
  if (it == waiters_.end()) return;
  for (auto& w : it->second) reply_actor_info(w.peer, w.request_id, a);
  waiters_.erase(it);
}

void Controller::handle_kill_actor(const std::string& peer, uint64_t rid, proto::KillActor::Reader m) {
  auto it = actors_.find(text(m.getActorId()));
  if (it == actors_.end()) return reply_error(peer, rid, NotFound("no actor " + text(m.getActorId())));
  ActorRecord& a = it->second;
  if (a.state != ActorState::kDead) {
    send_stop_worker(a.node_id, a.id, a.incarnation);
    if (m.getNoRestart()) actor_died(a, "killed by a client", false);
    else actor_died(a, "killed by a client (restart allowed)", true);
  }
  reply_ok(peer, rid);
}

void Controller::actor_died(ActorRecord& a, const std::string& cause, bool allow_restart, bool failure) {
  if (a.state == ActorState::kDead) return;
  a.address.clear();
  a.local_address.clear();
  a.host_id.clear();
  a.pid = 0;
  a.node_id.clear();
  std::string budget;  // why a failure ends the actor, when it does
  bool restart = allow_restart && !failure;  // moved off a drained node: restarts, costs no budget
  if (allow_restart && failure) {  // a failure, not an ordered end: it counts against the restart budget
    a.last_failure = cause;
    if (a.max_restarts >= 0) {  // an unlimited budget keeps no count
      const int64_t now = clock_->wall_now_ms();
      a.failure_wall_ms.push_back(now);  // at most max_restarts + 1 long: the next one ends the actor
      if (a.restart_window_ms > 0)
        std::erase_if(a.failure_wall_ms, [&](int64_t t) { return t <= now - a.restart_window_ms; });
    }
    const int64_t failures = static_cast<int64_t>(a.failure_wall_ms.size());
    restart = a.max_restarts < 0 || failures <= a.max_restarts;
    if (!restart)
      budget = " (" + std::to_string(failures) + (failures == 1 ? " failure" : " failures") +
               (a.restart_window_ms > 0 ? " within " + std::to_string(a.restart_window_ms / 1000) + " s" : "") +
               ", max_restarts = " + std::to_string(a.max_restarts) + ")";
    record_failure("actor " + a.id + " incarnation " + std::to_string(a.incarnation) + ": " + cause);
  }
  if (restart) {
    a.state = ActorState::kRestarting;
    ++a.num_restarts;
    ++a.incarnation;
    persist(a);
    schedule_actor(a);
  } else {
    a.state = ActorState::kDead;
    a.death_cause = cause + budget;
    persist(a);
    notify_waiters(a);
    if (!a.job_id.empty()) {
      auto j = jobs_.find(a.job_id);
      if (j != jobs_.end() && !job_state_terminal(j->second.state))
        job_finish(j->second, JobState::kFailed, "actor " + a.id + " died: " + cause + budget);
    }
  }
}

void Controller::actor_kill(ActorRecord& a, const std::string& cause) {
  if (a.state == ActorState::kDead) return;
  send_stop_worker(a.node_id, a.id, a.incarnation);
  actor_died(a, cause, false);
}

// ---------------------------------------------------------------- placement

bool Controller::node_suspect(const NodeRecord& n) const {
  return n.state == NodeState::kAlive && clock_->now_ms() - n.last_seen_ms > node_suspect_ms();
}

int64_t Controller::node_suspect_ms() const {
  // Two missed heartbeats, but never less than a third of the timeout (a loaded agent is late).
  return std::max(2 * options_.heartbeat_ms, options_.node_timeout_ms / 3);
}

std::vector<NodeView> Controller::node_views(bool placeable) const {
  std::vector<NodeView> views;
  std::map<std::string, size_t> index;
  for (auto& [id, n] : nodes_) {
    if (n.state != NodeState::kAlive || (placeable && node_suspect(n))) continue;
    index[id] = views.size();
    views.push_back({id, n.total, n.total});
  }
  for (auto& [id, p] : pgs_) {
    if (p.state == PgState::kRemoved) continue;
    for (size_t b = 0; b < p.bundles.size(); ++b) {
      auto it = index.find(p.bundle_nodes[b]);
      if (it != index.end()) resources_add(views[it->second].available, p.bundles[b], -1.0);
    }
  }
  for (auto& [id, a] : actors_) {
    if (a.state == ActorState::kDead || !a.pg_id.empty() || a.node_id.empty()) continue;
    auto it = index.find(a.node_id);
    if (it != index.end()) resources_add(views[it->second].available, a.demand, -1.0);
  }
  return views;
}

void Controller::schedule_actor(ActorRecord& a) {
  if (a.state == ActorState::kDead || a.state == ActorState::kAlive || !a.node_id.empty()) return;
  std::string node;
  if (!a.pg_id.empty()) {
    auto it = pgs_.find(a.pg_id);
    if (it == pgs_.end() || it->second.state == PgState::kRemoved) {
      actor_died(a, "placement group " + a.pg_id + " removed", false);
      return;
    }
    node = it->second.bundle_nodes[a.bundle_index];
    if (node.empty()) {
      a.pending_reason = "waiting for bundle " + std::to_string(a.bundle_index) + " of " + a.pg_id;
      return;
    }
    auto n = nodes_.find(node);
    if (n != nodes_.end() && node_suspect(n->second)) {
      // Its node has missed heartbeats: starting the worker there would likely fail again.
      a.pending_reason = "waiting: node " + node + " has missed heartbeats (silent " +
                         std::to_string(clock_->now_ms() - n->second.last_seen_ms) + " ms)";
      return;
    }
  } else {
    auto views = node_views(true);
    node = schedule_actor_node(a.demand, views);
    if (node.empty()) {
      bool feasible = views.empty();
      for (auto& v : views) feasible = feasible || resources_fit(a.demand, v.total);
      a.pending_reason = feasible ? "waiting for resources " + resources_string(a.demand)
                                  : "infeasible: " + resources_string(a.demand) + " fits on no node";
      return;
    }
  }
  auto n = nodes_.find(node);
  if (n == nodes_.end() || n->second.state != NodeState::kAlive) return;
  a.node_id = node;
  a.deadline_ms = clock_->now_ms() + options_.start_timeout_ms;
  a.pending_reason.clear();
  persist(a);
  send_start_worker(a);
}

bool Controller::place_pg(PgRecord& p) {
  if (p.state == PgState::kRemoved) return false;
  if (p.state == PgState::kCreated) return true;
  auto placed = place_bundles(p.strategy, p.bundles, p.bundle_nodes, node_views(true));
  if (!placed.ok()) return false;
  p.bundle_nodes = placed.value();
  p.state = PgState::kCreated;
  persist(p);
  for (auto& [aid, a] : actors_)
    if (a.pg_id == p.id) schedule_actor(a);
  return true;
}

void Controller::schedule_pending() {
  for (auto& [id, p] : pgs_)
    if (p.state == PgState::kPending || p.state == PgState::kRescheduling) place_pg(p);
  for (auto& [id, a] : actors_)
    if ((a.state == ActorState::kPendingCreation || a.state == ActorState::kRestarting) && a.node_id.empty())
      schedule_actor(a);
}

Result<std::string> Controller::create_placement_group(PgRecord p) {
  if (p.bundles.empty() || p.bundles.size() > 1024)
    return InvalidArgument("createPlacementGroup: expected 1..1024 bundles, got " + std::to_string(p.bundles.size()));
  for (size_t b = 0; b < p.bundles.size(); ++b)
    MARIANA_RETURN_IF_ERROR(check_resources(p.bundles[b], "createPlacementGroup: bundle " + std::to_string(b)));
  MARIANA_RETURN_IF_ERROR(check_feasible(p.strategy, p.bundles, node_views()));
  p.id = next_id("pg");
  p.bundle_nodes.assign(p.bundles.size(), "");
  p.state = PgState::kPending;
  PgRecord& ref = pgs_[p.id] = std::move(p);
  persist(ref);
  place_pg(ref);
  return ref.id;
}

void Controller::handle_create_placement_group(const std::string& peer, uint64_t rid,
                                               proto::CreatePlacementGroup::Reader m) {
  PgRecord p;
  p.name = text(m.getName());
  auto strategy = pg_strategy_parse(m.hasStrategy() && m.getStrategy().size() ? text(m.getStrategy()) : "PACK");
  if (!strategy.ok()) return reply_error(peer, rid, strategy.status());
  p.strategy = strategy.value();
  for (auto b : m.getBundles()) p.bundles.push_back(resources_from(b.getResources()));
  auto id = create_placement_group(std::move(p));
  if (!id.ok()) return reply_error(peer, rid, id.status());
  auto out = message(rid);
  auto r = out.payload().initPlacementGroupReply();
  r.setPgId(id.value());
  r.setState(pg_state_name(pgs_[id.value()].state));
  queue(peer, out.bytes());
}

void Controller::remove_placement_group(PgRecord& p, const std::string& cause) {
  if (p.state == PgState::kRemoved) return;
  p.state = PgState::kRemoved;
  persist(p);
  for (auto& [aid, a] : actors_)
    if (a.pg_id == p.id && a.state != ActorState::kDead) actor_kill(a, cause);
  schedule_pending();
}

void Controller::handle_remove_placement_group(const std::string& peer, uint64_t rid,
                                               proto::RemovePlacementGroup::Reader m) {
  auto it = pgs_.find(text(m.getPgId()));
  if (it == pgs_.end()) return reply_error(peer, rid, NotFound("no placement group " + text(m.getPgId())));
  remove_placement_group(it->second, "placement group removed");
  reply_ok(peer, rid);
}

// ---------------------------------------------------------------- kv

void Controller::handle_kv_put(const std::string& peer, uint64_t rid, proto::KvPut::Reader m) {
  const std::string key = text(m.getKey());
  if (key.empty()) return reply_error(peer, rid, InvalidArgument("kvPut: empty key"));
  auto v = m.getValue();
  kv_[key] = std::string(reinterpret_cast<const char*>(v.begin()), v.size());
  store_->put(Table::kKv, key, kv_[key]);
  reply_ok(peer, rid);
}

void Controller::handle_kv_get(const std::string& peer, uint64_t rid, proto::KvGet::Reader m) {
  auto out = message(rid);
  auto r = out.payload().initKvValue();
  auto it = kv_.find(text(m.getKey()));
  r.setFound(it != kv_.end());
  if (it != kv_.end())
    r.setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(it->second.data()), it->second.size()));
  queue(peer, out.bytes());
}

void Controller::kv_erase_prefix(const std::string& prefix) {
  for (auto it = kv_.lower_bound(prefix); it != kv_.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
    store_->erase(Table::kKv, it->first);
    it = kv_.erase(it);
  }
}

// ---------------------------------------------------------------- timers

void Controller::note_progress(const JobRecord& j, int64_t now) {
  constexpr size_t kSamples = 20;
  auto& samples = progress_[j.id];
  if (!samples.empty() && j.step < samples.back().second) samples.clear();  // resumed from an earlier step
  if (samples.empty() || j.step != samples.back().second) samples.emplace_back(now, j.step);
  while (samples.size() > kSamples) samples.pop_front();
}

double Controller::eta_seconds(const JobRecord& j) const {
  auto it = progress_.find(j.id);
  if (j.state != JobState::kRunning || it == progress_.end() || it->second.size() < 2) return -1;
  const auto& [t0, s0] = it->second.front();
  const auto& [t1, s1] = it->second.back();
  if (t1 <= t0 || s1 <= s0) return -1;
  const double steps_per_ms = static_cast<double>(s1 - s0) / static_cast<double>(t1 - t0);
  return static_cast<double>(std::max<int64_t>(0, j.total_steps - j.step)) / steps_per_ms / 1000.0;
}

void Controller::tick() {
  const int64_t now = clock_->now_ms();
  for (auto& [id, n] : nodes_)
    if (n.state == NodeState::kAlive && now - n.last_seen_ms > options_.node_timeout_ms)
      node_died(n, "no heartbeat for " + std::to_string(now - n.last_seen_ms) + " ms");
  for (auto& [id, a] : actors_) {
    if ((a.state == ActorState::kPendingCreation || a.state == ActorState::kRestarting) && !a.node_id.empty() &&
        now > a.deadline_ms) {
      send_stop_worker(a.node_id, a.id, a.incarnation);
      actor_died(a, "worker did not register within " + std::to_string(options_.start_timeout_ms) + " ms", true);
    } else if (a.state == ActorState::kAlive && now - a.last_seen_ms > options_.worker_timeout_ms) {
      send_stop_worker(a.node_id, a.id, a.incarnation);
      actor_died(a, "no worker heartbeat for " + std::to_string(now - a.last_seen_ms) + " ms", true);
    }
  }
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    auto& list = it->second;
    for (size_t i = 0; i < list.size();) {
      if (now >= list[i].deadline_ms) {
        reply_actor_info(list[i].peer, list[i].request_id, actors_[it->first]);
        list.erase(list.begin() + static_cast<long>(i));
      } else {
        ++i;
      }
    }
    it = list.empty() ? waiters_.erase(it) : std::next(it);
  }
  if (now - last_schedule_ms_ >= 100) {
    last_schedule_ms_ = now;
    schedule_pending();
    for (auto& [id, j] : jobs_) {
      if (job_state_terminal(j.state)) continue;
      if (j.state == JobState::kRunning) note_progress(j, now);
      job_tick(j);
    }
    unreachable_.clear();
  }
}

// ---------------------------------------------------------------- reads

const ActorRecord* Controller::actor(const std::string& id) const {
  auto it = actors_.find(id);
  return it == actors_.end() ? nullptr : &it->second;
}
const NodeRecord* Controller::node(const std::string& id) const {
  auto it = nodes_.find(id);
  return it == nodes_.end() ? nullptr : &it->second;
}
const JobRecord* Controller::job(const std::string& id) const {
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : &it->second;
}
const PgRecord* Controller::placement_group(const std::string& id) const {
  auto it = pgs_.find(id);
  return it == pgs_.end() ? nullptr : &it->second;
}

}  // namespace mariana::controller
