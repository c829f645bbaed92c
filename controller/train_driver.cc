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
// run's. After a controller restart the driver repeats `start`, which the running trainer ignores,
// and the worker resends the report it had in flight.
#include <cstdlib>

#include "controller/controller.h"

namespace mariana::controller {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// The step of a "<job>/<12 digits>" key.
int64_t key_step(const std::string& key) {
  const size_t slash = key.rfind('/');
  return slash == std::string::npos ? -1 : std::strtoll(key.c_str() + slash + 1, nullptr, 10);
}

}  // namespace

void Controller::train_tick(JobRecord& j, JobRun& run) {
  const ActorRecord& a = actors_[j.actor_ids[0]];
  if (a.state != ActorState::kAlive) return;  // (re)starting: this runs again once it is ALIVE
  if (run.started_incarnation == static_cast<int64_t>(a.incarnation)) return;
  const int64_t now = clock_->now_ms();
  const std::string peer = worker_peer(a.id, a.incarnation);
  if (run.start_call != 0 && run.start_incarnation == a.incarnation && now - run.start_sent_ms < options_.call_timeout_ms &&
      !unreachable_.count(peer))
    return;  // a start call is in flight
  if (run.start_call != 0) pending_calls_.erase(run.start_call);
  const uint64_t rid = next_call_id_++;
  pending_calls_[rid] = {j.id, 0, -1, a.incarnation};
  run.start_call = rid;
  run.start_incarnation = a.incarnation;
  run.start_sent_ms = now;
  auto m = message(rid);
  auto call = m.payload().initActorCall();
  call.setActorId(a.id);
  call.setIncarnation(a.incarnation);
  call.setMethod("start");
  auto args = proto::encode_struct<proto::TrainerStart>([&](proto::TrainerStart::Builder b) {
    b.setJobId(j.id);
    b.setSpecToml(j.spec_toml);
    b.setSpecPath(j.spec_path);
    b.setRunDir(j.run_dir);
    b.setResumeFrom(j.last_checkpoint);
    b.setRecordedStep(j.step);
  });
  call.setArgs(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(args.data()), args.size()));
  queue(peer, m.bytes());
}

void Controller::train_start_returned(JobRecord& j, JobRun& run, uint32_t incarnation, proto::ActorReturn::Reader m) {
  run.start_call = 0;
  if (m.getCode() != 0)
    return job_finish(j, JobState::kFailed, "the trainer could not start: " + text(m.getError()));
  run.started_incarnation = incarnation;
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
  if (event == "started") {
    train_started(j, step, text(m.getPath()), text(m.getJson()));
    job_runs_[j.id].started_incarnation = inc;
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
