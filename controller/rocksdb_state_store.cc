// RocksDB implementation of StateStore.
#include "controller/rocksdb_state_store.h"

#include <filesystem>

#include <rocksdb/options.h>

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
}  // namespace

Result<std::unique_ptr<RocksStateStore>> RocksStateStore::open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Unavailable("state store " + dir + ": cannot create directory: " + ec.message());
  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = true;
  db_opts.create_missing_column_families = true;
  db_opts.max_background_jobs = 1;
  db_opts.keep_log_file_num = 2;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  cfs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (int i = 0; i < kNumTables; ++i)
    cfs.emplace_back(table_name(static_cast<Table>(i)), rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(db_opts, dir, cfs, &handles, &raw);
  if (!s.ok()) return rocks_status(s, "state store " + dir);
  std::unique_ptr<RocksStateStore> store(new RocksStateStore());
  store->dir_ = dir;
  store->db_.reset(raw);
  // handles[0] is the default family; keep it to destroy it too.
  store->handles_.assign(handles.begin() + 1, handles.end());
  store->db_->DestroyColumnFamilyHandle(handles[0]);
  return store;
}

RocksStateStore::~RocksStateStore() {
  if (db_) {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
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
  rocksdb::WriteOptions wo;
  wo.sync = true;
  auto s = db_->Write(wo, &batch_);
  batch_.Clear();
  staged_ = 0;
  return rocks_status(s, "state store " + dir_ + ": commit");
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
