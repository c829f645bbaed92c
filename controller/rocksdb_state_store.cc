// RocksDB implementation of StateStore.
#include "controller/rocksdb_state_store.h"

#include <cctype>
#include <filesystem>

#include <rocksdb/options.h>

#include "core/file_util.h"

namespace mariana::controller {

const char* table_name(Table t) {
  switch (t) {
    case Table::kNodes: return "nodes";
    case Table::kActors: return "actors";
    case Table::kJobs: return "jobs";
    case Table::kPlacementGroups: return "placement_groups";
    case Table::kCheckpoints: return "checkpoints";
    case Table::kMetrics: return "metrics";
    case Table::kKv: return "kv";
    case Table::kMeta: return "meta";
  }
  return "?";
}

namespace {
Status rocks_status(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsCorruption()) return DataLoss(what + ": " + s.ToString());
  if (s.IsNotFound()) return NotFound(what + ": " + s.ToString());
  if (s.IsIOError()) return Unavailable(what + ": " + s.ToString());
  return Internal(what + ": " + s.ToString());
}


// The commit count in the database: the default column family, written in every commit's batch.
constexpr char kCommitsKey[] = "mariana/commits";

rocksdb::DBOptions db_options() {
  rocksdb::DBOptions o;
  o.create_if_missing = true;
  o.create_missing_column_families = true;
  o.max_background_jobs = 1;
  o.keep_log_file_num = 2;
  o.max_open_files = 64;  // bounded: the server keeps file descriptors in reserve for the store
  // Integrity. kPointInTimeRecovery (RocksDB's default) replays the WAL up to the first damaged
  // record and silently drops the rest; this mode refuses to open instead, and tolerates only a
  // record torn at the very end of the WAL (a kill -9 inside a write whose sync never returned,
  // so never acknowledged). kAbsoluteConsistency would refuse that too.
  o.wal_recovery_mode = rocksdb::WALRecoveryMode::kTolerateCorruptedTailRecords;
  o.paranoid_checks = true;
  o.track_and_verify_wals_in_manifest = true;  // closed WALs: a missing one or a size mismatch fails open
  return o;
}

std::vector<rocksdb::ColumnFamilyDescriptor> column_families() {
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  cfs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (int i = 0; i < kNumTables; ++i)
    cfs.emplace_back(table_name(static_cast<Table>(i)), rocksdb::ColumnFamilyOptions());
  return cfs;
}

Result<uint64_t> parse_count(const std::string& text, const std::string& what) {
  std::string t = text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  uint64_t n = 0;
  if (t.empty() || t.size() > 19 || t.find_first_not_of("0123456789") != std::string::npos)
    return DataLoss(what + ": expected a decimal commit count, got \"" + t.substr(0, 40) + "\"");
  for (char ch : t) n = n * 10 + static_cast<uint64_t>(ch - '0');
  return n;
}

// The count the sidecar file records (nullopt when it does not exist).
Result<std::optional<uint64_t>> recorded_commits(const std::string& path) {
  auto text = read_file(path);
  if (!text.ok() && text.status().code() == StatusCode::kNotFound) return std::optional<uint64_t>();
  if (!text.ok()) return text.status();
  MARIANA_ASSIGN_OR_RETURN(uint64_t n, parse_count(text.value(), path));
  return std::optional<uint64_t>(n);
}

}  // namespace

Result<std::unique_ptr<RocksStateStore>> RocksStateStore::open_db(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Unavailable("state store " + dir + ": cannot create directory: " + ec.message());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(db_options(), dir, column_families(), &handles, &raw);
  if (s.IsCorruption())
    return DataLoss("state store " + dir + ": RocksDB refuses to open it, a write-ahead log (*.log), MANIFEST or table "
                    "file is damaged or missing: " + s.ToString());
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    // RocksDB's LOCK file is held: another controller (or `controller repair`) has this state dir.
    const std::filesystem::path state = std::filesystem::path(dir).parent_path();
    auto pid = read_file((state / "controller.pid").string());
    std::string who = "pid unknown: no " + (state / "controller.pid").string(),
                how = "mariana controller stop --state-dir " + state.string() + ", or Ctrl-C in its terminal";
    if (pid.ok() && !pid.value().empty() && std::isdigit(static_cast<unsigned char>(pid.value()[0]))) {
      const std::string n = pid.value().substr(0, pid.value().find_first_not_of("0123456789"));
      who = "pid " + n;
      how = "mariana controller stop --state-dir " + state.string() + " (or kill " + n + ")";
    }
    return FailedPrecondition("another controller is running on " + state.string() + " (" + who + "); stop it with " +
                              how + ", or give this one another --state-dir");
  }
  if (!s.ok()) return rocks_status(s, "state store " + dir);
  std::unique_ptr<RocksStateStore> store(new RocksStateStore());
  store->dir_ = dir;
  store->db_.reset(raw);
  store->default_ = handles[0];
  store->handles_.assign(handles.begin() + 1, handles.end());
  std::string value;
  s = raw->Get(rocksdb::ReadOptions(), store->default_, kCommitsKey, &value);
  if (s.ok()) {
    MARIANA_ASSIGN_OR_RETURN(store->commits_, parse_count(value, "state store " + dir + ": key " + kCommitsKey));
  } else if (!s.IsNotFound()) {
    return rocks_status(s, "state store " + dir + ": read " + kCommitsKey);
  }
  return store;
}

Result<std::unique_ptr<RocksStateStore>> RocksStateStore::open(const std::string& dir) {
  MARIANA_ASSIGN_OR_RETURN(auto store, open_db(dir));
  const std::string sidecar = dir + "/" + kCommitsFileName;
  MARIANA_ASSIGN_OR_RETURN(auto recorded, recorded_commits(sidecar));
  const uint64_t held = store->commits_;
  // The sidecar is written after each commit is durable, so it never runs ahead of an intact
  // database; the database may be one commit ahead (a crash between the two writes).
  if (recorded && held < *recorded)
    return DataLoss("state store " + dir + ": the database holds " + std::to_string(held) + " commits but " +
                    sidecar + " records " + std::to_string(*recorded) +
                    " acknowledged ones: its write-ahead log (*.log) was deleted, truncated or damaged, and "
                    "acknowledged jobs, actors and metrics are missing");
  if (!recorded && held > 0)
    return DataLoss("state store " + dir + ": " + sidecar + " is missing but the database holds " +
                    std::to_string(held) + " commits: the state dir was tampered with or partly restored");
  // A new database (or one from before the count existed) starts its record at what it holds.
  if (!recorded || *recorded != held)
    MARIANA_RETURN_IF_ERROR(write_file_atomic(sidecar, std::to_string(held) + "\n"));
  return store;
}

Result<std::string> RocksStateStore::repair(const std::string& dir) {
  if (!std::filesystem::exists(dir + "/CURRENT")) return NotFound("state store " + dir + ": no RocksDB database here");
  const std::string sidecar = dir + "/" + kCommitsFileName;
  auto recorded = recorded_commits(sidecar);  // unreadable: repaired all the same
  auto s = rocksdb::RepairDB(dir, db_options(), column_families());
  if (!s.ok()) return rocks_status(s, "state store " + dir + ": repair");
  MARIANA_ASSIGN_OR_RETURN(auto store, open_db(dir));
  std::string summary = "kept rows:";
  for (int i = 0; i < kNumTables; ++i) {
    MARIANA_ASSIGN_OR_RETURN(auto rows, store->scan(static_cast<Table>(i), ""));
    summary += std::string(" ") + table_name(static_cast<Table>(i)) + " " + std::to_string(rows.size());
  }
  summary += "\nkept commits: " + std::to_string(store->commits_) + " of ";
  summary += recorded.ok() && recorded.value() ? std::to_string(*recorded.value()) + " acknowledged"
                                               : "an unknown number acknowledged (" + sidecar + " unreadable)";
  MARIANA_RETURN_IF_ERROR(write_file_atomic(sidecar, std::to_string(store->commits_) + "\n"));
  return summary;
}

RocksStateStore::~RocksStateStore() {
  if (db_) {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    if (default_) db_->DestroyColumnFamilyHandle(default_);
    db_->Close();
  }
}

void RocksStateStore::put(Table t, std::string_view key, std::string_view value) {
  batch_.Put(handles_[static_cast<int>(t)], rocksdb::Slice(key.data(), key.size()),
             rocksdb::Slice(value.data(), value.size()));
  ++staged_;
}

void RocksStateStore::erase(Table t, std::string_view key) {
  batch_.Delete(handles_[static_cast<int>(t)], rocksdb::Slice(key.data(), key.size()));
  ++staged_;
}

Status RocksStateStore::commit() {
  if (staged_ == 0) return Status::Ok();
  batch_.Put(default_, kCommitsKey, std::to_string(commits_ + 1));
  rocksdb::WriteOptions wo;
  wo.sync = true;
  auto s = db_->Write(wo, &batch_);
  batch_.Clear();
  staged_ = 0;
  MARIANA_RETURN_IF_ERROR(rocks_status(s, "state store " + dir_ + ": commit"));
  ++commits_;
  return write_file_atomic(dir_ + "/" + kCommitsFileName, std::to_string(commits_) + "\n");
}

Result<KeyValues> RocksStateStore::scan(Table t, std::string_view prefix) {
  KeyValues out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[static_cast<int>(t)]));
  for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
    auto k = it->key();
    if (!k.starts_with(rocksdb::Slice(prefix.data(), prefix.size()))) break;
    out.emplace_back(k.ToString(), it->value().ToString());
  }
  MARIANA_RETURN_IF_ERROR(rocks_status(it->status(), std::string("state store scan of ") + table_name(t)));
  return out;
}

Result<std::optional<std::string>> RocksStateStore::get(Table t, std::string_view key) {
  std::string value;
  auto s = db_->Get(rocksdb::ReadOptions(), handles_[static_cast<int>(t)], rocksdb::Slice(key.data(), key.size()),
                    &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  MARIANA_RETURN_IF_ERROR(rocks_status(s, std::string("state store get in ") + table_name(t)));
  return std::optional<std::string>(std::move(value));
}

}  // namespace mariana::controller
