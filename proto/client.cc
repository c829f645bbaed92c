// RpcClient over a ZeroMQ DEALER socket (see client.h).
#include "proto/client.h"

#include <chrono>
#include <cstdio>
#include <random>

namespace mariana::proto {

std::string random_hex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* kHex = "0123456789abcdef";
  std::string s(n, '0');
  for (auto& c : s) c = kHex[rng() & 15];
  return s;
}

RpcClient::RpcClient(zmq::context_t& ctx, const std::string& endpoint, std::string token, std::string identity,
                     const CurveClientKeys* curve)
    : sock_(ctx, zmq::socket_type::dealer), endpoint_(endpoint), token_(std::move(token)),
      identity_(identity.empty() ? "cli/" + random_hex(12) : std::move(identity)) {
  sock_.set(zmq::sockopt::routing_id, identity_);
  sock_.set(zmq::sockopt::linger, 0);
  sock_.set(zmq::sockopt::sndhwm, 100000);
  sock_.set(zmq::sockopt::rcvhwm, 100000);
  if (curve && curve->enabled()) {
    Status st = curve_client_apply(sock_, *curve);
    if (!st.ok()) std::fprintf(stderr, "rpc client: %s\n", st.to_string().c_str());
  }
  sock_.connect(endpoint_);
  std::random_device rd;
  next_id_ = ((static_cast<uint64_t>(rd()) << 20) & 0x7fffffffffffull) | 1;
}

uint64_t RpcClient::send(const Fill& fill) {
  const uint64_t id = next_id_++;
  Outgoing m(id, identity_, token_);
  fill(m.payload());
  send_raw(m.bytes());
  return id;
}

void RpcClient::send_raw(const std::string& frame) {
  sock_.send(zmq::buffer(frame), zmq::send_flags::none);
}

Result<Frame> RpcClient::recv(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  DecodeOptions opts;
  opts.token = token_;
  opts.accept_tokenless_errors = true;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(std::max<int64_t>(0, left.count())));
    if (!(item.revents & ZMQ_POLLIN)) {
      return Status(StatusCode::kDeadlineExceeded,
                    "no reply from " + endpoint_ + " within " + std::to_string(timeout_ms) + " ms");
    }
    zmq::message_t msg;
    if (!sock_.recv(msg, zmq::recv_flags::dontwait)) continue;
    bool more = msg.more();
    while (more) {  // a peer must send one frame per message; drop the rest
      zmq::message_t extra;
      (void)sock_.recv(extra, zmq::recv_flags::none);
      more = extra.more();
    }
    auto frame = decode_envelope(msg.data(), msg.size(), opts, &counters_);
    if (!frame.ok()) return frame.status();
    return frame;
  }
}

Result<Frame> RpcClient::call(const Fill& fill, int timeout_ms) {
  const uint64_t id = send(fill);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    MARIANA_ASSIGN_OR_RETURN(auto frame, recv(static_cast<int>(std::max<int64_t>(0, left.count()))));
    if (frame.request_id() != id && frame.request_id() != 0) continue;  // a late reply to an earlier call
    if (frame.payload().which() == Envelope::Payload::ERROR) return error_status(frame.payload().getError());
    return frame;
  }
}

}  // namespace mariana::proto
