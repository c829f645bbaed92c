// RocksStateStore: StateStore on RocksDB, one column family per Table, every commit a synced
// WriteBatch (WAL fsync before the commit returns). Open refuses a database that lost acknowledged
// commits: RocksDB's WAL checks plus a commit count kept both in the database and in the
// sidecar file DIR/mariana-commits. Disk layout and the checks: state_format.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "controller/state_store.h"

namespace mariana::controller {

// The sidecar file, inside the database directory, holding the last acknowledged commit count.
inline constexpr char kCommitsFileName[] = "mariana-commits";

class RocksStateStore final : public StateStore {
 public:
  // Opens (creating if missing) the database in `dir`, with every table's column family.
  // DataLoss when the database is damaged or holds fewer commits than were acknowledged (a WAL
  // deleted, truncated or corrupted); the message names `dir` and what is wrong.
  static Result<std::unique_ptr<RocksStateStore>> open(const std::string& dir);
  // Salvages what can be read of a database that open() refuses (rocksdb::RepairDB), then resets
  // the commit cross-check to what the database now holds. Acknowledged state may be lost.
  // Returns a human summary: the rows kept per table, the commits kept of those acknowledged.
  static Result<std::string> repair(const std::string& dir);
  ~RocksStateStore() override;

  void put(Table t, std::string_view key, std::string_view value) override;
  void erase(Table t, std::string_view key) override;
  size_t staged() const override { return staged_; }
  Status commit() override;
  Result<KeyValues> scan(Table t, std::string_view prefix) override;
  Result<std::optional<std::string>> get(Table t, std::string_view key) override;

  // Commits made durable over the database's life (the cross-checked count).

 private:
  RocksStateStore() = default;
  static Result<std::unique_ptr<RocksStateStore>> open_db(const std::string& dir);
  std::string dir_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::ColumnFamilyHandle* default_ = nullptr;     // the store's own bookkeeping (commit count)
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // index = Table
  rocksdb::WriteBatch batch_;
  size_t staged_ = 0;
  uint64_t commits_ = 0;
};

}  // namespace mariana::controller
