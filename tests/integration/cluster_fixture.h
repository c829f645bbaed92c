// A real loopback cluster for integration tests: the `mariana` binary started as a controller
// and agents (PosixLauncher: a test process that dies takes them with it), a temp state dir, and
// helpers that run client verbs and poll with deadlines. Everything is stopped and removed at
// scope exit.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "workers/process_launcher.h"

namespace mariana::integration {

inline std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

struct CommandResult {
  int exit_code = -1;
  std::string out;
};

// Runs `mariana ARGS` (stdout captured, stderr appended) with a timeout, in directory `cwd` if given.
inline CommandResult run_mariana(const std::string& args, int timeout_s = 30, const std::string& cwd = "") {
  const std::string cmd = (cwd.empty() ? "" : "cd '" + cwd + "' && ") + "timeout " + std::to_string(timeout_s) + " " +
                          MARIANA_BIN + " " + args + " 2>&1";
  CommandResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = ::pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class Cluster {
 public:
  Cluster() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "mariana-it.XXXXXX").string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    state_ = dir_ + "/state";
  }
  ~Cluster() {
    for (auto& [name, pid] : agents_) stop(pid);
    stop(controller_pid_);
    std::error_code ec;
    if (!::testing::Test::HasFailure()) std::filesystem::remove_all(dir_, ec);
    else std::fprintf(stderr, "cluster logs kept in %s\n", dir_.c_str());
  }

  const std::string& state_dir() const { return state_; }
  const std::string& address() const { return address_; }
  const std::string& dir() const { return dir_; }
  std::string client() const { return "--state-dir " + state_; }
  int controller_pid() const { return controller_pid_; }
  // When > 0, the controller runs with RLIMIT_NOFILE lowered to this (soft and hard).
  int controller_nofile = 0;
  // The controller's --node-timeout-ms (a test that must tell deregistration from a timeout raises it).
  std::string node_timeout_ms = "1500";

  // Starts (or restarts, on the same address) the controller and waits for its address file.
  void start_controller(const std::string& first_listen = "tcp://127.0.0.1:*") {
    std::string listen = first_listen;
    if (!address_.empty()) listen = address_;
    std::filesystem::remove(state_ + "/controller.addr");
    std::vector<std::string> argv = {MARIANA_BIN, "controller", "start", "--listen", listen, "--state-dir", state_,
                                     "--heartbeat-ms", "100", "--node-timeout-ms", node_timeout_ms, "--worker-timeout-ms", "1500", "--metrics-port", "0",
                                     "--start-timeout-ms", "10000"};
    if (controller_nofile > 0)  // the shell execs the controller: same pid
      argv.insert(argv.begin(), {"/bin/sh", "-c", "ulimit -n " + std::to_string(controller_nofile) + " && exec \"$@\"", "sh"});
    auto pid = launcher_.spawn(argv, dir_ + "/controller.out", dir_ + "/controller.err");
    ASSERT_TRUE(pid.ok()) << pid.status().to_string();
    controller_pid_ = pid.value();
    ASSERT_TRUE(wait_for([&] { return std::filesystem::exists(state_ + "/controller.addr"); }, 10))
        << "controller did not start; see " << dir_ << "/controller.err";
    address_ = trim(read_file(state_ + "/controller.addr").value());
  }

  // With default_log_dir the agent gets no --log-dir (its default: STATE/logs/NODE); bind_host: its
  // --bind-host ("" = the default, loopback).
  void start_agent(const std::string& node, int cpus, bool default_log_dir = false, const std::string& bind_host = "") {
    std::vector<std::string> argv = {MARIANA_BIN, "agent", "start", "--state-dir", state_, "--cpus", std::to_string(cpus),
                                     "--node-id", node, "--heartbeat-ms", "100"};
    if (!bind_host.empty()) argv.insert(argv.end(), {"--bind-host", bind_host});
    if (!default_log_dir) argv.insert(argv.end(), {"--log-dir", dir_ + "/logs-" + node});
    auto pid = launcher_.spawn(argv, dir_ + "/agent-" + node + ".out", dir_ + "/agent-" + node + ".err");
    ASSERT_TRUE(pid.ok()) << pid.status().to_string();
    agents_[node] = pid.value();
  }

  void kill9_controller() { kill9(controller_pid_); }
  void stop_controller() { stop(controller_pid_); }
  void kill9_agent(const std::string& node) { kill9(agents_[node]); }

  // The JSON of a --json client verb, or null on failure.
  nlohmann::json query(const std::string& verb) {
    auto r = run_mariana(verb + " " + client() + " --json --timeout-ms 3000", 10);
    if (r.exit_code != 0) return nullptr;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    return j.is_discarded() ? nlohmann::json(nullptr) : j;
  }

  // Polls `pred` every 50 ms for up to `seconds`.
  static bool wait_for(const std::function<bool()>& pred, double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return pred();
  }

  bool wait_nodes_alive(int n, double seconds = 10) {
    return wait_for(
        [&] {
          auto s = query("status");
          return s.is_object() && s["nodes"].value("ALIVE", 0) == n;
        },
        seconds);
  }

  nlohmann::json job(const std::string& id) { return query("jobs show " + id); }

  // Waits until the job's durable step reaches `step` (or it ends).
  bool wait_step(const std::string& id, int64_t step, double seconds = 20) {
    return wait_for(
        [&] {
          auto j = job(id);
          return j.is_object() && (j.value("step", 0) >= step || j.value("state", "") == "FAILED");
        },
        seconds);
  }

  // Waits for a terminal state; returns it ("" on timeout).
  std::string wait_end(const std::string& id, double seconds = 60) {
    std::string state;
    wait_for(
        [&] {
          auto j = job(id);
          if (!j.is_object()) return false;
          state = j.value("state", "");
          return state == "SUCCEEDED" || state == "FAILED" || state == "STOPPED";
        },
        seconds);
    return state;
  }

  // Writes a job spec into the cluster dir; returns its path.
  std::string write_job(const std::string& name, const std::string& toml) {
    const std::string path = dir_ + "/" + name + ".toml";
    EXPECT_TRUE(write_file_atomic(path, toml).ok());
    return path;
  }

  std::string submit(const std::string& path, const std::string& extra = "") {
    auto r = run_mariana("submit " + path + " " + client() + " " + extra, 30);
    EXPECT_EQ(r.exit_code, 0) << r.out;
    return trim(r.out);
  }

 private:
  void kill9(int& pid) {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = 0;
  }
  void stop(int& pid) {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid) {
        pid = 0;
        return;
      }
      ::usleep(10000);
    }
    kill9(pid);
  }

  workers::PosixLauncher launcher_;
  std::string dir_, state_, address_;
  int controller_pid_ = 0;
  std::map<std::string, int> agents_;
};

// The placement-grouped generic actor job the tests run.
inline std::string actor_job(int steps, int step_ms, const char* strategy = "STRICT_SPREAD") {
  return std::string("name = \"it\"\nkind = \"actors\"\n[actors]\nclass = \"counter\"\ncount = 2\nmax_restarts = 5\n") +
         "resources = { CPU = 1 }\n[placement]\nstrategy = \"" + strategy + "\"\n[run]\nsteps = " +
         std::to_string(steps) + "\nstep_ms = " + std::to_string(step_ms) + "\ncheckpoint_every = 5\n";
}

}  // namespace mariana::integration
