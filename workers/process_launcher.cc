// PosixLauncher: fork/exec with log redirection and PR_SET_PDEATHSIG (see process_launcher.h).
#include "workers/process_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/file_util.h"

namespace mariana::workers {

Result<int> PosixLauncher::spawn(const std::vector<std::string>& argv, const std::string& stdout_path,
                                 const std::string& stderr_path) {
  if (argv.empty()) return InvalidArgument("spawn: empty argv");
  int out = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) return errno_status(errno, "open " + stdout_path);
  int err = ::open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (err < 0) {
    ::close(out);
    return errno_status(errno, "open " + stderr_path);
  }
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(out);
    ::close(err);
    return errno_status(e, "fork");
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(out, 1);
    ::dup2(err, 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(out);
  ::close(err);
  return static_cast<int>(pid);
}

void PosixLauncher::signal(int pid, int sig) {
  if (pid > 0) ::kill(pid, sig);
}

std::vector<ProcessExit> PosixLauncher::reap() {
  std::vector<ProcessExit> out;
  for (;;) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    ProcessExit e;
    e.pid = pid;
    if (WIFEXITED(status)) e.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) e.signal = WTERMSIG(status);
    out.push_back(e);
  }
  return out;
}

}  // namespace mariana::workers
