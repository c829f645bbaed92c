// RocksStateStore: StateStore on RocksDB, one column family per Table, every commit a synced
// WriteBatch (WAL fsync before the commit returns). Disk layout: state_format.md.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "controller/state_store.h"

namespace mariana::controller {

class RocksStateStore final : public StateStore {
 public:
  // Opens (creating if missing) the database in `dir`, with every table's column family.
  static Result<std::unique_ptr<RocksStateStore>> open(const std::string& dir);
  ~RocksStateStore() override;

  void put(Table t, std::string_view key, std::string_view value) override;
  void erase(Table t, std::string_view key) override;
  size_t staged() const override { return staged_; }
  Status commit() override;
  Result<KeyValues> scan(Table t, std::string_view prefix) override;
  Result<std::optional<std::string>> get(Table t, std::string_view key) override;

 private:
  RocksStateStore() = default;
  std::string dir_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // index = Table
  rocksdb::WriteBatch batch_;
  size_t staged_ = 0;
};

}  // namespace mariana::controller
