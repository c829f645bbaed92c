// RpcClient over a ZeroMQ DEALER socket (see client.h).
#include "proto/client.h"

#include <algorithm>
#include <cerrno>
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
  // A blocking receive with ZMQ_RCVTIMEO, not a zmq::poll and then a receive: one wait instead of
  // two calls into libzmq, a few percent of a loopback round trip.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  DecodeOptions opts;
  opts.token = token_;
  opts.accept_tokenless_errors = true;
  int wait_ms = std::max(0, timeout_ms);  // ZMQ_RCVTIMEO -1 would wait forever
  for (;;) {
    if (wait_ms != rcvtimeo_ms_) {
      sock_.set(zmq::sockopt::rcvtimeo, wait_ms);
      rcvtimeo_ms_ = wait_ms;
    }
    zmq::message_t msg;
    bool got = false;
    try {
      got = sock_.recv(msg, zmq::recv_flags::none).has_value();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::max<int64_t>(0, left.count()));
      if (wait_ms > 0) continue;  // a signal: wait out the rest
    }
    if (!got) {
      return Status(StatusCode::kDeadlineExceeded,
                    "no reply from " + endpoint_ + " within " + std::to_string(timeout_ms) + " ms");
    }
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
  int wait_ms = timeout_ms;  // the whole timeout at first, so recv keeps its ZMQ_RCVTIMEO from call to call
  for (;;) {
    MARIANA_ASSIGN_OR_RETURN(auto frame, recv(wait_ms));
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    wait_ms = static_cast<int>(std::max<int64_t>(0, left.count()));
    if (frame.request_id() != id && frame.request_id() != 0) continue;  // a late reply to an earlier call
    if (frame.payload().which() == Envelope::Payload::ERROR) return error_status(frame.payload().getError());
    return frame;
  }
}

Result<nlohmann::json> query_controller(RpcClient& rpc, const std::string& what, const std::string& id,
                                        int timeout_ms) {
  MARIANA_ASSIGN_OR_RETURN(auto reply, rpc.call(
                                           [&](Envelope::Payload::Builder p) {
                                             auto q = p.initQuery();
                                             q.setWhat(what);
                                             q.setId(id);
                                           },
                                           timeout_ms));
  if (reply.payload().which() != Envelope::Payload::QUERY_REPLY)
    return Internal("query " + what + ": unexpected reply " + payload_name(reply.payload().which()));
  auto doc = nlohmann::json::parse(reply.payload().getQueryReply().getJson().cStr(), nullptr, false);
  if (doc.is_discarded()) return DataLoss("query " + what + ": the controller sent invalid JSON");
  return doc;
}

}  // namespace mariana::proto
