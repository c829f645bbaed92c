// Ranks rendezvous through a real controller's key-value table (workers/controller_kv_store.h):
// two forked processes build a GlooCommunicator over ControllerKvStore and allreduce; and the
// store's own calls (a value set, read back, a key never set).
#include <gtest/gtest.h>

#include "comm/gloo_communicator.h"
#include "tests/comm/process_group.h"
#include "tests/integration/cluster_fixture.h"
#include "workers/controller_kv_store.h"

namespace mariana::integration {
namespace {

TEST(CommKvStore, RanksRendezvousThroughTheControllerAndAllreduce) {
  Cluster c;
  c.start_controller();
  const std::string addr = trim(read_file(c.state_dir() + "/controller.addr").value());
  const std::string token = trim(read_file(c.state_dir() + "/cluster.token").value());
  const std::vector<comm::RankOutcome> outcomes = comm::run_ranks(2, c.dir(), [&](int rank) -> std::string {
    auto store = std::make_shared<workers::ControllerKvStore>(addr, token);
    comm::GlooOptions options;
    options.group = "kv-test";
    options.rank = rank;
    options.size = 2;
    options.timeout = std::chrono::seconds(10);
    Result<std::unique_ptr<comm::GlooCommunicator>> comm = comm::GlooCommunicator::connect(store, options);
    if (!comm.ok()) return comm.status().to_string();
    std::vector<float> data(1000, static_cast<float>(rank + 1));
    if (Status st = (*comm)->allreduce_sum(data); !st.ok()) return st.to_string();
    for (float x : data)
      if (x != 3.0f) return "allreduce gave " + std::to_string(x) + ", expected 3";
    return "";
  }, std::chrono::seconds(30));
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(outcomes[r].exited) << "rank " << r << " did not finish";
    EXPECT_EQ(outcomes[r].report, "") << "rank " << r;
  }

  workers::ControllerKvStore store(addr, token);
  // The ranks' arrival marks are in the controller's table.
  Result<std::optional<std::string>> arrived = store.try_get("mariana/comm/kv-test/arrived/1");
  ASSERT_TRUE(arrived.ok()) << arrived.status().to_string();
  EXPECT_EQ(arrived->value_or("<missing>"), "1");
  ASSERT_TRUE(store.set("k", std::string("a\0b", 3)).ok());
  Result<std::optional<std::string>> v = store.try_get("k");
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->value_or("<missing>"), std::string("a\0b", 3));
  Result<std::optional<std::string>> none = store.try_get("never-set");
  ASSERT_TRUE(none.ok()) << none.status().to_string();
  EXPECT_FALSE(none->has_value());
}

}  // namespace
}  // namespace mariana::integration
