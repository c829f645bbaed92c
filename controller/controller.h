// Controller: the cluster's tables (nodes, actors, placement groups, jobs), the scheduler's
// decisions, the job drivers, and every handler of a control message. It runs on ONE thread,
// the event loop in server.h: that thread calls handle_frame() for each received frame, tick() for
// timers, and flush() to commit the staged state changes and only then release the replies
// (durable before acknowledged; one synced batch per loop turn is the group commit).
// Collaborators are seams: StateStore (RocksDB / fake), Transport (ZeroMQ ROUTER / fake), Clock.
// Table lifecycles are drawn in tables.h.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "controller/job_spec.h"
#include "controller/scheduler.h"
#include "controller/state_store.h"
#include "controller/tables.h"
#include "core/status.h"
#include "proto/clock.h"
#include "proto/wire.h"

namespace mariana::controller {

// Sends one frame to a peer (a ZeroMQ routing id). False when the peer is not connected now.
class Transport {
 public:
  virtual ~Transport() = default;
  virtual bool send(const std::string& peer, const std::string& frame) = 0;
};

struct ControllerOptions {
  std::string token;               // the cluster token every envelope must carry
  std::string state_dir;           // names checkpoint paths of actor jobs
  int64_t heartbeat_ms = 500;      // told to agents and workers
  int64_t node_timeout_ms = 5000;  // an agent silent this long is DEAD
  int64_t worker_timeout_ms = 5000;
  int64_t start_timeout_ms = 30000;  // StartWorker → RegisterWorker
  int64_t call_timeout_ms = 30000;   // a driver's step call is resent after this
};

using proto::agent_peer;
using proto::worker_peer;

// The key of a job's row in the metrics and checkpoints tables: "<job>/<step, 12 digits>".
std::string step_key(const std::string& job_id, int64_t step);

class Controller {
 public:
  Controller(ControllerOptions options, StateStore* store, Transport* transport, const Clock* clock);

  // Reloads every table from the store (after a restart). Loaded ALIVE nodes and actors get one
  // timeout of grace to re-register; RUNNING jobs continue from their last durable step.
  Status load();
  // The decode boundary plus dispatch: a bad frame gets an error reply and a counter.
  void handle_frame(const std::string& peer, const void* data, size_t size);
  // Liveness, start and call timeouts, scheduling of pending work, job drivers.
  void tick();
  // Commits staged changes, then sends the queued frames. On a commit error nothing is sent.
  Status flush();

  std::string metrics_text() const;  // Prometheus text format
  nlohmann::json query(const std::string& what, const std::string& id) const;
  const proto::WireCounters& counters() const { return counters_; }
  uint64_t epoch() const { return epoch_; }
  int64_t commits() const { return commits_; }

  // Read access for tests.
  const ActorRecord* actor(const std::string& id) const;
  const NodeRecord* node(const std::string& id) const;
  const JobRecord* job(const std::string& id) const;
  const PgRecord* placement_group(const std::string& id) const;

 private:
  struct Waiter {
    std::string peer;
    uint64_t request_id;
    int64_t deadline_ms;
  };
  struct JobRun {  // in-memory driver state of a RUNNING job; rebuilt after a restart
    int64_t step = -1;  // the step in flight, -1 none
    std::vector<bool> done;
    std::vector<int64_t> values;
    std::vector<uint64_t> call_ids;  // per actor: the request id of its outstanding call, 0 none
    std::vector<uint32_t> call_incarnation;
    std::vector<int64_t> sent_ms;
    std::vector<int32_t> attempts;
    int64_t step_started_ms = 0;
    // Training jobs, per rank (one for a one-process job): the trainer incarnation that accepted
    // `start`, and the start call in flight. gang: the incarnations the ranks were started in
    // together (empty until they are); a rank whose incarnation moves on breaks the gang.
    std::vector<int64_t> started_incarnation;
    std::vector<uint64_t> start_call;
    std::vector<uint32_t> start_incarnation;
    std::vector<int64_t> start_sent_ms;
    std::vector<uint32_t> gang;
    // A gang rank's reported failure, acted on after a grace period (node_timeout_ms): a rank
    // whose collective failed because a peer died reports before the controller may know of the
    // death; if the peer's restart breaks the gang first, the report was a symptom, not a failure.
    int64_t failed_rank = -1;
    uint32_t failed_incarnation = 0;
    int64_t failed_deadline_ms = 0;
    std::string failed_cause;
  };
  struct PendingCall {
    std::string job_id;
    size_t actor_index;
    int64_t step;  // -1: a trainer's start call
    uint32_t incarnation = 0;
  };

  using Payload = proto::Envelope::Payload;

  void dispatch(const std::string& peer, const proto::Frame& frame);
  void handle_register_node(const std::string& peer, uint64_t rid, proto::RegisterNode::Reader m);
  void handle_heartbeat(const std::string& peer, uint64_t rid, proto::Heartbeat::Reader m);
  void handle_deregister_node(const std::string& peer, uint64_t rid, proto::DeregisterNode::Reader m);
  // Samples each RUNNING job's step over time (in memory only) for the ETA of the job documents.
  void note_progress(const JobRecord& j, int64_t now);  // a (time, step) sample of a RUNNING job
  // Seconds until the job's last step at the recent steps/s; negative when unknown.
  double eta_seconds(const JobRecord& j) const;
  void handle_worker_exited(const std::string& peer, uint64_t rid, proto::WorkerExited::Reader m);
  void handle_register_worker(const std::string& peer, uint64_t rid, proto::RegisterWorker::Reader m);
  void handle_create_actor(const std::string& peer, uint64_t rid, proto::ActorSpec::Reader m);
  void handle_wait_actor(const std::string& peer, uint64_t rid, proto::WaitActor::Reader m);
  void handle_kill_actor(const std::string& peer, uint64_t rid, proto::KillActor::Reader m);
  void handle_create_placement_group(const std::string& peer, uint64_t rid, proto::CreatePlacementGroup::Reader m);
  void handle_remove_placement_group(const std::string& peer, uint64_t rid, proto::RemovePlacementGroup::Reader m);
  void handle_submit_job(const std::string& peer, uint64_t rid, proto::SubmitJob::Reader m);
  void handle_stop_job(const std::string& peer, uint64_t rid, proto::StopJob::Reader m);
  void handle_resume_job(const std::string& peer, uint64_t rid, proto::ResumeJob::Reader m);
  void handle_query(const std::string& peer, uint64_t rid, proto::Query::Reader m);
  void handle_actor_return(uint64_t rid, proto::ActorReturn::Reader m);
  void handle_kv_put(const std::string& peer, uint64_t rid, proto::KvPut::Reader m);
  void handle_kv_get(const std::string& peer, uint64_t rid, proto::KvGet::Reader m);
  // Drops every key-value entry under `prefix` (a finished gang's rendezvous keys).
  void kv_erase_prefix(const std::string& prefix);
  void handle_actor_report(const std::string& peer, uint64_t rid, proto::ActorReport::Reader m);

  // Replies and orders (queued until flush()).
  void reply_error(const std::string& peer, uint64_t rid, const Status& st);
  void reply_ok(const std::string& peer, uint64_t rid);
  void reply_actor_info(const std::string& peer, uint64_t rid, const ActorRecord& a);
  void queue(const std::string& peer, std::string frame) { outbox_.emplace_back(peer, std::move(frame)); }
  proto::Outgoing message(uint64_t rid) { return proto::Outgoing(rid, "controller", options_.token); }
  void send_start_worker(const ActorRecord& a);
  void send_stop_worker(const std::string& node_id, const std::string& actor_id, uint32_t incarnation);

  // Table changes (each persists what it changed).
  std::string next_id(const char* kind);
  void persist(const NodeRecord& n);
  void persist(const ActorRecord& a);
  void persist(const PgRecord& p);
  void persist(const JobRecord& j);
  Result<std::string> create_actor(ActorRecord a);
  Result<std::string> create_placement_group(PgRecord p);
  void remove_placement_group(PgRecord& p, const std::string& cause);
  // allow_restart: restart while the budget lasts; failure = false (its node was drained, the
  // agent stopped cleanly): restart without spending the budget.
  void actor_died(ActorRecord& a, const std::string& cause, bool allow_restart, bool failure = true);
  void actor_kill(ActorRecord& a, const std::string& cause);
  // drained: the agent deregistered (a clean stop), not a failure of the node.
  void node_died(NodeRecord& n, const std::string& cause, bool drained = false);
  void record_failure(const std::string& what);
  void notify_waiters(const ActorRecord& a);

  // Scheduling.
  // The ALIVE nodes with what they have left; `placeable`: without suspect nodes.
  std::vector<NodeView> node_views(bool placeable = false) const;
  // ALIVE but silent for longer than node_suspect_ms(): nothing new is placed there.
  bool node_suspect(const NodeRecord& n) const;
  int64_t node_suspect_ms() const;
  void schedule_actor(ActorRecord& a);
  bool place_pg(PgRecord& p);
  void schedule_pending();

  // Job drivers (job_driver.cc).
  Status job_validate(const ActorJobSpec& spec) const;
  void job_tick(JobRecord& j);
  // A new job of `spec_text` (validated against the nodes), persisted PENDING, ticked once; a
  // pipeline's stage names its pipeline as `parent`.
  Result<JobRecord*> job_create(const std::string& spec_text, const std::string& path, const std::string& parent);
  // Pipelines (job_driver.cc): starts each stage whose dependencies have succeeded, with
  // model.init_from set to its `from` stage's run directory; ends the pipeline when every stage
  // has succeeded or one has not.
  void pipeline_tick(JobRecord& p, const ActorJobSpec& spec);
  // A FAILED or STOPPED training job or pipeline back to PENDING (resume); FailedPrecondition else.
  Status job_revive(JobRecord& j);
  void job_start_step(JobRecord& j, JobRun& run);
  void job_send_call(JobRecord& j, JobRun& run, size_t i, const ActorJobSpec& spec);
  void job_step_done(JobRecord& j, JobRun& run);
  void job_finish(JobRecord& j, JobState state, const std::string& message);
  void job_on_actor_alive(const ActorRecord& a);

  // Training job drivers (train_driver.cc): start the trainer actor's incarnation, then record
  // what it reports (steps, checkpoints, the end).
  // The trainer actors of a training job: its first actors (a campaign's other roles follow them).
  size_t trainer_ranks(const JobRecord& j) const;
  void train_tick(JobRecord& j, JobRun& run);
  void train_start_returned(JobRecord& j, JobRun& run, size_t rank, uint32_t incarnation,
                            proto::ActorReturn::Reader m);
  void train_send_start(JobRecord& j, JobRun& run, size_t rank);
  // A gang rank's worker failed or reported a failure: stop the gang's other ranks and restart the
  // gang (from the last registered checkpoint). failure: counts against the restart budget.
  void train_gang_restart(JobRecord& j, JobRun& run, const std::string& cause);
  void train_started(JobRecord& j, int64_t step, const std::string& checkpoint, const std::string& json);

  ControllerOptions options_;
  StateStore* store_;
  Transport* transport_;
  const Clock* clock_;
  uint64_t epoch_;
  proto::WireCounters counters_;
  proto::DecodeOptions decode_options_;

  std::map<std::string, NodeRecord> nodes_;
  std::map<std::string, ActorRecord> actors_;
  std::map<std::string, PgRecord> pgs_;
  std::map<std::string, JobRecord> jobs_;
  std::map<std::string, ActorJobSpec> job_specs_;  // parsed spec of each non-terminal job
  std::map<std::string, JobRun> job_runs_;
  std::map<std::string, std::deque<std::pair<int64_t, int64_t>>> progress_;  // job -> (ms, step) samples
  std::map<uint64_t, PendingCall> pending_calls_;
  std::map<std::string, std::vector<Waiter>> waiters_;
  std::map<std::string, uint64_t> id_counters_;
  std::map<std::string, std::string> kv_;
  std::set<std::string> unreachable_;  // peers a send failed to since the last driver tick
  std::deque<std::string> recent_failures_;
  std::vector<std::pair<std::string, std::string>> outbox_;
  uint64_t next_call_id_ = 1;
  int64_t commits_ = 0;
  int64_t send_failures_ = 0;
  int64_t last_schedule_ms_ = 0;
};

}  // namespace mariana::controller
