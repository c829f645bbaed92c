// A Controller wired to fakes (FakeStateStore, FakeTransport, FakeClock) with helpers that play
// agents, workers and clients. Frames the controller sends are decoded back for assertions.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "controller/controller.h"
#include "controller/fake_state_store.h"
#include "proto/clock.h"
#include "proto/wire.h"

namespace mariana::controller {

class FakeTransport final : public Transport {
 public:
  bool send(const std::string& peer, const std::string& frame) override {
    if (down.count(peer)) return false;
    sent.emplace_back(peer, frame);
    return true;
  }
  std::vector<std::pair<std::string, std::string>> sent;
  std::set<std::string> down;
};

inline const std::string kTestToken = std::string(64, 't');

struct Harness {
  FakeStateStore store;
  FakeTransport transport;
  FakeClock clock;
  ControllerOptions options;
  std::unique_ptr<Controller> ctl;
  uint64_t next_id = 100;

  Harness() {
    options.token = kTestToken;
    options.state_dir = "/state";
    options.heartbeat_ms = 100;
    options.node_timeout_ms = 1000;
    options.worker_timeout_ms = 1000;
    options.start_timeout_ms = 5000;
    restart();
  }

  // A fresh Controller over the same store (a restart); the old one's unsent frames are lost.
  void restart() {
    ctl = std::make_unique<Controller>(options, &store, &transport, &clock);
    Status st = ctl->load();
    EXPECT_TRUE(st.ok()) << st.to_string();
    EXPECT_TRUE(ctl->flush().ok());
  }

  // Sends one frame from `peer` and flushes; returns the request id.
  uint64_t send(const std::string& peer, const std::function<void(proto::Envelope::Payload::Builder)>& fill) {
    const uint64_t id = next_id++;
    proto::Outgoing m(id, peer, kTestToken);
    fill(m.payload());
    const std::string bytes = m.bytes();
    ctl->handle_frame(peer, bytes.data(), bytes.size());
    Status st = ctl->flush();
    EXPECT_TRUE(st.ok()) << st.to_string();
    return id;
  }

  void tick(int64_t advance_ms = 0) {
    clock.advance(advance_ms);
    ctl->tick();
    EXPECT_TRUE(ctl->flush().ok());
  }

  // Decoded frames sent to `peer` since the last take (removed from the log).
  std::vector<proto::Frame> take(const std::string& peer) {
    std::vector<proto::Frame> out;
    proto::DecodeOptions o;
    o.token = kTestToken;
    o.accept_tokenless_errors = true;
    for (auto it = transport.sent.begin(); it != transport.sent.end();) {
      if (it->first == peer) {
        auto f = proto::decode_envelope(it->second.data(), it->second.size(), o, nullptr);
        EXPECT_TRUE(f.ok()) << f.status().to_string();
        if (f.ok()) out.push_back(std::move(f.value()));
        it = transport.sent.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }

  // Frames to `peer` with the given payload kind (only those are removed from the log).
  std::vector<proto::Frame> take(const std::string& peer, proto::Envelope::Payload::Which which) {
    std::vector<proto::Frame> out;
    proto::DecodeOptions o;
    o.token = kTestToken;
    o.accept_tokenless_errors = true;
    for (auto it = transport.sent.begin(); it != transport.sent.end();) {
      auto f = proto::decode_envelope(it->second.data(), it->second.size(), o, nullptr);
      if (it->first == peer && f.ok() && f.value().payload().which() == which) {
        out.push_back(std::move(f.value()));
        it = transport.sent.erase(it);
      } else {
        ++it;
      }
    }
    return out;
  }

  void register_node(const std::string& id, double cpus, std::vector<std::pair<std::string, uint32_t>> workers = {}) {
    send(proto::agent_peer(id), [&](proto::Envelope::Payload::Builder p) {
      auto r = p.initRegisterNode();
      r.setNodeId(id);
      auto res = r.initResources(1);
      res[0].setName("CPU");
      res[0].setAmount(cpus);
      auto cls = r.initActorClasses(3);
      cls.set(0, "counter");
      cls.set(1, "echo");
      cls.set(2, "trainer");
      auto ws = r.initWorkers(static_cast<unsigned>(workers.size()));
      for (unsigned i = 0; i < workers.size(); ++i) {
        ws[i].setActorId(workers[i].first);
        ws[i].setIncarnation(workers[i].second);
      }
    });
  }

  void node_heartbeat(const std::string& id) {
    send(proto::agent_peer(id), [&](proto::Envelope::Payload::Builder p) { p.initHeartbeat().setNodeId(id); });
  }

  // Plays the worker of (actor, incarnation) registering; returns whether it was accepted.
  bool register_worker(const std::string& actor, uint32_t inc, const std::string& node) {
    const std::string peer = proto::worker_peer(actor, inc);
    send(peer, [&](proto::Envelope::Payload::Builder p) {
      auto r = p.initRegisterWorker();
      r.setActorId(actor);
      r.setIncarnation(inc);
      r.setNodeId(node);
      r.setAddress("tcp://127.0.0.1:1");
      r.setPid(1234);
      r.setLocalAddress("ipc:///tmp/mariana-0/" + actor + ".sock");
      r.setHostId("host-a");
    });
    auto replies = take(peer, proto::Envelope::Payload::REGISTER_WORKER_REPLY);
    EXPECT_EQ(replies.size(), 1u);
    return !replies.empty() && replies.back().payload().getRegisterWorkerReply().getAccept();
  }

  void worker_exited(const std::string& node, const std::string& actor, uint32_t inc, int sig) {
    send(proto::agent_peer(node), [&](proto::Envelope::Payload::Builder p) {
      auto e = p.initWorkerExited();
      e.setNodeId(node);
      e.setActorId(actor);
      e.setIncarnation(inc);
      e.setExitCode(-1);
      e.setSignal(sig);
    });
  }

  // Creates an actor as a client; returns its id ("" on an error reply).
  std::string create_actor(const std::string& cls, double cpus, int max_restarts) {
    const uint64_t id = send("cli/t", [&](proto::Envelope::Payload::Builder p) {
      auto s = p.initCreateActor();
      s.setClassName(cls);
      auto r = s.initResources(1);
      r[0].setName("CPU");
      r[0].setAmount(cpus);
      s.setMaxRestarts(max_restarts);
      s.setBundleIndex(-1);
    });
    for (auto& f : take("cli/t"))
      if (f.request_id() == id && f.payload().which() == proto::Envelope::Payload::CREATE_ACTOR_REPLY)
        return f.payload().getCreateActorReply().getActorId().cStr();
    return "";
  }
};

}  // namespace mariana::controller
