// `mariana bench actors` end to end on a real loopback cluster, with small counts: one JSON object
// with every workload and the ZeroMQ yardstick as a positive rate. Rates are not asserted (speed
// belongs in bench/RESULTS.md); that every workload ran and reported is.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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

}  // namespace
}  // namespace mariana::testing
