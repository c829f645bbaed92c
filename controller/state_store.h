// StateStore: the controller's durable tables. Writes are staged by put()/erase() and become
// durable together at commit() (one synced RocksDB WriteBatch: group commit). The controller
// acknowledges nothing before the commit that covers it returns OK. Reads see committed data.
// Implementations: RocksStateStore (rocksdb_state_store.h, one column family per table) and
// FakeStateStore (fake_state_store.h, in memory, with fault injection for tests).
// Used only from the controller's event-loop thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace mariana::controller {

enum class Table { kNodes, kActors, kJobs, kPlacementGroups, kCheckpoints, kMetrics, kKv, kMeta };
constexpr int kNumTables = 8;

// The column family name of a table: "nodes", "actors", "jobs", "placement_groups",
// "checkpoints", "metrics", "kv", "meta".
const char* table_name(Table t);

using KeyValues = std::vector<std::pair<std::string, std::string>>;

class StateStore {
 public:
  virtual ~StateStore() = default;
  virtual void put(Table t, std::string_view key, std::string_view value) = 0;
  virtual void erase(Table t, std::string_view key) = 0;
  // Number of staged, uncommitted writes.
  virtual size_t staged() const = 0;
  // Makes all staged writes durable (fsync) atomically; on error they are dropped.
  virtual Status commit() = 0;
  // Committed rows of a table whose key starts with `prefix`, in key order.
  virtual Result<KeyValues> scan(Table t, std::string_view prefix = "") = 0;
  virtual Result<std::optional<std::string>> get(Table t, std::string_view key) = 0;
};

}  // namespace mariana::controller
