// The controller process's event loop over ZeroMQ, RocksDB and cpp-httplib (see server.h).
#include "controller/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include <httplib.h>
#include <zmq.hpp>

#include "controller/rocksdb_state_store.h"
#include "core/file_util.h"
#include "proto/client.h"
#include "proto/curve.h"
#include "proto/wire.h"

namespace mariana::controller {

namespace {

class ZmqTransport final : public Transport {
 public:
  explicit ZmqTransport(zmq::socket_t* sock) : sock_(sock) {}
  bool send(const std::string& peer, const std::string& frame) override {
    try {
      if (!sock_->send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
      return sock_->send(zmq::buffer(frame), zmq::send_flags::dontwait).has_value();
    } catch (const zmq::error_t&) {
      return false;  // EHOSTUNREACH (ROUTER_MANDATORY): the peer is not connected now
    }
  }

 private:
  zmq::socket_t* sock_;
};

// File descriptors kept back from client connections: RocksDB's table cache (max_open_files 64)
// and its WAL, MANIFEST and LOG, the atomic writes of the commit record, /metrics, ZeroMQ's own.
constexpr int64_t kFdReserve = 128;
// ZMQ_MAXMSGSIZE: a frame past this is refused by ZeroMQ's decoder from its length header, before
// any of it is buffered, and the connection dropped. The slack covers CURVE's per-message box
// (the limit applies to the encrypted frame); frames between kMaxFrameBytes and this still reach
// decode_envelope and are counted as oversized.
constexpr int64_t kMaxWireFrameBytes = static_cast<int64_t>(proto::kMaxFrameBytes) + 4096;

// Raises the soft RLIMIT_NOFILE to the hard limit and logs both; returns the limit in force.
int64_t raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  const rlim_t before = rl.rlim_cur;
  if (rl.rlim_cur != rl.rlim_max) {
    rlimit want = rl;
    want.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  std::fprintf(stderr, "controller: open-file limit %llu (soft was %llu, hard %llu)\n",
               static_cast<unsigned long long>(rl.rlim_cur), static_cast<unsigned long long>(before),
               static_cast<unsigned long long>(rl.rlim_max));
  return rl.rlim_cur == RLIM_INFINITY ? int64_t{1} << 30 : static_cast<int64_t>(rl.rlim_cur);
}

// The local TCP port of socket fd, or -1 (not a TCP socket, closed).
int local_port(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return -1;
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  if (addr.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  return -1;
}

// Bounds the ROUTER's TCP connections. A ZeroMQ socket monitor reports each accepted connection's
// fd and each disconnect; past the limit a new connection is shut down at once (ZeroMQ reads EOF
// and closes it itself), so a flood cannot take the fds the state store needs, ZeroMQ's accept
// never fails with EMFILE (which spins its I/O thread), and connected clients keep being served.
// Idle connections that got in are dropped by ZMQ_HANDSHAKE_IVL, which makes room again.
class ConnectionGuard {
 public:
  ConnectionGuard(zmq::context_t& ctx, zmq::socket_t& router, size_t limit) : limit_(limit), monitor_(ctx, zmq::socket_type::pair) {
    const char* endpoint = "inproc://mariana-controller-connections";
    if (zmq_socket_monitor(router.handle(), endpoint, ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0)
      throw zmq::error_t();
    monitor_.set(zmq::sockopt::linger, 0);
    monitor_.connect(endpoint);
  }
  void set_port(int port) { port_ = port; }
  void* handle() { return monitor_.handle(); }
  uint64_t refused() const { return refused_; }

  // Handles the pending monitor events.
  void drain() {
    for (;;) {
      zmq::message_t event, address;
      if (!monitor_.recv(event, zmq::recv_flags::dontwait)) return;
      if (event.more()) (void)monitor_.recv(address, zmq::recv_flags::none);
      if (event.size() < 6 || port_ < 0) continue;  // only TCP listeners are guarded
      uint16_t kind = 0;
      int32_t fd = -1;
      std::memcpy(&kind, event.data(), 2);
      std::memcpy(&fd, static_cast<const char*>(event.data()) + 2, 4);
      if (kind == ZMQ_EVENT_DISCONNECTED) {
        open_.erase(fd);
      } else if (kind == ZMQ_EVENT_ACCEPTED) {
        open_.insert(fd);
        if (open_.size() > limit_) prune();
        // The port check: the fd may have been closed and reused since the event was queued.
        if (open_.size() > limit_ && local_port(fd) == port_) {
          ::shutdown(fd, SHUT_RDWR);
          open_.erase(fd);
          ++refused_;
        }
      }
    }
  }

 private:
  // Forgets fds that are no longer connections on our port (a missed disconnect), once a second.
  void prune() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_prune_ < std::chrono::seconds(1)) return;
    last_prune_ = now;
    for (auto it = open_.begin(); it != open_.end();) it = local_port(*it) == port_ ? std::next(it) : open_.erase(it);
  }

  size_t limit_;
  zmq::socket_t monitor_;
  int port_ = -1;
  std::set<int> open_;
  uint64_t refused_ = 0;
  std::chrono::steady_clock::time_point last_prune_{};
};

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Result<std::string> cluster_token_ensure(const std::string& state_dir) {
  const std::string path = state_dir + "/cluster.token";
  auto existing = read_file(path);
  if (existing.ok()) {
    std::string tok = trim(existing.value());
    if (tok.size() < 32) return InvalidArgument(path + ": cluster token is shorter than 32 characters");
    ::chmod(path.c_str(), 0600);
    return tok;
  }
  if (existing.status().code() != StatusCode::kNotFound) return existing.status();
  const std::string tok = proto::random_hex(64);
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno_status(errno, "create " + tmp);
  const std::string line = tok + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) return errno_status(errno, "write " + path);
  return tok;
}

Result<std::string> controller_repair(const std::string& state_dir) {
  if (state_dir.empty()) return InvalidArgument("controller repair: --state-dir is required");
  return RocksStateStore::repair(state_dir + "/db");
}

Status controller_run(const ServerOptions& options, const std::atomic<bool>* stop) {
  if (options.state_dir.empty()) return InvalidArgument("controller: --state-dir is required");
  std::error_code ec;
  std::filesystem::create_directories(options.state_dir, ec);
  if (ec) return Unavailable("controller: cannot create " + options.state_dir + ": " + ec.message());
  MARIANA_ASSIGN_OR_RETURN(std::string token, cluster_token_ensure(options.state_dir));
  auto opened = RocksStateStore::open(options.state_dir + "/db");
  if (!opened.ok() && opened.status().code() == StatusCode::kDataLoss)
    return DataLoss("controller: refusing to start on the state in " + options.state_dir + ": " +
                    opened.status().message() +
                    "\nTo start with what can still be read (acknowledged jobs, actors and metrics may be lost): "
                    "mariana controller repair --state-dir " + options.state_dir);
  MARIANA_RETURN_IF_ERROR(opened.status());
  auto store = std::move(opened).value();

  zmq::context_t ctx(1);
  // Anything but loopback: CURVE, with a ZAP handler enforcing DIR/curve/authorized_keys.
  const bool curve = !proto::endpoint_is_loopback(options.listen);
  std::unique_ptr<proto::ZapHandler> zap;
  proto::CurveKeypair server_keys;
  if (curve) {
    MARIANA_ASSIGN_OR_RETURN(server_keys, proto::curve_server_keys_ensure(options.state_dir));
    zap = std::make_unique<proto::ZapHandler>(ctx, options.state_dir + "/curve/authorized_keys");
    MARIANA_RETURN_IF_ERROR(zap->start());
  }
  zmq::socket_t router(ctx, zmq::socket_type::router);
  if (curve) MARIANA_RETURN_IF_ERROR(proto::curve_server_apply(router, server_keys));
  router.set(zmq::sockopt::router_mandatory, 1);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::sndhwm, 100000);
  router.set(zmq::sockopt::rcvhwm, 100000);
  router.set(zmq::sockopt::maxmsgsize, kMaxWireFrameBytes);
  router.set(zmq::sockopt::handshake_ivl, options.handshake_timeout_ms);
  const int64_t fd_limit = raise_fd_limit();
  const size_t max_connections = options.max_connections > 0
                                     ? static_cast<size_t>(options.max_connections)
                                     : static_cast<size_t>(std::max<int64_t>(16, fd_limit - kFdReserve));
  ConnectionGuard guard(ctx, router, max_connections);
  try {
    router.bind(options.listen);
  } catch (const zmq::error_t& e) {
    return Unavailable("controller: cannot listen on " + options.listen + ": " + e.what());
  }
  const std::string bound = router.get(zmq::sockopt::last_endpoint);
  const auto colon = bound.rfind(':');
  if (bound.rfind("tcp://", 0) == 0 && colon != std::string::npos) guard.set_port(std::atoi(bound.c_str() + colon + 1));
  MARIANA_RETURN_IF_ERROR(write_file_atomic(options.state_dir + "/controller.addr", bound + "\n"));

  ControllerOptions copts = options.controller;
  copts.token = token;
  copts.state_dir = std::filesystem::absolute(options.state_dir).lexically_normal().string();  // run dirs for workers
  SteadyClock clock;
  ZmqTransport transport(&router);
  Controller ctl(copts, store.get(), &transport, &clock);
  MARIANA_RETURN_IF_ERROR(ctl.load());
  MARIANA_RETURN_IF_ERROR(ctl.flush());

  std::mutex metrics_mu;
  std::string metrics_snapshot = ctl.metrics_text();
  httplib::Server http;
  std::thread http_thread;
  if (options.metrics_port >= 0) {
    http.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
      std::lock_guard<std::mutex> lock(metrics_mu);
      res.set_content(metrics_snapshot, "text/plain; version=0.0.4");
    });
    // SO_REUSEADDR only: cpp-httplib's default SO_REUSEPORT would let a second controller bind the
    // same port and split the scrapes between the two.
    http.set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    int port = options.metrics_port;
    if (port == 0) port = http.bind_to_any_port("127.0.0.1");
    else if (!http.bind_to_port("127.0.0.1", port)) port = -1;
    if (port < 0)
      return Unavailable("controller: cannot serve /metrics on 127.0.0.1:" + std::to_string(options.metrics_port) +
                         " (the port is in use?); pass --metrics-port PORT for another port, --metrics-port 0 for any "
                         "free port, or --metrics-port -1 for no /metrics");
    MARIANA_RETURN_IF_ERROR(write_file_atomic(options.state_dir + "/metrics.port", std::to_string(port) + "\n"));
    http_thread = std::thread([&] { http.listen_after_bind(); });
  } else {
    std::filesystem::remove(options.state_dir + "/metrics.port", ec);  // an earlier run's port
  }
  std::fprintf(stderr, "controller: listening on %s%s, state in %s, epoch %llu\n", bound.c_str(),
               curve ? " with CURVE" : "", options.state_dir.c_str(), static_cast<unsigned long long>(ctl.epoch()));
  if (curve) std::fprintf(stderr, "controller: CURVE allow-list %s/curve/authorized_keys\n", options.state_dir.c_str());
  std::fprintf(stderr, "controller: at most %zu client connections, handshake within %d ms, frames up to %zu bytes\n",
               max_connections, options.handshake_timeout_ms, proto::kMaxFrameBytes);
  if (options.on_ready) options.on_ready(bound);

  Status result;
  auto last_metrics = std::chrono::steady_clock::now();
  while (!stop->load()) {
    zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0}, {guard.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(20));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;  // a signal (SIGTERM sets *stop)
    }
    guard.drain();
    for (int i = 0; i < 4096; ++i) {
      zmq::message_t id, body;
      if (!router.recv(id, zmq::recv_flags::dontwait)) break;
      const std::string peer(static_cast<const char*>(id.data()), id.size());
      if (!id.more()) {  // a routing id with no body: nothing to decode
        ctl.handle_frame(peer, nullptr, 0);
        continue;
      }
      (void)router.recv(body, zmq::recv_flags::none);
      if (body.more()) {  // more than one frame: malformed; drain the rest
        bool more = true;
        while (more) {
          zmq::message_t extra;
          (void)router.recv(extra, zmq::recv_flags::none);
          more = extra.more();
        }
        ctl.handle_frame(peer, nullptr, 0);
        continue;
      }
      ctl.handle_frame(peer, body.data(), body.size());
    }
    ctl.tick();
    result = ctl.flush();
    if (!result.ok()) {
      std::fprintf(stderr, "controller: state commit failed, stopping: %s\n", result.to_string().c_str());
      break;
    }
    const auto now = std::chrono::steady_clock::now();
    if (options.metrics_port >= 0 && now - last_metrics > std::chrono::milliseconds(250)) {
      last_metrics = now;
      std::string text = ctl.metrics_text();
      text += "# HELP mariana_connections_refused_total TCP connections closed on arrival past the connection limit.\n"
              "# TYPE mariana_connections_refused_total counter\n"
              "mariana_connections_refused_total " + std::to_string(guard.refused()) + "\n";
      if (zap) {
        text += "# HELP mariana_curve_handshakes_total CURVE clients accepted and refused by the ZAP handler.\n"
                "# TYPE mariana_curve_handshakes_total counter\n";
        text += "mariana_curve_handshakes_total{result=\"accepted\"} " + std::to_string(zap->accepted()) + "\n";
        text += "mariana_curve_handshakes_total{result=\"refused\"} " + std::to_string(zap->refused()) + "\n";
      }
      std::lock_guard<std::mutex> lock(metrics_mu);
      metrics_snapshot.swap(text);
    }
  }
  if (http_thread.joinable()) {
    http.stop();
    http_thread.join();
  }
  router.close();
  if (zap) zap->stop();
  return result;
}

}  // namespace mariana::controller
