// host_id and actor_endpoint (see host.h).
#include "proto/host.h"

#include <fcntl.h>
#include <unistd.h>

#include <fstream>

namespace mariana::proto {

const std::string& host_id() {
  static const std::string id = [] {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string s;
    std::getline(in, s);  // leaves s empty when the file cannot be read
    return s;
  }();
  return id;
}

std::string actor_endpoint(const std::string& address, const std::string& local_address, const std::string& host) {
  if (local_address.empty() || host.empty() || host != host_id()) return address;
  constexpr std::string_view kIpc = "ipc://";
  if (local_address.starts_with(kIpc) &&
      ::faccessat(AT_FDCWD, local_address.c_str() + kIpc.size(), W_OK, AT_EACCESS) != 0)
    return address;  // another user's worker, or a container with another /tmp on the same host
  return local_address;
}

}  // namespace mariana::proto
