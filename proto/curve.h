// CURVE (ZeroMQ's built-in encryption and authentication) for a controller listening on anything
// but loopback: key files under the state dir, the ZAP handler that enforces the allow-list of
// client public keys, and the socket options of both ends. Keys are made by zmq_curve_keypair
// at the controller's first non-loopback start; there is no key in the source. File formats
// (text, Z85 keys, mode 0600) are in controller/state_format.md:
//
//   DIR/curve/server.key        public <z85>\nsecret <z85>\n          the controller's keypair
//   DIR/curve/authorized_keys   <z85 public key> [name]\n per line      the allow-list
//   DIR/curve/client.key        server <z85>\npublic <z85>\nsecret <z85>\n  a client's credentials
//                               (this one is the state dir's own; `controller add-client` makes more)
#pragma once

#include <atomic>
#include <cstdint>
#include <set>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "core/status.h"

namespace mariana::proto {

struct CurveKeypair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;
};

struct CurveClientKeys {
  std::string server_public;
  CurveKeypair client;
  bool enabled() const { return !server_public.empty(); }
};

// A fresh keypair (zmq_curve_keypair). Unavailable if libzmq was built without CURVE.
Result<CurveKeypair> curve_keypair();

// Endpoints that need no CURVE: tcp://127.x.x.x, tcp://localhost, ipc://, inproc://.
bool endpoint_is_loopback(const std::string& endpoint);

// The controller's keys under state_dir/curve/, created on first use (the server keypair, one
// client keypair for the state dir's own clients, and the allow-list holding it). Mode 0600.
Result<CurveKeypair> curve_server_keys_ensure(const std::string& state_dir);
// A new client keypair added to the allow-list; its credentials written to out_path (0600).
Status curve_add_client(const std::string& state_dir, const std::string& name, const std::string& out_path);
// Reads a client credentials file (server, public, secret). InvalidArgument naming the file/line.
Result<CurveClientKeys> curve_client_load(const std::string& path);

// Socket options: a CURVE server (before bind), a CURVE client (before connect).
Status curve_server_apply(zmq::socket_t& sock, const CurveKeypair& server);
Status curve_client_apply(zmq::socket_t& sock, const CurveClientKeys& keys);

// The ZAP handler (ZeroMQ RFC 27) of one context: a thread with a REP socket on
// inproc://zeromq.zap.01 that accepts a CURVE client only when its public key is in
// DIR/curve/authorized_keys (re-read when the file changes). Start it before binding the server
// socket; stop() before the context closes.
class ZapHandler {
 public:
  ZapHandler(zmq::context_t& ctx, std::string authorized_keys_path);
  ~ZapHandler();
  Status start();
  void stop();
  uint64_t accepted() const { return accepted_.load(); }
  uint64_t refused() const { return refused_.load(); }

 private:
  void loop();
  void reload();

  zmq::context_t& ctx_;
  std::string path_;
  zmq::socket_t sock_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> accepted_{0}, refused_{0};
  std::set<std::string> allowed_;  // 32-byte binary keys; the handler's thread only
  int64_t loaded_mtime_ = -1;
};

}  // namespace mariana::proto
