// NcclCommunicator's checks that need no GPU (built whenever CUDA is, run everywhere): bad options
// are refused, and a rank whose rank 0 never publishes NCCL's unique id (or publishes garbage)
// gives up within the timeout naming the group, before any CUDA call. The collectives themselves
// are tested on GPUs in tests/cuda/nccl_communicator_test.cc.
#ifdef MARIANA_WITH_NCCL

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "comm/nccl_communicator.h"
#include "comm/store.h"
#include "tests/core/temp_dir.h"

namespace mariana::comm {
namespace {

using std::chrono::milliseconds;

NcclOptions options(int rank, int size, milliseconds timeout) {
  NcclOptions o;
  o.group = "gpu-dp";
  o.rank = rank;
  o.size = size;
  o.timeout = timeout;
  return o;
}

TEST(NcclRendezvousTest, RefusesBadOptionsBeforeTouchingTheStore) {
  TempDir dir;
  Result<std::unique_ptr<FileStore>> store = FileStore::open(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  std::shared_ptr<Store> shared = std::move(*store);
  Result<std::unique_ptr<NcclCommunicator>> c = NcclCommunicator::connect(shared, options(2, 2, milliseconds(100)));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("comm group 'gpu-dp' (rank 2 of 2): expected 0 <= rank < size"),
            std::string::npos) << c.status().to_string();
  c = NcclCommunicator::connect(shared, options(0, 2, milliseconds(0)));
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  NcclOptions bad_device = options(1, 2, milliseconds(100));
  bad_device.device = -1;
  c = NcclCommunicator::connect(shared, bad_device);
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("device -1"), std::string::npos) << c.status().to_string();
}

TEST(NcclRendezvousTest, WithoutRankZeroTheIdWaitTimesOutNamingTheGroup) {
  TempDir dir;
  Result<std::unique_ptr<FileStore>> store = FileStore::open(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  const auto start = std::chrono::steady_clock::now();
  Result<std::unique_ptr<NcclCommunicator>> c =
      NcclCommunicator::connect(std::move(*store), options(1, 2, milliseconds(400)));
  const auto ms = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(c.ok()) << "connected without rank 0";
  EXPECT_EQ(c.status().code(), StatusCode::kDeadlineExceeded) << c.status().to_string();
  EXPECT_GE(ms, 400);
  EXPECT_LT(ms, 3000) << "gave up only after " << ms << " ms";
  const std::string& m = c.status().message();
  EXPECT_NE(m.find("comm group 'gpu-dp' (rank 1 of 2): rendezvous timed out"), std::string::npos) << m;
  EXPECT_NE(m.find("(timeout 400 ms)"), std::string::npos) << m;
  EXPECT_NE(m.find("rank 0 never published NCCL's unique id under 'mariana/comm/gpu-dp/nccl-id'"), std::string::npos)
      << m;
}

TEST(NcclRendezvousTest, AnIdThatIsNotHexIsDataLoss) {
  TempDir dir;
  Result<std::unique_ptr<FileStore>> store = FileStore::open(dir.path());
  ASSERT_TRUE(store.ok()) << store.status().to_string();
  ASSERT_TRUE((*store)->set("mariana/comm/gpu-dp/nccl-id", "not an id").ok());
  Result<std::unique_ptr<NcclCommunicator>> c =
      NcclCommunicator::connect(std::move(*store), options(1, 2, milliseconds(2000)));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kDataLoss) << c.status().to_string();
  EXPECT_NE(c.status().message().find("is not NCCL's unique id (256 hex digits)"), std::string::npos)
      << c.status().to_string();
}

}  // namespace
}  // namespace mariana::comm

#endif  // MARIANA_WITH_NCCL
