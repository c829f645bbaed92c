// Placement of bundles per strategy, atomicity, and feasibility reports; the RocksDB store.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include <rocksdb/db.h>

#include "controller/job_spec.h"
#include "controller/rocksdb_state_store.h"
#include "controller/scheduler.h"

namespace mariana::controller {
namespace {

std::vector<NodeView> nodes(std::vector<double> cpus) {
  std::vector<NodeView> out;
  for (size_t i = 0; i < cpus.size(); ++i)
    out.push_back({"n" + std::to_string(i), {{"CPU", cpus[i]}}, {{"CPU", cpus[i]}}});
  return out;
}

std::vector<Resources> bundles(int n, double cpu) { return std::vector<Resources>(n, Resources{{"CPU", cpu}}); }
std::vector<std::string> none(size_t n) { return std::vector<std::string>(n); }

TEST(Scheduler, StrictPackUsesOneNodeOrNothing) {
  auto r = place_bundles(PgStrategy::kStrictPack, bundles(3, 1), none(3), nodes({2, 4}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value(), (std::vector<std::string>{"n1", "n1", "n1"}));
  EXPECT_FALSE(place_bundles(PgStrategy::kStrictPack, bundles(3, 1), none(3), nodes({2, 2})).ok());
}

TEST(Scheduler, PackFallsBackToSeveralNodes) {
  auto r = place_bundles(PgStrategy::kPack, bundles(3, 1), none(3), nodes({2, 2}));
  ASSERT_TRUE(r.ok());
  int on_n0 = 0;
  for (auto& n : r.value()) on_n0 += n == "n0";
  EXPECT_TRUE(on_n0 == 2 || on_n0 == 1);
}

TEST(Scheduler, StrictSpreadNeedsDistinctNodes) {
  auto r = place_bundles(PgStrategy::kStrictSpread, bundles(2, 1), none(2), nodes({4, 4}));
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r.value()[0], r.value()[1]);
  EXPECT_FALSE(place_bundles(PgStrategy::kStrictSpread, bundles(3, 1), none(3), nodes({4, 4})).ok());
  // A fixed bundle's node is not reused.
  auto fixed = place_bundles(PgStrategy::kStrictSpread, bundles(2, 1), {"n0", ""}, nodes({4, 4, 4}));
  ASSERT_TRUE(fixed.ok());
  EXPECT_NE(fixed.value()[1], "n0");
}

TEST(Scheduler, SpreadIsBestEffort) {
  auto r = place_bundles(PgStrategy::kSpread, bundles(3, 1), none(3), nodes({4, 4}));
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r.value()[0], r.value()[1]);
}

TEST(Scheduler, FeasibilityNamesTheBundle) {
  auto st = check_feasible(PgStrategy::kPack, {{{"CPU", 1}}, {{"GPU", 1}}}, nodes({4}));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("bundle 1"), std::string::npos) << st.message();
  EXPECT_TRUE(check_feasible(PgStrategy::kPack, bundles(9, 1), {}).ok());  // no nodes yet: wait
  EXPECT_EQ(schedule_actor_node({{"CPU", 3}}, nodes({2, 4})), "n1");
  EXPECT_EQ(schedule_actor_node({{"CPU", 5}}, nodes({2, 4})), "");
}

TEST(JobSpec, ErrorsNameTheField) {
  auto bad = job_spec_parse("kind = \"actors\"\n[actors]\nclass = \"c\"\ncount = 0\n[run]\nsteps = 1\n", "j.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("actors.count"), std::string::npos) << bad.status().message();
  auto train = job_spec_parse("kind = \"pretrain\"\n", "j.toml");
  EXPECT_EQ(train.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(train.status().message().find("[job] phase"), std::string::npos) << train.status().message();
  auto missing = job_spec_parse("name = \"x\"\n", "j.toml");
  EXPECT_NE(missing.status().message().find("field 'kind': missing"), std::string::npos);
  auto rl = job_spec_parse("[job]\nphase = \"rl\"\n[grpo]\niterations = 7\n", "j.toml");
  ASSERT_TRUE(rl.ok()) << rl.status().to_string();
  EXPECT_TRUE(rl.value().training());
  EXPECT_EQ(rl.value().steps, 7);  // an rl job's steps are its GRPO iterations
  // [[roles]]: named roles, a service job (no [run]); names unique; not beside [actors].
  auto roles = job_spec_parse("kind = \"actors\"\n[[roles]]\nname = \"a\"\nclass = \"counter\"\ncount = 2\n"
                              "args = { initial = 3 }\n[[roles]]\nname = \"b\"\nclass = \"echo\"\ncount = 1\n",
                              "j.toml");
  ASSERT_TRUE(roles.ok()) << roles.status().to_string();
  EXPECT_TRUE(roles.value().service);
  EXPECT_EQ(roles.value().actor_count(), 3);
  ASSERT_EQ(roles.value().roles.size(), 2u);
  EXPECT_EQ(nlohmann::json::parse(roles.value().roles[0].args), nlohmann::json::parse(R"({"initial": 3})"));
  for (const char* bad : {"kind = \"actors\"\n[[roles]]\nname = \"a\"\nclass = \"x\"\ncount = 1\n[run]\nsteps = 2\n",
                          "kind = \"actors\"\n[[roles]]\nname = \"a\"\nclass = \"x\"\ncount = 1\n"
                          "[[roles]]\nname = \"a\"\nclass = \"x\"\ncount = 1\n",
                          "kind = \"actors\"\n[actors]\nclass = \"x\"\ncount = 1\n[[roles]]\nname = \"a\"\n"
                          "class = \"x\"\ncount = 1\n"})
    EXPECT_FALSE(job_spec_parse(bad, "j.toml").ok()) << bad;
  auto rl_bad = job_spec_parse("[job]\nphase = \"rl\"\n[grpo]\niterations = 0\n", "j.toml");
  EXPECT_NE(rl_bad.status().message().find("grpo.iterations"), std::string::npos) << rl_bad.status().to_string();
  auto sft = job_spec_parse("[job]\nphase = \"sft\"\n", "j.toml");
  EXPECT_TRUE(sft.ok() && sft.value().training());
  auto phase = job_spec_parse("[job]\nphase = \"pretrian\"\n", "j.toml");
  EXPECT_NE(phase.status().message().find("job.phase"), std::string::npos);
}

// `mariana submit` refused nothing here: CPU = nan passed (every comparison with NaN is false).
TEST(JobSpec, NonFiniteResourcesAreRefused) {
  for (const char* v : {"nan", "inf", "-1.0"}) {
    auto s = job_spec_parse(std::string("kind = \"actors\"\n[actors]\nclass = \"c\"\ncount = 1\nresources = { CPU = ") + v +
                                " }\n[run]\nsteps = 1\n",
                            "j.toml");
    ASSERT_FALSE(s.ok()) << v;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.status().message().find("field 'actors.resources.CPU': expected a finite non-negative amount"),
              std::string::npos)
        << s.status().message();
  }
}

TEST(JobSpec, TrainingJobFilesAreTrainerJobs) {
  auto s = job_spec_parse("[job]\nname = \"t\"\nphase = \"extend\"\n[train]\nsteps = 7\nseq_len = 64\n", "t.toml");
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_TRUE(s.value().training());
  EXPECT_EQ(s.value().kind, "extend");
  EXPECT_EQ(s.value().name, "t");
  EXPECT_EQ(s.value().steps, 7);
  EXPECT_EQ(s.value().roles.at(0).actor_class, kTrainerClass);
  EXPECT_EQ(s.value().actor_count(), 1);
  auto d = job_spec_parse("[job]\nphase = \"pretrain\"\n", "t.toml");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value().steps, kTrainDefaultSteps);
  auto strat = job_spec_parse(
      "kind = \"actors\"\n[actors]\nclass = \"c\"\ncount = 1\n[placement]\nstrategy = \"X\"\n[run]\nsteps = 1\n", "j.toml");
  EXPECT_NE(strat.status().message().find("placement.strategy"), std::string::npos);
}

TEST(RocksStateStore, CommitIsDurableAndTablesAreColumnFamilies) {
  const std::string dir = std::filesystem::temp_directory_path() / ("mariana-rocks-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  {
    auto s = RocksStateStore::open(dir);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    auto& store = *s.value();
    store.put(Table::kActors, "actor-1", "{}");
    store.put(Table::kJobs, "job-1", "{\"a\":1}");
    EXPECT_FALSE(store.get(Table::kActors, "actor-1").value().has_value());  // staged, not committed
    ASSERT_TRUE(store.commit().ok());
    store.erase(Table::kJobs, "job-1");
    store.put(Table::kMetrics, "job-1/000000000001", "x");
    store.put(Table::kMetrics, "job-2/000000000001", "y");
    ASSERT_TRUE(store.commit().ok());
  }
  auto s = RocksStateStore::open(dir);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s.value()->get(Table::kActors, "actor-1").value().value(), "{}");
  EXPECT_FALSE(s.value()->get(Table::kJobs, "job-1").value().has_value());
  EXPECT_EQ(s.value()->scan(Table::kMetrics, "job-1/").value().size(), 1u);
  s.value().reset();
  std::vector<std::string> families;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &families).ok());
  for (const char* t : {"nodes", "actors", "jobs", "placement_groups", "checkpoints", "metrics", "kv", "meta"})
    EXPECT_NE(std::find(families.begin(), families.end(), t), families.end()) << t;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mariana::controller
