// FakeStateStore: an in-memory StateStore for unit tests, with the same staged/commit semantics
// as RocksStateStore, a commit counter, and fault injection (fail_next_commit).
#pragma once

#include <map>
#include <string>
#include <variant>

#include "controller/state_store.h"

namespace mariana::controller {

class FakeStateStore final : public StateStore {
 public:
  void put(Table t, std::string_view key, std::string_view value) override {
    staged_.push_back({t, std::string(key), std::string(value), false});
  }
  void erase(Table t, std::string_view key) override { staged_.push_back({t, std::string(key), "", true}); }
  size_t staged() const override { return staged_.size(); }
  Status commit() override {
    if (staged_.empty()) return Status::Ok();
    if (fail_next_commit) {
      fail_next_commit = false;
      staged_.clear();
      return Unavailable("fake state store: injected commit failure");
    }
    for (auto& w : staged_) {
      auto& m = tables_[static_cast<int>(w.table)];
      if (w.erase) m.erase(w.key); else m[w.key] = w.value;
    }
    staged_.clear();
    ++commits;
    return Status::Ok();
  }
  Result<KeyValues> scan(Table t, std::string_view prefix) override {
    KeyValues out;
    for (auto& [k, v] : tables_[static_cast<int>(t)])
      if (k.compare(0, prefix.size(), prefix) == 0) out.emplace_back(k, v);
    return out;
  }
  Result<std::optional<std::string>> get(Table t, std::string_view key) override {
    auto& m = tables_[static_cast<int>(t)];
    auto it = m.find(std::string(key));
    if (it == m.end()) return std::optional<std::string>();
    return std::optional<std::string>(it->second);
  }

  bool fail_next_commit = false;
  int commits = 0;

 private:
  struct Write {
    Table table;
    std::string key, value;
    bool erase;
  };
  std::vector<Write> staged_;
  std::map<std::string, std::string> tables_[kNumTables];
};

}  // namespace mariana::controller
