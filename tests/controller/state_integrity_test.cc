// The state dir's integrity checks: five jobs acknowledged by a Controller on the real
// RocksStateStore, then the WAL deleted, truncated or byte-flipped. Opening must refuse with
// DataLoss naming the directory; RocksStateStore::repair lets it open again. A writer killed with
// SIGKILL after its synced commits (no damage) reopens cleanly with every acknowledged job.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "controller/rocksdb_state_store.h"
#include "tests/controller/controller_harness.h"

namespace mariana::controller {
namespace {

namespace fs = std::filesystem;
using W = proto::Envelope::Payload;

constexpr int kJobs = 5;
const char* kSpec =
    "name = \"integrity\"\nkind = \"actors\"\n[actors]\nclass = \"counter\"\ncount = 1\n"
    "resources = { CPU = 1 }\n[run]\nsteps = 3\n";

class StateIntegrity : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("mariana-integrity-" + std::to_string(::getpid()))).string();
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Submits kJobs jobs one by one through a Controller on the store in dir_; each reply (the
  // acknowledgement) comes only after its commit. Returns the acknowledged job ids.
  std::vector<std::string> acknowledge_jobs(RocksStateStore* store) {
    FakeTransport transport;
    FakeClock clock;
    ControllerOptions options;
    options.token = kTestToken;
    options.state_dir = dir_;
    Controller ctl(options, store, &transport, &clock);
    EXPECT_TRUE(ctl.load().ok());
    EXPECT_TRUE(ctl.flush().ok());
    std::vector<std::string> ids;
    for (int i = 0; i < kJobs; ++i) {
      proto::Outgoing m(100 + i, "cli/t", kTestToken);
      auto s = m.payload().initSubmitJob();
      s.setSpecToml(kSpec);
      s.setSpecPath("job.toml");
      const std::string bytes = m.bytes();
      ctl.handle_frame("cli/t", bytes.data(), bytes.size());
      EXPECT_TRUE(ctl.flush().ok());
    }
    proto::DecodeOptions o;
    o.token = kTestToken;
    for (auto& [peer, frame] : transport.sent) {
      auto f = proto::decode_envelope(frame.data(), frame.size(), o, nullptr);
      if (f.ok() && f.value().payload().which() == W::SUBMIT_JOB_REPLY)
        ids.push_back(f.value().payload().getSubmitJobReply().getJobId().cStr());
    }
    EXPECT_EQ(ids.size(), static_cast<size_t>(kJobs));
    return ids;
  }

  void acknowledge_and_close() {
    auto store = RocksStateStore::open(dir_);
    ASSERT_TRUE(store.ok()) << store.status().to_string();
    acknowledge_jobs(store.value().get());
  }

  // The newest write-ahead log (the one holding the jobs: a clean close does not flush memtables).
  std::string newest_wal() const {
    std::string newest;
    for (auto& e : fs::directory_iterator(dir_))
      if (e.path().extension() == ".log" && e.path().string() > newest) newest = e.path().string();
    EXPECT_FALSE(newest.empty()) << "no *.log in " << dir_;
    return newest;
  }

  size_t jobs_held() {
    auto store = RocksStateStore::open(dir_);
    EXPECT_TRUE(store.ok()) << store.status().to_string();
    if (!store.ok()) return 0;
    return store.value()->scan(Table::kJobs, "").value().size();
  }

  // Open refuses with DataLoss naming the directory; repair reports and lets it open again.
  void expect_refused_then_repaired() {
    auto refused = RocksStateStore::open(dir_);
    ASSERT_FALSE(refused.ok()) << "a damaged WAL opened silently";
    EXPECT_EQ(refused.status().code(), StatusCode::kDataLoss) << refused.status().to_string();
    EXPECT_NE(refused.status().message().find(dir_), std::string::npos) << refused.status().to_string();
    auto again = RocksStateStore::open(dir_);  // refusing changed nothing
    EXPECT_FALSE(again.ok());
    auto summary = RocksStateStore::repair(dir_);
    ASSERT_TRUE(summary.ok()) << summary.status().to_string();
    EXPECT_NE(summary.value().find("kept rows:"), std::string::npos) << summary.value();
    EXPECT_NE(summary.value().find("jobs "), std::string::npos) << summary.value();
    EXPECT_LE(jobs_held(), static_cast<size_t>(kJobs));
    // And it keeps working: new commits are cross-checked from the repaired count on.
    {
      auto store = RocksStateStore::open(dir_);
      ASSERT_TRUE(store.ok()) << store.status().to_string();
      store.value()->put(Table::kKv, "after-repair", "1");
      ASSERT_TRUE(store.value()->commit().ok());
    }
    auto reopened = RocksStateStore::open(dir_);
    ASSERT_TRUE(reopened.ok()) << reopened.status().to_string();
    EXPECT_TRUE(reopened.value()->get(Table::kKv, "after-repair").value().has_value());
  }

  // On a fresh store: five acknowledged jobs, then `damage` at fraction `at` of the newest WAL.
  void damage_wal_at(double at, const std::function<void(const std::string&, uintmax_t)>& damage) {
    SCOPED_TRACE("damage at " + std::to_string(at));
    fs::remove_all(dir_);
    acknowledge_and_close();
    const std::string wal = newest_wal();
    damage(wal, static_cast<uintmax_t>(static_cast<double>(fs::file_size(wal)) * at));
    expect_refused_then_repaired();
  }

  std::string dir_;
};

TEST_F(StateIntegrity, CleanCloseKeepsEveryAcknowledgedJob) {
  acknowledge_and_close();
  EXPECT_EQ(jobs_held(), static_cast<size_t>(kJobs));
  EXPECT_EQ(jobs_held(), static_cast<size_t>(kJobs));  // a second restart (WAL recovered into a table)
}

TEST_F(StateIntegrity, DeletedWalIsRefused) {
  acknowledge_and_close();
  fs::remove(newest_wal());
  expect_refused_then_repaired();
}

TEST_F(StateIntegrity, TruncatedWalIsRefused) {
  for (double keep : {0.0, 0.5, 0.9})
    damage_wal_at(keep, [](const std::string& wal, uintmax_t offset) { fs::resize_file(wal, offset); });
}

TEST_F(StateIntegrity, ByteFlippedWalIsRefused) {
  for (double at : {0.1, 0.5, 0.95})
    damage_wal_at(at, [](const std::string& wal, uintmax_t offset) {
      std::fstream f(wal, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(offset));
      char c = 0;
      f.get(c);
      f.seekp(static_cast<std::streamoff>(offset));
      f.put(static_cast<char>(c ^ 0x40));
    });
}

TEST_F(StateIntegrity, TornTailOfAnUnacknowledgedWriteIsTolerated) {
  acknowledge_and_close();
  // What a kill -9 inside the write(2) of a next, never synced commit leaves: a record header
  // (checksum, length 100, full type) and part of its payload at the end of the WAL.
  std::ofstream wal(newest_wal(), std::ios::binary | std::ios::app);
  const char torn[] = {'\x11', '\x22', '\x33', '\x44', 100, 0, 1, 'p', 'a', 'r', 't'};
  wal.write(torn, sizeof torn);
  wal.close();
  EXPECT_EQ(jobs_held(), static_cast<size_t>(kJobs));
}

TEST_F(StateIntegrity, MissingCommitRecordIsRefused) {
  acknowledge_and_close();
  fs::remove(dir_ + "/" + kCommitsFileName);
  expect_refused_then_repaired();
  EXPECT_EQ(jobs_held(), static_cast<size_t>(kJobs));  // nothing was damaged: repair keeps it all
}

TEST_F(StateIntegrity, KillNineAfterSyncedCommitsRecoversEverything) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto store = RocksStateStore::open(dir_);
    if (!store.ok()) ::_exit(3);
    acknowledge_jobs(store.value().get());
    ::raise(SIGKILL);  // no close, no flush: only what the synced commits made durable
    ::_exit(4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  EXPECT_EQ(jobs_held(), static_cast<size_t>(kJobs));
}

}  // namespace
}  // namespace mariana::controller

namespace mariana::controller {
namespace {

// A second controller on a state dir whose store is open says so (with the pid from
// controller.pid and how to stop it) instead of RocksDB's raw "lock" error.
TEST(StateStoreLock, SecondOpenNamesTheRunningController) {
  const std::string dir = (fs::temp_directory_path() / ("mariana-lock-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir + "/controller.pid") << "4242\n";
  auto first = RocksStateStore::open(dir + "/db");
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  auto second = RocksStateStore::open(dir + "/db");
  ASSERT_FALSE(second.ok());
  const std::string msg = second.status().message();
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition) << msg;
  EXPECT_NE(msg.find("another controller is running on " + dir + " (pid 4242); stop it with mariana controller stop "
                     "--state-dir " + dir + " (or kill 4242)"),
            std::string::npos)
      << msg;
  first.value().reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace mariana::controller
