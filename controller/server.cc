// The controller process's event loop over ZeroMQ, RocksDB and cpp-httplib (see server.h).
#include "controller/server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include <httplib.h>
#include <zmq.hpp>

#include "controller/rocksdb_state_store.h"
#include "core/file_util.h"
#include "proto/client.h"
#include "proto/curve.h"

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

Status controller_run(const ServerOptions& options, const std::atomic<bool>* stop) {
  if (options.state_dir.empty()) return InvalidArgument("controller: --state-dir is required");
  std::error_code ec;
  std::filesystem::create_directories(options.state_dir, ec);
  if (ec) return Unavailable("controller: cannot create " + options.state_dir + ": " + ec.message());
  MARIANA_ASSIGN_OR_RETURN(std::string token, cluster_token_ensure(options.state_dir));
  MARIANA_ASSIGN_OR_RETURN(auto store, RocksStateStore::open(options.state_dir + "/db"));

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
  try {
    router.bind(options.listen);
  } catch (const zmq::error_t& e) {
    return Unavailable("controller: cannot listen on " + options.listen + ": " + e.what());
  }
  const std::string bound = router.get(zmq::sockopt::last_endpoint);
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
    int port = options.metrics_port;
    if (port == 0) port = http.bind_to_any_port("127.0.0.1");
    else if (!http.bind_to_port("127.0.0.1", port)) port = -1;
    if (port < 0) return Unavailable("controller: cannot serve /metrics on 127.0.0.1:" + std::to_string(options.metrics_port));
    MARIANA_RETURN_IF_ERROR(write_file_atomic(options.state_dir + "/metrics.port", std::to_string(port) + "\n"));
    http_thread = std::thread([&] { http.listen_after_bind(); });
  }
  std::fprintf(stderr, "controller: listening on %s%s, state in %s, epoch %llu\n", bound.c_str(),
               curve ? " with CURVE" : "", options.state_dir.c_str(), static_cast<unsigned long long>(ctl.epoch()));
  if (curve) std::fprintf(stderr, "controller: CURVE allow-list %s/curve/authorized_keys\n", options.state_dir.c_str());
  if (options.on_ready) options.on_ready(bound);

  Status result;
  auto last_metrics = std::chrono::steady_clock::now();
  while (!stop->load()) {
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    try {
      zmq::poll(&item, 1, std::chrono::milliseconds(20));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;  // a signal (SIGTERM sets *stop)
    }
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
