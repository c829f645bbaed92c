// FileStore over gloo::rendezvous::FileStore.
#include "comm/store.h"

#include <gloo/rendezvous/file_store.h>

#include <filesystem>
#include <system_error>

namespace mariana::comm {

// Gloo's FileStore with its non-blocking existence check made public (Gloo's own get() waits).
class FileStore::Impl : public gloo::rendezvous::FileStore {
 public:
  using gloo::rendezvous::FileStore::FileStore;
  bool has(const std::string& key) { return check({key}); }
};

FileStore::FileStore(std::string dir, std::unique_ptr<Impl> impl) : dir_(std::move(dir)), impl_(std::move(impl)) {}
FileStore::~FileStore() = default;

Result<std::unique_ptr<FileStore>> FileStore::open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Unavailable("comm file store " + dir + ": cannot create the directory: " + ec.message());
  try {
    return std::unique_ptr<FileStore>(new FileStore(dir, std::make_unique<Impl>(dir)));
  } catch (const std::exception& e) {
    return Unavailable("comm file store " + dir + ": " + e.what());
  }
}

Status FileStore::set(const std::string& key, const std::string& value) {
  try {
    impl_->set(key, std::vector<char>(value.begin(), value.end()));
    return Status::Ok();
  } catch (const std::exception& e) {
    return Unavailable("comm file store " + dir_ + ": set '" + key + "': " + e.what());
  }
}

Result<std::optional<std::string>> FileStore::try_get(const std::string& key) {
  try {
    if (!impl_->has(key)) return std::optional<std::string>();
    const std::vector<char> v = impl_->get(key);
    return std::optional<std::string>(std::string(v.begin(), v.end()));
  } catch (const std::exception& e) {
    return Unavailable("comm file store " + dir_ + ": get '" + key + "': " + e.what());
  }
}

}  // namespace mariana::comm
