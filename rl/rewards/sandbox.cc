// The sandbox's two halves: the parent (prepares everything that allocates — temp dir, seccomp
// program, argv/env, uid — then forks, watches the pipes and the clock, kills the process group)
// and the child (between fork and exec: only system calls, no allocation, since the parent may be
// multithreaded). See sandbox.h for the layers and rl/rewards/README.md for what each one blocks.
#include "rl/rewards/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "core/file_util.h"

namespace mariana::rl {
namespace {

// ---- Kernel interfaces glibc 2.36 does not wrap (or wraps under names that clash) ----
constexpr long kSysMountSetattr = 442;
constexpr long kSysLandlockCreateRuleset = 444;
constexpr long kSysLandlockAddRule = 445;
constexpr long kSysLandlockRestrictSelf = 446;
constexpr long kSysPidfdOpen = 434;

struct MountAttr {  // struct mount_attr
  uint64_t attr_set, attr_clr, propagation, userns_fd;
};
constexpr uint64_t kMountAttrRdonly = 0x1;
constexpr uint64_t kMountAttrNosuid = 0x2;
constexpr unsigned kAtRecursive = 0x8000;

struct LandlockRulesetAttr {  // struct landlock_ruleset_attr (ABI 4 layout; 8 bytes before ABI 4)
  uint64_t handled_access_fs, handled_access_net;
};
struct __attribute__((packed)) LandlockPathBeneath {  // struct landlock_path_beneath_attr
  uint64_t allowed_access;
  int32_t parent_fd;
};
constexpr uint32_t kLandlockVersion = 1u << 0;
constexpr int kLandlockRulePathBeneath = 1;
constexpr uint64_t kLlWriteFile = 1ull << 1;
// ABI 1 write-side rights: write file, remove dir/file, make char/dir/reg/sock/fifo/block/sym.
constexpr uint64_t kLlWritesAbi1 = kLlWriteFile | (1ull << 4) | (1ull << 5) | (1ull << 6) | (1ull << 7) |
                                   (1ull << 8) | (1ull << 9) | (1ull << 10) | (1ull << 11) | (1ull << 12);
constexpr uint64_t kLlRefer = 1ull << 13;     // ABI 2
constexpr uint64_t kLlTruncate = 1ull << 14;  // ABI 3
constexpr uint64_t kLlNetBindTcp = 1ull << 0, kLlNetConnectTcp = 1ull << 1;  // ABI 4

// ---- What the child tells the parent through the close-on-exec report pipe ----
enum ChildStep : int32_t {
  kStepFds = 1, kStepSetpgid, kStepUserNs, kStepMounts, kStepNoNewPrivs, kStepLandlock, kStepRlimit,
  kStepChdir, kStepUid, kStepSeccomp, kStepExec, kStepFork, kStepTmpfs, kStepCgroup, kRefuseFs, kRefuseNet,
  kRefuseDisk, kRefuseMemory,
};
const char* child_step_name(int32_t step) {
  switch (step) {
    case kStepFds: return "moving file descriptors";
    case kStepSetpgid: return "setpgid";
    case kStepUserNs: return "user namespace uid/gid maps";
    case kStepMounts: return "read-only mounts";
    case kStepNoNewPrivs: return "PR_SET_NO_NEW_PRIVS";
    case kStepLandlock: return "Landlock ruleset";
    case kStepRlimit: return "setrlimit";
    case kStepChdir: return "chdir to the temp dir";
    case kStepUid: return "switching to the sandbox uid";
    case kStepSeccomp: return "loading the seccomp filter";
    case kStepExec: return "execve of the interpreter";
    case kStepFork: return "fork of the program";
    case kStepTmpfs: return "tmpfs work dir";
    case kStepCgroup: return "joining the cgroup leaf";
    case kRefuseFs: return "no filesystem isolation (no mount namespace and no Landlock)";
    case kRefuseNet: return "no network isolation (no network namespace and no seccomp filter)";
    case kRefuseDisk: return "no disk bound (no mount namespace for the tmpfs work dir)";
    case kRefuseMemory: return "no memory bound (no cgroup leaf and no single-process seccomp filter)";
    default: return "unknown step";
  }
}
enum ChildReportKind : int32_t { kReportReady = 1, kReportError = 2, kReportRefused = 3 };
struct ChildReport {
  int32_t kind = 0;
  int32_t step = 0;
  int32_t err = 0;
  uint32_t isolation = 0;
  int64_t uid = -1;
};

// Everything the child needs, prepared by the parent so that the child never allocates.
struct ChildPlan {
  const SandboxOptions* opt;
  const char* python;
  char* const* argv;
  char* const* envp;
  const char* tmp;
  const char* main_py;     // tmp + "/main.py", copied into the tmpfs work dir
  const char* tmpfs_opts;  // "size=...m,mode=0700,uid=...,gid=..."
  int cg_fds[2];           // cgroup.procs of the run's leaves, written by the program to join them
  int n_cg;
  bool single_process;     // the seccomp program is the single-process fallback
  int stdin_fd, out_w, err_w, report_w;
  int ctl_r, status_w;  // control pipe from the parent, wait-status pipe to the parent
  pid_t parent;
  bool root;
  uid_t pool_uid;     // root: the claimed uid (or the fallback when no pool)
  bool have_pool;
  uid_t nobody_uid;
  gid_t nobody_gid;
  const char* uid_map;  // unprivileged: "<euid> <euid> 1\n"
  const char* gid_map;
  const sock_fprog* seccomp;  // null when !use_seccomp
};

bool write_small(const char* path, const char* text) {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const size_t n = std::strlen(text);
  const bool ok = ::write(fd, text, n) == static_cast<ssize_t>(n);
  ::close(fd);
  return ok;
}

bool set_limit(int resource, rlim_t soft, rlim_t hard) {
  struct rlimit rl;
  rl.rlim_cur = soft;
  rl.rlim_max = hard;
  return ::setrlimit(resource, &rl) == 0;
}

// Closes every descriptor from 3 up except those in keep[0..n).
void close_all_except(int* keep, int n) {
  std::sort(keep, keep + n);
  unsigned from = 3;
  for (int i = 0; i <= n; ++i) {
    const unsigned to = i < n ? static_cast<unsigned>(keep[i]) : ~0u;
    if (i < n && keep[i] < 3) continue;
    if (to > from && ::syscall(SYS_close_range, from, i < n ? to - 1 : to, 0u) != 0)
      for (unsigned fd = from; fd < std::min(to, 4096u); ++fd) ::close(static_cast<int>(fd));
    if (i < n) from = to + 1;
  }
}

// Copies the rest of `src` to `dst`; false (errno set) on failure.
bool copy_fd(int src, int dst) {
  ssize_t n;
  while ((n = ::sendfile(dst, src, nullptr, 1 << 20)) > 0) {
  }
  return n == 0;
}

// The program's process: the per-process layers, then execve of the interpreter.
[[noreturn]] void program_main(const ChildPlan& p, ChildReport rep, int in, int out, int err, int report_fd) {
  auto send = [&](int32_t kind, int32_t step, int32_t e) {
    rep.kind = kind;
    rep.step = step;
    rep.err = e;
    [[maybe_unused]] ssize_t w = ::write(report_fd, &rep, sizeof(rep));
  };
  auto fail = [&](int32_t step, int32_t e) {
    send(kReportError, step, e);
    ::_exit(127);
  };
  if (::setpgid(0, 0) != 0) fail(kStepSetpgid, errno);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // the reaper is gone: so are we
  for (int i = 0; i < p.n_cg; ++i) {  // "0": the writing process (the reaper stays outside)
    if (::write(p.cg_fds[i], "0", 1) != 1) fail(kStepCgroup, errno);
    ::close(p.cg_fds[i]);
  }
  if (p.n_cg > 0) rep.isolation |= kIsoCgroup;
  const SandboxOptions& o = *p.opt;
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(kStepNoNewPrivs, errno);

  if (o.use_landlock) {
    const long abi = ::syscall(kSysLandlockCreateRuleset, nullptr, 0, kLandlockVersion);
    if (abi >= 1) {
      uint64_t fs = kLlWritesAbi1 | (abi >= 2 ? kLlRefer : 0) | (abi >= 3 ? kLlTruncate : 0);
      LandlockRulesetAttr attr{fs, abi >= 4 ? (kLlNetBindTcp | kLlNetConnectTcp) : 0};
      const size_t attr_size = abi >= 4 ? sizeof(attr) : sizeof(uint64_t);
      const int rs = static_cast<int>(::syscall(kSysLandlockCreateRuleset, &attr, attr_size, 0));
      if (rs < 0) fail(kStepLandlock, errno);
      const int dir = ::open(p.tmp, O_PATH | O_CLOEXEC);
      const int null = ::open("/dev/null", O_PATH | O_CLOEXEC);
      if (dir < 0 || null < 0) fail(kStepLandlock, errno);
      LandlockPathBeneath in_tmp{fs, dir};
      LandlockPathBeneath dev_null{kLlWriteFile | (abi >= 3 ? kLlTruncate : 0), null};
      if (::syscall(kSysLandlockAddRule, rs, kLandlockRulePathBeneath, &in_tmp, 0) != 0 ||
          ::syscall(kSysLandlockAddRule, rs, kLandlockRulePathBeneath, &dev_null, 0) != 0 ||
          ::syscall(kSysLandlockRestrictSelf, rs, 0) != 0)
        fail(kStepLandlock, errno);
      ::close(dir);
      ::close(null);
      ::close(rs);
      rep.isolation |= kIsoLandlockFs | (abi >= 4 ? uint32_t{kIsoLandlockNet} : 0u);
    }
  }
  if (!(rep.isolation & (kIsoMountReadOnly | kIsoLandlockFs))) {
    send(kReportRefused, kRefuseFs, 0);
    ::_exit(127);
  }

  const rlim_t cpu = static_cast<rlim_t>(std::ceil(o.timeout_s)) + 1;
  const rlim_t mb = 1024 * 1024;
  if (!set_limit(RLIMIT_CPU, cpu, cpu + 1) ||
      !set_limit(RLIMIT_AS, static_cast<rlim_t>(o.memory_mb) * mb, static_cast<rlim_t>(o.memory_mb) * mb) ||
      !set_limit(RLIMIT_FSIZE, static_cast<rlim_t>(o.file_size_mb) * mb, static_cast<rlim_t>(o.file_size_mb) * mb) ||
      !set_limit(RLIMIT_NOFILE, static_cast<rlim_t>(o.max_open_files), static_cast<rlim_t>(o.max_open_files)) ||
      // Per uid, so only without the cgroup's per-run task limit (which it would pre-empt).
      (!(rep.isolation & kIsoCgroup) &&
       !set_limit(RLIMIT_NPROC, static_cast<rlim_t>(o.max_processes), static_cast<rlim_t>(o.max_processes))) ||
      !set_limit(RLIMIT_CORE, 0, 0))
    fail(kStepRlimit, errno);
  if (::chdir(p.tmp) != 0) fail(kStepChdir, errno);

  rep.uid = static_cast<int64_t>(::getuid());
  if (p.root) {
    if (::setgroups(0, nullptr) != 0) fail(kStepUid, errno);
    bool pool = p.have_pool;
    if (pool && (::setresgid(p.pool_uid, p.pool_uid, p.pool_uid) != 0 ||
                 ::setresuid(p.pool_uid, p.pool_uid, p.pool_uid) != 0))
      pool = false;  // e.g. EINVAL: a user namespace that does not map the pool uid
    if (!pool && (::setresgid(p.nobody_gid, p.nobody_gid, p.nobody_gid) != 0 ||
                  ::setresuid(p.nobody_uid, p.nobody_uid, p.nobody_uid) != 0))
      fail(kStepUid, errno);
    rep.uid = pool ? p.pool_uid : p.nobody_uid;
    rep.isolation |= kIsoUidDrop | (pool ? uint32_t{kIsoPrivateUid} : 0u);
  }
  if (p.seccomp) {
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p.seccomp) != 0) fail(kStepSeccomp, errno);
    rep.isolation |= kIsoSeccomp | (p.single_process ? uint32_t{kIsoSingleProcess} : 0u);
  }
  if (!(rep.isolation & (kIsoNetNs | kIsoSeccomp))) {
    send(kReportRefused, kRefuseNet, 0);
    ::_exit(127);
  }
  if (!(rep.isolation & (kIsoCgroup | kIsoSingleProcess))) {
    send(kReportRefused, kRefuseMemory, 0);
    ::_exit(127);
  }

  if (::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0 || ::dup3(report_fd, 3, O_CLOEXEC) < 0)
    fail(kStepFds, errno);
  report_fd = 3;
  int keep[] = {3};
  close_all_except(keep, 1);
  send(kReportReady, 0, 0);
  ::execve(p.python, p.argv, p.envp);
  fail(kStepExec, errno);
  ::_exit(127);  // not reached
}

// The reaper between the parent and the program: sets up the namespaces, forks the program (pid 1
// of a new PID namespace when the host allows, so that its exit takes every descendant with it),
// kills the program's process group when the parent closes the control pipe, reaps the program and
// writes its wait status to the status pipe.
[[noreturn]] void child_main(const ChildPlan& p) {
  ChildReport rep;
  int report_fd = p.report_w;
  auto finish = [&](int32_t kind, int32_t step, int32_t err) {
    rep.kind = kind;
    rep.step = step;
    rep.err = err;
    [[maybe_unused]] ssize_t w = ::write(report_fd, &rep, sizeof(rep));
    ::_exit(127);
  };
  auto fail = [&](int32_t step, int32_t err) { finish(kReportError, step, err); };
  // Lift the program's descriptors above 9 so that dup2 onto 0..3 cannot clobber one of them, and
  // drop everything else this process inherited (other runs' pipes, in a multithreaded scorer).
  const int in = ::fcntl(p.stdin_fd, F_DUPFD_CLOEXEC, 10);
  const int out = ::fcntl(p.out_w, F_DUPFD_CLOEXEC, 10);
  const int err = ::fcntl(p.err_w, F_DUPFD_CLOEXEC, 10);
  const int rfd = ::fcntl(p.report_w, F_DUPFD_CLOEXEC, 10);
  if (in < 0 || out < 0 || err < 0 || rfd < 0) fail(kStepFds, errno);
  report_fd = rfd;
  int keep[] = {in, out, err, rfd, p.ctl_r, p.status_w, p.cg_fds[0], p.cg_fds[1]};
  close_all_except(keep, 6 + p.n_cg);

  if (::setpgid(0, 0) != 0) fail(kStepSetpgid, errno);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != p.parent) ::_exit(127);

  const SandboxOptions& o = *p.opt;
  bool caps = p.root;  // able to create namespaces and mount
  if (!p.root && o.use_user_ns && ::unshare(CLONE_NEWUSER) == 0) {
    if (!write_small("/proc/self/setgroups", "deny") || !write_small("/proc/self/uid_map", p.uid_map) ||
        !write_small("/proc/self/gid_map", p.gid_map))
      fail(kStepUserNs, errno);
    rep.isolation |= kIsoUserNs;
    caps = true;
  }
  if (caps && o.use_net_ns && ::unshare(CLONE_NEWNET) == 0) rep.isolation |= kIsoNetNs;
  if (caps && o.use_mount_ns && ::unshare(CLONE_NEWNS) == 0) {
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) fail(kStepMounts, errno);
    // The work dir becomes a tmpfs of disk_mb (gone with the namespace) holding a copy of main.py.
    const int src = ::open(p.main_py, O_RDONLY | O_CLOEXEC);
    if (src < 0 || ::mount("mariana-sandbox", p.tmp, "tmpfs", MS_NOSUID | MS_NODEV, p.tmpfs_opts) != 0)
      fail(kStepTmpfs, errno);
    const int dst = ::open(p.main_py, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (dst < 0 || !copy_fd(src, dst)) fail(kStepTmpfs, errno);
    ::close(src);
    ::close(dst);
    rep.isolation |= kIsoTmpfs;
    MountAttr ro{kMountAttrRdonly | kMountAttrNosuid, 0, 0, 0};
    if (o.use_read_only_mounts && ::syscall(kSysMountSetattr, AT_FDCWD, "/", kAtRecursive, &ro, sizeof(ro)) == 0) {
      MountAttr rw{0, kMountAttrRdonly, 0, 0};
      if (::syscall(kSysMountSetattr, AT_FDCWD, p.tmp, 0u, &rw, sizeof(rw)) != 0) fail(kStepMounts, errno);
      rep.isolation |= kIsoMountReadOnly;
    }
  }
  if (!(rep.isolation & kIsoTmpfs)) finish(kReportRefused, kRefuseDisk, 0);
  if (caps && o.use_pid_ns && ::unshare(CLONE_NEWPID) == 0) rep.isolation |= kIsoPidNs;

  const pid_t prog = ::fork();
  if (prog < 0) fail(kStepFork, errno);
  if (prog == 0) program_main(p, rep, in, out, err, rfd);
  ::close(in);
  ::close(out);
  ::close(err);
  ::close(rfd);

  // Supervise: the program exits, or the parent closes the control pipe (timeout, output limit,
  // or the parent died) and the program's group is killed.
  const int pidfd = static_cast<int>(::syscall(kSysPidfdOpen, prog, 0));
  bool killed = false;
  for (;;) {
    pollfd fds[2] = {{killed ? -1 : p.ctl_r, POLLIN, 0}, {pidfd, POLLIN, 0}};
    const int rc = ::poll(fds, 2, pidfd < 0 ? 10 : -1);
    if (rc > 0 && !killed && fds[0].revents != 0) {
      ::kill(-prog, SIGKILL);
      killed = true;
    }
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(prog), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == prog) break;
  }
  // The program is at most a zombie, so its group id cannot have been reused: kill what is left of
  // the group (only needed without a PID namespace), then reap.
  ::kill(-prog, SIGKILL);
  int status = 0;
  while (::waitpid(prog, &status, 0) < 0 && errno == EINTR) {
  }
  [[maybe_unused]] ssize_t w = ::write(p.status_w, &status, sizeof(status));
  ::_exit(0);
}

// ---- Parent-side helpers ----

// The seccomp program as raw struct sock_filter[] bytes, exported by libseccomp. `single_process`
// adds the fallback memory bound for runs without a cgroup leaf: no new processes (threads only),
// no memfd, no SysV shared memory, so that RLIMIT_AS of the one process bounds what it holds.
Result<std::vector<uint8_t>> build_seccomp_program(bool single_process) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return Unavailable("seccomp: seccomp_init failed");
  struct Releaser {
    scmp_filter_ctx c;
    ~Releaser() { seccomp_release(c); }
  } releaser{ctx};
  auto rule = [&](const char* name, uint32_t action, unsigned n, const scmp_arg_cmp* cmp) -> Status {
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return Status::Ok();  // not on this architecture
    const int rc = seccomp_rule_add_array(ctx, action, nr, n, cmp);
    if (rc < 0) return Unavailable(std::string("seccomp: rule for ") + name + ": " + std::strerror(-rc));
    return Status::Ok();
  };
  const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
  // Network: no socket of any family. AF_UNIX gets EACCES: neither the network namespace nor
  // Landlock covers a Unix socket file on the host (Python needs none; socketpair(AF_UNIX), which
  // reaches nothing outside, stays for multiprocessing).
  const scmp_arg_cmp is_unix = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);
  const scmp_arg_cmp not_unix = SCMP_A0(SCMP_CMP_NE, AF_UNIX);
  MARIANA_RETURN_IF_ERROR(rule("socket", SCMP_ACT_ERRNO(EACCES), 1, &is_unix));
  MARIANA_RETURN_IF_ERROR(rule("socket", eperm, 1, &not_unix));
  MARIANA_RETURN_IF_ERROR(rule("socketpair", eperm, 1, &not_unix));
  // Leaving the process group (the timeout kills the group), namespaces, mounts, tracing, kernel
  // interfaces a program has no business with. io_uring would bypass the socket rule.
  for (const char* name :
       {"setsid", "setpgid", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
        "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick", "ptrace", "process_vm_readv",
        "process_vm_writev", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "io_uring_setup",
        "io_uring_enter", "io_uring_register", "userfaultfd", "kexec_load", "kexec_file_load", "init_module",
        "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "settimeofday",
        "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "syslog",
        "name_to_handle_at", "open_by_handle_at", "lookup_dcookie", "vhangup"})
    MARIANA_RETURN_IF_ERROR(rule(name, eperm, 0, nullptr));
  // clone with a namespace flag: refused. clone3 hides its flags in memory, so it reports ENOSYS
  // and glibc falls back to clone.
  for (uint64_t flag : {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
                        CLONE_NEWCGROUP}) {
    const scmp_arg_cmp has_flag = SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag);
    MARIANA_RETURN_IF_ERROR(rule("clone", eperm, 1, &has_flag));
  }
  MARIANA_RETURN_IF_ERROR(rule("clone3", SCMP_ACT_ERRNO(ENOSYS), 0, nullptr));
  if (single_process) {
    const scmp_arg_cmp not_thread = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0);
    MARIANA_RETURN_IF_ERROR(rule("clone", eperm, 1, &not_thread));
    for (const char* name : {"fork", "vfork", "memfd_create", "memfd_secret", "shmget"})
      MARIANA_RETURN_IF_ERROR(rule(name, eperm, 0, nullptr));
  }

  const int fd = ::memfd_create("mariana-seccomp", MFD_CLOEXEC);
  if (fd < 0) return errno_status(errno, "seccomp: memfd_create");
  std::vector<uint8_t> bytes;
  const int rc = seccomp_export_bpf(ctx, fd);
  if (rc == 0 && ::lseek(fd, 0, SEEK_SET) == 0) {
    uint8_t buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof(buf))) > 0) bytes.insert(bytes.end(), buf, buf + n);
  }
  ::close(fd);
  if (rc < 0) return Unavailable(std::string("seccomp: export: ") + std::strerror(-rc));
  if (bytes.empty() || bytes.size() % sizeof(sock_filter) != 0)
    return Unavailable("seccomp: exported program has " + std::to_string(bytes.size()) + " bytes");
  return bytes;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(o.fd_), o.fd_ = -1;
    return *this;
  }
  ~Fd() { reset(); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// Kills every process of `uid` (a pool uid only this run holds): a helper that becomes the uid
// and sends SIGKILL to everything it may signal.
void sweep_uid(uid_t uid) {
  const pid_t helper = ::fork();
  if (helper == 0) {
    if (::setresgid(uid, uid, uid) == 0 && ::setresuid(uid, uid, uid) == 0) ::kill(-1, SIGKILL);
    ::_exit(0);
  }
  if (helper > 0)
    while (::waitpid(helper, nullptr, 0) < 0 && errno == EINTR) {
    }
}

// A claimed slot of the uid pool: an OFD write lock on byte `slot` of the lock file, released
// when the descriptor closes (also if this process dies).
struct UidLease {
  Fd fd;
  uid_t uid = 0;
};

Result<UidLease> uid_lease_claim(const SandboxOptions& o) {
  Fd fd(::open(o.uid_lock_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() < 0) return errno_status(errno, "sandbox uid lock " + o.uid_lock_file);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid())
    return Unavailable("sandbox uid lock " + o.uid_lock_file + ": not a regular file owned by us");
  static std::atomic<uint32_t> next{0};
  const uint32_t start = (static_cast<uint32_t>(::getpid()) + next.fetch_add(1)) % o.uid_count;
  for (uint32_t k = 0; k < o.uid_count; ++k) {
    const uint32_t slot = (start + k) % o.uid_count;
    struct flock lk {};
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = slot;
    lk.l_len = 1;
    if (::fcntl(fd.get(), F_OFD_SETLK, &lk) == 0) {
      UidLease lease;
      lease.fd = std::move(fd);
      lease.uid = o.uid_base + slot;
      return lease;
    }
    if (errno != EAGAIN && errno != EACCES) return errno_status(errno, "sandbox uid lock " + o.uid_lock_file);
  }
  return ResourceExhausted("all " + std::to_string(o.uid_count) + " sandbox uids are in use");
}

// A fresh directory removed (with everything the program left in it) on destruction.
class TempDir {
 public:
  static Result<TempDir> create() {
    std::error_code ec;
    std::string tmpl = (std::filesystem::temp_directory_path(ec) / "mariana-sandbox-XXXXXX").string();
    if (ec) tmpl = "/tmp/mariana-sandbox-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return errno_status(errno, "mkdtemp " + tmpl);
    TempDir d;
    d.path_ = tmpl;
    return d;
  }
  TempDir() = default;
  TempDir(TempDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
    if (ec) {  // a directory the program made unwritable: give ourselves the rights back
      for (auto it = std::filesystem::recursive_directory_iterator(
               path_, std::filesystem::directory_options::skip_permission_denied, ec);
           !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
        if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
      ::chmod(path_.c_str(), 0700);
      std::filesystem::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- cgroup leaves ----

// Writes `text` to a cgroup control file (not a regular file: no temp file and rename).
Status cgroup_write(const std::string& path, const std::string& text) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.get() < 0) return errno_status(errno, path);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    return errno_status(errno, "write '" + text + "' to " + path);
  return Status::Ok();
}

// The value of `key` in a "key value" per line control file (memory.events, pids.events, ...); 0
// when absent.
int64_t cgroup_counter(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string k;
  int64_t v;
  while (in >> k >> v)
    if (k == key) return v;
  return 0;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, sep)) out.push_back(item);
  return out;
}

// The directory of this process's cgroup in the hierarchy that has `controller` (cgroup v1), or in
// the unified hierarchy when `controller` is empty; "" if not mounted here.
std::string own_cgroup_dir(const std::string& controller) {
  std::string rel;  // from /proc/self/cgroup: "<id>:<controllers>:<path>"
  {
    std::ifstream in("/proc/self/cgroup");
    std::string line;
    while (std::getline(in, line)) {
      const auto f = split(line, ':');
      if (f.size() < 3) continue;
      const auto ctl = split(f[1], ',');
      if (controller.empty() ? (f[0] == "0" && f[1].empty())
                             : std::find(ctl.begin(), ctl.end(), controller) != ctl.end()) {
        rel = line.substr(f[0].size() + f[1].size() + 2);
        break;
      }
    }
  }
  if (rel.empty()) return "";
  // /proc/self/mountinfo: "id parent dev root mountpoint opts [optional...] - fstype source superopts"
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    const auto f = split(line, ' ');
    const auto dash = std::find(f.begin(), f.end(), "-");
    if (f.size() < 5 || f.end() - dash < 4) continue;
    const std::string& fstype = dash[1];
    const auto opts = split(dash[3], ',');
    const bool match = controller.empty()
                           ? fstype == "cgroup2"
                           : fstype == "cgroup" && std::find(opts.begin(), opts.end(), controller) != opts.end();
    if (!match) continue;
    const std::string& root = f[3];
    if (rel.compare(0, root.size(), root) != 0) continue;  // our cgroup is not visible in this mount
    std::string sub = rel.substr(root == "/" ? 0 : root.size());
    return f[4] + (sub == "/" ? "" : sub);
  }
  return "";
}

bool has_word(const std::string& path, const std::string& word) {
  std::ifstream in(path);
  std::string w;
  while (in >> w)
    if (w == word) return true;
  return false;
}

// Removes the empty leaves that scorers which died left under `dir` ("mariana-sandbox-<pid>-<n>"
// with <pid> gone), then says whether a child cgroup can be made (and removed) there.
bool can_make_child(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const std::string prefix = "mariana-sandbox-";
    if (name.compare(0, prefix.size(), prefix) != 0) continue;
    const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) ::rmdir(e.path().c_str());
  }
  const std::string probe = dir + "/mariana-sandbox-probe-" + std::to_string(::getpid());
  if (::mkdir(probe.c_str(), 0700) != 0 && errno != EEXIST) return false;
  return ::rmdir(probe.c_str()) == 0;
}

// A run's cgroup leaves (one under v2, a memory and a pids one under v1): created with the run's
// limits, joined by the program through the open cgroup.procs descriptors, emptied (SIGKILL) and
// removed on destruction.
class CgroupLeaf {
 public:
  static Result<CgroupLeaf> create(const SandboxCgroups& cg, const SandboxOptions& o) {
    static std::atomic<uint64_t> next{0};
    const std::string name = "/mariana-sandbox-" + std::to_string(::getpid()) + "-" + std::to_string(next++);
    CgroupLeaf leaf;
    leaf.v2_ = cg.v2;
    for (const std::string& parent : cg.v2 ? std::vector{cg.memory_parent} : std::vector{cg.memory_parent, cg.pids_parent}) {
      const std::string dir = parent + name;
      if (::mkdir(dir.c_str(), 0700) != 0) return errno_status(errno, "mkdir " + dir);
      leaf.dirs_.push_back(dir);
    }
    const std::string bytes = std::to_string(o.memory_mb * 1024 * 1024);
    const std::string& mem = leaf.dirs_.front();
    const std::string& pids = leaf.dirs_.back();
    if (cg.v2) {
      MARIANA_RETURN_IF_ERROR(cgroup_write(mem + "/memory.max", bytes));
      if (::access((mem + "/memory.swap.max").c_str(), F_OK) == 0)
        MARIANA_RETURN_IF_ERROR(cgroup_write(mem + "/memory.swap.max", "0"));
      if (::access((mem + "/memory.oom.group").c_str(), F_OK) == 0)
        MARIANA_RETURN_IF_ERROR(cgroup_write(mem + "/memory.oom.group", "1"));
    } else {
      MARIANA_RETURN_IF_ERROR(cgroup_write(mem + "/memory.limit_in_bytes", bytes));
      if (::access((mem + "/memory.memsw.limit_in_bytes").c_str(), F_OK) == 0)  // swap accounting on
        MARIANA_RETURN_IF_ERROR(cgroup_write(mem + "/memory.memsw.limit_in_bytes", bytes));
      else
        MARIANA_RETURN_IF_ERROR(cgroup_write(mem + "/memory.swappiness", "0"));
    }
    MARIANA_RETURN_IF_ERROR(cgroup_write(pids + "/pids.max", std::to_string(o.max_processes)));
    for (const std::string& dir : leaf.dirs_) {
      Fd fd(::open((dir + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC));
      if (fd.get() < 0) return errno_status(errno, dir + "/cgroup.procs");
      leaf.procs_.push_back(std::move(fd));
    }
    return leaf;
  }

  CgroupLeaf() = default;
  CgroupLeaf(CgroupLeaf&&) = default;
  CgroupLeaf& operator=(CgroupLeaf&& o) noexcept {
    remove();
    dirs_ = std::move(o.dirs_);
    procs_ = std::move(o.procs_);
    v2_ = o.v2_;
    o.dirs_.clear();
    return *this;
  }
  ~CgroupLeaf() { remove(); }

  bool active() const { return !dirs_.empty(); }
  int procs_fd(size_t i) const { return i < procs_.size() ? procs_[i].get() : -1; }
  int count() const { return static_cast<int>(procs_.size()); }
  const std::vector<std::string>& dirs() const { return dirs_; }
  bool oom_killed() const {
    return active() && cgroup_counter(dirs_.front() + (v2_ ? "/memory.events" : "/memory.oom_control"), "oom_kill") > 0;
  }
  bool pids_refused() const { return active() && cgroup_counter(dirs_.back() + "/pids.events", "max") > 0; }

  // Kills whatever is left in the leaves and removes them (retrying while the kernel still counts
  // exiting tasks).
  void remove() {
    procs_.clear();
    for (const std::string& dir : dirs_) {
      const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (::rmdir(dir.c_str()) != 0 && errno == EBUSY && std::chrono::steady_clock::now() < limit) {
        std::ifstream in(dir + "/cgroup.procs");
        pid_t pid;
        while (in >> pid) ::kill(pid, SIGKILL);
        ::usleep(2000);
      }
    }
    dirs_.clear();
  }

 private:
  std::vector<std::string> dirs_;
  std::vector<Fd> procs_;
  bool v2_ = false;
};

Status write_all(int fd, const std::string& bytes, const std::string& what) {
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_status(errno, what);
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// Reads what is there from `fd` into `sink` (capped); false on EOF or error.
bool pump(int fd, std::string& sink, int64_t cap, bool& over) {
  char buf[16384];
  const ssize_t n = ::read(fd, buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) return false;
  const int64_t room = cap - static_cast<int64_t>(sink.size());
  if (n > room) over = true;
  sink.append(buf, static_cast<size_t>(std::max<int64_t>(0, std::min<int64_t>(room, n))));
  return true;
}

}  // namespace

SandboxCgroups sandbox_cgroups_detect() {
  SandboxCgroups cg;
  // cgroup v2: our own cgroup must offer memory and pids to its children.
  const std::string unified = own_cgroup_dir("");
  if (!unified.empty() && has_word(unified + "/cgroup.controllers", "memory") &&
      has_word(unified + "/cgroup.controllers", "pids")) {
    if (!has_word(unified + "/cgroup.subtree_control", "memory") || !has_word(unified + "/cgroup.subtree_control", "pids"))
      (void)cgroup_write(unified + "/cgroup.subtree_control", "+memory +pids");  // EBUSY unless a root or empty
    if (has_word(unified + "/cgroup.subtree_control", "memory") && has_word(unified + "/cgroup.subtree_control", "pids") &&
        can_make_child(unified)) {
      cg.v2 = true;
      cg.memory_parent = cg.pids_parent = unified;
      return cg;
    }
  }
  // cgroup v1: the memory and the pids hierarchies.
  const std::string memory = own_cgroup_dir("memory"), pids = own_cgroup_dir("pids");
  if (!memory.empty() && !pids.empty() && can_make_child(memory) && can_make_child(pids)) {
    cg.memory_parent = memory;
    cg.pids_parent = pids;
    return cg;
  }
  cg.reason = "no writable cgroup with the memory and pids controllers (v2: '" +
              (unified.empty() ? std::string("not mounted") : unified) + "', v1 memory: '" +
              (memory.empty() ? std::string("not mounted") : memory) + "', v1 pids: '" +
              (pids.empty() ? std::string("not mounted") : pids) + "')";
  return cg;
}

std::string sandbox_isolation_describe(uint32_t bits) {
  static const std::pair<uint32_t, const char*> kNames[] = {
      {kIsoUserNs, "userns"},        {kIsoNetNs, "netns"},       {kIsoMountReadOnly, "mount-ro"},
      {kIsoLandlockFs, "landlock-fs"}, {kIsoLandlockNet, "landlock-net"}, {kIsoSeccomp, "seccomp"},
      {kIsoPidNs, "pidns"},          {kIsoUidDrop, "uid"},         {kIsoPrivateUid, "private-uid"},
      {kIsoCgroup, "cgroup"},        {kIsoTmpfs, "tmpfs"},         {kIsoSingleProcess, "single-process"}};
  std::string out;
  for (const auto& [bit, name] : kNames)
    if (bits & bit) out += (out.empty() ? "" : ",") + std::string(name);
  return out.empty() ? "none" : out;
}

Result<Sandbox> Sandbox::create(SandboxOptions options) {
  if (!(options.timeout_s > 0) || options.timeout_s > 3600)
    return InvalidArgument("sandbox: timeout_s must be in (0, 3600], got " + std::to_string(options.timeout_s));
  if (options.memory_mb < 16) return InvalidArgument("sandbox: memory_mb must be >= 16");
  if (options.disk_mb < 1) return InvalidArgument("sandbox: disk_mb must be >= 1");
  if (options.file_size_mb < 1 || options.max_open_files < 8 || options.max_processes < 1 ||
      options.max_output_bytes < 1 || options.uid_count < 1)
    return InvalidArgument("sandbox: file_size_mb >= 1, max_open_files >= 8, max_processes >= 1, "
                           "max_output_bytes >= 1 and uid_count >= 1 are required");
  if (::access(options.python.c_str(), X_OK) != 0)
    return NotFound("sandbox: interpreter '" + options.python + "' is not an executable file");
  std::vector<uint8_t> bpf, bpf_single;
  if (options.use_seccomp) {
    MARIANA_ASSIGN_OR_RETURN(bpf, build_seccomp_program(false));
    MARIANA_ASSIGN_OR_RETURN(bpf_single, build_seccomp_program(true));
  }
  SandboxCgroups cgroups;
  if (options.use_cgroup) cgroups = sandbox_cgroups_detect();
  return Sandbox(std::move(options), std::move(bpf), std::move(bpf_single), std::move(cgroups));
}

Result<SandboxRun> Sandbox::run_python(const std::string& program, const std::string& stdin_text) const {
  const SandboxOptions& o = options_;
  const bool root = ::geteuid() == 0;
  const auto t0 = std::chrono::steady_clock::now();

  UidLease lease;
  if (root) {
    MARIANA_ASSIGN_OR_RETURN(lease, uid_lease_claim(o));
    sweep_uid(lease.uid);  // leftovers of a run whose scorer died
  }
  uid_t nobody_uid = 65534;
  gid_t nobody_gid = 65534;
  {
    struct passwd pw, *found = nullptr;
    char buf[1024];
    if (::getpwnam_r("nobody", &pw, buf, sizeof(buf), &found) == 0 && found)
      nobody_uid = pw.pw_uid, nobody_gid = pw.pw_gid;
  }

  MARIANA_ASSIGN_OR_RETURN(TempDir tmp, TempDir::create());
  const std::string main_py = tmp.path() + "/main.py";
  {
    Fd f(::open(main_py.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (f.get() < 0) return errno_status(errno, main_py);
    MARIANA_RETURN_IF_ERROR(write_all(f.get(), program, main_py));
  }
  if (root && (::chown(tmp.path().c_str(), lease.uid, lease.uid) != 0 || ::chmod(tmp.path().c_str(), 0700) != 0))
    return errno_status(errno, "chown " + tmp.path());
  const uid_t owner = root ? lease.uid : ::geteuid();
  const std::string tmpfs_opts = "size=" + std::to_string(o.disk_mb) + "m,nr_inodes=65536,mode=0700,uid=" +
                                 std::to_string(owner) + ",gid=" + std::to_string(root ? lease.uid : ::getegid());

  // The memory bound: a cgroup leaf, or else (no cgroup, or one that cannot be made now) the
  // single-process seccomp program.
  CgroupLeaf leaf;
  if (cgroups_.usable()) {
    auto made = CgroupLeaf::create(cgroups_, o);
    if (made.ok()) leaf = std::move(made).value();
  }
  const std::vector<uint8_t>& bpf = leaf.active() ? bpf_ : bpf_single_;

  Fd stdin_fd(::memfd_create("mariana-stdin", MFD_CLOEXEC));
  if (stdin_fd.get() < 0) return errno_status(errno, "memfd_create");
  MARIANA_RETURN_IF_ERROR(write_all(stdin_fd.get(), stdin_text, "stdin memfd"));
  if (::lseek(stdin_fd.get(), 0, SEEK_SET) != 0) return errno_status(errno, "lseek stdin memfd");
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return errno_status(errno, "pipe");
  Fd out_r(p[0]), out_w(p[1]);
  if (::pipe2(p, O_CLOEXEC) != 0) return errno_status(errno, "pipe");
  Fd err_r(p[0]), err_w(p[1]);
  if (::pipe2(p, O_CLOEXEC) != 0) return errno_status(errno, "pipe");
  Fd rep_r(p[0]), rep_w(p[1]);
  if (::pipe2(p, O_CLOEXEC) != 0) return errno_status(errno, "pipe");
  Fd ctl_r(p[0]), ctl_w(p[1]);
  if (::pipe2(p, O_CLOEXEC) != 0) return errno_status(errno, "pipe");
  Fd status_r(p[0]), status_w(p[1]);

  std::vector<std::string> args = {o.python, "-I", "-B", main_py};
  std::vector<std::string> env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + tmp.path(),
                                  "TMPDIR=" + tmp.path(), "LANG=C.UTF-8", "LC_ALL=C.UTF-8"};
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string uid_map = std::to_string(::geteuid()) + " " + std::to_string(::geteuid()) + " 1\n";
  const std::string gid_map = std::to_string(::getegid()) + " " + std::to_string(::getegid()) + " 1\n";
  sock_fprog prog{};
  prog.len = static_cast<unsigned short>(bpf.size() / sizeof(sock_filter));
  prog.filter = reinterpret_cast<sock_filter*>(const_cast<uint8_t*>(bpf.data()));

  ChildPlan plan{&o, o.python.c_str(), argv.data(), envp.data(), tmp.path().c_str(), main_py.c_str(),
                 tmpfs_opts.c_str(), {leaf.procs_fd(0), leaf.procs_fd(1)}, leaf.count(), !leaf.active(), stdin_fd.get(),
                 out_w.get(), err_w.get(), rep_w.get(), ctl_r.get(), status_w.get(), ::getpid(), root,
                 lease.uid, root, nobody_uid, nobody_gid, uid_map.c_str(), gid_map.c_str(),
                 o.use_seccomp ? &prog : nullptr};
  const pid_t pid = ::fork();
  if (pid < 0) return errno_status(errno, "fork");
  if (pid == 0) child_main(plan);
  stdin_fd.reset();
  out_w.reset();
  err_w.reset();
  rep_w.reset();
  ctl_r.reset();
  status_w.reset();

  // Whatever happens below, the reaper is told to kill the program (closing the control pipe) and
  // is reaped; it is SIGKILLed (taking the program with it through PDEATHSIG) if it does not exit.
  bool reaped = false;
  int reaper_status = 0;
  auto reap = [&]() {
    ctl_w.reset();
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    for (;;) {
      const pid_t w = ::waitpid(pid, &reaper_status, WNOHANG);
      if (w == pid || (w < 0 && errno != EINTR)) break;
      if (std::chrono::steady_clock::now() > limit) {
        ::kill(pid, SIGKILL);
        while (::waitpid(pid, &reaper_status, 0) < 0 && errno == EINTR) {
        }
        break;
      }
      ::usleep(1000);
    }
    reaped = true;
  };
  struct Guard {
    std::function<void()> f;
    ~Guard() { f(); }
  } guard{[&] {
    if (!reaped) reap();
  }};

  // The program's reports: "ready" just before execve, then EOF when execve closes the pipe.
  ChildReport last;
  for (;;) {
    ChildReport r;
    const ssize_t n = ::read(rep_r.get(), &r, sizeof(r));
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof(r))) break;
    last = r;
  }
  if (last.kind != kReportReady) {
    reap();
    if (last.kind == kReportRefused)
      return Unavailable(std::string("sandbox refuses to run code: ") + child_step_name(last.step) +
                         "; isolation that worked: " + sandbox_isolation_describe(last.isolation));
    if (last.kind == kReportError)
      return Unavailable(std::string("sandbox set-up failed at ") + child_step_name(last.step) + ": " +
                         std::strerror(last.err));
    return Internal("sandbox child died before reporting");
  }

  SandboxRun run;
  run.isolation = last.isolation;
  run.uid = last.uid;
  // The reaper exits once the program has exited and been reaped (with a PID namespace, once every
  // descendant has).
  Fd pidfd(static_cast<int>(::syscall(kSysPidfdOpen, pid, 0)));
  auto reaper_exited = [&]() {
    siginfo_t info{};
    return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
  };
  const auto deadline = t0 + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(o.timeout_s));
  bool over = false;
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      run.timed_out = true;
      break;
    }
    int wait_ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()) + 1;
    if (pidfd.get() < 0) wait_ms = std::min(wait_ms, 10);
    pollfd fds[3] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    const int rc = ::poll(fds, 3, wait_ms);
    if (rc < 0 && errno != EINTR) return errno_status(errno, "poll");
    if (rc > 0) {
      if ((fds[0].revents & (POLLIN | POLLHUP)) && !pump(out_r.get(), run.out, o.max_output_bytes, over)) out_r.reset();
      if ((fds[1].revents & (POLLIN | POLLHUP)) && !pump(err_r.get(), run.err, o.max_output_bytes, over)) err_r.reset();
    }
    if (over) {
      run.output_limit = true;
      break;
    }
    if ((pidfd.get() >= 0 && rc > 0 && (fds[2].revents & POLLIN)) || (pidfd.get() < 0 && reaper_exited())) break;
  }
  ctl_w.reset();  // kill the program's group now if it is still running
  // Drain what the program wrote before it died; the pipes close when its last process is gone.
  const auto drain_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while ((out_r.get() >= 0 || err_r.get() >= 0) && std::chrono::steady_clock::now() < drain_deadline) {
    pollfd fds[2] = {{out_r.get(), POLLIN, 0}, {err_r.get(), POLLIN, 0}};
    if (::poll(fds, 2, 50) <= 0) continue;
    bool ignored = false;
    if ((fds[0].revents & (POLLIN | POLLHUP)) && !pump(out_r.get(), run.out, o.max_output_bytes, ignored)) out_r.reset();
    if ((fds[1].revents & (POLLIN | POLLHUP)) && !pump(err_r.get(), run.err, o.max_output_bytes, ignored)) err_r.reset();
  }
  reap();
  int status = 0;
  if (::read(status_r.get(), &status, sizeof(status)) != static_cast<ssize_t>(sizeof(status)))
    status = SIGKILL;  // the reaper itself was killed: report the program as killed
  if (run.isolation & kIsoPrivateUid) sweep_uid(lease.uid);
  run.memory_limit = leaf.oom_killed();
  run.process_limit = leaf.pids_refused();
  run.cgroup_dirs = leaf.dirs();
  leaf.remove();
  if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) run.signal = WTERMSIG(status);
  run.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return run;
}

}  // namespace mariana::rl
