// Job spec parsing and validation (see job_spec.h).
#include "controller/job_spec.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "core/toml_util.h"

namespace mariana::controller {

namespace {

// The restart budget of a table ("job", "actors", "roles[i]"): max_restarts failures within
// restart_window_s.
Status restart_budget_parse(const TomlFields& t, const std::string& table, int64_t default_max,
                            int64_t default_window_s, const std::string& path, ActorRole& s) {
  MARIANA_ASSIGN_OR_RETURN(int64_t mr, t.get_int_or("max_restarts", default_max));
  MARIANA_ASSIGN_OR_RETURN(int64_t window, t.get_int_or("restart_window_s", default_window_s));
  if (mr < -1 || mr > 1000000)
    return InvalidArgument(path + ": field '" + table + ".max_restarts': expected -1 (unlimited) .. 1000000, got " +
                           std::to_string(mr));
  if (window < 0 || window > 365LL * 86400)
    return InvalidArgument(path + ": field '" + table +
                           ".restart_window_s': expected 0 (the whole life) .. 31536000 seconds, got " +
                           std::to_string(window));
  s.max_restarts = static_cast<int32_t>(mr);
  s.restart_window_s = window;
  return Status::Ok();
}

Result<ActorJobSpec> training_spec_parse(const TomlFields& f, const std::string& path) {
  ActorJobSpec s;
  MARIANA_ASSIGN_OR_RETURN(auto job, f.get_object("job"));
  MARIANA_ASSIGN_OR_RETURN(s.kind, job.get_string_or("phase", "pretrain"));
  if (!job_kind_training(s.kind))
    return InvalidArgument(path + ": field 'job.phase': unknown phase \"" + s.kind +
                           "\" (known: pretrain, extend, sft, rm, rl)");
  MARIANA_ASSIGN_OR_RETURN(s.name, job.get_string_or("name", ""));
  s.steps = kTrainDefaultSteps;
  if (s.kind == "rl") {  // steps: GRPO iterations (rl/grpo.cc's default 40)
    s.steps = 40;
    if (f.has("grpo")) {
      MARIANA_ASSIGN_OR_RETURN(auto grpo, f.get_object("grpo"));
      MARIANA_ASSIGN_OR_RETURN(s.steps, grpo.get_int_or("iterations", 40));
    }
    if (s.steps < 1) return InvalidArgument(path + ": field 'grpo.iterations': expected a positive count");
  } else if (f.has("train")) {
    MARIANA_ASSIGN_OR_RETURN(auto train, f.get_object("train"));
    MARIANA_ASSIGN_OR_RETURN(s.steps, train.get_int_or("steps", kTrainDefaultSteps));
  }
  if (s.steps < 1) return InvalidArgument(path + ": field 'train.steps': expected a positive count");
  ActorRole trainer;  // one trainer actor, or one per rank of a gang
  trainer.actor_class = kTrainerClass;
  trainer.count = 1;
  trainer.resources["CPU"] = 1;
  trainer.max_task_retries = -1;
  s.strategy = PgStrategy::kPack;
  if (f.has("parallel")) {  // a gang: one trainer actor per rank
    MARIANA_ASSIGN_OR_RETURN(auto par, f.get_object("parallel"));
    MARIANA_ASSIGN_OR_RETURN(int64_t dp, par.get_int_or("dp", 1));
    MARIANA_ASSIGN_OR_RETURN(int64_t ep, par.get_int_or("ep", 1));
    if (dp < 1 || ep < 1 || dp * ep > 1024)
      return InvalidArgument(path + ": field 'parallel.dp': expected dp >= 1, ep >= 1 and dp·ep <= 1024 ranks");
    trainer.count = dp * ep;
    MARIANA_ASSIGN_OR_RETURN(auto placement, par.get_string_or("placement", "pack"));
    if (placement != "pack" && placement != "spread")
      return InvalidArgument(path + ": field 'parallel.placement': expected \"pack\" or \"spread\", got \"" +
                             placement + "\"");
    s.strategy = placement == "pack" ? PgStrategy::kPack : PgStrategy::kSpread;
  }
  MARIANA_RETURN_IF_ERROR(
      restart_budget_parse(job, "job", kTrainerMaxRestarts, kTrainerRestartWindowS, path, trainer));
  s.roles = {trainer};
  if (s.kind == "rl" && f.has("campaign")) {  // the campaign's roles beside the learner (workers/rl_campaign.h)
    MARIANA_ASSIGN_OR_RETURN(auto campaign, f.get_object("campaign"));
    MARIANA_ASSIGN_OR_RETURN(int64_t generators, campaign.get_int_or("generators", 0));
    MARIANA_ASSIGN_OR_RETURN(int64_t scorers, campaign.get_int_or("scorers", 1));
    if (generators < 0 || generators > 256)
      return InvalidArgument(path + ": field 'campaign.generators': expected 0 (one process) .. 256, got " +
                             std::to_string(generators));
    if (scorers < 1 || scorers > 256)
      return InvalidArgument(path + ": field 'campaign.scorers': expected 1 .. 256, got " + std::to_string(scorers));
    if (generators > 0) {
      auto role = [&](const char* name, const char* cls, int64_t count) {
        ActorRole r = trainer;  // the job's restart budget and resources
        r.name = name;
        r.actor_class = cls;
        r.count = count;
        s.roles.push_back(r);
      };
      role(kCampaignGeneratorRole, "rl_generator", generators);
      role(kCampaignScorerRole, "rl_scorer", scorers);
      role(kCampaignReferenceRole, "rl_reference", 1);
    }
  }
  return s;
}

// One actor role's fields (an [actors] table, or one of [[roles]]): class, count (1..1024), args (a
// table, sent as JSON), resources (default CPU = 1), the restart budget and max_task_retries.
Result<ActorRole> actor_role_parse(const TomlFields& t, const std::string& field, const std::string& path) {
  ActorRole r;
  MARIANA_ASSIGN_OR_RETURN(r.actor_class, t.get_string("class"));
  if (t.has("args")) {
    const toml::table* args = t.table()["args"].as_table();
    if (args == nullptr) return InvalidArgument(path + ": field '" + field + ".args': expected a table");
    std::ostringstream json;
    json << toml::json_formatter(*args);
    r.args = json.str();
  }
  MARIANA_ASSIGN_OR_RETURN(r.count, t.get_int("count"));
  if (r.count < 1 || r.count > 1024)
    return InvalidArgument(path + ": field '" + field + ".count': expected 1..1024, got " + std::to_string(r.count));
  MARIANA_RETURN_IF_ERROR(restart_budget_parse(t, field, 3, 0, path, r));
  MARIANA_ASSIGN_OR_RETURN(int64_t mtr, t.get_int_or("max_task_retries", -1));
  if (mtr < -1) return InvalidArgument(path + ": field '" + field + ".max_task_retries': expected -1 or more");
  r.max_task_retries = static_cast<int32_t>(mtr);
  if (t.has("resources")) {
    MARIANA_ASSIGN_OR_RETURN(auto res, t.get_object("resources"));
    for (auto& key : res.keys()) {
      MARIANA_ASSIGN_OR_RETURN(double v, res.get_double(key));
      if (!(std::isfinite(v) && v >= 0))
        return InvalidArgument(path + ": field '" + field + ".resources." + key +
                               "': expected a finite non-negative amount, got " + std::to_string(v));
      r.resources[key] = v;
    }
  } else {
    r.resources["CPU"] = 1;
  }
  return r;
}

// kind = "pipeline": name, and [[stages]] {name, from, after, spec_toml, spec_path}, each stage a
// training job of its own whose dependencies are earlier stages (so the graph has no cycle).
Result<ActorJobSpec> pipeline_spec_parse(const TomlFields& f, const std::string& path) {
  ActorJobSpec s;
  s.kind = "pipeline";
  MARIANA_ASSIGN_OR_RETURN(s.name, f.get_string_or("name", ""));
  MARIANA_ASSIGN_OR_RETURN(auto stages, f.get_object_array("stages"));
  if (stages.empty()) return InvalidArgument(path + ": field 'stages': a pipeline needs at least one stage");
  std::set<std::string> seen;
  for (size_t i = 0; i < stages.size(); ++i) {
    const TomlFields& t = stages[i];
    const std::string field = "stages[" + std::to_string(i) + "]";
    PipelineStage st;
    MARIANA_ASSIGN_OR_RETURN(st.name, t.get_string("name"));
    if (st.name.empty() || st.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") != std::string::npos)
      return InvalidArgument(path + ": field '" + field + ".name': expected lowercase letters, digits, '-' or '_', got \"" +
                             st.name + "\"");
    if (!seen.insert(st.name).second)
      return InvalidArgument(path + ": field '" + field + ".name': stage \"" + st.name + "\" appears twice");
    MARIANA_ASSIGN_OR_RETURN(st.from, t.get_string_or("from", ""));
    if (t.has("after")) {
      MARIANA_ASSIGN_OR_RETURN(st.after, t.get_string_array("after"));
    }
    for (const std::string& d : st.depends())
      if (!seen.count(d) || d == st.name)
        return InvalidArgument(path + ": field '" + field + "': stage \"" + st.name + "\" depends on \"" + d +
                               "\", which is not an earlier stage");
    MARIANA_ASSIGN_OR_RETURN(st.spec_toml, t.get_string("spec_toml"));
    MARIANA_ASSIGN_OR_RETURN(st.spec_path, t.get_string_or("spec_path", path + ":" + st.name));
    MARIANA_ASSIGN_OR_RETURN(ActorJobSpec inner, job_spec_parse(st.spec_toml, st.spec_path));
    if (!inner.training())
      return InvalidArgument(path + ": field '" + field + ".spec_toml': a stage is a training job, not kind \"" +
                             inner.kind + "\"");
    s.stages.push_back(std::move(st));
  }
  s.steps = static_cast<int64_t>(s.stages.size());  // a pipeline's steps: its stages
  return s;
}

}  // namespace

int64_t ActorJobSpec::actor_count() const {
  int64_t n = 0;
  for (const ActorRole& r : roles) n += r.count;
  return n;
}

std::vector<std::string> PipelineStage::depends() const {
  std::vector<std::string> d = after;
  if (!from.empty() && std::find(d.begin(), d.end(), from) == d.end()) d.insert(d.begin(), from);
  return d;
}

Result<ActorJobSpec> job_spec_parse(const std::string& toml_text, const std::string& path) {
  MARIANA_ASSIGN_OR_RETURN(auto table, toml_parse(toml_text, path));
  TomlFields f(std::move(table), path);
  ActorJobSpec s;
  if (!f.has("kind") && f.has("job")) return training_spec_parse(f, path);
  if (!f.has("kind"))
    return InvalidArgument(path + ": field 'kind': missing (an actor job sets kind = \"actors\"; a training job "
                                  "sets [job] phase = \"pretrain\", \"extend\", \"sft\", \"rm\" or \"rl\")");
  MARIANA_ASSIGN_OR_RETURN(s.kind, f.get_string("kind"));
  if (s.kind == "pipeline") return pipeline_spec_parse(f, path);
  if (s.kind == "pretrain" || s.kind == "extend" || s.kind == "sft" || s.kind == "rl")
    return InvalidArgument(path + ": field 'kind': a training job names its phase in [job] phase = \"" + s.kind +
                           "\" (the job file `mariana train` takes), not in a top-level kind");
  if (s.kind != "actors")
    return InvalidArgument(path + ": field 'kind': unknown job kind \"" + s.kind + "\" (known: actors, pipeline)");
  MARIANA_ASSIGN_OR_RETURN(s.name, f.get_string_or("name", ""));
  if (f.has("roles") == f.has("actors"))
    return InvalidArgument(path + ": an actor job has either [actors] (one class, run in steps) or [[roles]] (named "
                                  "roles that run until the job is stopped)");
  if (f.has("actors")) {
    MARIANA_ASSIGN_OR_RETURN(auto actors, f.get_object("actors"));
    MARIANA_ASSIGN_OR_RETURN(ActorRole r, actor_role_parse(actors, "actors", path));
    s.roles = {r};
  } else {
    MARIANA_ASSIGN_OR_RETURN(auto roles, f.get_object_array("roles"));
    if (roles.empty()) return InvalidArgument(path + ": field 'roles': expected at least one role");
    std::set<std::string> names;
    for (size_t i = 0; i < roles.size(); ++i) {
      const std::string field = "roles[" + std::to_string(i) + "]";
      MARIANA_ASSIGN_OR_RETURN(ActorRole r, actor_role_parse(roles[i], field, path));
      MARIANA_ASSIGN_OR_RETURN(r.name, roles[i].get_string("name"));
      if (r.name.empty() || r.name.find('/') != std::string::npos || !names.insert(r.name).second)
        return InvalidArgument(path + ": field '" + field + ".name': expected a unique name without '/', got \"" +
                               r.name + "\"");
      s.roles.push_back(std::move(r));
    }
    if (s.actor_count() > 1024) return InvalidArgument(path + ": field 'roles': at most 1024 actors in all");
    if (f.has("run"))
      return InvalidArgument(path + ": field 'run': a job with [[roles]] runs until it is stopped; [run] is for "
                                    "[actors] jobs");
    s.service = true;
    s.steps = 0;
  }
  if (f.has("placement")) {
    MARIANA_ASSIGN_OR_RETURN(auto pl, f.get_object("placement"));
    MARIANA_ASSIGN_OR_RETURN(auto strategy, pl.get_string_or("strategy", "PACK"));
    auto st = pg_strategy_parse(strategy);
    if (!st.ok()) return InvalidArgument(path + ": field 'placement.strategy': " + st.status().message());
    s.strategy = st.value();
  }
  if (s.service) return s;
  MARIANA_ASSIGN_OR_RETURN(auto run, f.get_object("run"));
  MARIANA_ASSIGN_OR_RETURN(s.steps, run.get_int("steps"));
  MARIANA_ASSIGN_OR_RETURN(s.step_ms, run.get_int_or("step_ms", 0));
  MARIANA_ASSIGN_OR_RETURN(s.checkpoint_every, run.get_int_or("checkpoint_every", 0));
  if (s.steps < 1) return InvalidArgument(path + ": field 'run.steps': expected a positive count");
  if (s.step_ms < 0 || s.step_ms > 600000)
    return InvalidArgument(path + ": field 'run.step_ms': expected 0..600000");
  if (s.checkpoint_every < 0) return InvalidArgument(path + ": field 'run.checkpoint_every': expected 0 or more");
  return s;
}

}  // namespace mariana::controller
