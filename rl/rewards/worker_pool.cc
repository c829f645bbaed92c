// JsonLineWorkerPool: fork/exec with a socket pair as the child's stdin and stdout,
// PR_SET_PDEATHSIG so workers never outlive the scorer's process, poll() for per-call timeouts.
#include "rl/rewards/worker_pool.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace mariana::rl {
namespace {

using Clock = std::chrono::steady_clock;

std::string exit_text(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

}  // namespace

std::string JsonLineWorkerPool::who(int index, const Slot& slot) const {
  return options_.name + " worker " + std::to_string(index) + " (pid " + std::to_string(slot.pid) + ")";
}

Result<std::unique_ptr<JsonLineWorkerPool>> JsonLineWorkerPool::start(Options options) {
  if (options.argv.empty()) return InvalidArgument(options.name + " worker pool: empty argv");
  if (options.workers < 1) return InvalidArgument(options.name + " worker pool: workers must be >= 1");
  std::unique_ptr<JsonLineWorkerPool> pool(new JsonLineWorkerPool(std::move(options)));
  pool->slots_.resize(static_cast<size_t>(pool->options_.workers));
  for (int i = 0; i < pool->options_.workers; ++i) {
    MARIANA_RETURN_IF_ERROR(pool->spawn(i, pool->slots_[i]));
    pool->free_.push_back(i);
  }
  return pool;
}

JsonLineWorkerPool::~JsonLineWorkerPool() {
  for (Slot& s : slots_) stop(s);
}

Status JsonLineWorkerPool::spawn(int index, Slot& slot) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
    return Internal(options_.name + " worker pool: socketpair: " + std::strerror(errno));
  // Everything the child needs is built before fork (only async-signal-safe calls after it).
  std::vector<char*> args;
  for (const std::string& a : options_.argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    return Internal(options_.name + " worker pool: fork: " + std::strerror(e));
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    if (::dup2(fds[1], STDIN_FILENO) < 0 || ::dup2(fds[1], STDOUT_FILENO) < 0) ::_exit(126);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  slot.pid = pid;
  slot.fd = fds[0];
  slot.buffer.clear();
  Result<std::string> line = read_line(index, slot, options_.startup_timeout_s);
  if (!line.ok()) {
    const std::string what = who(index, slot);
    stop(slot);
    return FailedPrecondition(what + " did not start (`" + options_.argv[0] + " ...`): " + line.status().message());
  }
  nlohmann::json hello = nlohmann::json::parse(*line, nullptr, /*allow_exceptions=*/false);
  Status st = hello.is_discarded() ? FailedPrecondition(who(index, slot) + ": expected a JSON handshake line, got '" +
                                                        line->substr(0, 200) + "'")
              : options_.check_handshake ? options_.check_handshake(hello)
                                         : Status::Ok();
  if (!st.ok()) stop(slot);
  return st;
}

void JsonLineWorkerPool::stop(Slot& slot) {
  if (slot.pid > 0) {
    ::kill(slot.pid, SIGKILL);
    int status = 0;
    while (::waitpid(slot.pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (slot.fd >= 0) ::close(slot.fd);
  slot.pid = -1;
  slot.fd = -1;
  slot.buffer.clear();
}

bool JsonLineWorkerPool::alive(Slot& slot) {
  if (slot.pid <= 0) return false;
  int status = 0;
  const pid_t r = ::waitpid(slot.pid, &status, WNOHANG);
  if (r == 0) return true;
  slot.pid = -1;  // reaped (or not our child any more)
  stop(slot);
  return false;
}

Result<std::string> JsonLineWorkerPool::read_line(int index, Slot& slot, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  char buf[65536];
  for (;;) {
    const size_t nl = slot.buffer.find('\n');
    if (nl != std::string::npos) {
      std::string line = slot.buffer.substr(0, nl);
      slot.buffer.erase(0, nl + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Status(StatusCode::kDeadlineExceeded, who(index, slot) + ": no reply within " + std::to_string(timeout_s) + " s");
    pollfd p{slot.fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Internal(who(index, slot) + ": poll: " + std::strerror(errno));
    if (r == 0) continue;
    const ssize_t n = ::recv(slot.fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // Give an exiting worker a moment to become reapable, so the message says how it ended.
      std::string how = "closed its output";
      for (int i = 0; i < 100; ++i) {
        int status = 0;
        if (::waitpid(slot.pid, &status, WNOHANG) == slot.pid) {
          how = exit_text(status);
          break;
        }
        ::usleep(10000);
      }
      const std::string what = who(index, slot);
      if (how != "closed its output") slot.pid = -1;  // reaped
      return Unavailable(what + " " + how);
    }
    slot.buffer.append(buf, static_cast<size_t>(n));
  }
}

Result<std::string> JsonLineWorkerPool::exchange(int index, Slot& slot, const std::string& line) {
  if (!alive(slot)) {
    MARIANA_RETURN_IF_ERROR(spawn(index, slot));
    count_restart();
  }
  for (size_t off = 0; off < line.size();) {
    const ssize_t n = ::send(slot.fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Unavailable(who(index, slot) + ": cannot send the request: " + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  Result<std::string> reply = read_line(index, slot, options_.timeout_s);
  if (!reply.ok()) stop(slot);  // dead or stuck: the next exchange starts a fresh one
  return reply;
}

void JsonLineWorkerPool::count_restart() {
  std::lock_guard<std::mutex> lock(mu_);
  ++restarts_;
}

Result<nlohmann::json> JsonLineWorkerPool::call(const nlohmann::json& request) {
  int index;
  {
    std::unique_lock<std::mutex> lock(mu_);
    free_cv_.wait(lock, [&] { return !free_.empty(); });
    index = free_.back();
    free_.pop_back();
  }
  Slot& slot = slots_[static_cast<size_t>(index)];
  const std::string line = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  Result<std::string> reply = exchange(index, slot, line);
  // A worker that died (killed from outside, or crashed on this request) gets one fresh retry.
  if (!reply.ok() && reply.status().code() == StatusCode::kUnavailable) reply = exchange(index, slot, line);
  // Leave a working process behind for the next call when possible (its error is reported then).
  if (!alive(slot) && spawn(index, slot).ok()) count_restart();
  {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(index);
  }
  free_cv_.notify_one();
  if (!reply.ok()) return reply.status();
  nlohmann::json out = nlohmann::json::parse(*reply, nullptr, /*allow_exceptions=*/false);
  if (out.is_discarded())
    return Internal(options_.name + " worker " + std::to_string(index) + ": reply is not JSON: '" +
                    reply->substr(0, 200) + "'");
  return out;
}

std::vector<pid_t> JsonLineWorkerPool::pids() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<pid_t> out;
  for (const Slot& s : slots_) out.push_back(s.pid);
  return out;
}

int64_t JsonLineWorkerPool::restarts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return restarts_;
}

}  // namespace mariana::rl
