// The generic actor job's driver, run on the controller's event loop (see job_spec.h for the
// spec and tables.h for the job lifecycle). Durable progress: a step counts once its completion,
// its metric point and (every checkpoint_every steps) its checkpoint record are committed
// together; after a controller restart the driver re-issues the first uncommitted step.
#include <cinttypes>
#include <cstdio>
#include <map>
#include <utility>
#include <vector>
#include <sstream>

#include <toml++/toml.h>

#include "controller/controller.h"
#include "core/toml_util.h"

namespace mariana::controller {

std::string step_key(const std::string& job_id, int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%012" PRId64, step);
  return job_id + "/" + buf;
}

Status Controller::job_validate(const ActorJobSpec& spec) const {
  if (spec.kind == "pipeline") {  // each stage as the job it will be
    for (const PipelineStage& st : spec.stages) {
      MARIANA_ASSIGN_OR_RETURN(ActorJobSpec inner, job_spec_parse(st.spec_toml, st.spec_path));
      const Status valid = job_validate(inner);
      if (!valid.ok()) return Status(valid.code(), "stage " + st.name + ": " + valid.message());
    }
    return Status::Ok();
  }
  std::vector<Resources> bundles;
  for (const ActorRole& role : spec.roles) {
    bool any_node = false, offered = false;
    for (auto& [id, n] : nodes_) {
      if (n.state != NodeState::kAlive) continue;
      any_node = true;
      for (auto& c : n.actor_classes) offered = offered || c == role.actor_class;
    }
    if (any_node && !offered)
      return InvalidArgument("field '" + std::string(role.name.empty() ? "actors" : "roles." + role.name) +
                             ".class': no node offers actor class \"" + role.actor_class + "\"");
    bundles.insert(bundles.end(), static_cast<size_t>(role.count), role.resources);
  }
  return check_feasible(spec.strategy, bundles, node_views());
}

Result<JobRecord*> Controller::job_create(const std::string& spec_text, const std::string& path,
                                          const std::string& parent) {
  MARIANA_ASSIGN_OR_RETURN(ActorJobSpec spec, job_spec_parse(spec_text, path));
  Status valid = job_validate(spec);
  if (!valid.ok()) return Status(valid.code(), path + ": " + valid.message());
  JobRecord j;
  j.id = next_id("job");
  j.name = spec.name.empty() ? j.id : spec.name;
  j.kind = spec.kind;
  j.spec_toml = spec_text;
  j.spec_path = path;
  j.state = JobState::kPending;
  j.submitted_wall_ms = wall_ms();
  j.total_steps = spec.steps;
  j.parent = parent;
  if (spec.training()) j.run_dir = options_.state_dir + "/runs/" + j.id;
  if (spec.kind == "pipeline") j.stage_jobs.assign(spec.stages.size(), "");
  job_specs_[j.id] = std::move(spec);
  JobRecord& ref = jobs_[j.id] = std::move(j);
  persist(ref);
  return &ref;
}

void Controller::handle_submit_job(const std::string& peer, uint64_t rid, proto::SubmitJob::Reader m) {
  const std::string path = m.getSpecPath().size() ? std::string(m.getSpecPath().cStr()) : "<job spec>";
  const std::string spec_text(m.getSpecToml().cStr(), m.getSpecToml().size());
  auto created = job_create(spec_text, path, "");
  if (!created.ok()) return reply_error(peer, rid, created.status());
  JobRecord& ref = *created.value();
  auto out = message(rid);
  out.payload().initSubmitJobReply().setJobId(ref.id);
  queue(peer, out.bytes());
  job_tick(ref);
}

void Controller::handle_stop_job(const std::string& peer, uint64_t rid, proto::StopJob::Reader m) {
  auto it = jobs_.find(std::string(m.getJobId().cStr()));
  if (it == jobs_.end()) return reply_error(peer, rid, NotFound("no job " + std::string(m.getJobId().cStr())));
  if (job_state_terminal(it->second.state))
    return reply_error(peer, rid,
                       FailedPrecondition("job " + it->first + " is already " + job_state_name(it->second.state)));
  job_finish(it->second, JobState::kStopped, "stopped by a client");
  reply_ok(peer, rid);
}

void Controller::job_finish(JobRecord& j, JobState state, const std::string& message) {
  if (job_state_terminal(j.state)) return;
  j.state = state;
  j.message = message;
  j.ended_wall_ms = wall_ms();
  progress_.erase(j.id);
  persist(j);  // terminal first: the actor deaths below must not fail the job again
  for (auto& id : j.actor_ids) {
    auto it = actors_.find(id);
    if (it != actors_.end()) actor_kill(it->second, std::string("job ") + j.id + " " + job_state_name(state));
  }
  auto pg = pgs_.find(j.pg_id);
  if (pg != pgs_.end()) remove_placement_group(pg->second, std::string("job ") + j.id + " ended");
  job_runs_.erase(j.id);
  job_specs_.erase(j.id);
  if (state != JobState::kSucceeded)  // a pipeline's running stages stop with it (resume continues them)
    for (const std::string& sid : j.stage_jobs) {
      auto st = jobs_.find(sid);
      if (st != jobs_.end() && !job_state_terminal(st->second.state))
        job_finish(st->second, JobState::kStopped, "pipeline " + j.id + " " + job_state_name(state));
    }
  kv_erase_prefix("gang/" + j.id + "/");      // a gang's rendezvous keys (workers/trainer_actor.cc)
  kv_erase_prefix("campaign/" + j.id + "/");  // a campaign's weights groups' (workers/rl_campaign.cc)
  for (auto it = pending_calls_.begin(); it != pending_calls_.end();)
    it = it->second.job_id == j.id ? pending_calls_.erase(it) : std::next(it);
  if (state != JobState::kSucceeded) record_failure("job " + j.id + " " + job_state_name(state) + ": " + message);
}

void Controller::job_on_actor_alive(const ActorRecord& a) {
  if (a.job_id.empty()) return;
  auto it = jobs_.find(a.job_id);
  if (it != jobs_.end() && !job_state_terminal(it->second.state)) job_tick(it->second);
}

void Controller::job_tick(JobRecord& j) {
  if (job_state_terminal(j.state)) return;
  auto spec_it = job_specs_.find(j.id);
  if (spec_it == job_specs_.end()) return job_finish(j, JobState::kFailed, "internal: job spec missing");
  const ActorJobSpec& spec = spec_it->second;
  if (spec.kind == "pipeline") return pipeline_tick(j, spec);
  if (j.pg_id.empty()) {
    PgRecord p;
    p.name = j.id;
    p.job_id = j.id;
    p.strategy = spec.strategy;
    for (const ActorRole& role : spec.roles)
      p.bundles.insert(p.bundles.end(), static_cast<size_t>(role.count), role.resources);
    auto id = create_placement_group(std::move(p));
    if (!id.ok()) return job_finish(j, JobState::kFailed, id.status().message());
    j.pg_id = id.value();
    j.message = "waiting for resources";
    persist(j);
  }
  auto pg = pgs_.find(j.pg_id);
  if (pg == pgs_.end() || pg->second.state == PgState::kRemoved)
    return job_finish(j, JobState::kFailed, "placement group " + j.pg_id + " was removed");
  if (j.actor_ids.empty()) {
    if (pg->second.state != PgState::kCreated) return;
    int32_t bundle = 0;
    for (const ActorRole& role : spec.roles) {
      for (int64_t i = 0; i < role.count; ++i) {
        ActorRecord a;
        a.class_name = role.actor_class;
        a.args = role.args;
        // [actors]: "<job>/<i>"; [[roles]]: "<job>/<role>/<i>", which ActorHandle resolves.
        a.name = j.name + "/" + (role.name.empty() ? "" : role.name + "/") + std::to_string(i);
        a.job_id = j.id;
        a.demand = role.resources;
        a.max_restarts = role.max_restarts;
        a.restart_window_ms = role.restart_window_s * 1000;
        a.max_task_retries = role.max_task_retries;
        a.pg_id = j.pg_id;
        a.bundle_index = bundle++;
        auto id = create_actor(std::move(a));
        if (!id.ok()) return job_finish(j, JobState::kFailed, id.status().message());
        j.actor_ids.push_back(id.value());
      }
    }
    j.state = JobState::kRunning;
    j.started_wall_ms = wall_ms();
    j.message.clear();
    persist(j);
  }
  for (auto& id : j.actor_ids) {
    auto it = actors_.find(id);
    if (it == actors_.end()) return job_finish(j, JobState::kFailed, "actor " + id + " is missing");
    if (it->second.state == ActorState::kDead)
      return job_finish(j, JobState::kFailed, "actor " + id + " died: " + it->second.death_cause);
  }
  if (spec.service) return;  // [[roles]]: the actors serve until the job is stopped
  JobRun& run = job_runs_[j.id];
  if (spec.training()) return train_tick(j, run);
  const size_t n = j.actor_ids.size();
  if (run.done.size() != n) {
    run = JobRun();
    run.done.assign(n, false);
    run.values.assign(n, 0);
    run.call_ids.assign(n, 0);
    run.call_incarnation.assign(n, 0);
    run.sent_ms.assign(n, 0);
    run.attempts.assign(n, 0);
  }
  if (run.step < 0) {
    if (j.step >= j.total_steps) return job_finish(j, JobState::kSucceeded, "");
    for (auto& id : j.actor_ids)
      if (actors_[id].state != ActorState::kAlive) return;  // (re)starting; this runs again when it is ALIVE
    return job_start_step(j, run);
  }
  // A step is in flight: re-send the calls whose actor restarted, whose send failed, or that timed out.
  const int64_t now = clock_->now_ms();
  const int64_t timeout = std::max<int64_t>(options_.call_timeout_ms, 4 * spec.step_ms + 1000);
  for (size_t i = 0; i < n; ++i) {
    if (run.done[i]) continue;
    const ActorRecord& a = actors_[j.actor_ids[i]];
    if (a.state != ActorState::kAlive) continue;
    const bool lost = run.call_ids[i] == 0 || run.call_incarnation[i] != a.incarnation ||
                      unreachable_.count(worker_peer(a.id, a.incarnation)) || now - run.sent_ms[i] > timeout;
    if (!lost) continue;
    if (run.call_ids[i] != 0 && run.call_incarnation[i] != a.incarnation) {
      ++run.attempts[i];
      const int32_t retries = spec.roles.front().max_task_retries;  // [actors]: one role
      if (retries >= 0 && run.attempts[i] > retries)
        return job_finish(j, JobState::kFailed,
                          "step " + std::to_string(run.step) + " on actor " + a.id + " failed after " +
                              std::to_string(run.attempts[i] - 1) + " retries");
    }
    job_send_call(j, run, i, spec);
  }
}

void Controller::job_start_step(JobRecord& j, JobRun& run) {
  const ActorJobSpec& spec = job_specs_[j.id];
  run.step = j.step;
  run.step_started_ms = clock_->now_ms();
  for (size_t i = 0; i < run.done.size(); ++i) {
    run.done[i] = false;
    run.values[i] = 0;
    run.attempts[i] = 0;
    run.call_ids[i] = 0;
  }
  for (size_t i = 0; i < run.done.size(); ++i) job_send_call(j, run, i, spec);
}

void Controller::job_send_call(JobRecord& j, JobRun& run, size_t i, const ActorJobSpec& spec) {
  const ActorRecord& a = actors_[j.actor_ids[i]];
  if (run.call_ids[i] != 0) pending_calls_.erase(run.call_ids[i]);
  const uint64_t rid = next_call_id_++;
  pending_calls_[rid] = {j.id, i, run.step};
  run.call_ids[i] = rid;
  run.call_incarnation[i] = a.incarnation;
  run.sent_ms[i] = clock_->now_ms();
  auto m = message(rid);
  auto call = m.payload().initActorCall();
  call.setActorId(a.id);
  call.setIncarnation(a.incarnation);
  call.setMethod("step");
  const uint64_t step = static_cast<uint64_t>(run.step);
  const uint32_t sleep_ms = static_cast<uint32_t>(spec.step_ms);
  auto args = proto::encode_struct<proto::StepArgs>([&](proto::StepArgs::Builder b) {
    b.setStep(step);
    b.setSleepMs(sleep_ms);
  });
  call.setArgs(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(args.data()), args.size()));
  queue(worker_peer(a.id, a.incarnation), m.bytes());
}

void Controller::handle_actor_return(uint64_t rid, proto::ActorReturn::Reader m) {
  auto pc = pending_calls_.find(rid);
  if (pc == pending_calls_.end()) return;  // a late answer to a call we no longer wait for
  PendingCall call = pc->second;
  pending_calls_.erase(pc);
  auto jit = jobs_.find(call.job_id);
  auto rit = job_runs_.find(call.job_id);
  if (jit == jobs_.end() || rit == job_runs_.end()) return;
  JobRecord& j = jit->second;
  JobRun& run = rit->second;
  if (call.step < 0) return train_start_returned(j, run, call.actor_index, call.incarnation, m);
  if (run.step != call.step || call.actor_index >= run.done.size() || run.call_ids[call.actor_index] != rid) return;
  run.call_ids[call.actor_index] = 0;
  if (m.getCode() != 0)
    return job_finish(j, JobState::kFailed,
                      "step " + std::to_string(call.step) + " on actor " + j.actor_ids[call.actor_index] +
                          " failed: " + std::string(m.getError().cStr()));
  auto value = proto::StructValue<proto::Int64Value>::decode(
      std::string_view(reinterpret_cast<const char*>(m.getResult().begin()), m.getResult().size()), "step result");
  if (!value.ok()) return job_finish(j, JobState::kFailed, value.status().message());
  run.values[call.actor_index] = value.value().get().getValue();
  run.done[call.actor_index] = true;
  for (bool d : run.done)
    if (!d) return;
  job_step_done(j, run);
}

void Controller::job_step_done(JobRecord& j, JobRun& run) {
  const ActorJobSpec& spec = job_specs_[j.id];
  const int64_t step = run.step;
  int64_t sum = 0;
  for (auto v : run.values) sum += v;
  nlohmann::json point = {{"step", step},
                          {"loss", 1.0 / static_cast<double>(step + 1)},
                          {"value_sum", sum},
                          {"step_ms", clock_->now_ms() - run.step_started_ms},
                          {"wall_ms", wall_ms()}};
  store_->put(Table::kMetrics, step_key(j.id, step), point.dump());
  j.step = step + 1;
  j.last_metrics = point;
  if (spec.checkpoint_every > 0 && j.step % spec.checkpoint_every == 0) {
    nlohmann::json ckpt = {{"job_id", j.id},
                           {"step", j.step},
                           {"path", options_.state_dir + "/checkpoints/" + j.id + "/step-" + std::to_string(j.step)},
                           {"wall_ms", wall_ms()}};
    store_->put(Table::kCheckpoints, step_key(j.id, j.step), ckpt.dump());
    ++j.checkpoints;
  }
  persist(j);
  run.step = -1;
  job_tick(j);
}

void Controller::pipeline_tick(JobRecord& p, const ActorJobSpec& spec) {
  p.stage_jobs.resize(spec.stages.size());
  std::map<std::string, const JobRecord*> by_name;  // each stage's job, once started
  for (size_t i = 0; i < spec.stages.size(); ++i) {
    auto it = jobs_.find(p.stage_jobs[i]);
    if (it != jobs_.end()) by_name[spec.stages[i].name] = &it->second;
  }
  int64_t succeeded = 0;
  for (const PipelineStage& st : spec.stages) {
    const JobRecord* c = by_name.count(st.name) ? by_name[st.name] : nullptr;
    if (c == nullptr) continue;
    if (c->state == JobState::kSucceeded) {
      ++succeeded;
    } else if (job_state_terminal(c->state)) {
      return job_finish(p, JobState::kFailed,
                        "stage " + st.name + " (" + c->id + ") " + job_state_name(c->state) + ": " + c->message +
                            "; the stages after it did not start (`mariana jobs resume " + p.id + "` continues)");
    }
  }
  if (succeeded != p.step) {
    p.step = succeeded;
    persist(p);
  }
  if (succeeded == static_cast<int64_t>(spec.stages.size()))
    return job_finish(p, JobState::kSucceeded, "all " + std::to_string(succeeded) + " stages succeeded");
  for (size_t i = 0; i < spec.stages.size(); ++i) {
    const PipelineStage& st = spec.stages[i];
    if (!p.stage_jobs[i].empty()) continue;
    bool ready = true;
    for (const std::string& d : st.depends())
      ready = ready && by_name.count(d) && by_name[d]->state == JobState::kSucceeded;
    if (!ready) continue;
    std::string text = st.spec_toml;
    if (!st.from.empty()) {  // the stage starts from its `from` stage's run (its newest checkpoint)
      auto tbl = toml_parse(st.spec_toml, st.spec_path);
      if (!tbl.ok()) return job_finish(p, JobState::kFailed, "stage " + st.name + ": " + tbl.status().message());
      if (!tbl.value().contains("model")) tbl.value().insert_or_assign("model", toml::table{});
      toml::table* model = tbl.value()["model"].as_table();
      if (model == nullptr) return job_finish(p, JobState::kFailed, "stage " + st.name + ": field 'model': expected a table");
      model->insert_or_assign("init_from", by_name[st.from]->run_dir);
      std::ostringstream out;
      out << tbl.value();
      text = out.str();
    }
    auto c = job_create(text, st.spec_path, p.id);
    if (!c.ok()) return job_finish(p, JobState::kFailed, "stage " + st.name + ": " + c.status().message());
    p.stage_jobs[i] = c.value()->id;
    if (p.state == JobState::kPending) {
      p.state = JobState::kRunning;
      p.started_wall_ms = wall_ms();
    }
    p.message = "running stage " + st.name;
    persist(p);
    job_tick(*c.value());
  }
}

Status Controller::job_revive(JobRecord& j) {
  auto resumable = [](const JobRecord& x) -> Status {
    if (x.state != JobState::kFailed && x.state != JobState::kStopped)
      return FailedPrecondition("job " + x.id + " is " + job_state_name(x.state) +
                                "; only a FAILED or STOPPED job resumes");
    return Status::Ok();
  };
  MARIANA_RETURN_IF_ERROR(resumable(j));
  MARIANA_ASSIGN_OR_RETURN(ActorJobSpec spec, job_spec_parse(j.spec_toml, j.spec_path));
  if (!spec.training() && spec.kind != "pipeline")
    return FailedPrecondition("job " + j.id + " is an actor job; only training jobs and pipelines resume");
  if (!j.parent.empty()) {  // a stage resumes with its pipeline, or alone once the pipeline has ended
    auto p = jobs_.find(j.parent);
    if (p != jobs_.end() && !job_state_terminal(p->second.state))
      return FailedPrecondition("job " + j.id + " is a stage of running pipeline " + j.parent);
  }
  // A pipeline: every stage that did not succeed resumes with it; all are checked before any changes.
  std::vector<std::pair<JobRecord*, ActorJobSpec>> stages;
  for (const std::string& sid : j.stage_jobs) {
    auto st = jobs_.find(sid);
    if (st == jobs_.end() || st->second.state == JobState::kSucceeded) continue;
    MARIANA_RETURN_IF_ERROR(resumable(st->second));
    MARIANA_ASSIGN_OR_RETURN(ActorJobSpec stage_spec, job_spec_parse(st->second.spec_toml, st->second.spec_path));
    stages.emplace_back(&st->second, std::move(stage_spec));
  }
  auto reset = [&](JobRecord& x, ActorJobSpec x_spec, JobState state) {
    x.state = state;
    x.message = "resumed";
    x.ended_wall_ms = 0;
    x.pg_id.clear();  // a new placement group and new actors; a trainer resumes from last_checkpoint
    x.actor_ids.clear();
    job_specs_[x.id] = std::move(x_spec);
    persist(x);
  };
  for (auto& [stage, stage_spec] : stages) reset(*stage, std::move(stage_spec), JobState::kPending);
  reset(j, std::move(spec), j.stage_jobs.empty() ? JobState::kPending : JobState::kRunning);
  return Status::Ok();
}

void Controller::handle_resume_job(const std::string& peer, uint64_t rid, proto::ResumeJob::Reader m) {
  auto it = jobs_.find(std::string(m.getJobId().cStr()));
  if (it == jobs_.end()) return reply_error(peer, rid, NotFound("no job " + std::string(m.getJobId().cStr())));
  const Status st = job_revive(it->second);
  if (!st.ok()) return reply_error(peer, rid, st);
  reply_ok(peer, rid);
  job_tick(it->second);
}

}  // namespace mariana::controller
