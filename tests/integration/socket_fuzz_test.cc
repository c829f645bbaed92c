// The controller's socket under fire: random and mutated frames from a raw DEALER, multi-frame
// messages, and clients with a wrong token. No crash, no hang, every bad frame counted, and the
// controller still answers real requests. Also checks /metrics over HTTP.
#include <gtest/gtest.h>

#include <random>

#include <httplib.h>
#include <zmq.hpp>

#include "proto/client.h"
#include "proto/wire.h"
#include "tests/integration/cluster_fixture.h"

namespace mariana::integration {
namespace {

TEST(SocketFuzz, BadFramesAreCountedAndTheControllerSurvives) {
  Cluster c;
  c.start_controller();
  const std::string addr = trim(read_file(c.state_dir() + "/controller.addr").value());
  const std::string token = trim(read_file(c.state_dir() + "/cluster.token").value());
  zmq::context_t ctx(1);
  zmq::socket_t raw(ctx, zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect(addr);
  std::mt19937_64 rng(7);
  // A valid frame to mutate.
  proto::Outgoing seed(1, "cli/fuzz", token);
  seed.payload().initQuery().setWhat("status");
  const std::string valid = seed.bytes();
  int sent_bad = 0;
  for (int i = 0; i < 1500; ++i) {
    std::string f;
    if (i % 3 == 0) {
      f.resize(rng() % 300);
      for (auto& ch : f) ch = static_cast<char>(rng());
    } else {
      f = valid;
      // Mutate only past the token so that most frames authenticate and reach deeper checks.
      for (int k = 0; k < 3; ++k) f[rng() % f.size()] = static_cast<char>(rng());
    }
    if (f == valid) continue;
    raw.send(zmq::buffer(f), zmq::send_flags::none);
    ++sent_bad;
  }
  // Multi-frame and empty messages.
  raw.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
  raw.send(zmq::str_buffer("b"), zmq::send_flags::none);
  raw.send(zmq::message_t(), zmq::send_flags::none);
  // Drain the error replies so the controller is done with them.
  int replies = 0;
  for (;;) {
    zmq::pollitem_t item{raw.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(2000));
    if (!(item.revents & ZMQ_POLLIN)) break;
    zmq::message_t m;
    (void)raw.recv(m);
    ++replies;
  }
  EXPECT_GE(replies, sent_bad / 2);

  // Still serving: a real client gets the status and sees the counters.
  proto::RpcClient good(ctx, addr, token);
  auto reply = good.call([](proto::Envelope::Payload::Builder p) { p.initQuery().setWhat("counters"); }, 5000);
  ASSERT_TRUE(reply.ok()) << reply.status().to_string();
  auto counters = nlohmann::json::parse(reply.value().payload().getQueryReply().getJson().cStr());
  const uint64_t rejected = counters["malformed"].get<uint64_t>() + counters["oversized"].get<uint64_t>() +
                            counters["bad_version"].get<uint64_t>() + counters["unauthenticated"].get<uint64_t>() +
                            counters["unknown_payload"].get<uint64_t>();
  // Every bad frame is either rejected and counted or (a mutation that left it valid) decoded.
  EXPECT_EQ(rejected + counters["decoded"].get<uint64_t>(), static_cast<uint64_t>(sent_bad) + 2 + 1);
  EXPECT_GT(rejected, static_cast<uint64_t>(sent_bad) / 2);

  // An unauthenticated client is refused, and the refusal does not leak the token.
  proto::RpcClient evil(ctx, addr, std::string(64, '0'));
  auto refused = evil.call([](proto::Envelope::Payload::Builder p) { p.initQuery().setWhat("status"); }, 5000);
  EXPECT_EQ(refused.status().code(), StatusCode::kPermissionDenied) << refused.status().to_string();
  auto cli = run_mariana("status --controller " + addr + " --token-file /dev/null");
  EXPECT_NE(cli.exit_code, 0) << cli.out;

  // Prometheus text at /metrics.
  const int port = std::stoi(trim(read_file(c.state_dir() + "/metrics.port").value()));
  httplib::Client http("127.0.0.1", port);
  http.set_connection_timeout(5);
  http.set_read_timeout(5);
  std::string body;
  Cluster::wait_for(
      [&] {
        auto res = http.Get("/metrics");
        if (!res || res->status != 200) return false;
        body = res->body;
        return body.find("mariana_wire_frames_total{result=\"malformed\"} 0") == std::string::npos;
      },
      5);
  EXPECT_NE(body.find("mariana_nodes{state=\"ALIVE\"}"), std::string::npos) << body;
  EXPECT_NE(body.find("mariana_wire_frames_total{result=\"unauthenticated\"}"), std::string::npos);
}

}  // namespace
}  // namespace mariana::integration
