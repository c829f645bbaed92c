// Which host a process runs on, and which of a worker's endpoints to call it on from here. A
// worker binds its call socket on tcp (for callers anywhere) and, when it can, on a Unix-domain
// socket (`ipc://`, its "local address"), which only callers on the same host can reach and which
// round-trips faster. Hosts are told apart by the kernel's boot id, so a host id never matches a
// copy of the same machine image elsewhere nor the same host after a reboot.
#pragma once

#include <string>

namespace mariana::proto {

// /proc/sys/kernel/random/boot_id (a UUID, new at every boot), read once; "" where unreadable.
const std::string& host_id();

// The endpoint to call a worker on: `local_address` when it is set, the worker's `host` is this
// one (host_id(), non-empty) and, for an `ipc://` address, this process may connect to the socket
// file (it exists in this mount namespace and this user may write it: the directory is private to
// the worker's user); else `address`. It looks at the file system, so resolve once per worker,
// not per call.
std::string actor_endpoint(const std::string& address, const std::string& local_address, const std::string& host);

}  // namespace mariana::proto
