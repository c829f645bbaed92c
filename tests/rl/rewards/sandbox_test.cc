// The code sandbox against hostile programs: an infinite loop, fork bombs, memory bombs (also via
// memfd and forked children), network and Unix-socket connects, writes outside its work dir and
// past its disk limit — each killed or blocked, none leaving a process, a file or a cgroup behind.
// Then each isolation layer alone, and the refusal to run without isolation or without bounds.
#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "rl/rewards/code_scorer.h"
#include "rl/rewards/sandbox.h"

namespace mariana::rl {
namespace {

namespace fs = std::filesystem;

// Programs that end by themselves never wait for the timeout, so it is generous (a loaded 2-core
// machine can take a second to start Python); the tests of the timeout itself use short_timeout().
SandboxOptions quick() {
  SandboxOptions o;
  o.timeout_s = 5;
  o.memory_mb = 256;
  o.max_processes = 16;
  return o;
}

Sandbox make(const SandboxOptions& o) {
  auto s = Sandbox::create(o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return std::move(s).value();
}

SandboxOptions short_timeout() {
  SandboxOptions o = quick();
  o.timeout_s = 1;
  return o;
}

SandboxRun run(const Sandbox& s, const std::string& program, const std::string& stdin_text = "") {
  auto r = s.run_python(program, stdin_text);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? std::move(r).value() : SandboxRun{};
}

std::string classify(const SandboxRun& r, const std::string& expected = "") {
  std::string detail;
  return code_classify(r, expected, detail);
}

// Processes whose real uid is `uid` (only meaningful for a private pool uid).
int processes_of(int64_t uid) {
  int n = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("Uid:", 0) == 0) {
        if (std::stoll(line.substr(4)) == uid) ++n;
        break;
      }
  }
  return n;
}

void expect_no_survivors(const SandboxRun& r) {
  if (r.isolation & kIsoPrivateUid) {
    EXPECT_EQ(processes_of(r.uid), 0) << "uid " << r.uid;
  }
}

std::string escape_path(const std::string& dir) {
  return dir + "/mariana-escape-" + std::to_string(::getpid()) + "-" +
         ::testing::UnitTest::GetInstance()->current_test_info()->name();
}

TEST(Sandbox, RunsAProgramWithItsStdinAndReportsItsIsolation) {
  Sandbox s = make(quick());
  SandboxRun r = run(s, "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n", "1 2 3\n");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "6\n");
  EXPECT_FALSE(r.timed_out);
  // Whatever else the host allows, one network and one filesystem layer are always in force.
  EXPECT_TRUE(r.isolation & (kIsoNetNs | kIsoSeccomp)) << sandbox_isolation_describe(r.isolation);
  EXPECT_TRUE(r.isolation & (kIsoMountReadOnly | kIsoLandlockFs)) << sandbox_isolation_describe(r.isolation);
  if (::geteuid() == 0) {
    EXPECT_TRUE(r.isolation & kIsoUidDrop);
    EXPECT_NE(r.uid, 0);
  }
  std::printf("isolation on this host: %s (uid %lld)\n", sandbox_isolation_describe(r.isolation).c_str(),
              static_cast<long long>(r.uid));
}

TEST(Sandbox, WorksInAFreshTempDirThatIsRemovedAfterwards) {
  Sandbox s = make(quick());
  SandboxRun r = run(s, "import os\nopen('scratch.txt', 'w').write('x' * 10)\nprint(os.getcwd())\n"
                        "print(open('scratch.txt').read())\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string cwd = r.out.substr(0, r.out.find('\n'));
  EXPECT_NE(cwd.find("mariana-sandbox-"), std::string::npos) << cwd;
  EXPECT_NE(r.out.find("xxxxxxxxxx"), std::string::npos);
  EXPECT_FALSE(fs::exists(cwd)) << cwd;
}

TEST(Sandbox, KillsAnInfiniteLoop) {
  Sandbox s = make(short_timeout());
  SandboxRun r = run(s, "while True:\n    pass\n");
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(r.signal, SIGKILL);
  EXPECT_LT(r.wall_s, 2.5);
  EXPECT_EQ(classify(r), "timeout");
  expect_no_survivors(r);
}

TEST(Sandbox, StopsAForkBomb) {
  Sandbox s = make(short_timeout());
  SandboxRun r = run(s, "import os\nwhile True:\n    os.fork()\n");
  EXPECT_NE(r.exit_code, 0);
  const std::string reason = classify(r);
  EXPECT_TRUE(reason == "sandbox violation" || reason == "timeout") << reason << "\n" << r.err.substr(0, 400);
  EXPECT_LT(r.wall_s, 3.5);
  expect_no_survivors(r);
}

TEST(Sandbox, KillsAForkBombThatIgnoresErrorsWithItsWholeGroup) {
  Sandbox s = make(short_timeout());
  SandboxRun r = run(s,
                     "import os, time\n"
                     "while True:\n"
                     "    try:\n        os.fork()\n"
                     "    except OSError:\n        time.sleep(0.01)\n");
  EXPECT_TRUE(r.timed_out);
  EXPECT_EQ(classify(r), "timeout");
  EXPECT_LT(r.wall_s, 3.5);
  expect_no_survivors(r);
}

TEST(Sandbox, KillsChildrenLeftBehindByTheMainProcess) {
  Sandbox s = make(quick());
  SandboxRun r = run(s, "import os, time\nif os.fork() == 0:\n    time.sleep(60)\nprint('bye')\n");
  if (r.isolation & kIsoSingleProcess) GTEST_SKIP() << "no cgroup here: the single-process fallback refuses fork";
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.timed_out);  // the sleeping child did not hold the run open
  expect_no_survivors(r);
}

TEST(Sandbox, StopsAMemoryBomb) {
  Sandbox s = make(quick());
  SandboxRun r = run(s, "a = []\nwhile True:\n    a.append(bytearray(10**7))\n");
  EXPECT_EQ(classify(r), "memory") << r.err.substr(0, 400);
  SandboxRun big = run(s, "x = bytearray(1 << 34)\n");
  EXPECT_EQ(classify(big), "memory") << big.err.substr(0, 400);
}

const char* kConnect =
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
    "s.settimeout(1)\n"
    "s.connect(('1.1.1.1', 80))\n"
    "print('connected')\n";
const char* kConnectLocal =
    "import socket\n"
    "socket.create_connection(('127.0.0.1', 22), timeout=1)\n"
    "print('connected')\n";

TEST(Sandbox, BlocksNetworkConnects) {
  Sandbox s = make(quick());
  for (const char* program : {kConnect, kConnectLocal}) {
    SandboxRun r = run(s, program);
    EXPECT_EQ(r.out.find("connected"), std::string::npos);
    EXPECT_EQ(classify(r), "sandbox violation") << r.err;
  }
}

// A Unix socket the host listens on (mode 0777 in a world-searchable dir, so file permissions do
// not stop a different uid): the program's connect must fail and nothing may arrive.
TEST(Sandbox, BlocksConnectsToHostUnixSockets) {
  const std::string dir = (fs::temp_directory_path() / ("mariana-unix-" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  ::chmod(dir.c_str(), 0755);
  const std::string path = dir + "/host.sock";
  const int server = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(server, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ASSERT_EQ(::bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
  ::chmod(path.c_str(), 0777);
  ASSERT_EQ(::listen(server, 8), 0);

  Sandbox s = make(quick());
  SandboxRun r = run(s,
                     "import socket\n"
                     "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                     "s.connect('" + path + "')\n"
                     "s.sendall(b'escaped')\n"
                     "print('connected')\n");
  pollfd pfd{server, POLLIN, 0};
  const int ready = ::poll(&pfd, 1, 200);
  const int conn = ::accept4(server, nullptr, nullptr, SOCK_CLOEXEC);
  EXPECT_EQ(ready, 0) << "a connection reached the host socket";
  EXPECT_LT(conn, 0);
  if (conn >= 0) ::close(conn);
  ::close(server);
  fs::remove_all(dir);
  EXPECT_EQ(r.out.find("connected"), std::string::npos) << r.out;
  EXPECT_EQ(classify(r), "sandbox violation") << r.err;
  EXPECT_NE(r.err.find("PermissionError"), std::string::npos) << r.err;
}

TEST(Sandbox, NetworkNamespaceAloneBlocksConnects) {
  SandboxOptions o = quick();
  o.use_seccomp = false;
  Sandbox s = make(o);
  auto result = s.run_python(kConnect, "");
  if (!result.ok() && result.status().message().find("no memory bound") != std::string::npos)
    GTEST_SKIP() << "no cgroup here, so seccomp is the memory bound and cannot be switched off";
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  const SandboxRun& r = *result;
  if (!(r.isolation & kIsoNetNs)) GTEST_SKIP() << "no network namespace on this host";
  EXPECT_EQ(r.out.find("connected"), std::string::npos);
  EXPECT_EQ(classify(r), "sandbox violation") << r.err;
}

TEST(Sandbox, SeccompAloneBlocksConnects) {
  SandboxOptions o = quick();
  o.use_net_ns = false;
  o.use_landlock = false;  // Landlock's TCP rule would also block; check seccomp's own
  Sandbox s = make(o);
  SandboxRun r = run(s, kConnect);
  EXPECT_FALSE(r.isolation & kIsoNetNs);
  EXPECT_TRUE(r.isolation & kIsoSeccomp);
  EXPECT_EQ(r.out.find("connected"), std::string::npos);
  EXPECT_EQ(classify(r), "sandbox violation") << r.err;
  EXPECT_NE(r.err.find("PermissionError"), std::string::npos) << r.err;
}

// Writes to /tmp (world-writable, so a uid switch alone would not stop it) and to the repository.
void expect_writes_blocked(const Sandbox& s) {
  for (const std::string& dir : {fs::temp_directory_path().string(), std::string(MARIANA_SOURCE_DIR)}) {
    const std::string target = escape_path(dir);
    fs::remove(target);
    SandboxRun r = run(s, "open('" + target + "', 'w').write('escaped')\nprint('wrote')\n");
    EXPECT_EQ(r.out.find("wrote"), std::string::npos) << target;
    EXPECT_EQ(classify(r), "sandbox violation") << r.err;
    EXPECT_FALSE(fs::exists(target)) << target;
    fs::remove(target);
  }
}

TEST(Sandbox, BlocksWritesOutsideItsTempDir) {
  Sandbox s = make(quick());
  expect_writes_blocked(s);
  SandboxRun r = run(s, "import os\nos.mkdir('/tmp/mariana-escape-dir-%d' % os.getpid())\n");
  EXPECT_EQ(classify(r), "sandbox violation") << r.err;
}

TEST(Sandbox, ReadOnlyMountsAloneBlockWrites) {
  SandboxOptions o = quick();
  o.use_landlock = false;
  Sandbox s = make(o);
  SandboxRun probe = run(s, "print(1)\n");
  if (!(probe.isolation & kIsoMountReadOnly)) GTEST_SKIP() << "no mount namespace on this host";
  expect_writes_blocked(s);
}

TEST(Sandbox, LandlockAloneBlocksWrites) {
  SandboxOptions o = quick();
  o.use_read_only_mounts = false;
  Sandbox s = make(o);
  SandboxRun probe = run(s, "print(1)\n");
  if (!(probe.isolation & kIsoLandlockFs)) GTEST_SKIP() << "no Landlock on this kernel";
  expect_writes_blocked(s);
}

// Nothing runs: Unavailable, naming what is missing.
void expect_refused(const SandboxOptions& o, const std::string& missing) {
  auto s = Sandbox::create(o);
  ASSERT_TRUE(s.ok());
  auto r = s->run_python("print('ran')\n", "");
  ASSERT_FALSE(r.ok()) << missing;
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find(missing), std::string::npos) << r.status().message();
}

TEST(Sandbox, RefusesToRunWithoutNetworkOrFilesystemIsolation) {
  SandboxOptions no_net = quick();
  no_net.use_net_ns = false;
  no_net.use_seccomp = false;
  SandboxOptions no_fs = quick();
  no_fs.use_read_only_mounts = false;
  no_fs.use_landlock = false;
  for (const auto& [o, missing] : {std::pair{no_net, "no network isolation"}, std::pair{no_fs, "no filesystem isolation"}}) {
    expect_refused(o, missing);
  }
}

// ---- Memory, process and disk bounds ----

// Skips (with the reason) on a host where no cgroup leaf can be made.
#define REQUIRE_CGROUP(r)                                                                         \
  if (!((r).isolation & kIsoCgroup))                                                             \
  GTEST_SKIP() << "no cgroup leaf on this host: " << sandbox_cgroups_detect().reason << " (isolation " \
               << sandbox_isolation_describe((r).isolation) << ")"

void expect_leaves_removed(const SandboxRun& r) {
  EXPECT_FALSE(r.cgroup_dirs.empty());
  for (const std::string& dir : r.cgroup_dirs) EXPECT_FALSE(fs::exists(dir)) << dir;
}

SandboxOptions small_memory() {
  SandboxOptions o = quick();
  o.memory_mb = 128;
  return o;
}

TEST(Sandbox, RunsInACgroupLeafThatIsRemovedAfterwards) {
  Sandbox s = make(quick());
  SandboxRun r = run(s, "print(open('/proc/self/cgroup').read())\n");
  REQUIRE_CGROUP(r);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_FALSE(r.cgroup_dirs.empty());
  for (const std::string& dir : r.cgroup_dirs)
    EXPECT_NE(r.out.find(fs::path(dir).filename().string()), std::string::npos) << dir << " not in\n" << r.out;
  expect_leaves_removed(r);
}

// RLIMIT_AS does not count pages held by memfds that are never mapped (30 of 15 MB: each stays
// under RLIMIT_FSIZE).
TEST(Sandbox, BoundsMemoryHeldInMemfds) {
  Sandbox s = make(small_memory());
  SandboxRun r = run(s,
                     "import os\n"
                     "fds = [os.memfd_create('hoard') for _ in range(30)]\n"
                     "for fd in fds:\n"
                     "    for _ in range(15):\n"
                     "        os.write(fd, b'x' * (1 << 20))\n"
                     "print('held 450 MB')\n");
  REQUIRE_CGROUP(r);
  EXPECT_EQ(r.out.find("held"), std::string::npos) << r.out;
  EXPECT_TRUE(r.memory_limit);
  EXPECT_EQ(classify(r), "memory") << r.err;
  expect_leaves_removed(r);
}

// RLIMIT_AS is per process: six children of 64 MB each fit it, not the run's 128 MB.
TEST(Sandbox, BoundsMemoryOfForkedChildren) {
  Sandbox s = make(small_memory());
  SandboxRun r = run(s,
                     "import os, time\n"
                     "kids = []\n"
                     "for _ in range(6):\n"
                     "    pid = os.fork()\n"
                     "    if pid == 0:\n"
                     "        block = b'x' * (64 << 20)\n"
                     "        time.sleep(3)\n"
                     "        os._exit(0)\n"
                     "    kids.append(pid)\n"
                     "if all(os.waitpid(pid, 0)[1] == 0 for pid in kids):\n"
                     "    print('children held 384 MB')\n");
  REQUIRE_CGROUP(r);
  EXPECT_EQ(r.out.find("children held"), std::string::npos) << r.out;
  EXPECT_TRUE(r.memory_limit);
  EXPECT_EQ(classify(r), "memory") << r.err;
  expect_leaves_removed(r);
}

TEST(Sandbox, BoundsAForkBombByTheCgroupTaskLimit) {
  SandboxOptions o = quick();
  o.max_processes = 8;
  Sandbox s = make(o);
  SandboxRun r = run(s,
                     "import os, time\n"
                     "ok = 0\n"
                     "for _ in range(40):\n"
                     "    try:\n"
                     "        if os.fork() == 0:\n"
                     "            time.sleep(10)\n"
                     "            os._exit(0)\n"
                     "        ok += 1\n"
                     "    except OSError:\n"
                     "        pass\n"
                     "print(ok)\n");
  REQUIRE_CGROUP(r);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LE(std::stoi(r.out), 7);  // the program itself is the eighth task
  EXPECT_TRUE(r.process_limit);
  EXPECT_FALSE(r.timed_out);  // the sleeping children did not hold the run open
  expect_no_survivors(r);
  expect_leaves_removed(r);
}

TEST(Sandbox, WritesPastTheDiskLimitFailWithEnospc) {
  SandboxOptions o = quick();
  o.disk_mb = 8;
  Sandbox s = make(o);
  SandboxRun r = run(s,
                     "import errno, os\n"
                     "st = os.statvfs('.')\n"
                     "print('size', st.f_blocks * st.f_frsize >> 20)\n"
                     "written = 0\n"
                     "try:\n"
                     "    for i in range(64):\n"
                     "        with open('f%d' % i, 'wb') as f:\n"
                     "            f.write(b'x' * (1 << 20))\n"
                     "        written += 1\n"
                     "except OSError as e:\n"
                     "    print(errno.errorcode[e.errno])\n"
                     "print('written', written)\n");
  ASSERT_TRUE(r.isolation & kIsoTmpfs) << sandbox_isolation_describe(r.isolation);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("size 8\n"), std::string::npos) << r.out;  // the work dir is the 8 MB tmpfs
  EXPECT_NE(r.out.find("ENOSPC"), std::string::npos) << r.out;
  const auto at = r.out.find("written ");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_LE(std::stoi(r.out.substr(at + 8)), 8);
}

TEST(Sandbox, WithoutACgroupFallsBackToASingleProcess) {
  SandboxOptions o = small_memory();
  o.use_cgroup = false;
  Sandbox s = make(o);
  SandboxRun threads = run(s,
                           "import threading\n"
                           "t = threading.Thread(target=print, args=('from a thread',))\n"
                           "t.start()\nt.join()\n");
  EXPECT_TRUE(threads.isolation & kIsoSingleProcess) << sandbox_isolation_describe(threads.isolation);
  EXPECT_FALSE(threads.isolation & kIsoCgroup);
  EXPECT_EQ(threads.out, "from a thread\n") << threads.err;
  for (const char* program : {"import os\nos.fork()\nprint('forked')\n",
                              "import os\nos.memfd_create('hoard')\nprint('forked')\n"}) {
    SandboxRun r = run(s, program);
    EXPECT_EQ(r.out.find("forked"), std::string::npos) << program;
    EXPECT_EQ(classify(r), "sandbox violation") << program << r.err;
  }
}

// Fail closed: no memory bound (neither a cgroup nor the seccomp fallback) or no disk bound (no
// mount namespace for the tmpfs) and nothing runs.
TEST(Sandbox, RefusesToRunWithoutAMemoryOrDiskBound) {
  SandboxOptions no_memory = quick();
  no_memory.use_cgroup = false;
  no_memory.use_seccomp = false;
  SandboxOptions no_disk = quick();
  no_disk.use_mount_ns = false;
  for (const auto& [o, missing] : {std::pair{no_memory, "no memory bound"}, std::pair{no_disk, "no disk bound"}}) {
    expect_refused(o, missing);
  }
}

TEST(Sandbox, DeniesLeavingTheProcessGroup) {
  Sandbox s = make(quick());
  SandboxRun r = run(s, "import os\nos.setsid()\n");
  EXPECT_EQ(classify(r), "sandbox violation") << r.err;
}

TEST(Sandbox, CapsOutput) {
  SandboxOptions o = quick();
  o.max_output_bytes = 4096;
  Sandbox s = make(o);
  SandboxRun r = run(s, "while True:\n    print('y' * 100)\n");
  EXPECT_TRUE(r.output_limit);
  EXPECT_LE(r.out.size(), 4096u);
  EXPECT_EQ(classify(r), "output limit");
}

TEST(Sandbox, BadOptionsAreErrors) {
  SandboxOptions o = quick();
  o.python = "/nonexistent/python3";
  auto s = Sandbox::create(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  o = quick();
  o.timeout_s = 0;
  EXPECT_EQ(Sandbox::create(o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mariana::rl
