// `mariana bench actors` end to end on a real loopback cluster, with small counts: one JSON object
// with every workload and the ZeroMQ yardstick as a positive rate. Rates are not asserted (speed
// belongs in bench/RESULTS.md); that every workload ran and reported is.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <set>
#include <string>

#include "tests/cli/cli_test_util.h"

namespace mariana::testing {
namespace {

TEST(BenchCli, ActorsReportsEveryWorkload) {
  const CmdResult r = run_mariana(
      "bench actors --json --sync-calls 300 --async-calls 500 --nn-calls 400 --creations 2 --pgs 5", false);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"1_1_actor_calls_sync", "1_1_actor_calls_async", "n_n_actor_calls_async",
                        "actor_creations_per_s", "placement_group_create_removal", "yardstick_zmq_ipc_roundtrips"}) {
    ASSERT_TRUE(j.contains(k)) << k << " missing in " << r.out;
    EXPECT_GT(j[k].get<double>(), 0.0) << k;
  }
}

TEST(BenchCli, ActorsRejectsABadOption) {
  const CmdResult r = run_mariana("bench actors --sync-calls", true);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("sync-calls"), std::string::npos) << r.out;
}

// `mariana bench comm` at two small sizes over 3 processes: every collective, its raw-Gloo twin
// and the memcpy yardstick report a positive time or rate at each size.
TEST(BenchCli, CommReportsEveryCollectiveAndTheYardstick) {
  const CmdResult r = run_mariana("bench comm --json --ranks 3 --min-bytes 4096 --max-bytes 16384 --timeout-s 10", false);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ranks"], 3);
  std::set<std::pair<std::string, int64_t>> seen;
  for (const auto& row : j["collectives"]) {
    seen.insert({row["op"].get<std::string>(), row["bytes"].get<int64_t>()});
    EXPECT_GT(row["us"].get<double>(), 0.0) << row.dump();
    EXPECT_GT(row["busbw_GBps"].get<double>(), 0.0) << row.dump();
    EXPECT_GT(row["raw_gloo_us"].get<double>(), 0.0) << row.dump();
    EXPECT_GT(row["of_raw_gloo"].get<double>(), 0.0) << row.dump();
  }
  for (const char* op : {"allreduce", "all_gather", "reduce_scatter", "all_to_all"})
    for (int64_t bytes : {4096, 16384}) EXPECT_TRUE(seen.count({op, bytes})) << op << " " << bytes << " in " << r.out;
  ASSERT_EQ(j["yardstick_memcpy"].size(), 2u) << r.out;
  for (const auto& y : j["yardstick_memcpy"]) EXPECT_GT(y["GBps"].get<double>(), 0.0);
}

TEST(BenchCli, CommRejectsOneRank) {
  const CmdResult r = run_mariana("bench comm --ranks 1", true);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.out.find("--ranks"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace mariana::testing
