// The controller's table records (nodes, actors, placement groups, jobs) and their lifecycles.
// Records are stored as JSON in the StateStore (state_format.md). Owned by the controller's
// event-loop thread; nothing here is thread-safe.
//
// Node:   ALIVE --(heartbeat silent > node timeout)--> DEAD --(agent registers again)--> ALIVE
//
// Actor:
//     create ──> PENDING_CREATION ──(worker registers)──> ALIVE
//                   │                                       │  ▲
//                   │ worker died / start timeout /         │  │ worker of the new
//                   │ node died, restarts left              │  │ incarnation registers
//                   ▼                                       ▼  │
//                RESTARTING <────(restarts left)──────── worker died, node died,
//                   │                                    heartbeat timeout
//                   └──(no restarts left, killed, job ended, PG removed)──> DEAD (death_cause)
//   Every start of a worker is a new incarnation (0, 1, 2, ...); num_restarts = incarnations − 1.
//   "Restarts left": fewer than max_restarts + 1 failures within the last restart_window_ms (the
//   actor's whole life when 0); an ordered end (kill, job end) is not a failure, and an actor moved
//   off a drained node (its agent deregistered) restarts without spending the budget.
//   A restarting actor is never placed on a node that has missed heartbeats (Controller::node_suspect):
//   it waits until that node is heard from again or declared DEAD.
//
// Placement group:  PENDING ──(all bundles placed at once)──> CREATED ──(node died)──> RESCHEDULING
//                      │                                         │  ▲──(lost bundles placed)──┘
//                      └──────────────> REMOVED <────────────────┘
//
// Job:  PENDING ──(placement group + actors created)──> RUNNING ──> SUCCEEDED
//          │                                               ├──> FAILED (an actor DEAD, bad spec,
//          │                                               │           a trainer's error)
//          └───────────────────> STOPPED <─────────────────┘ (mariana jobs stop)
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace mariana::controller {

using Resources = std::map<std::string, double>;  // "CPU", "GPU", "memory", custom

bool resources_fit(const Resources& need, const Resources& available);
void resources_add(Resources& into, const Resources& r, double sign = 1.0);
std::string resources_string(const Resources& r);  // "{CPU: 1, GPU: 0}"

enum class NodeState { kAlive, kDead };
enum class ActorState { kPendingCreation, kAlive, kRestarting, kDead };
enum class PgState { kPending, kCreated, kRescheduling, kRemoved };
enum class PgStrategy { kPack, kSpread, kStrictPack, kStrictSpread };
enum class JobState { kPending, kRunning, kSucceeded, kFailed, kStopped };

const char* node_state_name(NodeState s);
const char* actor_state_name(ActorState s);
const char* pg_state_name(PgState s);
const char* pg_strategy_name(PgStrategy s);
const char* job_state_name(JobState s);
Result<PgStrategy> pg_strategy_parse(const std::string& s);
bool job_state_terminal(JobState s);

struct NodeRecord {
  std::string id;
  std::string hostname;
  uint32_t pid = 0;
  Resources total;
  std::vector<std::string> actor_classes;
  std::string log_dir;
  NodeState state = NodeState::kAlive;
  std::string death_cause;
  int64_t registered_wall_ms = 0;
  // not persisted
  int64_t last_seen_ms = 0;
};

struct ActorRecord {
  std::string id;
  std::string class_name;
  std::string name;
  std::string job_id;
  std::string args;  // constructor arguments: a JSON object, "" = none (every incarnation gets them)
  Resources demand;
  int32_t max_restarts = 0;      // failures allowed within restart_window_ms; -1 unlimited
  int64_t restart_window_ms = 0; // 0: the actor's whole life
  int32_t max_task_retries = 0;  // -1 unlimited
  std::string pg_id;
  int32_t bundle_index = -1;
  ActorState state = ActorState::kPendingCreation;
  uint32_t incarnation = 0;
  uint32_t num_restarts = 0;
  std::string node_id;  // where the current incarnation runs or is being started; "" = unscheduled
  std::string address;  // the worker's ROUTER endpoint when ALIVE (tcp)
  std::string local_address;  // the same ROUTER on a Unix-domain socket when ALIVE; "" = none
  std::string host_id;        // the worker's host (proto::host_id) when ALIVE
  uint32_t pid = 0;
  std::string death_cause;
  std::string last_failure;
  std::vector<int64_t> failure_wall_ms;  // wall times of the failures that count against max_restarts
  int64_t created_wall_ms = 0;
  // not persisted
  int64_t deadline_ms = 0;  // start deadline (pending) or heartbeat deadline base (alive)
  int64_t last_seen_ms = 0;
  std::string pending_reason;
};

struct PgRecord {
  std::string id;
  std::string name;
  std::string job_id;
  PgStrategy strategy = PgStrategy::kPack;
  std::vector<Resources> bundles;
  std::vector<std::string> bundle_nodes;  // "" = not placed
  PgState state = PgState::kPending;
};

struct JobRecord {
  std::string id;
  std::string name;
  std::string kind;
  std::string spec_toml;
  std::string spec_path;
  JobState state = JobState::kPending;
  std::string message;
  int64_t submitted_wall_ms = 0, started_wall_ms = 0, ended_wall_ms = 0;
  std::string pg_id;
  std::vector<std::string> actor_ids;
  int64_t step = 0;  // steps completed (durable progress)
  int64_t total_steps = 0;
  nlohmann::json last_metrics = nlohmann::json::object();
  int64_t checkpoints = 0;
  // Training jobs: the run directory and the newest registered checkpoint (a restarted trainer
  // resumes from it).
  std::string run_dir;
  std::string last_checkpoint;
  int64_t last_checkpoint_step = 0;
  // Pipelines: a stage's job names its pipeline; the pipeline holds each stage's current job ("" not
  // started yet; a resumed stage's newest), in the spec's stage order.
  std::string parent;
  std::vector<std::string> stage_jobs;
};

nlohmann::json to_json(const NodeRecord& r);
nlohmann::json to_json(const ActorRecord& r);
nlohmann::json to_json(const PgRecord& r);
nlohmann::json to_json(const JobRecord& r);
// `what` names the record in errors ("actors/actor-3").
Result<NodeRecord> node_from_json(const std::string& text, const std::string& what);
Result<ActorRecord> actor_from_json(const std::string& text, const std::string& what);
Result<PgRecord> pg_from_json(const std::string& text, const std::string& what);
Result<JobRecord> job_from_json(const std::string& text, const std::string& what);

}  // namespace mariana::controller
