// Pid files and the stop verbs of a cluster's processes (see cluster_processes.h). A pid file is
// trusted only while its process is alive and is `mariana controller ...` / `mariana agent ...`
// (its /proc/PID/cmdline): otherwise it is stale (a crash, a reboot, a reused pid), reported and
// removed, and nothing is signalled.
#include "cli/cluster_processes.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include <cxxopts.hpp>

#include "cli/cli.h"
#include "core/file_util.h"

namespace mariana::cli {

std::string controller_pid_path(const std::string& state_dir) { return state_dir + "/controller.pid"; }
std::string agent_pid_path(const std::string& state_dir, const std::string& node_id) {
  return state_dir + "/agents/" + node_id + ".pid";
}

namespace {

// The pid a pid file names, or -1 when it is missing or unreadable.
int read_pid(const std::string& path) {
  auto text = read_file(path);
  if (!text.ok()) return -1;
  char* end = nullptr;
  const long pid = std::strtol(text.value().c_str(), &end, 10);
  return pid > 0 && end != text.value().c_str() ? static_cast<int>(pid) : -1;
}

// Whether pid is a live (not zombie) process whose command line is `<binary> ROLE ...`.
bool is_live_process(int pid, const std::string& role) {
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat.ok()) return false;
  const auto paren = stat.value().rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.value().size() || stat.value()[paren + 2] == 'Z') return false;
  auto cmdline = read_file("/proc/" + std::to_string(pid) + "/cmdline");
  if (!cmdline.ok()) return false;
  std::vector<std::string> args;
  std::string arg;
  for (char c : cmdline.value()) {
    if (c == '\0') {
      args.push_back(arg);
      arg.clear();
    } else {
      arg += c;
    }
  }
  return args.size() >= 2 && args[1] == role;
}

// Ends the process a pid file names: SIGTERM, up to timeout_s for it to exit, then SIGKILL.
// Prints one line on what happened; returns false only when the process survived SIGKILL.
bool stop_one(const std::string& what, const std::string& role, const std::string& path, double timeout_s) {
  const int pid = read_pid(path);
  std::error_code ec;
  if (pid < 0 || !is_live_process(pid, role)) {
    std::printf("%s: stale pid file %s (%s); removed\n", what.c_str(), path.c_str(),
                pid < 0 ? "unreadable" : ("process " + std::to_string(pid) + " is not running").c_str());
    std::filesystem::remove(path, ec);
    return true;
  }
  ::kill(pid, SIGTERM);
  const auto t0 = std::chrono::steady_clock::now();
  auto waited = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  while (is_live_process(pid, role) && waited() < timeout_s) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  bool killed = false;
  if (is_live_process(pid, role)) {
    ::kill(pid, SIGKILL);
    killed = true;
    for (int i = 0; i < 250 && is_live_process(pid, role); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const bool gone = !is_live_process(pid, role);
  std::filesystem::remove(path, ec);
  if (!gone) std::printf("%s (pid %d): still running after SIGKILL\n", what.c_str(), pid);
  else if (killed) std::printf("%s (pid %d): killed after %.0f s without exiting on SIGTERM\n", what.c_str(), pid, timeout_s);
  else std::printf("stopped %s (pid %d) in %.1f s\n", what.c_str(), pid, waited());
  return gone;
}

// The agents' pid files in DIR/agents (sorted), or only NODE's.
std::vector<std::pair<std::string, std::string>> agent_pid_files(const std::string& dir, const std::string& node) {
  std::vector<std::pair<std::string, std::string>> out;
  if (!node.empty()) {
    if (std::filesystem::exists(agent_pid_path(dir, node))) out.push_back({node, agent_pid_path(dir, node)});
    return out;
  }
  std::error_code ec;
  for (auto& e : std::filesystem::directory_iterator(dir + "/agents", ec))
    if (e.path().extension() == ".pid") out.push_back({e.path().stem().string(), e.path().string()});
  std::sort(out.begin(), out.end());
  return out;
}

struct StopRequest {
  std::string state_dir;
  std::string node;
  double timeout_s = 10;
};

Result<StopRequest> parse_stop(const char* name, const char* what, bool with_node, int argc, char** argv, bool* help) {
  cxxopts::Options o(name, what);
  o.add_options()("state-dir", "the controller's state dir (pid files in DIR/controller.pid, DIR/agents/NODE.pid)",
                  cxxopts::value<std::string>())(
      "timeout-s", "how long to wait for a process to exit after SIGTERM before SIGKILL",
      cxxopts::value<double>()->default_value("10"))("h,help", "help");
  if (with_node) o.add_options()("node-id", "only this node's agent", cxxopts::value<std::string>()->default_value(""));
  cxxopts::ParseResult r;
  try {
    r = o.parse(argc, argv);
  } catch (const std::exception& e) {
    return InvalidArgument(std::string(name) + ": " + e.what());
  }
  *help = r.count("help") > 0;
  if (*help) {
    std::printf("%s\n", o.help().c_str());
    return StopRequest{};
  }
  if (!r.count("state-dir")) return InvalidArgument(std::string(name) + ": --state-dir is required");
  StopRequest s;
  s.state_dir = r["state-dir"].as<std::string>();
  s.timeout_s = r["timeout-s"].as<double>();
  if (with_node) s.node = r["node-id"].as<std::string>();
  if (!(s.timeout_s >= 0)) return InvalidArgument(std::string(name) + ": --timeout-s must be >= 0");
  if (!std::filesystem::is_directory(s.state_dir))
    return InvalidArgument(std::string(name) + ": --state-dir " + s.state_dir + " is not a directory");
  return s;
}

// Stops the agents (first: a cleanly stopped agent deregisters, which needs the controller up),
// then the controller. Returns the number of processes found (stale pid files included).
int stop_processes(const StopRequest& s, bool agents, bool controller, bool* ok) {
  int found = 0;
  if (agents)
    for (auto& [node, path] : agent_pid_files(s.state_dir, s.node)) {
      ++found;
      *ok = stop_one("agent " + node, "agent", path, s.timeout_s) && *ok;
    }
  if (controller && std::filesystem::exists(controller_pid_path(s.state_dir))) {
    ++found;
    *ok = stop_one("controller", "controller", controller_pid_path(s.state_dir), s.timeout_s) && *ok;
  }
  return found;
}

int stop_verb(const char* name, const char* what, bool agents, bool controller, int argc, char** argv) {
  bool help = false;
  auto s = parse_stop(name, what, agents && !controller, argc, argv, &help);
  if (!s.ok()) return report(s.status());
  if (help) return kExitOk;
  bool ok = true;
  if (stop_processes(s.value(), agents, controller, &ok) == 0)
    std::printf("nothing to stop: no %s pid file in %s\n", agents && !controller ? "agent" : "controller or agent",
                s.value().state_dir.c_str());
  return ok ? kExitOk : kExitFailure;
}

}  // namespace

PidFile::~PidFile() {
  if (path_.empty() || read_pid(path_) != static_cast<int>(::getpid())) return;
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

Status PidFile::write(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  MARIANA_RETURN_IF_ERROR(write_file_atomic(path, std::to_string(::getpid()) + "\n"));
  path_ = path;
  return Status::Ok();
}

int controller_stop_main(int argc, char** argv) {
  return stop_verb("mariana controller stop", "Stop the controller of a state dir (SIGTERM, wait, report)", false,
                   true, argc, argv);
}

int agent_stop_main(int argc, char** argv) {
  return stop_verb("mariana agent stop",
                   "Stop the agents started with --state-dir DIR (each deregisters, so its actors restart elsewhere)",
                   true, false, argc, argv);
}

int stop_main(int argc, char** argv) {
  return stop_verb("mariana stop", "Stop a cluster's agents, then its controller (pid files in the state dir)", true,
                   true, argc, argv);
}

}  // namespace mariana::cli
