// host_id and actor_endpoint (proto/host.h): which of a worker's endpoints a caller uses.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "core/file_util.h"
#include "proto/host.h"

namespace mariana::proto {
namespace {

TEST(HostId, IsThisBootsIdAndStable) {
  ASSERT_EQ(host_id().size(), 36u) << host_id();  // a UUID: 8-4-4-4-12 hex digits
  EXPECT_EQ(host_id()[8], '-');
  EXPECT_EQ(&host_id(), &host_id());  // read once
}

TEST(ActorEndpoint, LocalSocketOnlyOnTheSameHostAndWhenReachable) {
  const std::string dir = std::filesystem::temp_directory_path() / ("mariana-host-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string sock = dir + "/actor-1-0-42.sock";  // a stand-in: only its permissions matter
  ASSERT_TRUE(write_file_atomic(sock, "").ok());
  const std::string tcp = "tcp://127.0.0.1:5000", ipc = "ipc://" + sock;
  EXPECT_EQ(actor_endpoint(tcp, ipc, host_id()), ipc);
  EXPECT_EQ(actor_endpoint(tcp, ipc, "00000000-0000-0000-0000-000000000000"), tcp);  // another host
  EXPECT_EQ(actor_endpoint(tcp, "", host_id()), tcp);  // the worker has no local socket
  EXPECT_EQ(actor_endpoint(tcp, ipc, ""), tcp);        // an older worker that sent no host id
  // The same host, but the file is not there (another mount namespace, or gone).
  EXPECT_EQ(actor_endpoint(tcp, "ipc://" + dir + "/nosuch.sock", host_id()), tcp);
  // The same host, but this user may not connect (root may write anything: skip that check).
  if (::geteuid() != 0) {
    ASSERT_EQ(::chmod(dir.c_str(), 0), 0);
    EXPECT_EQ(actor_endpoint(tcp, ipc, host_id()), tcp);
    ::chmod(dir.c_str(), 0700);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mariana::proto
