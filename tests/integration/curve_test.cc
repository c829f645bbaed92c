// CURVE on a controller that listens on a non-loopback address (this machine's first
// non-loopback IPv4 address, e.g. eth0's): its keys are made at start under the state dir with
// mode 0600; a client without CURVE, or with a keypair that is not on the allow-list, gets no
// answer; the state dir's own credentials and ones made by `controller add-client` work; agents
// and their workers connect through CURVE and run a job. Without such an address the test skips
// (run it on any machine with a network interface: `ctest -R Curve`).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sys/stat.h>

#include "proto/curve.h"
#include "tests/integration/cluster_fixture.h"
#include "tests/integration/train_job_util.h"

namespace mariana::integration {
namespace {

std::string non_loopback_ipv4() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string out;
  for (ifaddrs* i = list; i && out.empty(); i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
      continue;
    char buf[INET_ADDRSTRLEN];
    if (::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, buf, sizeof buf)) out = buf;
  }
  ::freeifaddrs(list);
  return out;
}

int mode_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 0777) : -1;
}

TEST(Curve, NonLoopbackControllerRefusesClientsWithoutAllowListedKeys) {
  const std::string ip = non_loopback_ipv4();
  if (ip.empty()) GTEST_SKIP() << "no non-loopback IPv4 address on this machine";
  Cluster c;
  c.start_controller("tcp://" + ip + ":*");
  ASSERT_EQ(c.address().rfind("tcp://" + ip + ":", 0), 0u) << c.address();
  const std::string curve = c.state_dir() + "/curve";
  for (const char* f : {"server.key", "client.key", "authorized_keys"})
    EXPECT_EQ(mode_of(curve + "/" + f), 0600) << f;
  EXPECT_EQ(mode_of(c.state_dir() + "/cluster.token"), 0600);

  // The state dir's own credentials (curve/client.key, picked up with --state-dir).
  auto ok = run_mariana("status " + c.client() + " --timeout-ms 5000");
  EXPECT_EQ(ok.exit_code, 0) << ok.out;

  // The right token but no CURVE: the handshake never completes, no reply.
  const std::string plain = "--controller " + c.address() + " --token-file " + c.state_dir() + "/cluster.token";
  auto no_curve = run_mariana("status " + plain + " --timeout-ms 1500");
  EXPECT_NE(no_curve.exit_code, 0) << no_curve.out;
  EXPECT_NE(no_curve.out.find("no reply"), std::string::npos) << no_curve.out;

  // CURVE with the server's key but a keypair of our own, not on the allow-list: refused.
  auto server = read_file(curve + "/client.key");
  ASSERT_TRUE(server.ok());
  const std::string server_line = server.value().substr(0, server.value().find('\n'));
  ASSERT_EQ(server_line.rfind("server ", 0), 0u);
  auto stranger = proto::curve_keypair();
  ASSERT_TRUE(stranger.ok()) << stranger.status().to_string();
  const std::string stranger_file = c.dir() + "/stranger.key";
  ASSERT_TRUE(write_file_atomic(stranger_file, server_line + "\npublic " + stranger.value().public_key + "\nsecret " +
                                                   stranger.value().secret_key + "\n")
                  .ok());
  auto refused = run_mariana("status " + plain + " --curve-file " + stranger_file + " --timeout-ms 1500");
  EXPECT_NE(refused.exit_code, 0) << refused.out;
  EXPECT_NE(refused.out.find("no reply"), std::string::npos) << refused.out;

  // `controller add-client` allow-lists a new keypair at once.
  const std::string added = c.dir() + "/added.key";
  auto add = run_mariana("controller add-client --state-dir " + c.state_dir() + " --name it --out " + added);
  ASSERT_EQ(add.exit_code, 0) << add.out;
  EXPECT_EQ(mode_of(added), 0600);
  auto with_added = run_mariana("status " + plain + " --curve-file " + added + " --timeout-ms 5000");
  EXPECT_EQ(with_added.exit_code, 0) << with_added.out;

  // An agent and its workers connect through CURVE and run a job.
  c.start_agent("n1", 2);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(c.write_job("c", actor_job(5, 0, "PACK")));
  EXPECT_EQ(c.wait_end(job, 30), "SUCCEEDED");
}

// An RL campaign on a CURVE cluster whose agent binds its workers to the non-loopback address
// (--bind-host, as on several machines): the learner reaches its roles, and the learner and the
// generators rendezvous for their weights group through the controller's key-value table, all
// with their workers' CURVE keys, and broadcast the weights over that address.
TEST(Curve, ACampaignRunsOnACurveCluster) {
  const std::string ip = non_loopback_ipv4();
  if (ip.empty()) GTEST_SKIP() << "no non-loopback IPv4 address on this machine";
  Cluster c;
  std::string sets = rl_tiny_sets(c, 6);
  ASSERT_FALSE(sets.empty());
  sets += " --set campaign.generators=2 --set campaign.scorers=1";
  c.start_controller("tcp://" + ip + ":*");
  c.start_agent("n1", 5, false, ip);
  ASSERT_TRUE(c.wait_nodes_alive(1));
  const std::string job = c.submit(rl_tiny_job_file(), sets);
  // Every worker's call socket is on the bind address.
  ASSERT_TRUE(Cluster::wait_for(
      [&] {
        int bound = 0;
        for (auto& a : c.query("actors list"))
          bound += a.value("job_id", "") == job && a.value("address", "").rfind("tcp://" + ip + ":", 0) == 0;
        return bound == 5;
      },
      30))
      << c.query("actors list").dump();
  EXPECT_EQ(c.wait_end(job, 120), "SUCCEEDED") << c.job(job).dump();
  auto j = c.job(job);
  ASSERT_TRUE(j.is_object());
  const std::string learner = j["actor_ids"][0].get<std::string>();
  auto log = read_file(c.dir() + "/logs-n1/" + learner + "-0.out");
  ASSERT_TRUE(log.ok()) << log.status().to_string();
  EXPECT_NE(log.value().find("campaign: weights group"), std::string::npos) << log.value();
}

}  // namespace
}  // namespace mariana::integration
