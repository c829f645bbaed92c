// The code-reward sandbox: runs one untrusted Python 3 program on one stdin and returns what it
// printed and how it ended. Isolation, in the order the child sets it up (rl/rewards/README.md
// has the full story and what each layer blocks):
//   own process group (killed as a whole) → user namespace (when not root) → network namespace →
//   mount namespace: the work dir a size-limited tmpfs (disk_mb), every other mount read-only →
//   a cgroup leaf per run (memory_mb with no swap, max_processes; v2 or v1) → Landlock (writes only
//   beneath the work dir; TCP bind/connect denied on ABI >= 4) → rlimits (CPU, address space, file
//   size, open files, processes) → cwd = work dir → a dedicated unprivileged uid (when root) →
//   seccomp (libseccomp): no sockets (socketpair(AF_UNIX) only), no setsid/setpgid, no namespaces,
//   mounts, ptrace, io_uring, bpf, ...; without a cgroup also no fork, memfd or SysV shm.
// Fails closed: the program is not run and run() returns Unavailable without network isolation
// (netns or the seccomp socket filter), without filesystem isolation (read-only mounts or
// Landlock), without a disk bound (the tmpfs work dir) or without a memory bound (the cgroup leaf,
// or else the single-process seccomp fallback). Not a defence against kernel exploits, nor does it
// hide world-readable files.
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
  kIsoCgroup = 1u << 9,       // a cgroup leaf of its own: memory (no swap) and task count bound the whole run
  kIsoTmpfs = 1u << 10,       // the work dir is a tmpfs of disk_mb: writes past it fail with ENOSPC
  kIsoSingleProcess = 1u << 11,  // no cgroup: seccomp refuses fork, memfd_create and SysV shm instead
};
// "netns,mount-ro,landlock-fs,seccomp,uid"-style list of the bits set.
std::string sandbox_isolation_describe(uint32_t bits);

struct SandboxOptions {
  std::string python = "/usr/bin/python3";  // run as `python -I -B main.py`; must be readable by the sandbox uid
  double timeout_s = 2.0;          // wall clock; the process group is SIGKILLed past it
  int64_t memory_mb = 512;         // the cgroup's memory limit (no swap), and RLIMIT_AS per process
  int64_t disk_mb = 64;            // size of the tmpfs work dir (its pages count as memory too)
  int64_t file_size_mb = 16;       // RLIMIT_FSIZE
  int64_t max_open_files = 64;     // RLIMIT_NOFILE
  int64_t max_processes = 32;      // the cgroup's task limit (threads count); RLIMIT_NPROC without one
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
  bool use_read_only_mounts = true;  // within the mount namespace, which also holds the tmpfs work dir
  bool use_cgroup = true;  // off: the single-process fallback bounds memory (it needs use_seccomp)
};

// Where a run's cgroup leaves go: one parent per hierarchy (cgroup v2: one dir with the memory and
// pids controllers; v1: the memory and the pids hierarchy), found from /proc/self/{cgroup,mountinfo}
// as the caller's own cgroup. Empty when the host offers none we can write to.
struct SandboxCgroups {
  bool v2 = false;
  std::string memory_parent, pids_parent;  // equal under v2
  std::string reason;                      // why there is none, for error messages
  bool usable() const { return !memory_parent.empty() && !pids_parent.empty(); }
};
// Looks the parents up and checks that a child cgroup can be made under each.
SandboxCgroups sandbox_cgroups_detect();

struct SandboxRun {
  int exit_code = -1;       // when it exited
  int signal = 0;           // when a signal ended it (SIGKILL after a timeout too)
  bool timed_out = false;   // the wall clock ran out and the group was killed
  bool output_limit = false;  // stdout or stderr passed max_output_bytes and the group was killed
  bool memory_limit = false;  // the cgroup's OOM killer fired (memory_mb reached)
  bool process_limit = false;  // a fork was refused by the cgroup's task limit
  std::string out, err;     // capped at max_output_bytes each
  double wall_s = 0;
  uint32_t isolation = 0;   // SandboxIsolation bits that were in force
  int64_t uid = -1;         // the uid the program ran as
  std::vector<std::string> cgroup_dirs;  // the leaves it ran in (already removed when run() returns)
};

class Sandbox {
 public:
  // Builds the seccomp programs once, finds the cgroup parents and checks the interpreter.
  // InvalidArgument for bad limits, NotFound for a missing interpreter, Unavailable when seccomp is
  // wanted and cannot be built.
  static Result<Sandbox> create(SandboxOptions options);

  // Runs `program` (Python source) with `stdin_text` on its stdin in a fresh temp dir that is
  // removed afterwards. Unavailable when isolation cannot be set up (nothing was run then);
  // Internal/ResourceExhausted for local failures (fork, pipes, uid pool exhausted).
  Result<SandboxRun> run_python(const std::string& program, const std::string& stdin_text) const;

  const SandboxOptions& options() const { return options_; }

 private:
  Sandbox(SandboxOptions options, std::vector<uint8_t> bpf, std::vector<uint8_t> bpf_single, SandboxCgroups cgroups)
      : options_(std::move(options)), bpf_(std::move(bpf)), bpf_single_(std::move(bpf_single)),
        cgroups_(std::move(cgroups)) {}
  SandboxOptions options_;
  // struct sock_filter[], exported by libseccomp; empty if !use_seccomp. bpf_single_ adds the
  // single-process rules used when no cgroup leaf could be made.
  std::vector<uint8_t> bpf_, bpf_single_;
  SandboxCgroups cgroups_;
};

}  // namespace mariana::rl
