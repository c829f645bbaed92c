// The actor registry and built-in classes, PosixLauncher (spawn, logs, reap, signals), and the
// path of a worker's Unix-domain socket.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "core/file_util.h"
#include "proto/wire.h"
#include "workers/actor.h"
#include "workers/process_launcher.h"
#include "workers/worker.h"

namespace mariana::workers {
namespace {

TEST(ActorRegistry, CounterStepsAndAdds) {
  const ActorClass* cls = builtin_actor_registry().find("counter");
  ASSERT_NE(cls, nullptr);
  auto actor = std::move(cls->create("")).value();
  auto args = proto::encode_struct<proto::StepArgs>([](proto::StepArgs::Builder b) { b.setStep(3); });
  for (int i = 1; i <= 2; ++i) {
    auto r = actor_invoke(*cls, *actor, "step", args);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(proto::StructValue<proto::Int64Value>::decode(r.value(), "r").value().get().getValue(), i);
  }
  auto five = proto::encode_struct<proto::Int64Value>([](proto::Int64Value::Builder b) { b.setValue(5); });
  ASSERT_TRUE(actor_invoke(*cls, *actor, "add", five).ok());
  auto total = actor_invoke(*cls, *actor, "add", five);
  EXPECT_EQ(proto::StructValue<proto::Int64Value>::decode(total.value(), "r").value().get().getValue(), 10);
}

// Constructor arguments: a JSON object the class reads ({"initial": N} for counter); a class
// without them refuses any; what is not an object, or a field the class does not know, is refused
// by name.
TEST(ActorRegistry, ConstructorArguments) {
  const ActorClass* counter = builtin_actor_registry().find("counter");
  auto made = counter->create(R"({"initial": 40})");
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  auto total = actor_invoke(*counter, *made.value(), "get", "");
  ASSERT_TRUE(total.ok());
  EXPECT_EQ(proto::StructValue<proto::Int64Value>::decode(total.value(), "r").value().get().getValue(), 40);
  for (const char* bad : {R"({"initial": "x"})", R"({"start": 1})", "[1]", "{"}) {
    auto r = counter->create(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("actor class counter"), std::string::npos) << r.status().to_string();
  }
  const ActorClass* echo = builtin_actor_registry().find("echo");
  EXPECT_TRUE(echo->create("").ok());
  EXPECT_TRUE(echo->create("{}").ok());
  auto refused = echo->create(R"({"x": 1})");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("takes no constructor arguments"), std::string::npos);
}

TEST(ActorRegistry, ErrorsAreStatuses) {
  const ActorClass* cls = builtin_actor_registry().find("counter");
  auto actor = std::move(cls->create("")).value();
  EXPECT_EQ(actor_invoke(*cls, *actor, "nosuch", "").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(actor_invoke(*cls, *actor, "step", "garbage!").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(actor_invoke(*cls, *actor, "fail", "").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(builtin_actor_registry().find("nosuch"), nullptr);
  auto names = builtin_actor_registry().names();
  EXPECT_EQ(names, (std::vector<std::string>{"counter", "echo", "rl_generator", "rl_reference", "rl_scorer", "trainer"}));
}

TEST(WorkerIpcPath, IsUniqueShortAndInThisUsersDirectory) {
  const std::string dir = worker_ipc_dir();
  EXPECT_NE(dir.find("/mariana-" + std::to_string(::geteuid())), std::string::npos) << dir;
  EXPECT_EQ(worker_ipc_path("actor-3", 1, 42), dir + "/actor-3-1-42.sock");
  EXPECT_NE(worker_ipc_path("actor-3", 1, 42), worker_ipc_path("actor-3", 2, 42));
  EXPECT_NE(worker_ipc_path("actor-3", 1, 42), worker_ipc_path("actor-3", 1, 43));
  // Anything but [A-Za-z0-9_.-] becomes '_' (no '/' can leave the directory).
  EXPECT_EQ(worker_ipc_path("../a b/c", 0, 7), dir + "/.._a_b_c-0-7.sock");
  // A long id is cut so that the path fits a sockaddr_un.
  const std::string p = worker_ipc_path(std::string(300, 'x'), 4294967295u, 2147483647);
  EXPECT_EQ(p.size(), 99u);
  EXPECT_TRUE(p.starts_with(dir + "/xxx")) << p;
  EXPECT_TRUE(p.ends_with("x-4294967295-2147483647.sock")) << p;
}

TEST(WorkerIpcPath, NoneWhenTheDirectoryIsTooLong) {
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old ? old : "";
  ::setenv("TMPDIR", ("/tmp/" + std::string(100, 'd')).c_str(), 1);
  EXPECT_EQ(worker_ipc_path("actor-1", 0, 1), "");
  ::setenv("TMPDIR", "/var/tmp/", 1);
  EXPECT_EQ(worker_ipc_path("actor-1", 0, 1), "/var/tmp/mariana-" + std::to_string(::geteuid()) + "/actor-1-0-1.sock");
  if (old) ::setenv("TMPDIR", saved.c_str(), 1);
  else ::unsetenv("TMPDIR");
}

TEST(PosixLauncher, CapturesLogsAndReportsExitCodesAndSignals) {
  const std::string dir = std::filesystem::temp_directory_path() / ("mariana-launcher-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  PosixLauncher l;
  auto a = l.spawn({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, dir + "/a.out", dir + "/a.err");
  auto b = l.spawn({"/bin/sleep", "30"}, dir + "/b.out", dir + "/b.err");
  ASSERT_TRUE(a.ok() && b.ok());
  l.signal(b.value(), SIGKILL);
  std::map<int, ProcessExit> exits;
  for (int i = 0; i < 500 && exits.size() < 2; ++i) {
    for (auto& e : l.reap()) exits[e.pid] = e;
    ::usleep(10000);
  }
  ASSERT_EQ(exits.size(), 2u);
  EXPECT_EQ(exits[a.value()].exit_code, 3);
  EXPECT_EQ(exits[b.value()].signal, SIGKILL);
  EXPECT_EQ(read_file(dir + "/a.out").value(), "out\n");
  EXPECT_EQ(read_file(dir + "/a.err").value(), "err\n");
  EXPECT_FALSE(l.spawn({"/bin/true"}, "/nonexistent/dir/x.out", dir + "/x.err").ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mariana::workers
