// comm::Store: the key-value seam ranks rendezvous through (each rank publishes its address and
// reads the others'). FileStore keeps keys as files in a directory every rank can see (tests, one
// machine); workers/controller_kv_store.h implements the same two calls over the controller's
// key-value table (kvPut / kvGet).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/status.h"

namespace gloo::rendezvous {
class FileStore;
}

namespace mariana::comm {

// Two calls, both prompt (no blocking wait): waiting with a deadline is the communicator's job, so
// a store needs nothing more than a put and a non-blocking get. Keys are written once.
class Store {
 public:
  virtual ~Store() = default;
  virtual Status set(const std::string& key, const std::string& value) = 0;
  // The value, or nullopt while no rank has set the key.
  virtual Result<std::optional<std::string>> try_get(const std::string& key) = 0;
};

// Keys as files under `dir` (created if missing), through Gloo's own FileStore: each value is
// written to a temporary file and renamed into place, so a reader sees all of it or nothing.
class FileStore final : public Store {
 public:
  static Result<std::unique_ptr<FileStore>> open(const std::string& dir);
  ~FileStore() override;

  Status set(const std::string& key, const std::string& value) override;
  Result<std::optional<std::string>> try_get(const std::string& key) override;

 private:
  class Impl;
  FileStore(std::string dir, std::unique_ptr<Impl> impl);
  std::string dir_;
  std::unique_ptr<Impl> impl_;
};

// Another store's keys under `prefix`: each start of a gang rendezvouses in a namespace of its own
// (group names are used once per store).
class PrefixStore final : public Store {
 public:
  PrefixStore(std::shared_ptr<Store> inner, std::string prefix) : inner_(std::move(inner)), prefix_(std::move(prefix)) {}
  Status set(const std::string& key, const std::string& value) override { return inner_->set(prefix_ + key, value); }
  Result<std::optional<std::string>> try_get(const std::string& key) override { return inner_->try_get(prefix_ + key); }

 private:
  std::shared_ptr<Store> inner_;
  std::string prefix_;
};

}  // namespace mariana::comm
