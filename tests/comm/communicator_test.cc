// comm/: LocalCommunicator, and GlooCommunicator between real forked processes (2, 3 and 4 ranks
// over loopback TCP, rendezvous through a FileStore in a temp dir): every collective against the
// result computed here from every rank's deterministic input, and a missing or stopped peer
// failing within the timeout with a message naming the op.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <numeric>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/gloo_communicator.h"
#include "comm/store.h"
#include "tests/comm/collective_checks.h"
#include "tests/comm/process_group.h"
#include "tests/core/temp_dir.h"

namespace mariana::comm {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

Result<std::unique_ptr<GlooCommunicator>> join(const std::string& dir, int rank, int size, milliseconds timeout) {
  MARIANA_ASSIGN_OR_RETURN(std::shared_ptr<FileStore> store, FileStore::open(dir + "/store"));
  GlooOptions options;
  options.group = "g";
  options.rank = rank;
  options.size = size;
  options.timeout = timeout;
  return GlooCommunicator::connect(store, options);
}

class GlooRanksTest : public ::testing::TestWithParam<int> {};

TEST_P(GlooRanksTest, EveryCollectiveMatchesTheLocallyComputedResult) {
  const int n = GetParam();
  TempDir dir;
  const std::vector<RankOutcome> outcomes = run_ranks(n, dir.path(), [&](int rank) -> std::string {
    Result<std::unique_ptr<GlooCommunicator>> c = join(dir.path(), rank, n, seconds(10));
    if (!c.ok()) return c.status().to_string();
    return check_collectives(**c);
  }, seconds(30));
  for (int r = 0; r < n; ++r) {
    EXPECT_TRUE(outcomes[r].exited) << "rank " << r << " did not finish";
    EXPECT_EQ(outcomes[r].report, "") << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Ranks, GlooRanksTest, ::testing::Values(2, 3, 4));

TEST(GlooCommunicatorTest, RendezvousNamesTheRanksThatNeverArrived) {
  TempDir dir;
  // Rank 2 of 3 never joins; ranks 0 and 1 must give up after their 1 s timeout.
  const std::vector<RankOutcome> outcomes = run_ranks(3, dir.path(), [&](int rank) -> std::string {
    if (rank == 2) return "";
    const auto start = std::chrono::steady_clock::now();
    Result<std::unique_ptr<GlooCommunicator>> c = join(dir.path(), rank, 3, milliseconds(1000));
    const auto ms = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (c.ok()) return "connect succeeded without rank 2";
    if (ms > 4000) return "gave up only after " + std::to_string(ms) + " ms";
    return c.status().to_string();
  }, seconds(15));
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(outcomes[r].exited) << "rank " << r << " hung";
    EXPECT_NE(outcomes[r].report.find("DeadlineExceeded"), std::string::npos) << outcomes[r].report;
    EXPECT_NE(outcomes[r].report.find("comm group 'g' (rank " + std::to_string(r) + " of 3)"), std::string::npos)
        << outcomes[r].report;
    EXPECT_NE(outcomes[r].report.find("rendezvous timed out"), std::string::npos) << outcomes[r].report;
    EXPECT_NE(outcomes[r].report.find("ranks [2] never arrived"), std::string::npos) << outcomes[r].report;
  }
}

TEST(GlooCommunicatorTest, AStoppedPeerFailsTheCollectiveWithinTheTimeout) {
  TempDir dir;
  // All three ranks join and pass a barrier; then rank 2 stops itself (SIGSTOP), and the others'
  // allreduce must fail within its 1.5 s timeout (plus the 1 s in which the failing ranks compare
  // notes in the store), naming the op and rank 2; the group then refuses more work.
  const std::vector<RankOutcome> outcomes = run_ranks(3, dir.path(), [&](int rank) -> std::string {
    Result<std::unique_ptr<GlooCommunicator>> c = join(dir.path(), rank, 3, milliseconds(1500));
    if (!c.ok()) return c.status().to_string();
    if (Status st = (*c)->barrier(); !st.ok()) return "barrier: " + st.to_string();
    if (rank == 2) ::raise(SIGSTOP);
    std::vector<float> data(1000, 1.0f);
    const auto start = std::chrono::steady_clock::now();
    const Status st = (*c)->allreduce_sum(data);
    const auto ms = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (st.ok()) return "allreduce succeeded with rank 2 stopped";
    if (ms > 5000) return "failed only after " + std::to_string(ms) + " ms";
    const Status again = (*c)->barrier();
    return st.to_string() + "\nthen: " + again.to_string();
  }, seconds(15), /*must_exit=*/{0, 1});
  EXPECT_FALSE(outcomes[2].exited);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(outcomes[r].exited) << "rank " << r << " hung";
    const std::string& report = outcomes[r].report;
    EXPECT_NE(report.find("comm group 'g' (rank " + std::to_string(r) + " of 3): allreduce_sum of 1000 floats"),
              std::string::npos) << report;
    EXPECT_NE(report.find("timeout 1500 ms"), std::string::npos) << report;
    EXPECT_NE(report.find("ranks [2] did not report this failure"), std::string::npos) << report;
    EXPECT_NE(report.find("then: FailedPrecondition"), std::string::npos) << report;
    EXPECT_NE(report.find("broken by an earlier failure (allreduce_sum"), std::string::npos) << report;
  }
}

TEST(GlooCommunicatorTest, ADeadPeerFailsTheCollectiveNamingTheOp) {
  TempDir dir;
  // Rank 2 of 3 exits after the barrier (its sockets close, as after kill -9); the others'
  // all_gather fails (Gloo sees the closed connection or times out), never hangs.
  const std::vector<RankOutcome> outcomes = run_ranks(3, dir.path(), [&](int rank) -> std::string {
    Result<std::unique_ptr<GlooCommunicator>> c = join(dir.path(), rank, 3, milliseconds(3000));
    if (!c.ok()) return c.status().to_string();
    if (Status st = (*c)->barrier(); !st.ok()) return "barrier: " + st.to_string();
    if (rank == 2) ::_exit(0);
    std::vector<float> in(100, 1.0f), out(300);
    const auto start = std::chrono::steady_clock::now();
    const Status st = (*c)->all_gather(in, out);
    const auto ms = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start).count();
    if (st.ok()) return "all_gather succeeded with rank 2 dead";
    if (ms > 6000) return "failed only after " + std::to_string(ms) + " ms";
    return st.to_string();
  }, seconds(15), /*must_exit=*/{0, 1});
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(outcomes[r].exited) << "rank " << r << " hung";
    const std::string& report = outcomes[r].report;
    EXPECT_NE(report.find("comm group 'g' (rank " + std::to_string(r) + " of 3): all_gather of 100 floats"),
              std::string::npos) << report;
    EXPECT_NE(report.find("ranks [2] did not report this failure"), std::string::npos) << report;
  }
}

TEST(GlooCommunicatorTest, RejectsMismatchedSizesBeforeCommunicating) {
  TempDir dir;
  Result<std::unique_ptr<GlooCommunicator>> c = join(dir.path(), 0, 1, seconds(5));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  std::vector<float> in(6), out(4);
  Status st = (*c)->all_gather(in, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("all_gather of 6 floats: expected out.size() = size() * in.size() = 6, got 4"),
            std::string::npos) << st.message();
  const std::vector<int64_t> counts = {5};
  st = (*c)->all_to_all_v(in, counts, out, counts);
  EXPECT_NE(st.message().find("send_counts sum to 5 but the buffer holds 6 floats"), std::string::npos) << st.message();
  std::vector<float> data(3, 2.0f);
  EXPECT_EQ((*c)->broadcast(data, 1).code(), StatusCode::kInvalidArgument);
  // A one-rank Gloo group computes what LocalCommunicator does.
  EXPECT_EQ(check_collectives(**c), "");
}

TEST(LocalCommunicatorTest, EveryCollectiveIsTheOneRankResult) {
  LocalCommunicator c("solo");
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_EQ(check_collectives(c), "");
  std::vector<float> in(4), out(3);
  const Status st = c.reduce_scatter_sum(in, out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("comm group 'solo' (rank 0 of 1): reduce_scatter_sum"), std::string::npos);
  const std::vector<int64_t> send = {4}, recv = {3};
  EXPECT_EQ(c.all_to_all_v(in, send, out, recv).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mariana::comm
