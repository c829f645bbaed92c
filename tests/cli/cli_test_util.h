// Running the real `mariana` binary from a test: its exit code and its output.
#pragma once

#include <sys/wait.h>

#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace mariana::testing {

struct CmdResult {
  int code = -1;
  std::string out;  // stdout, and stderr too unless the command redirects it
};

// Runs `mariana <args>` through the shell (args may hold redirections); stderr joins stdout
// unless `stderr_too` is false.
inline CmdResult run_mariana(const std::string& args, bool stderr_too = true) {
  const std::string cmd = std::string(MARIANA_BINARY_DIR) + "/cli/mariana " + args + (stderr_too ? " 2>&1" : "");
  CmdResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// Runs `mariana <train_args>` in the background with its output in out_file, waits (up to 60 s)
// until `wait_for_file` has content, sends SIGTERM — to the process, or with `group` to its whole
// process group (the command runs under setsid, as a terminal's Ctrl-C reaches every process of
// the foreground group) — and returns the exit status and the output.
inline CmdResult interrupt_mariana(const std::string& train_args, const std::string& out_file,
                                   const std::string& wait_for_file, bool group = false) {
  const std::string bin = std::string(MARIANA_BINARY_DIR) + "/cli/mariana";
  const std::string script = std::string(group ? "setsid " : "") + bin + " " + train_args + " > " + out_file +
                             " 2>&1 & pid=$!; for i in $(seq 600); do [ -s " + wait_for_file +
                             " ] && break; sleep 0.1; done; kill -TERM " + (group ? "-" : "") + "$pid; wait $pid; echo $?";
  CmdResult r;
  FILE* sh = popen(script.c_str(), "r");
  if (!sh) return r;
  char buf[256] = {0};
  std::string rc;
  while (std::fgets(buf, sizeof buf, sh)) rc += buf;
  pclose(sh);
  r.code = std::atoi(rc.c_str());
  std::ifstream in(out_file);
  r.out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

// A fresh directory per test (named after the test and the process), removed afterwards.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("mariana_cli_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string p(const std::string& rel) const { return (dir_ / rel).string(); }
  std::string src(const std::string& rel) const { return std::string(MARIANA_SOURCE_DIR) + "/" + rel; }
  void write(const std::string& rel, const std::string& text) const { std::ofstream(p(rel)) << text; }
  std::filesystem::path dir_;
};

}  // namespace mariana::testing
