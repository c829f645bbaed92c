// Monitoring reads: the JSON documents behind `mariana status|nodes|actors|jobs` and the
// Prometheus text behind /metrics. Built on the event loop from the in-memory tables (and, for a
// job's metric points and checkpoints, from the committed store).
#include <cstdio>

#include "controller/controller.h"
#include "controller/job_spec.h"

namespace mariana::controller {

namespace {

nlohmann::json node_json(const NodeRecord& n, const NodeView* view, int64_t now) {
  auto j = to_json(n);
  j["available"] = view ? view->available : Resources{};
  j["last_seen_ms_ago"] = now - n.last_seen_ms;
  return j;
}

}  // namespace

nlohmann::json Controller::query(const std::string& what, const std::string& id) const {
  const int64_t now = clock_->now_ms();
  auto views = node_views();
  auto view_of = [&](const std::string& node) -> const NodeView* {
    for (auto& v : views)
      if (v.id == node) return &v;
    return nullptr;
  };
  if (what == "nodes") {
    nlohmann::json out = nlohmann::json::array();
    for (auto& [nid, n] : nodes_) {
      auto j = node_json(n, view_of(nid), now);
      int actors = 0;
      for (auto& [aid, a] : actors_) actors += a.node_id == nid && a.state == ActorState::kAlive;
      j["actors_alive"] = actors;
      out.push_back(j);
    }
    return out;
  }
  if (what == "actors") {
    nlohmann::json out = nlohmann::json::array();
    for (auto& [aid, a] : actors_) {
      auto j = to_json(a);
      j["pending_reason"] = a.pending_reason;
      out.push_back(j);
    }
    return out;
  }
  if (what == "actor") {
    auto it = actors_.find(id);
    if (it == actors_.end()) return {{"error", "no actor " + id}};
    auto j = to_json(it->second);
    j["pending_reason"] = it->second.pending_reason;
    return j;
  }
  if (what == "jobs") {
    nlohmann::json out = nlohmann::json::array();
    for (auto& [jid, j] : jobs_) {
      auto x = to_json(j);
      x.erase("spec_toml");
      if (const double eta = eta_seconds(j); eta >= 0) x["eta_s"] = eta;
      out.push_back(x);
    }
    return out;
  }
  if (what == "job" || what == "metrics") {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return {{"error", "no job " + id}};
    auto x = to_json(it->second);
    if (const double eta = eta_seconds(it->second); eta >= 0) x["eta_s"] = eta;
    auto ckpts = store_->scan(Table::kCheckpoints, id + "/");
    nlohmann::json paths = nlohmann::json::array();
    if (ckpts.ok())
      for (auto& [k, v] : ckpts.value()) {
        auto c = nlohmann::json::parse(v, nullptr, false);
        if (c.is_object()) paths.push_back(c.value("path", ""));
      }
    x["checkpoint_paths"] = paths;
    if (it->second.kind == "pipeline") {  // the DAG: each stage, what it waits for, its job's state
      // The parsed spec of a running pipeline; an ended one's is parsed again (job_finish drops it).
      auto held = job_specs_.find(it->first);
      Result<ActorJobSpec> spec = held != job_specs_.end() ? Result<ActorJobSpec>(held->second)
                                                           : job_spec_parse(it->second.spec_toml, it->second.spec_path);
      nlohmann::json stages = nlohmann::json::array();
      if (spec.ok())
        for (size_t i = 0; i < spec.value().stages.size(); ++i) {
          const PipelineStage& st = spec.value().stages[i];
          nlohmann::json s = {{"name", st.name}, {"from", st.from}, {"depends", st.depends()},
                              {"job_id", ""}, {"state", "WAITING"}};
          const std::string sid = i < it->second.stage_jobs.size() ? it->second.stage_jobs[i] : "";
          auto c = jobs_.find(sid);
          if (c != jobs_.end()) {
            s["job_id"] = sid;
            s["kind"] = c->second.kind;
            s["state"] = job_state_name(c->second.state);
            s["step"] = c->second.step;
            s["total_steps"] = c->second.total_steps;
            s["run_dir"] = c->second.run_dir;
            s["message"] = c->second.message;
          }
          stages.push_back(s);
        }
      x["stages"] = stages;
    }
    auto pg = pgs_.find(it->second.pg_id);
    if (pg != pgs_.end()) x["placement_group"] = to_json(pg->second);
    auto points = store_->scan(Table::kMetrics, id + "/");
    nlohmann::json series = nlohmann::json::array();
    if (points.ok())
      for (auto& [k, v] : points.value()) {
        auto p = nlohmann::json::parse(v, nullptr, false);
        if (p.is_object()) series.push_back(p);
      }
    x["metric_points"] = series.size();
    if (what == "metrics") x["metrics"] = series;
    return x;
  }
  if (what == "counters") {
    return {{"decoded", counters_.decoded.load()},
            {"malformed", counters_.malformed.load()},
            {"oversized", counters_.oversized.load()},
            {"bad_version", counters_.bad_version.load()},
            {"unauthenticated", counters_.unauthenticated.load()},
            {"unknown_payload", counters_.unknown_payload.load()},
            {"commits", commits_},
            {"send_failures", send_failures_}};
  }
  // status
  nlohmann::json st;
  st["epoch"] = epoch_;
  int alive = 0, dead = 0;
  Resources total, used;
  for (auto& [nid, n] : nodes_) {
    if (n.state != NodeState::kAlive) {
      ++dead;
      continue;
    }
    ++alive;
    resources_add(total, n.total);
    if (auto* v = view_of(nid)) {
      resources_add(used, n.total);
      resources_add(used, v->available, -1.0);
    }
  }
  st["nodes"] = {{"ALIVE", alive}, {"DEAD", dead}};
  nlohmann::json res = nlohmann::json::object();
  for (auto& [name, amount] : total) res[name] = {{"used", used[name]}, {"total", amount}};
  st["resources"] = res;
  nlohmann::json actors = nlohmann::json::object(), jobs = nlohmann::json::object();
  for (auto& [aid, a] : actors_) actors[actor_state_name(a.state)] = actors.value(actor_state_name(a.state), 0) + 1;
  for (auto& [jid, j] : jobs_) jobs[job_state_name(j.state)] = jobs.value(job_state_name(j.state), 0) + 1;
  st["actors"] = actors;
  st["jobs"] = jobs;
  st["recent_failures"] = nlohmann::json(std::vector<std::string>(recent_failures_.begin(), recent_failures_.end()));
  st["counters"] = query("counters", "");
  return st;
}

void Controller::handle_query(const std::string& peer, uint64_t rid, proto::Query::Reader m) {
  const std::string what(m.getWhat().cStr());
  static const char* kKnown[] = {"status", "nodes", "actors", "actor", "jobs", "job", "metrics", "counters"};
  bool known = false;
  for (auto* k : kKnown) known = known || what == k;
  if (!known) return reply_error(peer, rid, InvalidArgument("query: unknown table \"" + what + "\""));
  auto doc = query(what, std::string(m.getId().cStr()));
  if (doc.is_object() && doc.contains("error")) return reply_error(peer, rid, NotFound(doc["error"].get<std::string>()));
  auto out = message(rid);
  out.payload().initQueryReply().setJson(doc.dump());
  queue(peer, out.bytes());
}

std::string Controller::metrics_text() const {
  std::string out;
  char buf[512];
  auto line = [&](const char* fmt, auto... args) {
    std::snprintf(buf, sizeof buf, fmt, args...);
    out += buf;
  };
  out += "# HELP mariana_nodes Nodes by state.\n# TYPE mariana_nodes gauge\n";
  for (auto s : {NodeState::kAlive, NodeState::kDead}) {
    int c = 0;
    for (auto& [id, n] : nodes_) c += n.state == s;
    line("mariana_nodes{state=\"%s\"} %d\n", node_state_name(s), c);
  }
  out += "# HELP mariana_actors Actors by state.\n# TYPE mariana_actors gauge\n";
  for (int s = 0; s < 4; ++s) {
    int c = 0;
    for (auto& [id, a] : actors_) c += static_cast<int>(a.state) == s;
    line("mariana_actors{state=\"%s\"} %d\n", actor_state_name(static_cast<ActorState>(s)), c);
  }
  out += "# HELP mariana_jobs Jobs by state.\n# TYPE mariana_jobs gauge\n";
  for (int s = 0; s < 5; ++s) {
    int c = 0;
    for (auto& [id, j] : jobs_) c += static_cast<int>(j.state) == s;
    line("mariana_jobs{state=\"%s\"} %d\n", job_state_name(static_cast<JobState>(s)), c);
  }
  out += "# HELP mariana_resources Node resources (ALIVE nodes), total and available.\n# TYPE mariana_resources gauge\n";
  for (auto& v : node_views()) {
    for (auto& [name, amount] : v.total)
      line("mariana_resources{node=\"%s\",name=\"%s\",state=\"total\"} %g\n", v.id.c_str(), name.c_str(), amount);
    for (auto& [name, amount] : v.available)
      line("mariana_resources{node=\"%s\",name=\"%s\",state=\"available\"} %g\n", v.id.c_str(), name.c_str(), amount);
  }
  out += "# HELP mariana_job_steps_completed Durable steps of each job.\n# TYPE mariana_job_steps_completed gauge\n";
  for (auto& [id, j] : jobs_) line("mariana_job_steps_completed{job=\"%s\"} %lld\n", id.c_str(), (long long)j.step);
  // Per-job progress as gauges labelled by job id: the step, and the last step's loss and
  // tokens/s where the job reports them (training jobs).
  out += "# HELP mariana_job_step Steps completed by each job.\n# TYPE mariana_job_step gauge\n";
  for (auto& [id, j] : jobs_) line("mariana_job_step{job=\"%s\"} %lld\n", id.c_str(), (long long)j.step);
  out += "# HELP mariana_job_total_steps Steps each job runs.\n# TYPE mariana_job_total_steps gauge\n";
  for (auto& [id, j] : jobs_) line("mariana_job_total_steps{job=\"%s\"} %lld\n", id.c_str(), (long long)j.total_steps);
  auto metric_gauge = [&](const char* name, const char* help, const char* key) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n";
    for (auto& [id, j] : jobs_)
      if (j.last_metrics.is_object() && j.last_metrics.contains(key) && j.last_metrics[key].is_number())
        line("%s{job=\"%s\"} %.9g\n", name, id.c_str(), j.last_metrics[key].get<double>());
  };
  metric_gauge("mariana_job_loss", "Loss of each job's last step.", "loss");
  metric_gauge("mariana_job_tokens_per_second", "Training throughput of each job's last step.", "tokens_per_s");
  out += "# HELP mariana_job_eta_seconds Seconds until each running job's last step at its recent steps/s.\n"
         "# TYPE mariana_job_eta_seconds gauge\n";
  for (auto& [id, j] : jobs_)
    if (const double eta = eta_seconds(j); eta >= 0) line("mariana_job_eta_seconds{job=\"%s\"} %.1f\n", id.c_str(), eta);
  out += "# HELP mariana_wire_frames_total Frames through the decode boundary.\n# TYPE mariana_wire_frames_total counter\n";
  line("mariana_wire_frames_total{result=\"decoded\"} %llu\n", (unsigned long long)counters_.decoded.load());
  line("mariana_wire_frames_total{result=\"malformed\"} %llu\n", (unsigned long long)counters_.malformed.load());
  line("mariana_wire_frames_total{result=\"oversized\"} %llu\n", (unsigned long long)counters_.oversized.load());
  line("mariana_wire_frames_total{result=\"bad_version\"} %llu\n", (unsigned long long)counters_.bad_version.load());
  line("mariana_wire_frames_total{result=\"unauthenticated\"} %llu\n",
       (unsigned long long)counters_.unauthenticated.load());
  line("mariana_wire_frames_total{result=\"unknown_payload\"} %llu\n",
       (unsigned long long)counters_.unknown_payload.load());
  out += "# HELP mariana_state_commits_total Synced state-store batches.\n# TYPE mariana_state_commits_total counter\n";
  line("mariana_state_commits_total %lld\n", (long long)commits_);
  return out;
}

}  // namespace mariana::controller
