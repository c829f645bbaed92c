// The control-plane verbs of `mariana`: controller start, agent start, worker (started by agents),
// submit, jobs list|show|stop|metrics, status, nodes, actors list|show. Client verbs find the
// controller with --controller ADDR / MARIANA_CONTROLLER and the token with --token-file F /
// MARIANA_TOKEN_FILE, or both from --state-dir DIR (DIR/controller.addr, DIR/cluster.token).
// Human tables by default; --json prints the controller's JSON document.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>
#include <zmq.hpp>

#include "cli/cli.h"
#include "cli/cluster_client.h"
#include "controller/server.h"
#include "core/file_util.h"
#include "core/toml_util.h"
#include "workers/agent.h"
#include "workers/worker.h"

namespace mariana::cli {

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) { g_stop.store(true); }

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

void add_client_options(cxxopts::Options& o) {
  o.add_options()("controller", "controller address (or MARIANA_CONTROLLER)", cxxopts::value<std::string>())(
      "token-file", "cluster token file (or MARIANA_TOKEN_FILE)", cxxopts::value<std::string>())(
      "state-dir", "take the address and token from a controller's state dir", cxxopts::value<std::string>())(
      "timeout-ms", "per-request timeout", cxxopts::value<int>()->default_value("10000"))(
      "json", "print JSON")("h,help", "help");
}

Result<cxxopts::ParseResult> parse(cxxopts::Options& o, int argc, char** argv) {
  try {
    return o.parse(argc, argv);
  } catch (const std::exception& e) {
    return InvalidArgument(std::string(o.program()) + ": " + e.what());
  }
}

std::string fmt_num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string fmt_resources(const nlohmann::json& avail, const nlohmann::json& total) {
  std::string s;
  for (auto& [k, v] : total.items()) {
    if (!s.empty()) s += " ";
    s += fmt_num(avail.value(k, 0.0)) + "/" + fmt_num(v.get<double>()) + " " + k;
  }
  return s;
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> w(header.size());
  for (size_t i = 0; i < header.size(); ++i) w[i] = header[i].size();
  for (auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < r.size(); ++i) {
      s += r[i];
      if (i + 1 < r.size()) s += std::string(w[i] - r[i].size() + 2, ' ');
    }
    std::printf("%s\n", s.c_str());
  };
  line(header);
  for (auto& r : rows) line(r);
}

std::string str(const nlohmann::json& j, const char* key) {
  if (!j.contains(key)) return "";
  const auto& v = j[key];
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// ---------------------------------------------------------------- controller / agent / worker

int controller_start(int argc, char** argv) {
  cxxopts::Options o("mariana controller start", "Run the controller in the foreground");
  o.add_options()("listen", "ZeroMQ endpoint (tcp://127.0.0.1:PORT; PORT * = ephemeral)",
                  cxxopts::value<std::string>()->default_value("tcp://127.0.0.1:7765"))(
      "state-dir", "RocksDB state, cluster.token, controller.addr", cxxopts::value<std::string>())(
      "metrics-port", "HTTP port of /metrics (0 ephemeral, -1 off)", cxxopts::value<int>()->default_value("0"))(
      "heartbeat-ms", "agent and worker heartbeat interval", cxxopts::value<int64_t>()->default_value("500"))(
      "node-timeout-ms", "an agent silent this long is DEAD", cxxopts::value<int64_t>()->default_value("5000"))(
      "worker-timeout-ms", "a worker silent this long is dead", cxxopts::value<int64_t>()->default_value("5000"))(
      "start-timeout-ms", "a started worker must register within", cxxopts::value<int64_t>()->default_value("30000"))(
      "h,help", "help");
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  if (!r.value().count("state-dir")) return report(InvalidArgument("controller start: --state-dir is required"));
  controller::ServerOptions so;
  so.listen = r.value()["listen"].as<std::string>();
  so.state_dir = r.value()["state-dir"].as<std::string>();
  so.metrics_port = r.value()["metrics-port"].as<int>();
  so.controller.heartbeat_ms = r.value()["heartbeat-ms"].as<int64_t>();
  so.controller.node_timeout_ms = r.value()["node-timeout-ms"].as<int64_t>();
  so.controller.worker_timeout_ms = r.value()["worker-timeout-ms"].as<int64_t>();
  so.controller.start_timeout_ms = r.value()["start-timeout-ms"].as<int64_t>();
  install_stop_handlers();
  return report(controller::controller_run(so, &g_stop));
}

Result<std::map<std::string, double>> parse_resources(const std::string& spec) {
  std::map<std::string, double> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos) return InvalidArgument("--resources: expected NAME=AMOUNT, got \"" + item + "\"");
    char* end = nullptr;
    const std::string v = item.substr(eq + 1);
    const double amount = std::strtod(v.c_str(), &end);
    if (end == v.c_str() || *end != '\0' || amount < 0)
      return InvalidArgument("--resources: \"" + v + "\" is not a non-negative number");
    out[item.substr(0, eq)] = amount;
  }
  return out;
}

int agent_start(int argc, char** argv) {
  cxxopts::Options o("mariana agent start", "Run a node agent in the foreground");
  add_client_options(o);
  o.add_options()("cpus", "CPUs to offer", cxxopts::value<double>()->default_value(
                                               std::to_string(std::max(1u, std::thread::hardware_concurrency()))))(
      "gpus", "GPUs to offer", cxxopts::value<double>()->default_value("0"))(
      "memory", "bytes of memory to offer", cxxopts::value<double>()->default_value("0"))(
      "resources", "custom resources NAME=AMOUNT,...", cxxopts::value<std::string>()->default_value(""))(
      "node-id", "this node's id (default: random)", cxxopts::value<std::string>()->default_value(""))(
      "log-dir", "worker logs", cxxopts::value<std::string>()->default_value(""))(
      "heartbeat-ms", "heartbeat interval", cxxopts::value<int64_t>()->default_value("500"));
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  auto target = client_target(r.value());
  if (!target.ok()) return report(target.status());
  workers::AgentOptions ao;
  ao.controller = target.value().address;
  ao.token = target.value().token;
  ao.token_file = target.value().token_file;
  ao.node_id = r.value()["node-id"].as<std::string>();
  ao.log_dir = r.value()["log-dir"].as<std::string>();
  ao.heartbeat_ms = r.value()["heartbeat-ms"].as<int64_t>();
  auto custom = parse_resources(r.value()["resources"].as<std::string>());
  if (!custom.ok()) return report(custom.status());
  ao.resources = custom.value();
  ao.resources["CPU"] = r.value()["cpus"].as<double>();
  ao.resources["GPU"] = r.value()["gpus"].as<double>();
  if (r.value()["memory"].as<double>() > 0) ao.resources["memory"] = r.value()["memory"].as<double>();
  ao.actor_classes = workers::builtin_actor_registry().names();
  install_stop_handlers();
  workers::PosixLauncher launcher;
  return report(workers::agent_run(ao, &launcher, &g_stop));
}

}  // namespace

int controller_main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "start") return controller_start(argc - 1, argv + 1);
  std::fprintf(stderr, "usage: mariana controller start --listen tcp://127.0.0.1:PORT --state-dir DIR\n");
  return kExitBadInput;
}

int agent_main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "start") return agent_start(argc - 1, argv + 1);
  std::fprintf(stderr, "usage: mariana agent start --controller ADDR --token-file F [--cpus N --gpus N]\n");
  return kExitBadInput;
}

int worker_main(int argc, char** argv) {
  cxxopts::Options o("mariana worker", "Host one actor (started by an agent)");
  o.add_options()("controller", "", cxxopts::value<std::string>())("token-file", "", cxxopts::value<std::string>())(
      "actor-id", "", cxxopts::value<std::string>())("incarnation", "", cxxopts::value<uint32_t>())(
      "class", "", cxxopts::value<std::string>())("node-id", "", cxxopts::value<std::string>())(
      "heartbeat-ms", "", cxxopts::value<int64_t>()->default_value("500"));
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  for (const char* req : {"controller", "token-file", "actor-id", "incarnation", "class", "node-id"})
    if (!r.value().count(req)) return report(InvalidArgument(std::string("worker: --") + req + " is required"));
  auto tok = read_file(r.value()["token-file"].as<std::string>());
  if (!tok.ok()) return report(tok.status());
  workers::WorkerOptions wo;
  wo.controller = r.value()["controller"].as<std::string>();
  wo.token = trim(tok.value());
  wo.actor_id = r.value()["actor-id"].as<std::string>();
  wo.incarnation = r.value()["incarnation"].as<uint32_t>();
  wo.class_name = r.value()["class"].as<std::string>();
  wo.node_id = r.value()["node-id"].as<std::string>();
  wo.heartbeat_ms = r.value()["heartbeat-ms"].as<int64_t>();
  install_stop_handlers();
  return report(workers::worker_run(wo, workers::builtin_actor_registry(), &g_stop));
}

// ---------------------------------------------------------------- client verbs

namespace {

Result<toml::table> apply_sets(toml::table tbl, const std::vector<std::string>& sets) {
  for (auto& s : sets) {
    auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0) return InvalidArgument("--set: expected key=value, got \"" + s + "\"");
    const std::string key = s.substr(0, eq), value = s.substr(eq + 1);
    // The value as TOML (1, 2.5, true, "x", [1, 2]); anything else is taken as a plain string.
    std::optional<toml::table> parsed;
    try {
      parsed = toml::parse("v = " + value, std::string_view("--set"));
    } catch (const std::exception&) {
    }
    toml::table* t = &tbl;
    std::stringstream ks(key);
    std::string part, last;
    std::vector<std::string> parts;
    while (std::getline(ks, part, '.')) parts.push_back(part);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto* sub = (*t)[parts[i]].as_table();
      if (!sub) {
        t->insert_or_assign(parts[i], toml::table{});
        sub = (*t)[parts[i]].as_table();
      }
      t = sub;
    }
    if (parsed && parsed->contains("v")) t->insert_or_assign(parts.back(), *parsed->get("v"));
    else t->insert_or_assign(parts.back(), value);
  }
  return tbl;
}

int submit(int argc, char** argv) {
  cxxopts::Options o("mariana submit", "Submit a job spec (TOML); prints the job id");
  add_client_options(o);
  o.add_options()("set", "override a field: key=value (repeatable)", cxxopts::value<std::vector<std::string>>())(
      "wait", "wait for the job to end; exit 0 only if it succeeded")(
      "wait-timeout-s", "give up waiting after this long", cxxopts::value<int>()->default_value("3600"))(
      "spec", "JOB.toml", cxxopts::value<std::string>());
  o.parse_positional({"spec"});
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  if (!r.value().count("spec")) return report(InvalidArgument("submit: give a JOB.toml"));
  const std::string path = r.value()["spec"].as<std::string>();
  auto tbl = toml_load_file(path);
  if (!tbl.ok()) return report(tbl.status());
  std::vector<std::string> sets;
  if (r.value().count("set")) sets = r.value()["set"].as<std::vector<std::string>>();
  auto applied = apply_sets(std::move(tbl.value()), sets);
  if (!applied.ok()) return report(applied.status());
  std::ostringstream spec;
  spec << applied.value();
  auto target = client_target(r.value());
  if (!target.ok()) return report(target.status());
  ClusterClient client(target.value());
  const int timeout = r.value()["timeout-ms"].as<int>();
  auto reply = client.rpc().call(
      [&](proto::Envelope::Payload::Builder p) {
        auto s = p.initSubmitJob();
        s.setSpecToml(spec.str());
        s.setSpecPath(path);
      },
      timeout);
  if (!reply.ok()) return report(reply.status());
  const std::string job_id(reply.value().payload().getSubmitJobReply().getJobId().cStr());
  std::printf("%s\n", job_id.c_str());
  std::fflush(stdout);
  if (!r.value().count("wait")) return kExitOk;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(r.value()["wait-timeout-s"].as<int>());
  std::string last_state;
  while (std::chrono::steady_clock::now() < deadline) {
    auto doc = client.query("job", job_id, timeout);
    if (doc.ok()) {
      const std::string state = doc.value().value("state", "");
      if (state != last_state) {
        std::fprintf(stderr, "%s: %s\n", job_id.c_str(), state.c_str());
        last_state = state;
      }
      if (state == "SUCCEEDED") return kExitOk;
      if (state == "FAILED" || state == "STOPPED") {
        std::fprintf(stderr, "%s %s: %s\n", job_id.c_str(), state.c_str(), doc.value().value("message", "").c_str());
        return kExitFailure;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return report(Status(StatusCode::kDeadlineExceeded, "submit --wait: " + job_id + " did not end in time"));
}

int print_or(const cxxopts::ParseResult& r, const nlohmann::json& doc, const std::function<void()>& human) {
  if (r.count("json")) std::printf("%s\n", doc.dump(2).c_str());
  else human();
  return kExitOk;
}

int jobs(int argc, char** argv) {
  cxxopts::Options o("mariana jobs", "jobs list | show ID | stop ID | metrics ID");
  add_client_options(o);
  o.add_options()("sub", "", cxxopts::value<std::string>())("id", "", cxxopts::value<std::string>());
  o.parse_positional({"sub", "id"});
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help") || !r.value().count("sub")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  const std::string sub = r.value()["sub"].as<std::string>();
  const std::string id = r.value().count("id") ? r.value()["id"].as<std::string>() : "";
  if (sub != "list" && id.empty()) return report(InvalidArgument("jobs " + sub + ": give a job id"));
  auto target = client_target(r.value());
  if (!target.ok()) return report(target.status());
  ClusterClient client(target.value());
  const int timeout = r.value()["timeout-ms"].as<int>();
  if (sub == "stop") {
    auto reply = client.rpc().call([&](proto::Envelope::Payload::Builder p) { p.initStopJob().setJobId(id); }, timeout);
    if (!reply.ok()) return report(reply.status());
    std::printf("%s stopped\n", id.c_str());
    return kExitOk;
  }
  if (sub == "list") {
    auto doc = client.query("jobs", "", timeout);
    if (!doc.ok()) return report(doc.status());
    return print_or(r.value(), doc.value(), [&] {
      std::vector<std::vector<std::string>> rows;
      for (auto& j : doc.value())
        rows.push_back({str(j, "id"), str(j, "name"), str(j, "kind"), str(j, "state"),
                        str(j, "step") + "/" + str(j, "total_steps"), str(j, "message")});
      print_table({"JOB_ID", "NAME", "KIND", "STATE", "STEPS", "MESSAGE"}, rows);
    });
  }
  if (sub == "show" || sub == "metrics") {
    auto doc = client.query(sub == "show" ? "job" : "metrics", id, timeout);
    if (!doc.ok()) return report(doc.status());
    return print_or(r.value(), doc.value(), [&] {
      auto& j = doc.value();
      if (sub == "metrics") {
        std::vector<std::vector<std::string>> rows;
        for (auto& p : j["metrics"]) rows.push_back({str(p, "step"), str(p, "loss"), str(p, "value_sum"), str(p, "step_ms")});
        print_table({"STEP", "LOSS", "VALUE_SUM", "STEP_MS"}, rows);
        return;
      }
      for (const char* k : {"id", "name", "kind", "state", "message", "step", "total_steps", "pg_id", "checkpoints",
                            "metric_points"})
        std::printf("%-14s %s\n", k, str(j, k).c_str());
      std::printf("%-14s %s\n", "actors", j["actor_ids"].dump().c_str());
      std::printf("%-14s %s\n", "last_metrics", j["last_metrics"].dump().c_str());
      for (auto& p : j["checkpoint_paths"]) std::printf("%-14s %s\n", "checkpoint", p.get<std::string>().c_str());
    });
  }
  return report(InvalidArgument("jobs: unknown subcommand \"" + sub + "\" (list, show, stop, metrics)"));
}

}  // namespace

int submit_main(int argc, char** argv) { return submit(argc, argv); }
int jobs_main(int argc, char** argv) { return jobs(argc, argv); }

int status_main(int argc, char** argv) {
  cxxopts::Options o("mariana status", "Nodes, resources, jobs and actors by state, recent failures");
  add_client_options(o);
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  auto target = client_target(r.value());
  if (!target.ok()) return report(target.status());
  ClusterClient client(target.value());
  auto doc = client.query("status", "", r.value()["timeout-ms"].as<int>());
  if (!doc.ok()) return report(doc.status());
  return print_or(r.value(), doc.value(), [&] {
    auto& s = doc.value();
    std::printf("======== Cluster status (controller %s) ========\n", target.value().address.c_str());
    std::printf("Nodes: %d ALIVE, %d DEAD\nResources:\n", s["nodes"].value("ALIVE", 0), s["nodes"].value("DEAD", 0));
    for (auto& [k, v] : s["resources"].items())
      std::printf("  %s/%s %s\n", fmt_num(v["used"].get<double>()).c_str(), fmt_num(v["total"].get<double>()).c_str(),
                  k.c_str());
    auto counts = [](const nlohmann::json& m) {
      std::string out;
      for (auto& [k, v] : m.items()) out += (out.empty() ? "" : ", ") + k + " " + v.dump();
      return out.empty() ? std::string("none") : out;
    };
    std::printf("Jobs: %s\nActors: %s\nRecent failures:\n", counts(s["jobs"]).c_str(), counts(s["actors"]).c_str());
    if (s["recent_failures"].empty()) std::printf("  (none)\n");
    for (auto& f : s["recent_failures"]) std::printf("  %s\n", f.get<std::string>().c_str());
  });
}

int nodes_main(int argc, char** argv) {
  cxxopts::Options o("mariana nodes", "Nodes with their resources (available/total)");
  add_client_options(o);
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  auto target = client_target(r.value());
  if (!target.ok()) return report(target.status());
  ClusterClient client(target.value());
  auto doc = client.query("nodes", "", r.value()["timeout-ms"].as<int>());
  if (!doc.ok()) return report(doc.status());
  return print_or(r.value(), doc.value(), [&] {
    std::vector<std::vector<std::string>> rows;
    for (auto& n : doc.value())
      rows.push_back({str(n, "id"), str(n, "state"), fmt_resources(n["available"], n["total"]), str(n, "actors_alive"),
                      str(n, "hostname"), str(n, "pid"), str(n, "death_cause")});
    print_table({"NODE_ID", "STATE", "RESOURCES (available/total)", "ACTORS", "HOST", "PID", "DEATH_CAUSE"}, rows);
  });
}

int actors_main(int argc, char** argv) {
  cxxopts::Options o("mariana actors", "actors list | show ID");
  add_client_options(o);
  o.add_options()("sub", "", cxxopts::value<std::string>())("id", "", cxxopts::value<std::string>());
  o.parse_positional({"sub", "id"});
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help") || !r.value().count("sub")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  const std::string sub = r.value()["sub"].as<std::string>();
  auto target = client_target(r.value());
  if (!target.ok()) return report(target.status());
  ClusterClient client(target.value());
  const int timeout = r.value()["timeout-ms"].as<int>();
  if (sub == "show") {
    if (!r.value().count("id")) return report(InvalidArgument("actors show: give an actor id"));
    auto doc = client.query("actor", r.value()["id"].as<std::string>(), timeout);
    if (!doc.ok()) return report(doc.status());
    return print_or(r.value(), doc.value(), [&] {
      for (auto& [k, v] : doc.value().items()) std::printf("%-18s %s\n", k.c_str(), v.is_string() ? v.get<std::string>().c_str() : v.dump().c_str());
    });
  }
  if (sub != "list") return report(InvalidArgument("actors: unknown subcommand \"" + sub + "\" (list, show)"));
  auto doc = client.query("actors", "", timeout);
  if (!doc.ok()) return report(doc.status());
  return print_or(r.value(), doc.value(), [&] {
    std::vector<std::vector<std::string>> rows;
    for (auto& a : doc.value())
      rows.push_back({str(a, "id"), str(a, "class"), str(a, "name"), str(a, "state"), str(a, "node_id"), str(a, "pid"),
                      str(a, "num_restarts"), str(a, "job_id"),
                      str(a, "state") == "DEAD" ? str(a, "death_cause") : str(a, "pending_reason")});
    print_table({"ACTOR_ID", "CLASS", "NAME", "STATE", "NODE", "PID", "RESTARTS", "JOB", "DETAIL"}, rows);
  });
}

}  // namespace mariana::cli
