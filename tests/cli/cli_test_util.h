// Running the real `mariana` binary from a test: its exit code and its output.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

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

}  // namespace mariana::testing
