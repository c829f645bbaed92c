// Client target resolution and monitoring queries (see cluster_client.h).
#include "cli/cluster_client.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <algorithm>
#include <optional>
#include <sstream>

#include <toml++/toml.h>

#include "core/file_util.h"
#include "controller/job_spec.h"
#include "core/toml_util.h"
#include "rl/grpo.h"
#include "train/job_spec.h"

namespace mariana::cli {

namespace {
std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}
}  // namespace

Result<ClientTarget> client_target_from_state_dir(const std::string& dir) {
  ClientTarget t;
  MARIANA_ASSIGN_OR_RETURN(auto addr, read_file(dir + "/controller.addr"));
  t.address = trim(addr);
  t.token_file = dir + "/cluster.token";
  MARIANA_ASSIGN_OR_RETURN(auto tok, read_file(t.token_file));
  t.token = trim(tok);
  std::error_code ec;
  if (std::filesystem::exists(dir + "/curve/client.key", ec)) {
    t.curve_file = dir + "/curve/client.key";
    MARIANA_ASSIGN_OR_RETURN(t.curve, proto::curve_client_load(t.curve_file));
  }
  return t;
}

Result<ClientTarget> client_target(const cxxopts::ParseResult& r) {
  ClientTarget t;
  if (r.count("state-dir")) {
    MARIANA_ASSIGN_OR_RETURN(t, client_target_from_state_dir(r["state-dir"].as<std::string>()));
  }
  if (r.count("controller")) t.address = r["controller"].as<std::string>();
  else if (t.address.empty() && std::getenv("MARIANA_CONTROLLER")) t.address = std::getenv("MARIANA_CONTROLLER");
  if (r.count("token-file")) t.token_file = r["token-file"].as<std::string>();
  else if (t.token_file.empty() && std::getenv("MARIANA_TOKEN_FILE")) t.token_file = std::getenv("MARIANA_TOKEN_FILE");
  if (t.address.empty())
    return InvalidArgument("no controller address: pass --controller ADDR (or set MARIANA_CONTROLLER)");
  if (t.token_file.empty())
    return InvalidArgument("no cluster token: pass --token-file F (or set MARIANA_TOKEN_FILE)");
  MARIANA_ASSIGN_OR_RETURN(auto tok, read_file(t.token_file));
  t.token = trim(tok);
  std::string curve_file;
  if (r.count("curve-file")) curve_file = r["curve-file"].as<std::string>();
  else if (std::getenv("MARIANA_CURVE_FILE")) curve_file = std::getenv("MARIANA_CURVE_FILE");
  if (!curve_file.empty()) {
    t.curve_file = curve_file;
    MARIANA_ASSIGN_OR_RETURN(t.curve, proto::curve_client_load(curve_file));
  }
  return t;
}

Result<nlohmann::json> ClusterClient::query(const std::string& what, const std::string& id, int timeout_ms) {
  return proto::query_controller(rpc_, what, id, timeout_ms);
}

namespace {

Result<toml::table> apply_sets(toml::table tbl, const std::vector<std::string>& sets) {
  for (const std::string& kv : sets) MARIANA_RETURN_IF_ERROR(toml_set_override(tbl, kv));
  return tbl;
}

// A path of a training job as the worker must see it: absolute, and it must exist.
Result<std::string> input_path(const std::string& job_path, const std::string& field, const std::string& p) {
  std::error_code ec;
  if (!std::filesystem::exists(p, ec))
    return InvalidArgument(job_path + ": field '" + field + "': " + p + " does not exist");
  return std::filesystem::absolute(p).lexically_normal().string();
}

// Writes each non-empty (field, path) of `paths` into `tbl` as input_path makes it.
Status set_input_paths(toml::table& tbl, const std::string& job_path,
                       const std::vector<std::pair<std::string, std::string>>& paths) {
  for (const auto& [field, value] : paths) {
    if (value.empty()) continue;
    MARIANA_ASSIGN_OR_RETURN(auto p, input_path(job_path, field, value));
    const std::string table = field.substr(0, field.find('.')), key = field.substr(field.find('.') + 1);
    if (!tbl.contains(table)) tbl.insert_or_assign(table, toml::table{});
    tbl[table].as_table()->insert_or_assign(key, p);
  }
  return Status::Ok();
}

}  // namespace

// A pipeline file: kind = "pipeline", name, and [[stages]] {name, job (a job file, relative to the
// pipeline file), from, after, sets}. Each stage is prepared as its job file would be for submit
// (the command's --set applied to every stage after the stage's own sets); a stage with `from` is
// checked with its model.init_from standing in for the run the controller gives it at start.
Result<JobSubmission> pipeline_submission_prepare(const std::string& path, toml::table tbl,
                                                  const std::vector<std::string>& sets) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  TomlFields f(tbl, path);
  JobSubmission out;
  out.path = path;
  out.training = true;
  toml::array stages;
  MARIANA_ASSIGN_OR_RETURN(auto given, f.get_object_array("stages"));
  if (given.empty()) return InvalidArgument(path + ": field 'stages': a pipeline needs at least one stage");
  for (size_t i = 0; i < given.size(); ++i) {
    const TomlFields& st = given[i];
    const std::string field = "stages[" + std::to_string(i) + "]";
    MARIANA_ASSIGN_OR_RETURN(std::string name, st.get_string("name"));
    MARIANA_ASSIGN_OR_RETURN(std::string job, st.get_string("job"));
    MARIANA_ASSIGN_OR_RETURN(std::string from, st.get_string_or("from", ""));
    std::vector<std::string> after, stage_sets;
    if (st.has("after")) {
      MARIANA_ASSIGN_OR_RETURN(after, st.get_string_array("after"));
    }
    if (st.has("sets")) {
      MARIANA_ASSIGN_OR_RETURN(stage_sets, st.get_string_array("sets"));
    }
    const std::string job_path =
        std::filesystem::path(job).is_relative() && !dir.empty() ? (dir / job).lexically_normal().string() : job;
    std::error_code ec;
    if (!std::filesystem::exists(job_path, ec))
      return InvalidArgument(path + ": field '" + field + ".job': " + job_path + " does not exist (relative to the "
                             "pipeline file's directory)");
    stage_sets.insert(stage_sets.end(), sets.begin(), sets.end());
    if (!from.empty())  // any existing directory: only the path's existence is checked here
      stage_sets.push_back("model.init_from=" + std::filesystem::absolute(dir.empty() ? "." : dir).string());
    auto prepared = job_submission_prepare(job_path, stage_sets);
    if (!prepared.ok())
      return Status(prepared.status().code(), path + ": stage " + name + ": " + prepared.status().message());
    if (!prepared.value().training)
      return InvalidArgument(path + ": field '" + field + ".job': " + job_path + " is not a training job");
    MARIANA_ASSIGN_OR_RETURN(toml::table stage_tbl, toml_parse(prepared.value().toml, job_path));
    if (!from.empty()) stage_tbl["model"].as_table()->erase("init_from");  // the controller sets it
    std::ostringstream text;
    text << stage_tbl;
    toml::table entry;
    entry.insert_or_assign("name", name);
    entry.insert_or_assign("from", from);
    toml::array deps;
    for (const std::string& a : after) deps.push_back(a);
    entry.insert_or_assign("after", deps);
    entry.insert_or_assign("spec_path", job_path);
    entry.insert_or_assign("spec_toml", text.str());
    stages.push_back(std::move(entry));
    out.ranks = std::max(out.ranks, prepared.value().ranks);
  }
  toml::table doc;
  doc.insert_or_assign("kind", "pipeline");
  MARIANA_ASSIGN_OR_RETURN(std::string name, f.get_string_or("name", ""));
  doc.insert_or_assign("name", name);
  doc.insert_or_assign("stages", stages);
  std::ostringstream text;
  text << doc;
  out.toml = text.str();
  MARIANA_RETURN_IF_ERROR(controller::job_spec_parse(out.toml, path).status());
  return out;
}

Result<JobSubmission> job_submission_prepare(const std::string& path, const std::vector<std::string>& sets) {
  MARIANA_ASSIGN_OR_RETURN(auto tbl, toml_load_file(path));
  if (auto* kind = tbl["kind"].as_string(); kind && kind->get() == "pipeline")
    return pipeline_submission_prepare(path, std::move(tbl), sets);
  JobSubmission out;
  out.path = path;
  out.training = !tbl.contains("kind") && tbl.contains("job");
  MARIANA_ASSIGN_OR_RETURN(tbl, apply_sets(std::move(tbl), sets));
  if (out.training) {
    if (auto* phase = tbl["job"]["phase"].as_string(); phase && phase->get() == "rl") {
      // GRPO: one trainer actor, and a campaign's roles; its input paths made absolute for the worker.
      MARIANA_ASSIGN_OR_RETURN(rl::RlSpec spec, rl::rl_spec_load(path, sets));
      out.ranks = spec.dp + (spec.campaign_generators > 0 ? spec.campaign_generators + spec.campaign_scorers + 1 : 0);
      MARIANA_RETURN_IF_ERROR(set_input_paths(tbl, path,
                                              {{"model.init_from", spec.init_from},
                                               {"model.reference", spec.reference},
                                               {"task.dataset", spec.dataset},
                                               {"task.eval_dataset", spec.eval_dataset},
                                               {"reward.model", spec.reward_model}}));
    } else {
      MARIANA_ASSIGN_OR_RETURN(JobSpec spec, job_spec_load(path, sets));
      out.ranks = spec.world();
      MARIANA_RETURN_IF_ERROR(set_input_paths(tbl, path,
                                              {{"model.config", spec.model_config},
                                               {"model.init_from", spec.init_from},
                                               {"tokenizer.path", spec.tokenizer},
                                               {"data.chat", spec.data_chat},
                                               {"data.preferences", spec.data_preferences}}));
      if (!spec.data_inputs.empty()) {
        toml::array inputs;
        for (size_t i = 0; i < spec.data_inputs.size(); ++i) {
          MARIANA_ASSIGN_OR_RETURN(auto p, input_path(path, "data.inputs[" + std::to_string(i) + "]", spec.data_inputs[i]));
          inputs.push_back(p);
        }
        if (!tbl.contains("data")) tbl.insert_or_assign("data", toml::table{});
        tbl["data"].as_table()->insert_or_assign("inputs", inputs);
      }
    }
  }
  std::ostringstream text;
  text << tbl;
  out.toml = text.str();
  // The controller checks it again at submit (against the nodes it has); this catches a bad file
  // before anything connects or starts.
  MARIANA_RETURN_IF_ERROR(controller::job_spec_parse(out.toml, path).status());
  return out;
}

Result<std::string> job_submit(proto::RpcClient& rpc, const JobSubmission& job, int timeout_ms) {
  MARIANA_ASSIGN_OR_RETURN(auto reply, rpc.call(
                                           [&](proto::Envelope::Payload::Builder p) {
                                             auto s = p.initSubmitJob();
                                             s.setSpecToml(job.toml);
                                             s.setSpecPath(job.path);
                                           },
                                           timeout_ms));
  if (reply.payload().which() != proto::Envelope::Payload::SUBMIT_JOB_REPLY)
    return Internal("submit: unexpected reply " + proto::payload_name(reply.payload().which()));
  return std::string(reply.payload().getSubmitJobReply().getJobId().cStr());
}

std::string format_eta(const nlohmann::json& job) {
  if (!job.is_object() || !job.contains("eta_s") || !job["eta_s"].is_number()) return "";
  const auto s = static_cast<long long>(job["eta_s"].get<double>() + 0.5);
  char buf[48];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "ETA %lldh%02lldm", s / 3600, s / 60 % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "ETA %lldm%02llds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "ETA %llds", s);
  return buf;
}

bool job_doc_terminal(const std::string& state) {
  return state == "SUCCEEDED" || state == "FAILED" || state == "STOPPED";
}

}  // namespace mariana::cli
