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
#include "tests/comm/process_group.h"
#include "tests/core/temp_dir.h"

namespace mariana::comm {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// Rank r's input element i for collective `salt`: multiples of 0.5 below 2^11, so every sum over
// up to 4 ranks is exact in fp32 whatever order Gloo adds in, and results compare with ==.
float input(int rank, size_t i, int salt) {
  return static_cast<float>((rank * 131 + static_cast<long long>(i) * 7 + salt * 17) % 1000) * 0.5f;
}
std::vector<float> inputs(int rank, size_t n, int salt) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = input(rank, i, salt);
  return v;
}
// all_to_all_v: how many floats rank src sends rank dst (zeros included), and their values.
int64_t a2a_count(int src, int dst, int64_t scale) { return ((src * 7 + dst * 3) % 5) * scale; }
float a2a_value(int src, int dst, int64_t j) { return static_cast<float>(src * 1000000 + dst * 10000 + j); }

// The first mismatch of `got` against `want`, or "".
std::string compare(const std::string& what, const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return what + ": size " + std::to_string(got.size()) + " != " + std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      return what + ": element " + std::to_string(i) + " is " + std::to_string(got[i]) + ", expected " +
             std::to_string(want[i]);
    }
  }
  return "";
}

Result<std::unique_ptr<GlooCommunicator>> join(const std::string& dir, int rank, int size, milliseconds timeout) {
  MARIANA_ASSIGN_OR_RETURN(std::shared_ptr<FileStore> store, FileStore::open(dir + "/store"));
  GlooOptions options;
  options.group = "g";
  options.rank = rank;
  options.size = size;
  options.timeout = timeout;
  return GlooCommunicator::connect(store, options);
}

// Every collective at every size on one rank of an n-rank group; "" when all match.
std::string check_collectives(Communicator& c) {
  const int n = c.size(), me = c.rank();
  int salt = 0;
  for (size_t len : {size_t{0}, size_t{1}, size_t{7}, size_t{1001}, size_t{1} << 20}) {
    const std::string at = " (len " + std::to_string(len) + ")";
    ++salt;
    {  // allreduce
      std::vector<float> data = inputs(me, len, salt), want(len, 0.0f);
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < len; ++i) want[i] += input(r, i, salt);
      if (Status st = c.allreduce_sum(data); !st.ok()) return st.to_string();
      if (std::string e = compare("allreduce_sum" + at, data, want); !e.empty()) return e;
    }
    for (int again = 0; again < 2; ++again) {  // reduce-scatter, `len` floats per rank, twice (the
      ++salt;                                   // second call reuses Gloo's algorithm object)
      const std::vector<float> in = inputs(me, len * n, salt);
      std::vector<float> out(len, -1.0f), want(len, 0.0f);
      for (int r = 0; r < n; ++r)
        for (size_t i = 0; i < len; ++i) want[i] += input(r, me * len + i, salt);
      if (Status st = c.reduce_scatter_sum(in, out); !st.ok()) return st.to_string();
      if (std::string e = compare("reduce_scatter_sum" + at, out, want); !e.empty()) return e;
    }
    ++salt;
    {  // all-gather
      const std::vector<float> in = inputs(me, len, salt);
      std::vector<float> out(len * n, -1.0f), want;
      for (int r = 0; r < n; ++r) {
        const std::vector<float> block = inputs(r, len, salt);
        want.insert(want.end(), block.begin(), block.end());
      }
      if (Status st = c.all_gather(in, out); !st.ok()) return st.to_string();
      if (std::string e = compare("all_gather" + at, out, want); !e.empty()) return e;
    }
    ++salt;
    {  // broadcast from the last rank
      std::vector<float> data = inputs(me, len, salt);
      if (Status st = c.broadcast(data, n - 1); !st.ok()) return st.to_string();
      if (std::string e = compare("broadcast" + at, data, inputs(n - 1, len, salt)); !e.empty()) return e;
    }
    {  // all-to-all-v, uneven counts with zeros, scaled by len
      const int64_t scale = static_cast<int64_t>(std::max<size_t>(len / 4, len ? 1 : 0));
      std::vector<int64_t> send_counts(n), recv_counts(n);
      std::vector<float> in, want;
      for (int r = 0; r < n; ++r) {
        send_counts[r] = a2a_count(me, r, scale);
        recv_counts[r] = a2a_count(r, me, scale);
        for (int64_t j = 0; j < send_counts[r]; ++j) in.push_back(a2a_value(me, r, j));
        for (int64_t j = 0; j < recv_counts[r]; ++j) want.push_back(a2a_value(r, me, j));
      }
      std::vector<float> out(want.size(), -1.0f);
      if (Status st = c.all_to_all_v(in, send_counts, out, recv_counts); !st.ok()) return st.to_string();
      if (std::string e = compare("all_to_all_v" + at, out, want); !e.empty()) return e;
    }
  }
  if (Status st = c.barrier(); !st.ok()) return st.to_string();
  return "";
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
