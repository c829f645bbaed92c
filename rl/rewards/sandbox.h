// The code-reward sandbox: runs one untrusted Python 3 program on one stdin and returns what it
// printed and how it ended. Isolation, in the order the child sets it up (rl/rewards/README.md
// has the full story and what each layer blocks):
//   own process group (killed as a whole) → user namespace (when not root) → network namespace →
//   mount namespace with every mount read-only except the fresh temp dir → Landlock (writes only
//   beneath the temp dir; TCP bind/connect denied on ABI >= 4) → rlimits (CPU, address space, file
//   size, open files, processes) → cwd = temp dir → a dedicated unprivileged uid (when root) →
//   seccomp (libseccomp): no sockets (socketpair(AF_UNIX) only), no setsid/setpgid, no namespaces, mounts,
//   ptrace, io_uring, bpf, ...
// Fails closed: without network isolation (netns or the seccomp socket filter) or without
// filesystem isolation (read-only mounts or Landlock) the program is not run and run() returns
// Unavailable. Not a defence against kernel exploits, nor does it hide world-readable files.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace mariana::rl {

// Isolation layers, as bits of SandboxRun::isolation.
enum SandboxIsolation : uint32_t {
  kIsoUserNs = 1u << 0,       // a user namespace (unprivileged path)
  kIsoNetNs = 1u << 1,        // a network namespace: no interfaces but a down loopback
  kIsoMountReadOnly = 1u << 2,  // a mount namespace where everything but the temp dir is read-only
  kIsoLandlockFs = 1u << 3,   // Landlock: writes only beneath the temp dir
  kIsoLandlockNet = 1u << 4,  // Landlock: no TCP bind/connect
  kIsoSeccomp = 1u << 5,      // the seccomp filter
  kIsoUidDrop = 1u << 6,      // runs as an unprivileged uid (root only)
  kIsoPrivateUid = 1u << 7,   // ... one no other sandbox uses at the same time (RLIMIT_NPROC is per uid)
  kIsoPidNs = 1u << 8,        // the program is pid 1 of a PID namespace: its exit kills and reaps all descendants
};
// "netns,mount-ro,landlock-fs,seccomp,uid"-style list of the bits set.
std::string sandbox_isolation_describe(uint32_t bits);

struct SandboxOptions {
  std::string python = "/usr/bin/python3";  // run as `python -I -B main.py`; must be readable by the sandbox uid
  double timeout_s = 2.0;          // wall clock; the process group is SIGKILLed past it
  int64_t memory_mb = 512;         // RLIMIT_AS
  int64_t file_size_mb = 16;       // RLIMIT_FSIZE
  int64_t max_open_files = 64;     // RLIMIT_NOFILE
  int64_t max_processes = 32;      // RLIMIT_NPROC (per uid: see kIsoPrivateUid)
  int64_t max_output_bytes = 1 << 20;  // stdout and stderr each; the run is killed past it
  // Pool of uids for sandboxed programs when running as root: [uid_base, uid_base + uid_count),
  // one per concurrent run (claimed with an OFD lock on uid_lock_file). Falls back to `nobody`
  // if the pool uid cannot be set (a user namespace that does not map it).
  uint32_t uid_base = 3'000'000'000u;
  uint32_t uid_count = 64;
  std::string uid_lock_file = "/tmp/mariana-sandbox-uids.lock";
  // Layers to try. All on in the product; tests switch some off to check that each remaining
  // layer blocks on its own, and that the sandbox refuses to run when none is left.
  bool use_user_ns = true;
  bool use_net_ns = true;
  bool use_mount_ns = true;
  bool use_pid_ns = true;
  bool use_landlock = true;
  bool use_seccomp = true;
};

struct SandboxRun {
  int exit_code = -1;       // when it exited
  int signal = 0;           // when a signal ended it (SIGKILL after a timeout too)
  bool timed_out = false;   // the wall clock ran out and the group was killed
  bool output_limit = false;  // stdout or stderr passed max_output_bytes and the group was killed
  std::string out, err;     // capped at max_output_bytes each
  double wall_s = 0;
  uint32_t isolation = 0;   // SandboxIsolation bits that were in force
  int64_t uid = -1;         // the uid the program ran as
};

class Sandbox {
 public:
  // Builds the seccomp program once and checks the interpreter. InvalidArgument for bad limits,
  // NotFound for a missing interpreter, Unavailable when seccomp is wanted and cannot be built.
  static Result<Sandbox> create(SandboxOptions options);

  // Runs `program` (Python source) with `stdin_text` on its stdin in a fresh temp dir that is
  // removed afterwards. Unavailable when isolation cannot be set up (nothing was run then);
  // Internal/ResourceExhausted for local failures (fork, pipes, uid pool exhausted).
  Result<SandboxRun> run_python(const std::string& program, const std::string& stdin_text) const;

  const SandboxOptions& options() const { return options_; }

 private:
  Sandbox(SandboxOptions options, std::vector<uint8_t> bpf) : options_(std::move(options)), bpf_(std::move(bpf)) {}
  SandboxOptions options_;
  std::vector<uint8_t> bpf_;  // struct sock_filter[], exported by libseccomp; empty if !use_seccomp
};

}  // namespace mariana::rl
