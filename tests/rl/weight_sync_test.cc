// Weight sync between forked processes over Gloo: receivers end with the root's parameters bit for
// bit and its version, whatever the bucket size, with and without the checksum; a member whose
// model differs fails and keeps its parameters, and with verify every member learns of it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "comm/gloo_communicator.h"
#include "comm/store.h"
#include "model/config.h"
#include "rl/weight_sync.h"
#include "tests/comm/process_group.h"

namespace mariana::rl {
namespace {

namespace fs = std::filesystem;

class WeightSyncTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mariana_wsync_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "store");
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result<std::unique_ptr<comm::GlooCommunicator>> join(int rank, int n) {
    MARIANA_ASSIGN_OR_RETURN(std::shared_ptr<comm::FileStore> store, comm::FileStore::open((dir_ / "store").string()));
    comm::GlooOptions o;
    o.group = "sync";
    o.rank = rank;
    o.size = n;
    o.timeout = std::chrono::seconds(20);
    return comm::GlooCommunicator::connect(store, o);
  }

  ModelConfig tiny() {
    auto c = model_config_load(std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json");
    EXPECT_TRUE(c.ok());
    return c.value();
  }
  fs::path dir_;
};

TEST_F(WeightSyncTest, ReceiversEndWithTheRootsWeightsAndVersion) {
  const ModelConfig cfg = tiny();
  Model<float> want(cfg);
  want.init_weights(1);
  for (const auto& [bucket, verify] : {std::pair{int64_t{4096}, false}, std::pair{int64_t{32} << 20, true}}) {
    SCOPED_TRACE(bucket);
    fs::remove_all(dir_ / "store");
    fs::create_directories(dir_ / "store");
    const auto outcomes = comm::run_ranks(
        3, dir_.string(),
        [&](int rank) -> std::string {
          auto group = join(rank, 3);
          if (!group.ok()) return group.status().to_string();
          Model<float> m(cfg);
          m.init_weights(rank == 1 ? 1 : 2);  // the root is rank 1; the others start elsewhere
          WeightSyncOptions o;
          o.bucket_bytes = bucket;
          o.verify = rank == 1 ? verify : !verify;  // the root's choice holds: the others follow it
          auto r = weight_sync(*group.value(), 1, m, 42, o);
          if (!r.ok()) return r.status().to_string();
          if (r.value().version != 42) return "version " + std::to_string(r.value().version);
          const int64_t n = m.table().arena_size();
          if (r.value().bytes != n * 4) return "bytes " + std::to_string(r.value().bytes);
          const int64_t buckets = (n * 4 + bucket - 1) / bucket;
          if (r.value().buckets != buckets) return "buckets " + std::to_string(r.value().buckets);
          if (!std::equal(m.params(), m.params() + n, want.params())) return "weights differ from the root's";
          return "";
        },
        std::chrono::seconds(60));
    for (size_t r = 0; r < outcomes.size(); ++r) {
      EXPECT_TRUE(outcomes[r].exited) << "rank " << r;
      EXPECT_EQ(outcomes[r].report, "") << "rank " << r;
    }
  }
}

TEST_F(WeightSyncTest, AMemberWithAnotherModelFailsAndKeepsItsParameters) {
  const ModelConfig cfg = tiny();
  ModelConfig other = cfg;
  other.num_hidden_layers += 1;
  const auto outcomes = comm::run_ranks(
      2, dir_.string(),
      [&](int rank) -> std::string {
        auto group = join(rank, 2);
        if (!group.ok()) return group.status().to_string();
        Model<float> m(rank == 0 ? cfg : other);
        m.init_weights(5 + rank);
        const std::vector<float> before(m.params(), m.params() + m.table().arena_size());
        WeightSyncOptions o;
        o.verify = true;  // the root learns of it too
        auto r = weight_sync(*group.value(), 0, m, 7, o);
        if (r.ok()) return "synced a model of another shape";
        const StatusCode want = rank == 1 ? StatusCode::kFailedPrecondition : StatusCode::kUnavailable;
        if (r.status().code() != want) return r.status().to_string();
        if (rank == 1 && r.status().message().find("parameter slots, the root's (rank 0)") == std::string::npos)
          return r.status().to_string();
        if (!std::equal(before.begin(), before.end(), m.params())) return "parameters changed";
        return "";
      },
      std::chrono::seconds(60));
  for (size_t r = 0; r < outcomes.size(); ++r) {
    EXPECT_TRUE(outcomes[r].exited) << "rank " << r;
    EXPECT_EQ(outcomes[r].report, "") << "rank " << r;
  }
}

}  // namespace
}  // namespace mariana::rl
