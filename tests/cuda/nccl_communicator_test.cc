// NcclCommunicator on real GPUs, one forked process per rank (rank r on device r), rendezvous
// through a FileStore: every collective against the locally computed result (tests/comm/
// collective_checks.h, buffers in device memory), all_to_all_v with uneven counts, argument checks,
// and a stopped peer or a peer that never joins failing within the timeout. Its own binary
// (test_nccl): the parent process never calls CUDA, since CUDA does not survive fork(); even the
// device count is asked in a child. Groups of n ranks skip with fewer than n devices.
#include <gtest/gtest.h>
#include <signal.h>

#include <cuda_runtime.h>

#include <chrono>
#include <string>
#include <vector>

#include "comm/nccl_communicator.h"
#include "comm/store.h"
#include "kernels/cuda/cuda_check.h"
#include "tests/comm/collective_checks.h"
#include "tests/comm/process_group.h"
#include "tests/core/temp_dir.h"

namespace mariana::comm {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Device memory on the current device, freed with the space.
class DeviceBufferSpace final : public BufferSpace {
 public:
  ~DeviceBufferSpace() override {
    for (float* p : buffers_) cudaFree(p);
  }
  std::span<float> put(const std::vector<float>& values) override {
    float* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, sizeof(float) * std::max<size_t>(values.size(), 1)));
    if (!values.empty()) {
      CUDA_CHECK(cudaMemcpy(p, values.data(), sizeof(float) * values.size(), cudaMemcpyHostToDevice));
    }
    buffers_.push_back(p);
    return {p, values.size()};
  }
  std::vector<float> get(std::span<const float> buffer) override {
    std::vector<float> host(buffer.size());
    if (!buffer.empty()) {
      CUDA_CHECK(cudaMemcpy(host.data(), buffer.data(), sizeof(float) * buffer.size(), cudaMemcpyDeviceToHost));
    }
    return host;
  }

 private:
  std::vector<float*> buffers_;
};

// The number of usable CUDA devices, asked in a child process so that this one stays CUDA-free.
int visible_devices() {
  TempDir dir;
  const std::vector<RankOutcome> outcome = run_ranks(1, dir.path(), [](int) -> std::string {
    int n = 0;
    if (cuda::cuda_device_usable()) cudaGetDeviceCount(&n);
    return std::to_string(n);
  }, seconds(60));
  return outcome[0].exited && !outcome[0].report.empty() ? std::stoi(outcome[0].report) : 0;
}

#define SKIP_WITHOUT_DEVICES(n)                                                                 \
  do {                                                                                          \
    const int _devices = visible_devices();                                                     \
    if (_devices < (n)) {                                                                       \
      GTEST_SKIP() << "needs " << (n) << " CUDA devices (one per rank), found " << _devices;   \
    }                                                                                           \
  } while (0)

Result<std::unique_ptr<NcclCommunicator>> join(const std::string& dir, int rank, int size, milliseconds timeout) {
  MARIANA_ASSIGN_OR_RETURN(std::shared_ptr<FileStore> store, FileStore::open(dir + "/store"));
  NcclOptions options;
  options.group = "g";
  options.rank = rank;
  options.size = size;
  options.device = rank;
  options.timeout = timeout;
  return NcclCommunicator::connect(store, options);
}

class NcclRanksTest : public ::testing::TestWithParam<int> {};

TEST_P(NcclRanksTest, EveryCollectiveMatchesTheLocallyComputedResult) {
  const int n = GetParam();
  SKIP_WITHOUT_DEVICES(n);
  TempDir dir;
  const std::vector<RankOutcome> outcomes = run_ranks(n, dir.path(), [&](int rank) -> std::string {
    Result<std::unique_ptr<NcclCommunicator>> c = join(dir.path(), rank, n, seconds(30));
    if (!c.ok()) return c.status().to_string();
    DeviceBufferSpace device;
    return check_collectives(**c, device);
  }, seconds(90));
  for (int r = 0; r < n; ++r) {
    EXPECT_TRUE(outcomes[r].exited) << "rank " << r << " did not finish";
    EXPECT_EQ(outcomes[r].report, "") << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, NcclRanksTest, ::testing::Values(1, 2, 4));

TEST(NcclCommunicatorTest, RefusesBadSizesBeforeLaunching) {
  SKIP_WITHOUT_DEVICES(1);
  TempDir dir;
  const std::vector<RankOutcome> outcomes = run_ranks(1, dir.path(), [&](int) -> std::string {
    Result<std::unique_ptr<NcclCommunicator>> c = join(dir.path(), 0, 1, seconds(30));
    if (!c.ok()) return c.status().to_string();
    DeviceBufferSpace device;
    const std::span<float> six = device.put(std::vector<float>(6, 1.0f)), four = device.put(std::vector<float>(4));
    std::string report;
    report += (*c)->reduce_scatter_sum(six, four).to_string() + "\n";
    report += (*c)->all_gather(six, four).to_string() + "\n";
    const std::vector<int64_t> counts = {5};
    report += (*c)->all_to_all_v(six, counts, six, counts).to_string() + "\n";
    report += (*c)->broadcast(six, 1).to_string() + "\n";
    // Refused calls do not break the group.
    report += "then: " + (*c)->allreduce_sum(six).to_string();
    return report;
  }, seconds(60));
  ASSERT_TRUE(outcomes[0].exited) << "rank 0 did not finish";
  const std::string& report = outcomes[0].report;
  EXPECT_NE(report.find("reduce_scatter_sum of 6 floats: expected in.size() = size() * out.size() = 4"),
            std::string::npos) << report;
  EXPECT_NE(report.find("all_gather of 6 floats: expected out.size() = size() * in.size() = 6, got 4"),
            std::string::npos) << report;
  EXPECT_NE(report.find("send_counts sum to 5 but the buffer holds 6 floats"), std::string::npos) << report;
  EXPECT_NE(report.find("root 1 is not a rank of the group"), std::string::npos) << report;
  EXPECT_NE(report.find("then: OK"), std::string::npos) << report;
}

TEST(NcclCommunicatorTest, APeerThatNeverJoinsFailsTheInitWithinTheTimeout) {
  SKIP_WITHOUT_DEVICES(1);
  TempDir dir;
  // Rank 0 of 2 publishes the id; rank 1 never comes. NCCL's non-blocking init must give up after
  // the 1.5 s timeout instead of waiting for rank 1 forever.
  const std::vector<RankOutcome> outcomes = run_ranks(1, dir.path(), [&](int) -> std::string {
    const auto start = std::chrono::steady_clock::now();
    Result<std::unique_ptr<NcclCommunicator>> c = join(dir.path(), 0, 2, milliseconds(1500));
    const auto ms = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (c.ok()) return "connected without rank 1";
    if (ms > 8000) return "gave up only after " + std::to_string(ms) + " ms";
    return c.status().to_string();
  }, seconds(30));
  ASSERT_TRUE(outcomes[0].exited) << "rank 0 hung";
  const std::string& report = outcomes[0].report;
  EXPECT_NE(report.find("DeadlineExceeded"), std::string::npos) << report;
  EXPECT_NE(report.find("comm group 'g' (rank 0 of 2) on CUDA device 0: ncclCommInitRankConfig timed out"),
            std::string::npos) << report;
}

TEST(NcclCommunicatorTest, AStoppedPeerFailsTheCollectiveWithinTheTimeout) {
  SKIP_WITHOUT_DEVICES(2);
  TempDir dir;
  // Both ranks join and pass a barrier; then rank 1 stops itself (SIGSTOP) and rank 0's allreduce
  // must fail within its 2 s timeout naming the group and the op; the group then refuses more work.
  const std::vector<RankOutcome> outcomes = run_ranks(2, dir.path(), [&](int rank) -> std::string {
    Result<std::unique_ptr<NcclCommunicator>> c = join(dir.path(), rank, 2, milliseconds(2000));
    if (!c.ok()) return c.status().to_string();
    if (Status st = (*c)->barrier(); !st.ok()) return "barrier: " + st.to_string();
    if (rank == 1) ::raise(SIGSTOP);
    // Never freed: cudaFree synchronises the device, and a kernel of the aborted collective may
    // still be winding down.
    auto* device = new DeviceBufferSpace;
    const std::span<float> data = device->put(std::vector<float>(1000, 1.0f));
    const auto start = std::chrono::steady_clock::now();
    const Status st = (*c)->allreduce_sum(data);
    const auto ms = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (st.ok()) return "allreduce succeeded with rank 1 stopped";
    if (ms > 8000) return "failed only after " + std::to_string(ms) + " ms";
    return st.to_string() + "\nthen: " + (*c)->barrier().to_string();
  }, seconds(40), /*must_exit=*/{0});
  EXPECT_FALSE(outcomes[1].exited);
  ASSERT_TRUE(outcomes[0].exited) << "rank 0 hung";
  const std::string& report = outcomes[0].report;
  EXPECT_NE(report.find("DeadlineExceeded"), std::string::npos) << report;
  EXPECT_NE(report.find("comm group 'g' (rank 0 of 2): allreduce_sum of 1000 floats on CUDA device 0 timed out"),
            std::string::npos) << report;
  EXPECT_NE(report.find("(timeout 2000 ms)"), std::string::npos) << report;
  EXPECT_NE(report.find("then: FailedPrecondition"), std::string::npos) << report;
  EXPECT_NE(report.find("broken by an earlier failure (allreduce_sum)"), std::string::npos) << report;
}

}  // namespace
}  // namespace mariana::comm
