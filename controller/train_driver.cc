// The training jobs' driver (kinds pretrain, extend, sft and rm), on the controller's event loop. The job's
// placement group and its one "trainer" actor are made by job_tick (job_driver.cc); here:
//
//   trainer incarnation ALIVE ──start(spec, run dir, last registered checkpoint)──> it trains,
//   reporting (ActorReport, in order, each acknowledged once durable):
//     started(step K, checkpoint C)  metric points and checkpoint records past K are superseded
//     step(N, metrics)               a metric point; the job's step and last metrics
//     checkpoint(N, dir)             a checkpoint record; the one a restart resumes from
//     done / failed                  the job SUCCEEDS / FAILS
//
// A worker or node failure restarts the actor (tables.h); its new incarnation gets `start` with the
// newest registered checkpoint and resumes from it, so the final weights equal an uninterrupted
// run's. A parallel job is a gang of trainer actors, one per rank (`start` carries the rank, the
// world and the gang's generation): when one rank's incarnation moves on, or a rank reports a
// failure, every other rank is restarted too (without spending its budget), and the new gang
// starts together from the last checkpoint registered (rank 0 reports for the gang). After a controller restart the driver repeats `start`, which the running trainer ignores,
// and the worker resends the report it had in flight.
#include <algorithm>
#include <cstdlib>

#include "controller/controller.h"

namespace mariana::controller {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// A gang rank's failure report ("rank R: <Code>: <message>") that a lost or stuck peer explains:
// a collective that timed out, could not reach a peer, or ran on a group already broken by one.
bool gang_failure_is_communication(const std::string& cause) {
  for (const char* code : {": DeadlineExceeded: ", ": Unavailable: ", ": FailedPrecondition: comm group "})
    if (cause.find(code) != std::string::npos) return true;
  return false;
}

// The step of a "<job>/<12 digits>" key.
int64_t key_step(const std::string& key) {
  const size_t slash = key.rfind('/');
  return slash == std::string::npos ? -1 : std::strtoll(key.c_str() + slash + 1, nullptr, 10);
}

}  // namespace

size_t Controller::trainer_ranks(const JobRecord& j) const {
  auto it = job_specs_.find(j.id);  // the trainer role comes first; a campaign's roles follow it
  const size_t n = it == job_specs_.end() || it->second.roles.empty() ? j.actor_ids.size()
                                                                      : static_cast<size_t>(it->second.roles.front().count);
  return std::min(n, j.actor_ids.size());
}

void Controller::train_tick(JobRecord& j, JobRun& run) {
  const size_t n = trainer_ranks(j);
  if (run.started_incarnation.size() != n) {
    run.started_incarnation.assign(n, -1);
    run.start_call.assign(n, 0);
    run.start_incarnation.assign(n, 0);
    run.start_sent_ms.assign(n, 0);
    run.gang.clear();
  }
  if (n > 1 && !run.gang.empty()) {
    // A rank that restarted (its worker or node died) broke the gang: the others are stuck in, or
    // about to fail, collectives with it. Restart them too; the new gang resumes together.
    for (size_t i = 0; i < n; ++i) {
      const ActorRecord& a = actors_[j.actor_ids[i]];
      if (a.incarnation != run.gang[i])
        return train_gang_restart(j, run, "rank " + std::to_string(i) + " (actor " + a.id + ") restarted" +
                                              (a.last_failure.empty() ? "" : ": " + a.last_failure));
    }
  }
  if (run.failed_rank >= 0 && clock_->now_ms() >= run.failed_deadline_ms) {
    const std::string cause = run.failed_cause;
    // The rank's own error, not a collective that lost a peer: it would fail again the same way
    // (a diverged loss, bad data or config), so the job fails, as a one-process job does.
    if (!gang_failure_is_communication(cause)) return job_finish(j, JobState::kFailed, "trainer: " + cause);
    // A collective failure no peer's death explains: it counts against that rank's budget.
    ActorRecord& a = actors_[j.actor_ids[static_cast<size_t>(run.failed_rank)]];
    if (a.incarnation == run.failed_incarnation && a.state == ActorState::kAlive) {
      if (!a.node_id.empty()) send_stop_worker(a.node_id, a.id, a.incarnation);
      actor_died(a, cause, true, /*failure=*/true);
    }
    run.failed_rank = -1;
    if (job_state_terminal(j.state)) return;
    return train_gang_restart(j, run, cause);
  }
  for (size_t i = 0; i < n; ++i)
    if (actors_[j.actor_ids[i]].state != ActorState::kAlive) return;  // (re)starting: this runs again once it is ALIVE
  if (run.gang.empty()) {
    run.gang.resize(n);
    for (size_t i = 0; i < n; ++i) run.gang[i] = actors_[j.actor_ids[i]].incarnation;
  }
  for (size_t i = 0; i < n; ++i) train_send_start(j, run, i);
}

void Controller::train_send_start(JobRecord& j, JobRun& run, size_t rank) {
  const ActorRecord& a = actors_[j.actor_ids[rank]];
  if (run.started_incarnation[rank] == static_cast<int64_t>(a.incarnation)) return;
  const int64_t now = clock_->now_ms();
  const std::string peer = worker_peer(a.id, a.incarnation);
  if (run.start_call[rank] != 0 && run.start_incarnation[rank] == a.incarnation &&
      now - run.start_sent_ms[rank] < options_.call_timeout_ms && !unreachable_.count(peer))
    return;  // a start call is in flight
  if (run.start_call[rank] != 0) pending_calls_.erase(run.start_call[rank]);
  const uint64_t rid = next_call_id_++;
  pending_calls_[rid] = {j.id, rank, -1, a.incarnation};
  run.start_call[rank] = rid;
  run.start_incarnation[rank] = a.incarnation;
  run.start_sent_ms[rank] = now;
  // The gang's generation: the sum of its ranks' incarnations. Every gang restart moves every
  // rank's incarnation on, so each gang start rendezvouses under keys of its own, and a controller
  // restart (which keeps the incarnations) computes the same generation again.
  uint64_t generation = 0;
  for (uint32_t inc : run.gang) generation += inc;
  auto m = message(rid);
  auto call = m.payload().initActorCall();
  call.setActorId(a.id);
  call.setIncarnation(a.incarnation);
  call.setMethod("start");
  const int32_t world = static_cast<int32_t>(trainer_ranks(j));
  auto args = proto::encode_struct<proto::TrainerStart>([&](proto::TrainerStart::Builder b) {
    b.setJobId(j.id);
    b.setSpecToml(j.spec_toml);
    b.setSpecPath(j.spec_path);
    b.setRunDir(j.run_dir);
    b.setResumeFrom(j.last_checkpoint);
    b.setRecordedStep(j.step);
    b.setRank(static_cast<int32_t>(rank));
    b.setWorld(world);
    b.setGeneration(generation);
  });
  call.setArgs(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(args.data()), args.size()));
  queue(peer, m.bytes());
}

void Controller::train_gang_restart(JobRecord& j, JobRun& run, const std::string& cause) {
  // The ranks still in the broken gang restart without spending their budget (the rank that
  // failed has spent its own already).
  const size_t ranks = trainer_ranks(j);
  for (size_t i = 0; i < ranks; ++i) {
    ActorRecord& a = actors_[j.actor_ids[i]];
    if (i < run.gang.size() && a.incarnation == run.gang[i] && a.state != ActorState::kDead) {
      if (!a.node_id.empty()) send_stop_worker(a.node_id, a.id, a.incarnation);
      actor_died(a, "gang restart: " + cause, true, /*failure=*/false);
    }
    if (run.start_call[i] != 0) pending_calls_.erase(run.start_call[i]);
    run.start_call[i] = 0;
    run.started_incarnation[i] = -1;
  }
  run.gang.clear();
  run.failed_rank = -1;  // a failure reported by the broken gang was its symptom
  kv_erase_prefix("gang/" + j.id + "/");  // the broken gang's rendezvous keys; the next start has its own
  if (job_state_terminal(j.state)) return;
  j.message = "gang restart: " + cause;
  persist(j);
}

void Controller::train_start_returned(JobRecord& j, JobRun& run, size_t rank, uint32_t incarnation,
                                      proto::ActorReturn::Reader m) {
  if (rank >= run.start_call.size()) return;
  run.start_call[rank] = 0;
  if (m.getCode() != 0)
    return job_finish(j, JobState::kFailed, "the trainer could not start: " + text(m.getError()));
  run.started_incarnation[rank] = incarnation;
}

void Controller::train_started(JobRecord& j, int64_t step, const std::string& checkpoint, const std::string& json) {
  auto info = nlohmann::json::parse(json, nullptr, false);
  if (info.is_object() && info.contains("steps") && info["steps"].is_number_integer())
    j.total_steps = info["steps"].get<int64_t>();
  // Everything recorded past the step it starts from is superseded by what it reports next.
  nlohmann::json last = nlohmann::json::object();
  auto points = store_->scan(Table::kMetrics, j.id + "/");
  if (points.ok())
    for (auto& [k, v] : points.value()) {
      const int64_t s = key_step(k);
      if (s > step) store_->erase(Table::kMetrics, k);
      else if (s == step) last = nlohmann::json::parse(v, nullptr, false);
    }
  int64_t kept = 0;
  auto ckpts = store_->scan(Table::kCheckpoints, j.id + "/");
  if (ckpts.ok())
    for (auto& [k, v] : ckpts.value()) {
      const int64_t s = key_step(k);
      if (s > step || (s == step && checkpoint.empty())) store_->erase(Table::kCheckpoints, k);
      else if (s < step) ++kept;
    }
  if (!checkpoint.empty()) {
    // Normally the registered checkpoint it was told to resume from; else the newest valid one it
    // fell back to, registered now.
    nlohmann::json rec = {{"job_id", j.id}, {"step", step}, {"path", checkpoint}, {"wall_ms", wall_ms()}};
    store_->put(Table::kCheckpoints, step_key(j.id, step), rec.dump());
    ++kept;
  }
  j.checkpoints = kept;
  j.last_checkpoint = checkpoint;
  j.last_checkpoint_step = checkpoint.empty() ? 0 : step;
  j.step = step;
  j.last_metrics = last.is_object() ? last : nlohmann::json::object();
  j.message = step > 0 ? "resumed from step " + std::to_string(step) : "";
  persist(j);
}

void Controller::handle_actor_report(const std::string& peer, uint64_t rid, proto::ActorReport::Reader m) {
  const std::string aid = text(m.getActorId());
  const uint32_t inc = m.getIncarnation();
  if (peer != worker_peer(aid, inc))
    return reply_error(peer, rid, PermissionDenied("actorReport: a worker's routing id must be \"" + worker_peer(aid, inc) + "\""));
  auto it = actors_.find(aid);
  if (it == actors_.end() || it->second.state != ActorState::kAlive || it->second.incarnation != inc)
    return reply_error(peer, rid,
                       FailedPrecondition("actorReport: " + aid + " incarnation " + std::to_string(inc) + " is not ALIVE"));
  auto jit = jobs_.find(it->second.job_id);
  if (jit == jobs_.end() || job_state_terminal(jit->second.state)) return reply_ok(peer, rid);  // nothing to record
  auto sit = job_specs_.find(jit->first);
  if (sit == job_specs_.end() || !sit->second.training())
    return reply_error(peer, rid, InvalidArgument("actorReport: job " + jit->first + " is not a training job"));
  JobRecord& j = jit->second;
  const std::string event = text(m.getEvent());
  const int64_t step = m.getStep();
  const size_t rank = static_cast<size_t>(
      std::find(j.actor_ids.begin(), j.actor_ids.end(), aid) - j.actor_ids.begin());
  const size_t ranks = trainer_ranks(j);
  if (rank >= ranks)
    return reply_error(peer, rid, InvalidArgument("actorReport: " + aid + " is not a trainer of job " + j.id));
  if (ranks > 1) {  // a gang: rank 0 reports for it; any rank reports its failure
    if (event == "failed") {
      // A rank's failure: its own error, or a collective that failed on a peer that died before
      // the controller knew. Acted on after the grace period (train_tick), unless a peer's
      // restart breaks the gang first.
      JobRun& run = job_runs_[j.id];
      const std::string cause = "rank " + std::to_string(rank) + " failed: " + text(m.getMessage());
      // The first report opens the grace period; a rank's own error replaces a communication
      // failure reported before it (the others' collectives fail because of it).
      if (run.failed_rank < 0 ||
          (gang_failure_is_communication(run.failed_cause) && !gang_failure_is_communication(cause))) {
        if (run.failed_rank < 0) run.failed_deadline_ms = clock_->now_ms() + options_.node_timeout_ms;
        run.failed_rank = static_cast<int64_t>(rank);
        run.failed_incarnation = inc;
        run.failed_cause = cause;
      }
      return reply_ok(peer, rid);
    }
    if (rank != 0) return reply_ok(peer, rid);
  }
  if (event == "started") {
    train_started(j, step, text(m.getPath()), text(m.getJson()));
    auto& started = job_runs_[j.id].started_incarnation;
    if (rank < started.size()) started[rank] = inc;
  } else if (event == "step") {
    auto point = nlohmann::json::parse(text(m.getJson()), nullptr, false);
    if (!point.is_object() || step < 1)
      return reply_error(peer, rid, InvalidArgument("actorReport: step " + std::to_string(step) + " without metrics"));
    point["step"] = step;
    point["wall_ms"] = wall_ms();
    store_->put(Table::kMetrics, step_key(j.id, step), point.dump());
    j.step = step;
    j.last_metrics = point;
    persist(j);
  } else if (event == "checkpoint") {
    const std::string path = text(m.getPath());
    if (path.empty() || step < 1)
      return reply_error(peer, rid, InvalidArgument("actorReport: checkpoint without a path or step"));
    if (step != j.last_checkpoint_step || path != j.last_checkpoint) {  // not a resent report
      nlohmann::json rec = {{"job_id", j.id}, {"step", step}, {"path", path}, {"wall_ms", wall_ms()}};
      store_->put(Table::kCheckpoints, step_key(j.id, step), rec.dump());
      ++j.checkpoints;
      j.last_checkpoint = path;
      j.last_checkpoint_step = step;
      persist(j);
    }
  } else if (event == "done") {
    j.step = step;
    job_finish(j, JobState::kSucceeded, "final checkpoint " + text(m.getPath()));
  } else if (event == "failed") {
    job_finish(j, JobState::kFailed, "trainer: " + text(m.getMessage()));
  } else {
    return reply_error(peer, rid, InvalidArgument("actorReport: unknown event \"" + event + "\""));
  }
  reply_ok(peer, rid);
}

}  // namespace mariana::controller
