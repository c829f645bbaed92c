// Starting, watching and stopping a cluster's processes with the real binary on loopback:
// `controller start` says how to join; a busy metrics port names the flag; `mariana stop`,
// `controller stop` and `agent stop` end the processes their pid files name (stale ones removed);
// a stopped agent deregisters, so its actors restart on another node long before the node timeout;
// `submit --wait` streams the job's worker logs and exits with its status; `jobs list` shows the
// time remaining; /metrics carries per-job gauges.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "tests/integration/train_job_util.h"

namespace mariana::integration {
namespace {

// Whether the child `pid` has exited (reaping it); waits up to `seconds`.
bool exited(int pid, double seconds) {
  return Cluster::wait_for([&] { return ::waitpid(pid, nullptr, WNOHANG) == pid; }, seconds);
}

std::string file_text(const std::string& path) {
  auto t = read_file(path);
  return t.ok() ? t.value() : "";
}

int metrics_port(const Cluster& c) { return std::stoi(trim(file_text(c.state_dir() + "/metrics.port"))); }

TEST(ClusterProcess, ControllerStartPrintsHowToJoinAndStopEndsEveryProcess) {
  Cluster c;
  std::filesystem::create_directories(c.state_dir());
  workers::PosixLauncher launcher;
  auto controller = launcher.spawn({MARIANA_BIN, "controller", "start", "--listen", "tcp://127.0.0.1:*", "--state-dir",
                                    c.state_dir(), "--metrics-port", "0"},
                                   c.dir() + "/ctl.out", c.dir() + "/ctl.err");
  ASSERT_TRUE(controller.ok());
  ASSERT_TRUE(Cluster::wait_for([&] { return file_text(c.dir() + "/ctl.out").find("  stop ") != std::string::npos; }, 20))
      << file_text(c.dir() + "/ctl.err");
  const std::string out = file_text(c.dir() + "/ctl.out");
  const std::string addr = trim(file_text(c.state_dir() + "/controller.addr"));
  const std::string dir = std::filesystem::absolute(c.state_dir()).lexically_normal().string();
  EXPECT_NE(out.find("controller listening on " + addr), std::string::npos) << out;
  EXPECT_NE(out.find("token file   " + dir + "/cluster.token"), std::string::npos) << out;
  EXPECT_NE(out.find("metrics      http://127.0.0.1:" + std::to_string(metrics_port(c)) + "/metrics"), std::string::npos)
      << out;
  EXPECT_NE(out.find("mariana agent start --controller " + addr + " --token-file " + dir + "/cluster.token"),
            std::string::npos)
      << out;
  EXPECT_EQ(trim(file_text(c.state_dir() + "/controller.pid")), std::to_string(controller.value()));

  // An agent started with --state-dir joins and writes its pid file; it logs its registration.
  auto agent = launcher.spawn({MARIANA_BIN, "agent", "start", "--state-dir", c.state_dir(), "--cpus", "1", "--node-id",
                               "n1", "--heartbeat-ms", "100"},
                              c.dir() + "/agent.out", c.dir() + "/agent.err");
  ASSERT_TRUE(agent.ok());
  ASSERT_TRUE(c.wait_nodes_alive(1));
  EXPECT_EQ(trim(file_text(c.state_dir() + "/agents/n1.pid")), std::to_string(agent.value()));
  EXPECT_NE(file_text(c.dir() + "/agent.err").find("registered with controller " + addr + " as node n1 with resources"),
            std::string::npos)
      << file_text(c.dir() + "/agent.err");

  auto stop = run_mariana("stop --state-dir " + c.state_dir(), 60);
  EXPECT_EQ(stop.exit_code, 0) << stop.out;
  EXPECT_NE(stop.out.find("stopped agent n1 (pid " + std::to_string(agent.value()) + ")"), std::string::npos) << stop.out;
  EXPECT_NE(stop.out.find("stopped controller (pid " + std::to_string(controller.value()) + ")"), std::string::npos)
      << stop.out;
  EXPECT_TRUE(exited(agent.value(), 5));
  EXPECT_TRUE(exited(controller.value(), 5));
  EXPECT_FALSE(std::filesystem::exists(c.state_dir() + "/controller.pid"));
  EXPECT_FALSE(std::filesystem::exists(c.state_dir() + "/agents/n1.pid"));
  EXPECT_NE(file_text(c.dir() + "/agent.err").find("deregistered from the controller"), std::string::npos);
}

TEST(ClusterProcess, StalePidFileIsReportedAndRemovedWithoutSignalling) {
  Cluster c;
  std::filesystem::create_directories(c.state_dir());
  // This test's own pid: alive, but not a `mariana controller` process.
  ASSERT_TRUE(write_file_atomic(c.state_dir() + "/controller.pid", std::to_string(::getpid()) + "\n").ok());
  auto r = run_mariana("controller stop --state-dir " + c.state_dir(), 30);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("stale pid file"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(c.state_dir() + "/controller.pid"));
}

TEST(ClusterProcess, BusyMetricsPortIsAnErrorNamingTheFlag) {
  // The port held the way another controller (cpp-httplib) holds it: with SO_REUSEPORT.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int yes = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  Cluster c;
  auto r = run_mariana("controller start --listen tcp://127.0.0.1:* --state-dir " + c.state_dir() + " --metrics-port " +
                           std::to_string(ntohs(a.sin_port)),
                       30);
  ::close(fd);
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("--metrics-port 0 for any free port"), std::string::npos) << r.out;
  auto help = run_mariana("controller start --help");
  EXPECT_NE(help.out.find("(default: 7766)"), std::string::npos) << help.out;
}

TEST(ClusterProcess, StoppedAgentDeregistersAndItsActorRestartsElsewhereAtOnce) {
  Cluster c;
  c.node_timeout_ms = "120000";  // a heartbeat timeout cannot be what moves the actor
  c.start_controller();
  for (const char* n : {"n1", "n2", "n3"}) c.start_agent(n, 1);
  ASSERT_TRUE(c.wait_nodes_alive(3));
  const std::string job = c.submit(c.write_job("spread", actor_job(100000, 20, "SPREAD")));
  nlohmann::json actors;
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        actors = c.query("actors list");
        int alive = 0;
        for (auto& a : actors) alive += a.value("state", "") == "ALIVE";
        return alive == 2;
      },
      20));
  ASSERT_TRUE(c.wait_step(job, 5));
  // The progress line has a time remaining once steps have been timed.
  EXPECT_TRUE(Cluster::wait_for([&] { return run_mariana("jobs list " + c.client()).out.find("ETA ") != std::string::npos; }, 10))
      << run_mariana("jobs list " + c.client()).out;
  std::string victim, actor;
  for (auto& a : actors) {
    if (a.value("state", "") != "ALIVE") continue;
    victim = a.value("node_id", "");
    actor = a.value("id", "");
    break;
  }
  ASSERT_FALSE(victim.empty());
  EXPECT_NE(file_text(c.dir() + "/agent-" + victim + ".err").find("starting worker for actor " + actor + " incarnation"),
            std::string::npos);

  const auto t0 = std::chrono::steady_clock::now();
  auto stop = run_mariana("agent stop " + c.client() + " --node-id " + victim, 60);
  EXPECT_EQ(stop.exit_code, 0) << stop.out;
  EXPECT_NE(stop.out.find("stopped agent " + victim), std::string::npos) << stop.out;
  std::string new_node;
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        auto a = c.query("actors show " + actor);
        if (!a.is_object() || a.value("state", "") != "ALIVE" || a.value("node_id", "") == victim) return false;
        new_node = a.value("node_id", "");
        return true;
      },
      30));
  const double moved_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(moved_s, 30.0);  // the node timeout is 120 s
  EXPECT_NE(new_node, victim);
  auto nodes = c.query("nodes");
  for (auto& n : nodes)
    if (n.value("id", "") == victim) {
      EXPECT_EQ(n.value("state", ""), "DEAD");
      EXPECT_NE(n.value("death_cause", "").find("agent stopped"), std::string::npos) << n.dump();
    }
  EXPECT_NE(file_text(c.dir() + "/agent-" + victim + ".err").find("deregistered from the controller"), std::string::npos);
}

TEST(ClusterProcess, SubmitWaitStreamsTheTrainersLogAndExitsWithTheJobsStatus) {
  Cluster c;
  c.start_controller();
  c.start_agent("n1", 2);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  auto r = run_mariana("submit " + pretrain_job_file() + " " + pretrain_sets(6, 3) + " " + c.client() + " --wait", 180);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("trainer: job job-1, phase pretrain, 6 steps"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("trainer: job job-1 done at step 6"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("job-1 SUCCEEDED"), std::string::npos) << r.out;

  // Per-job gauges on /metrics.
  httplib::Client http("127.0.0.1", metrics_port(c));
  http.set_read_timeout(5);
  std::string body;
  EXPECT_TRUE(Cluster::wait_for(
      [&] {
        auto res = http.Get("/metrics");
        body = res && res->status == 200 ? res->body : "";
        return body.find("mariana_job_step{job=\"job-1\"} 6\n") != std::string::npos;
      },
      5))
      << body;
  EXPECT_NE(body.find("mariana_job_loss{job=\"job-1\"} "), std::string::npos) << body;
  EXPECT_NE(body.find("mariana_job_tokens_per_second{job=\"job-1\"} "), std::string::npos) << body;

  // A job stopped while --wait streams it: exit 1 with its state.
  auto waiting = std::async(std::launch::async, [&] {
    return run_mariana("submit " + c.write_job("long", actor_job(100000, 20, "PACK")) + " " + c.client() + " --wait", 90);
  });
  ASSERT_TRUE(c.wait_step("job-2", 3));
  EXPECT_EQ(run_mariana("jobs stop job-2 " + c.client()).exit_code, 0);
  auto stopped = waiting.get();
  EXPECT_EQ(stopped.exit_code, 1) << stopped.out;
  EXPECT_NE(stopped.out.find("job-2 STOPPED"), std::string::npos) << stopped.out;
}

}  // namespace
}  // namespace mariana::integration
