// The control-plane verbs of `mariana`: controller start, agent start, worker (started by agents),
// submit, jobs list|show|stop|metrics, status, nodes, actors list|show. Client verbs find the
// controller with --controller ADDR / MARIANA_CONTROLLER and the token with --token-file F /
// MARIANA_TOKEN_FILE, or both from --state-dir DIR (DIR/controller.addr, DIR/cluster.token).
// Human tables by default; --json prints the controller's JSON document.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>
#include <toml++/toml.h>
#include <zmq.hpp>

#include "cli/cli.h"
#include "cli/cluster_client.h"
#include "cli/cluster_processes.h"
#include "controller/server.h"
#include "proto/client.h"
#include "proto/curve.h"
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
      "curve-file", "CURVE client credentials for a non-loopback controller (or MARIANA_CURVE_FILE)",
      cxxopts::value<std::string>())(
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

// What `controller start` prints once the controller listens: its address, the command an agent
// joins with, the token file, the metrics URL and how to stop it. A wildcard host (0.0.0.0, *) is
// shown as this machine's hostname, the name other machines reach it by.
void print_controller_banner(const std::string& state_dir, const std::string& bound, int pid, const std::string& log) {
  std::string address = bound;
  for (const char* wildcard : {"//0.0.0.0:", "//*:", "//[::]:"}) {
    const auto at = address.find(wildcard);
    if (at == std::string::npos) continue;
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    address = address.substr(0, at + 2) + host + address.substr(at + std::strlen(wildcard) - 1);
  }
  std::error_code ec;
  const std::string dir = std::filesystem::absolute(state_dir, ec).lexically_normal().string();
  auto port = read_file(dir + "/metrics.port");
  std::printf("controller listening on %s (pid %d, state in %s%s)\n", address.c_str(), pid, dir.c_str(),
              log.empty() ? "" : (", log " + log).c_str());
  std::printf("  token file   %s/cluster.token\n", dir.c_str());
  std::printf("  metrics      %s\n", port.ok() ? ("http://127.0.0.1:" + trim(port.value()) + "/metrics").c_str() : "off");
  const bool curve = !proto::endpoint_is_loopback(bound);
  std::printf("  agents join  mariana agent start --controller %s --token-file %s/cluster.token%s --cpus N --gpus N\n",
              address.c_str(), dir.c_str(), curve ? " --curve-file CREDENTIALS" : "");
  if (curve)
    std::printf("               (CREDENTIALS from: mariana controller add-client --state-dir %s --out CREDENTIALS)\n",
                dir.c_str());
  std::printf("  (same machine: mariana agent start --state-dir %s)\n", dir.c_str());
  std::printf("  clients      mariana status --state-dir %s   (or --controller ADDR --token-file F)\n", dir.c_str());
  std::printf("  stop         mariana stop --state-dir %s\n", dir.c_str());
  std::fflush(stdout);
}

// --detach: a child process (its own session, output to DIR/controller.log, pid in
// DIR/controller.pid) runs the controller; the parent returns once it listens, or fails with its log.
int controller_detach(controller::ServerOptions so) {
  std::error_code ec;
  std::filesystem::create_directories(so.state_dir, ec);
  const std::string log = so.state_dir + "/controller.log";
  int fds[2];
  if (::pipe(fds) != 0) return report(errno_status(errno, "controller --detach: pipe"));
  const pid_t pid = ::fork();
  if (pid < 0) return report(errno_status(errno, "controller --detach: fork"));
  if (pid == 0) {
    ::close(fds[0]);
    ::setsid();
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    if (in >= 0) ::dup2(in, 0);
    const int ready_fd = fds[1];
    std::optional<PidFile> pid_file(std::in_place);
    so.on_ready = [ready_fd, &so, &pid_file](const std::string& address) {
      Status st = pid_file->write(controller_pid_path(so.state_dir));
      if (!st.ok()) std::fprintf(stderr, "controller: %s\n", st.to_string().c_str());
      const std::string line = address + "\n";
      (void)!::write(ready_fd, line.data(), line.size());
      ::close(ready_fd);
    };
    install_stop_handlers();
    const int code = report(controller::controller_run(so, &g_stop));
    pid_file.reset();  // removes the pid file (_exit runs no destructors)
    std::fflush(stdout);
    std::fflush(stderr);
    ::_exit(code);
  }
  ::close(fds[1]);
  std::string address;
  char buf[256];
  for (;;) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n > 0) address.append(buf, static_cast<size_t>(n));
    else if (n == 0 || errno != EINTR) break;
  }
  ::close(fds[0]);
  address = trim(address);
  if (address.empty()) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    auto text = read_file(log);
    std::fprintf(stderr, "%s", text.ok() ? text.value().c_str() : "");
    return report(Unavailable("controller --detach: the controller exited before listening (log: " + log + ")"));
  }
  print_controller_banner(so.state_dir, address, static_cast<int>(pid), log);
  return kExitOk;
}

int controller_start(int argc, char** argv) {
  cxxopts::Options o("mariana controller start", "Run the controller in the foreground");
  o.add_options()("listen", "ZeroMQ endpoint (tcp://127.0.0.1:PORT; PORT * = ephemeral)",
                  cxxopts::value<std::string>()->default_value("tcp://127.0.0.1:7765"))(
      "state-dir", "RocksDB state, cluster.token, controller.addr", cxxopts::value<std::string>())(
      "metrics-port", "HTTP port of /metrics on 127.0.0.1 (0: any free port, -1: off); a busy port is an error",
      cxxopts::value<int>()->default_value(std::to_string(controller::kDefaultMetricsPort)))(
      "heartbeat-ms", "agent and worker heartbeat interval", cxxopts::value<int64_t>()->default_value("500"))(
      "node-timeout-ms", "an agent silent this long is DEAD", cxxopts::value<int64_t>()->default_value("5000"))(
      "worker-timeout-ms", "a worker silent this long is dead", cxxopts::value<int64_t>()->default_value("5000"))(
      "start-timeout-ms", "a started worker must register within", cxxopts::value<int64_t>()->default_value("30000"))(
      "handshake-timeout-ms", "drop a connection that has not finished the ZeroMQ/CURVE handshake within",
      cxxopts::value<int>()->default_value("5000"))(
      "max-connections", "client connections held at once (0: the open-file limit less a reserve)",
      cxxopts::value<int64_t>()->default_value("0"))(
      "detach", "run in the background (log in DIR/controller.log); returns once it listens")(
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
  so.handshake_timeout_ms = r.value()["handshake-timeout-ms"].as<int>();
  so.max_connections = r.value()["max-connections"].as<int64_t>();
  if (so.handshake_timeout_ms < 100 || so.max_connections < 0)
    return report(InvalidArgument("controller start: --handshake-timeout-ms must be >= 100 and --max-connections >= 0"));
  if (r.value().count("detach")) return controller_detach(so);
  install_stop_handlers();
  PidFile pid_file;  // DIR/controller.pid while it runs: `mariana stop` and `controller stop` find it
  so.on_ready = [&](const std::string& address) {
    Status st = pid_file.write(controller_pid_path(so.state_dir));
    if (!st.ok()) std::fprintf(stderr, "controller: %s\n", st.to_string().c_str());
    print_controller_banner(so.state_dir, address, static_cast<int>(::getpid()), "");
  };
  return report(controller::controller_run(so, &g_stop));
}

int controller_add_client(int argc, char** argv) {
  cxxopts::Options o("mariana controller add-client",
                     "Make CURVE credentials for one more client of a non-loopback controller (allow-listed at once)");
  o.add_options()("state-dir", "the controller's state dir", cxxopts::value<std::string>())(
      "name", "a name for the allow-list entry", cxxopts::value<std::string>()->default_value("client"))(
      "out", "where to write the credentials (mode 0600); give it to the client as --curve-file",
      cxxopts::value<std::string>())("h,help", "help");
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  if (!r.value().count("state-dir") || !r.value().count("out"))
    return report(InvalidArgument("controller add-client: --state-dir and --out are required"));
  const std::string dir = r.value()["state-dir"].as<std::string>();
  auto server = proto::curve_server_keys_ensure(dir);
  if (!server.ok()) return report(server.status());
  Status st = proto::curve_add_client(dir, r.value()["name"].as<std::string>(), r.value()["out"].as<std::string>());
  if (!st.ok()) return report(st);
  std::printf("%s\n", r.value()["out"].as<std::string>().c_str());
  return kExitOk;
}

int controller_repair(int argc, char** argv) {
  cxxopts::Options o("mariana controller repair",
                     "Salvage a state dir the controller refuses to start on (a damaged or missing RocksDB WAL); "
                     "acknowledged jobs, actors and metrics may be lost");
  o.add_options()("state-dir", "the stopped controller's state dir", cxxopts::value<std::string>())("h,help", "help");
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  if (!r.value().count("state-dir")) return report(InvalidArgument("controller repair: --state-dir is required"));
  const std::string dir = r.value()["state-dir"].as<std::string>();
  auto kept = controller::controller_repair(dir);
  if (!kept.ok()) return report(kept.status());
  std::printf("repaired %s/db: RocksDB kept what it could read; acknowledged state beyond it is lost.\n%s\n",
              dir.c_str(), kept.value().c_str());
  return kExitOk;
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

// Each cluster's worker logs in a directory of their own, so that `jobs logs job-1` of a new cluster
// never shows an older cluster's job-1: under the state dir when the agent has one, else under
// $TMPDIR named by a hash of the cluster token (the cluster's identity as far as an agent knows).
std::string agent_default_log_dir(const cxxopts::ParseResult& r, const ClientTarget& t, const std::string& node_id) {
  if (r.count("state-dir")) return r["state-dir"].as<std::string>() + "/logs/" + node_id;
  char cluster[17];
  std::snprintf(cluster, sizeof cluster, "%016llx",
                static_cast<unsigned long long>(XXH64(t.token.data(), t.token.size(), 0)));
  return std::filesystem::temp_directory_path().string() + "/mariana-logs-" + cluster + "/" + node_id;
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
      "log-dir", "worker logs (default: STATE/logs/NODE with --state-dir, else $TMPDIR/mariana-logs-CLUSTER/NODE)",
      cxxopts::value<std::string>()->default_value(""))(
      "heartbeat-ms", "heartbeat interval", cxxopts::value<int64_t>()->default_value("500"))(
      "bind-host",
      "the address this node's workers listen on for direct calls and collectives (one the other nodes "
      "reach when there are several)",
      cxxopts::value<std::string>()->default_value("127.0.0.1"));
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  auto target = client_target(r.value());
  if (!target.ok()) return report(target.status());
  workers::AgentOptions ao;
  ao.controller = target.value().address;
  ao.token = target.value().token;
  ao.token_file = target.value().token_file;
  ao.curve_file = target.value().curve_file;
  ao.node_id = r.value()["node-id"].as<std::string>();
  if (ao.node_id.empty()) ao.node_id = "node-" + proto::random_hex(8);
  ao.log_dir = r.value()["log-dir"].as<std::string>();
  if (ao.log_dir.empty()) ao.log_dir = agent_default_log_dir(r.value(), target.value(), ao.node_id);
  ao.heartbeat_ms = r.value()["heartbeat-ms"].as<int64_t>();
  ao.bind_host = r.value()["bind-host"].as<std::string>();
  if (ao.bind_host.empty() || ao.bind_host.find_first_of(" /:") != std::string::npos)
    return report(InvalidArgument("agent start: --bind-host: expected an IPv4 address or a host name, got \"" +
                                  ao.bind_host + "\""));
  auto custom = parse_resources(r.value()["resources"].as<std::string>());
  if (!custom.ok()) return report(custom.status());
  ao.resources = custom.value();
  ao.resources["CPU"] = r.value()["cpus"].as<double>();
  ao.resources["GPU"] = r.value()["gpus"].as<double>();
  if (r.value()["memory"].as<double>() > 0) ao.resources["memory"] = r.value()["memory"].as<double>();
  ao.actor_classes = workers::builtin_actor_registry().names();
  install_stop_handlers();
  PidFile pid_file;  // DIR/agents/NODE.pid with --state-dir: `mariana stop` and `agent stop` find it
  if (r.value().count("state-dir")) {
    Status st = pid_file.write(agent_pid_path(r.value()["state-dir"].as<std::string>(), ao.node_id));
    if (!st.ok()) return report(st);
  }
  workers::PosixLauncher launcher;
  return report(workers::agent_run(ao, &launcher, &g_stop));
}

}  // namespace

int controller_main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "start") return controller_start(argc - 1, argv + 1);
  if (argc >= 2 && std::string(argv[1]) == "add-client") return controller_add_client(argc - 1, argv + 1);
  if (argc >= 2 && std::string(argv[1]) == "repair") return controller_repair(argc - 1, argv + 1);
  if (argc >= 2 && std::string(argv[1]) == "stop") return controller_stop_main(argc - 1, argv + 1);
  std::fprintf(stderr,
               "usage: mariana controller start --listen tcp://HOST:PORT --state-dir DIR [--metrics-port P] [--detach]\n"
               "       mariana controller stop --state-dir DIR\n"
               "       mariana controller add-client --state-dir DIR --out CREDENTIALS [--name N]\n"
               "       mariana controller repair --state-dir DIR\n");
  return kExitBadInput;
}

int agent_main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "start") return agent_start(argc - 1, argv + 1);
  if (argc >= 2 && std::string(argv[1]) == "stop") return agent_stop_main(argc - 1, argv + 1);
  std::fprintf(stderr,
               "usage: mariana agent start --controller ADDR --token-file F [--cpus N --gpus N]\n"
               "       mariana agent stop --state-dir DIR [--node-id N]\n");
  return kExitBadInput;
}

int worker_main(int argc, char** argv) {
  cxxopts::Options o("mariana worker", "Host one actor (started by an agent)");
  o.add_options()("controller", "", cxxopts::value<std::string>())("token-file", "", cxxopts::value<std::string>())(
      "actor-id", "", cxxopts::value<std::string>())("incarnation", "", cxxopts::value<uint32_t>())(
      "class", "", cxxopts::value<std::string>())("node-id", "", cxxopts::value<std::string>())(
      "heartbeat-ms", "", cxxopts::value<int64_t>()->default_value("500"))(
      "curve-file", "", cxxopts::value<std::string>())("args", "", cxxopts::value<std::string>())(
      "bind-host", "", cxxopts::value<std::string>()->default_value("127.0.0.1"));
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
  wo.bind_host = r.value()["bind-host"].as<std::string>();
  if (r.value().count("args")) wo.args = r.value()["args"].as<std::string>();
  if (r.value().count("curve-file")) {
    auto keys = proto::curve_client_load(r.value()["curve-file"].as<std::string>());
    if (!keys.ok()) return report(keys.status());
    wo.curve = keys.value();
  }
  install_stop_handlers();
  return report(workers::worker_run(wo, workers::builtin_actor_registry(), &g_stop));
}

// ---------------------------------------------------------------- client verbs

namespace {

using Clock = std::chrono::steady_clock;
int job_logs(ClusterClient& client, const std::string& id, bool follow, int timeout,
             Clock::time_point deadline = Clock::time_point::max());

int submit(int argc, char** argv) {
  cxxopts::Options o("mariana submit", "Submit a job spec (TOML); prints the job id");
  add_client_options(o);
  o.add_options()("set", kSetHelp, cxxopts::value<std::vector<std::string>>())(
      "wait", "print the job's worker logs as they are written until it ends; exit 0 only if it succeeded")(
      "wait-timeout-s", "give up waiting after this long", cxxopts::value<int>()->default_value("3600"))(
      "spec", "JOB.toml", cxxopts::value<std::string>());
  o.parse_positional({"spec"});
  auto taken = take_set_flags(argc, argv);
  if (!taken.ok()) return report(taken.status());
  const std::vector<std::string> sets = taken.value();
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  if (!r.value().count("spec")) return report(InvalidArgument("submit: give a JOB.toml"));
  const std::string path = r.value()["spec"].as<std::string>();
  auto job = job_submission_prepare(path, sets);
  if (!job.ok()) return report(job.status());
  auto target = client_target(r.value());
  if (!target.ok()) return report(target.status());
  ClusterClient client(target.value());
  const int timeout = r.value()["timeout-ms"].as<int>();
  auto submitted = job_submit(client.rpc(), job.value(), timeout);
  if (!submitted.ok()) return report(submitted.status());
  const std::string job_id = submitted.value();
  std::printf("%s\n", job_id.c_str());
  std::fflush(stdout);
  if (!r.value().count("wait")) return kExitOk;
  // The `jobs logs -f` machinery: the job's worker output as it is written, until the job ends.
  install_stop_handlers();
  const int streamed =
      job_logs(client, job_id, true, timeout, Clock::now() + std::chrono::seconds(r.value()["wait-timeout-s"].as<int>()));
  if (streamed != kExitOk) return streamed;
  auto doc = client.query("job", job_id, timeout);
  if (!doc.ok()) return report(doc.status());
  const std::string state = doc.value().value("state", "");
  if (state == "SUCCEEDED") {
    std::fprintf(stderr, "%s SUCCEEDED\n", job_id.c_str());
    return kExitOk;
  }
  if (state == "FAILED" || state == "STOPPED") {
    std::fprintf(stderr, "%s %s: %s\n", job_id.c_str(), state.c_str(), doc.value().value("message", "").c_str());
    return kExitFailure;
  }
  if (g_stop.load()) {
    std::fprintf(stderr, "submit --wait: interrupted; %s is still %s (mariana jobs stop %s ends it)\n", job_id.c_str(),
                 state.c_str(), job_id.c_str());
    return kExitFailure;
  }
  return report(Status(StatusCode::kDeadlineExceeded, "submit --wait: " + job_id + " did not end in time"));
}

int print_or(const cxxopts::ParseResult& r, const nlohmann::json& doc, const std::function<void()>& human) {
  if (r.count("json")) std::printf("%s\n", doc.dump(2).c_str());
  else human();
  return kExitOk;
}


// `jobs logs ID [-f]`: the captured stdout/stderr of the job's workers (a pipeline's: its stages'),
// every incarnation of every actor, read from the agents' log dirs (<log dir>/<actor>-<incarnation>.{out,err}): they must be
// readable from here (the same machine, or a shared file system). With -f, keeps printing what
// they append (and new incarnations' files) until the job ends (or the deadline, or Ctrl-C).
int job_logs(ClusterClient& client, const std::string& id, bool follow, int timeout, Clock::time_point deadline) {
  struct LogFile {
    std::string path;
    uintmax_t offset = 0;
  };
  std::vector<LogFile> files;
  std::string current;  // the file whose bytes were printed last
  auto discover = [&](bool* terminal) -> Status {
    MARIANA_ASSIGN_OR_RETURN(auto job, client.query("job", id, timeout));
    MARIANA_ASSIGN_OR_RETURN(auto nodes, client.query("nodes", "", timeout));
    MARIANA_ASSIGN_OR_RETURN(auto actors, client.query("actors", "", timeout));
    const std::string state = job.value("state", "");
    *terminal = job_doc_terminal(state);
    nlohmann::json actor_ids = job["actor_ids"];
    for (auto& st : job.value("stages", nlohmann::json::array())) {  // a pipeline: its stages' workers
      if (st.value("job_id", "").empty()) continue;
      MARIANA_ASSIGN_OR_RETURN(auto stage_job, client.query("job", st.value("job_id", ""), timeout));
      for (auto& aid : stage_job["actor_ids"]) actor_ids.push_back(aid);
    }
    for (auto& aid : actor_ids) {
      uint32_t incarnations = 0;
      for (auto& a : actors)
        if (a.value("id", "") == aid.get<std::string>()) incarnations = a.value("incarnation", 0u);
      for (uint32_t inc = 0; inc <= incarnations; ++inc)
        for (const char* ext : {".out", ".err"})
          for (auto& n : nodes) {
            const std::string dir = n.value("log_dir", "");
            if (dir.empty()) continue;
            const std::string path = dir + "/" + aid.get<std::string>() + "-" + std::to_string(inc) + ext;
            bool known = false;
            for (auto& f : files) known = known || f.path == path;
            std::error_code ec;
            if (!known && std::filesystem::exists(path, ec)) files.push_back({path, 0});
          }
    }
    return Status::Ok();
  };
  auto drain = [&] {
    for (auto& f : files) {
      std::error_code ec;
      const uintmax_t size = std::filesystem::file_size(f.path, ec);
      if (ec || size <= f.offset) continue;
      FILE* in = std::fopen(f.path.c_str(), "rb");
      if (!in) continue;
      std::fseek(in, static_cast<long>(f.offset), SEEK_SET);
      std::string bytes(size - f.offset, '\0');
      const size_t n = std::fread(bytes.data(), 1, bytes.size(), in);
      std::fclose(in);
      bytes.resize(n);
      f.offset += n;
      if (current != f.path) std::printf("%s==> %s <==\n", current.empty() ? "" : "\n", f.path.c_str());
      current = f.path;
      std::fwrite(bytes.data(), 1, bytes.size(), stdout);
    }
    std::fflush(stdout);
  };
  bool terminal = false;
  Status st = discover(&terminal);
  if (!st.ok()) return report(st);
  if (files.empty() && !follow)
    return report(NotFound("jobs logs " + id + ": no worker log files found in the nodes' log dirs"));
  drain();
  while (follow && !terminal && !g_stop.load() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    st = discover(&terminal);
    if (!st.ok()) return report(st);
    drain();
  }
  drain();
  return kExitOk;
}

int jobs(int argc, char** argv) {
  cxxopts::Options o("mariana jobs", "jobs list | show ID | stop ID | resume ID | metrics ID | logs ID [-f]");
  add_client_options(o);
  o.add_options()("sub", "", cxxopts::value<std::string>())("id", "", cxxopts::value<std::string>())(
      "f,follow", "logs: keep printing what the job's workers write until the job ends");
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
  if (sub == "logs") return job_logs(client, id, r.value().count("follow") > 0, timeout);
  if (sub == "stop") {
    auto reply = client.rpc().call([&](proto::Envelope::Payload::Builder p) { p.initStopJob().setJobId(id); }, timeout);
    if (!reply.ok()) return report(reply.status());
    std::printf("%s stopped\n", id.c_str());
    return kExitOk;
  }
  if (sub == "resume") {
    auto reply = client.rpc().call([&](proto::Envelope::Payload::Builder p) { p.initResumeJob().setJobId(id); }, timeout);
    if (!reply.ok()) return report(reply.status());
    std::printf("%s resumed\n", id.c_str());
    return kExitOk;
  }
  if (sub == "list") {
    auto doc = client.query("jobs", "", timeout);
    if (!doc.ok()) return report(doc.status());
    return print_or(r.value(), doc.value(), [&] {
      std::vector<std::vector<std::string>> rows;
      for (auto& j : doc.value())
        rows.push_back({str(j, "id"), str(j, "name"), str(j, "kind"), str(j, "state"),
                        str(j, "step") + "/" + str(j, "total_steps"), format_eta(j), str(j, "message")});
      print_table({"JOB_ID", "NAME", "KIND", "STATE", "STEPS", "REMAINING", "MESSAGE"}, rows);
    });
  }
  if (sub == "show" || sub == "metrics") {
    auto doc = client.query(sub == "show" ? "job" : "metrics", id, timeout);
    if (!doc.ok()) return report(doc.status());
    return print_or(r.value(), doc.value(), [&] {
      auto& j = doc.value();
      if (sub == "metrics" && str(j, "kind") != "actors") {  // a training job: pretrain, extend, sft, rm, rl
        std::vector<std::vector<std::string>> rows;
        auto num = [](const nlohmann::json& p, const char* k, const char* f) {
          char buf[32];
          std::snprintf(buf, sizeof buf, f, p.value(k, 0.0));
          return std::string(buf);
        };
        for (auto& p : j["metrics"])
          rows.push_back({str(p, "step"), num(p, "loss", "%.4f"), num(p, "loss_main", "%.4f"),
                          p.contains("val_loss") ? num(p, "val_loss", "%.4f") : "-", num(p, "lr", "%.3e"),
                          num(p, "grad_norm", "%.3f"), num(p, "tokens_per_s", "%.0f")});
        print_table({"STEP", "LOSS", "LOSS_MAIN", "VAL_LOSS", "LR", "GRAD_NORM", "TOKENS/S"}, rows);
        return;
      }
      if (sub == "metrics") {
        std::vector<std::vector<std::string>> rows;
        for (auto& p : j["metrics"]) rows.push_back({str(p, "step"), str(p, "loss"), str(p, "value_sum"), str(p, "step_ms")});
        print_table({"STEP", "LOSS", "VALUE_SUM", "STEP_MS"}, rows);
        return;
      }
      for (const char* k : {"id", "name", "kind", "state", "message", "step", "total_steps", "pg_id", "checkpoints",
                            "metric_points", "run_dir"})
        if (j.contains(k) && !(j[k].is_string() && j[k].get<std::string>().empty()))
          std::printf("%-14s %s\n", k, str(j, k).c_str());
      if (j.contains("stages")) {  // a pipeline: its DAG, one line per stage
        std::printf("stages\n");
        std::vector<std::vector<std::string>> rows;
        for (auto& st : j["stages"]) {
          std::string deps;
          for (auto& d : st["depends"]) deps += (deps.empty() ? "" : ", ") + d.get<std::string>();
          const std::string steps = st.contains("step") ? str(st, "step") + "/" + str(st, "total_steps") : "-";
          rows.push_back({"  " + str(st, "name"), deps.empty() ? "-" : "<- " + deps, str(st, "state"),
                          str(st, "job_id").empty() ? "-" : str(st, "job_id"), steps, str(st, "message")});
        }
        print_table({"  STAGE", "AFTER", "STATE", "JOB_ID", "STEPS", "MESSAGE"}, rows);
        return;
      }
      std::printf("%-14s %s\n", "last_metrics", j["last_metrics"].dump().c_str());
      for (auto& p : j["checkpoint_paths"]) std::printf("%-14s %s\n", "checkpoint", p.get<std::string>().c_str());
      // Its actors, one line each in job order (a campaign: the learner, then each role's actors).
      auto actors = client.query("actors", "", timeout);
      std::map<std::string, nlohmann::json> by_id;
      if (actors.ok() && actors.value().is_array())
        for (auto& a : actors.value()) by_id[str(a, "id")] = a;
      std::vector<std::vector<std::string>> rows;
      for (auto& aid : j["actor_ids"]) {
        const std::string id = aid.get<std::string>();
        auto it = by_id.find(id);
        if (it == by_id.end()) {
          rows.push_back({"  " + id, "?", "?", "?", "?", "?"});
          continue;
        }
        const nlohmann::json& a = it->second;
        rows.push_back({"  " + id, str(a, "name"), str(a, "state"), str(a, "incarnation"), str(a, "num_restarts"),
                        str(a, "node_id").empty() ? "-" : str(a, "node_id")});
      }
      std::printf("actors\n");
      print_table({"  ACTOR", "NAME", "STATE", "INCARNATION", "RESTARTS", "NODE"}, rows);
    });
  }
  return report(InvalidArgument("jobs: unknown subcommand \"" + sub + "\" (list, show, stop, resume, metrics, logs)"));
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


// `mariana top [--once] [--interval-ms N]`: a live view of the cluster (status, nodes, jobs, the
// actors that are not DEAD), redrawn every interval until Ctrl-C; --once prints one frame.
int top_main(int argc, char** argv) {
  cxxopts::Options o("mariana top", "Live view of nodes, jobs and actors");
  add_client_options(o);
  o.add_options()("once", "print one frame and exit")(
      "interval-ms", "refresh interval", cxxopts::value<int>()->default_value("1000"));
  auto r = parse(o, argc, argv);
  if (!r.ok()) return report(r.status());
  if (r.value().count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  auto target = client_target(r.value());
  if (!target.ok()) return report(target.status());
  ClusterClient client(target.value());
  const int timeout = r.value()["timeout-ms"].as<int>();
  const bool once = r.value().count("once") > 0;
  install_stop_handlers();
  while (!g_stop.load()) {
    auto status = client.query("status", "", timeout);
    if (!status.ok()) return report(status.status());
    auto nodes = client.query("nodes", "", timeout);
    auto jobs = client.query("jobs", "", timeout);
    auto actors = client.query("actors", "", timeout);
    if (!nodes.ok() || !jobs.ok() || !actors.ok())
      return report(!nodes.ok() ? nodes.status() : !jobs.ok() ? jobs.status() : actors.status());
    if (!once) std::printf("\x1b[H\x1b[2J");
    auto& s = status.value();
    auto counts = [](const nlohmann::json& m) {
      std::string out;
      for (auto& [k, v] : m.items()) out += (out.empty() ? "" : ", ") + k + " " + v.dump();
      return out.empty() ? std::string("none") : out;
    };
    std::printf("mariana top - controller %s - nodes %s - jobs %s - actors %s\n\n", target.value().address.c_str(),
                counts(s["nodes"]).c_str(), counts(s["jobs"]).c_str(), counts(s["actors"]).c_str());
    std::vector<std::vector<std::string>> rows;
    for (auto& n : nodes.value())
      rows.push_back({str(n, "id"), str(n, "state"), fmt_resources(n["available"], n["total"]), str(n, "actors_alive"),
                      str(n, "hostname")});
    print_table({"NODE_ID", "STATE", "RESOURCES (available/total)", "ACTORS", "HOST"}, rows);
    std::printf("\n");
    rows.clear();
    for (auto& j : jobs.value()) {
      const auto& m = j.contains("last_metrics") ? j["last_metrics"] : nlohmann::json::object();
      char loss[32] = "", tps[32] = "";
      if (m.is_object() && m.contains("loss") && m["loss"].is_number()) std::snprintf(loss, sizeof loss, "%.4f", m["loss"].get<double>());
      if (m.is_object() && m.contains("tokens_per_s") && m["tokens_per_s"].is_number())
        std::snprintf(tps, sizeof tps, "%.0f", m["tokens_per_s"].get<double>());
      rows.push_back({str(j, "id"), str(j, "name"), str(j, "kind"), str(j, "state"),
                      str(j, "step") + "/" + str(j, "total_steps"), format_eta(j), loss, tps, str(j, "message")});
    }
    print_table({"JOB_ID", "NAME", "KIND", "STATE", "STEPS", "REMAINING", "LOSS", "TOKENS/S", "MESSAGE"}, rows);
    std::printf("\n");
    rows.clear();
    for (auto& a : actors.value())
      if (str(a, "state") != "DEAD")
        rows.push_back({str(a, "id"), str(a, "class"), str(a, "state"), str(a, "node_id"), str(a, "pid"),
                        str(a, "num_restarts"), str(a, "job_id"), str(a, "pending_reason")});
    print_table({"ACTOR_ID", "CLASS", "STATE", "NODE", "PID", "RESTARTS", "JOB", "DETAIL"}, rows);
    if (!s["recent_failures"].empty()) {
      std::printf("\nrecent failures:\n");
      auto& f = s["recent_failures"];
      for (size_t i = f.size() > 5 ? f.size() - 5 : 0; i < f.size(); ++i) std::printf("  %s\n", f[i].get<std::string>().c_str());
    }
    std::fflush(stdout);
    if (once) break;
    for (int waited = 0; waited < r.value()["interval-ms"].as<int>() && !g_stop.load(); waited += 50)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return kExitOk;
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
