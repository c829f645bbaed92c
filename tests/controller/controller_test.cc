// Controller handlers on fakes: the decode boundary, durable-before-ack, the actor lifecycle edges
// (tables.h), node death, placement groups, jobs end to end, and a restart over the same store.
#include <gtest/gtest.h>

#include "tests/controller/controller_harness.h"

namespace mariana::controller {
namespace {

using W = proto::Envelope::Payload;

TEST(Controller, BadFramesGetTokenlessErrorsAndCounters) {
  Harness h;
  std::string garbage(24, '\x5a');
  h.ctl->handle_frame("cli/evil", garbage.data(), garbage.size());
  proto::Outgoing m(3, "cli/evil", std::string(64, 'x'));
  m.payload().setPing();
  const std::string wrong = m.bytes();
  h.ctl->handle_frame("cli/evil", wrong.data(), wrong.size());
  ASSERT_TRUE(h.ctl->flush().ok());
  ASSERT_EQ(h.transport.sent.size(), 2u);
  for (auto& [peer, frame] : h.transport.sent) {
    // The reply must not carry the cluster token.
    EXPECT_EQ(frame.find(kTestToken), std::string::npos);
  }
  auto replies = h.take("cli/evil", W::ERROR);
  ASSERT_EQ(replies.size(), 2u);
  EXPECT_EQ(proto::error_status(replies[1].payload().getError()).code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(replies[1].request_id(), 3u);
  EXPECT_EQ(h.ctl->counters().malformed.load(), 1u);
  EXPECT_EQ(h.ctl->counters().unauthenticated.load(), 1u);
}

TEST(Controller, NothingIsSentBeforeTheCommit) {
  Harness h;
  h.register_node("n1", 4);
  proto::Outgoing m(9, "cli/t", kTestToken);
  auto s = m.payload().initCreateActor();
  s.setClassName("counter");
  s.setBundleIndex(-1);
  const std::string bytes = m.bytes();
  h.transport.sent.clear();
  h.ctl->handle_frame("cli/t", bytes.data(), bytes.size());
  EXPECT_TRUE(h.transport.sent.empty());
  EXPECT_GT(h.store.staged(), 0u);
  const int commits = h.store.commits;
  ASSERT_TRUE(h.ctl->flush().ok());
  EXPECT_EQ(h.store.commits, commits + 1);
  EXPECT_EQ(h.take("cli/t", W::CREATE_ACTOR_REPLY).size(), 1u);
  EXPECT_EQ(h.take(proto::agent_peer("n1"), W::START_WORKER).size(), 1u);
}

TEST(Controller, FailedCommitSendsNothing) {
  Harness h;
  h.register_node("n1", 4);
  h.transport.sent.clear();
  proto::Outgoing m(9, "cli/t", kTestToken);
  m.payload().initCreateActor().setClassName("counter");
  const std::string bytes = m.bytes();
  h.ctl->handle_frame("cli/t", bytes.data(), bytes.size());
  h.store.fail_next_commit = true;
  EXPECT_FALSE(h.ctl->flush().ok());
  EXPECT_TRUE(h.transport.sent.empty());
}

TEST(ActorTable, PendingCreationToAliveWhenItsWorkerRegisters) {
  Harness h;
  h.register_node("n1", 4);
  const std::string id = h.create_actor("counter", 1, 0);
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kPendingCreation);
  auto starts = h.take(proto::agent_peer("n1"), W::START_WORKER);
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(std::string(starts[0].payload().getStartWorker().getClassName().cStr()), "counter");
  EXPECT_FALSE(h.register_worker(id, 1, "n1"));  // a wrong incarnation is refused
  EXPECT_TRUE(h.register_worker(id, 0, "n1"));
  EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kAlive);
  EXPECT_EQ(h.ctl->actor(id)->local_address, "ipc:///tmp/mariana-0/" + id + ".sock");
  EXPECT_EQ(h.ctl->actor(id)->host_id, "host-a");
  // Durable: the store holds it ALIVE, with its endpoints.
  auto row = h.store.get(Table::kActors, id);
  ASSERT_TRUE(row.ok() && row.value().has_value());
  EXPECT_NE(row.value()->find("\"ALIVE\""), std::string::npos);
  auto stored = actor_from_json(*row.value(), id);
  ASSERT_TRUE(stored.ok()) << stored.status().to_string();
  EXPECT_EQ(stored.value().address, "tcp://127.0.0.1:1");
  EXPECT_EQ(stored.value().local_address, "ipc:///tmp/mariana-0/" + id + ".sock");
  EXPECT_EQ(stored.value().host_id, "host-a");
  // A waiter gets them in its ActorInfo.
  h.send("cli/w", [&](proto::Envelope::Payload::Builder p) { p.initWaitActor().setActorId(id); });
  auto infos = h.take("cli/w", W::ACTOR_INFO);
  ASSERT_EQ(infos.size(), 1u);
  auto info = infos[0].payload().getActorInfo();
  EXPECT_EQ(std::string(info.getLocalAddress().cStr()), "ipc:///tmp/mariana-0/" + id + ".sock");
  EXPECT_EQ(std::string(info.getHostId().cStr()), "host-a");
}

TEST(ActorTable, AliveToRestartingOnWorkerDeath) {
  Harness h;
  h.register_node("n1", 4);
  const std::string id = h.create_actor("counter", 1, 2);
  ASSERT_TRUE(h.register_worker(id, 0, "n1"));
  h.take(proto::agent_peer("n1"));
  h.worker_exited("n1", id, 0, 9);
  const ActorRecord* a = h.ctl->actor(id);
  EXPECT_EQ(a->state, ActorState::kRestarting);
  EXPECT_EQ(a->address, "");  // the dead worker's endpoints are gone
  EXPECT_EQ(a->local_address, "");
  EXPECT_EQ(a->host_id, "");
  EXPECT_EQ(a->incarnation, 1u);
  EXPECT_EQ(a->num_restarts, 1u);
  EXPECT_NE(a->last_failure.find("signal 9"), std::string::npos);
  auto starts = h.take(proto::agent_peer("n1"), W::START_WORKER);
  ASSERT_EQ(starts.size(), 1u);
  EXPECT_EQ(starts[0].payload().getStartWorker().getIncarnation(), 1u);
  EXPECT_TRUE(h.register_worker(id, 1, "n1"));
  EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kAlive);
}

TEST(ActorTable, RestartingToDeadWhenRestartsAreExhausted) {
  Harness h;
  h.register_node("n1", 4);
  const std::string id = h.create_actor("counter", 1, 1);
  ASSERT_TRUE(h.register_worker(id, 0, "n1"));
  h.worker_exited("n1", id, 0, 9);
  ASSERT_TRUE(h.register_worker(id, 1, "n1"));
  h.worker_exited("n1", id, 1, 9);
  EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kDead);
  EXPECT_NE(h.ctl->actor(id)->death_cause.find("signal 9"), std::string::npos);
  // A stale exit report changes nothing.
  h.worker_exited("n1", id, 0, 9);
  EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kDead);
}

// A lifetime budget (restart window 0) counts failures, not restarts: a move off a drained node
// (its agent deregistered) is free, so max_restarts = 1 still allows one crash after it.
TEST(ActorTable, ADrainIsNotAFailureForALifetimeBudget) {
  Harness h;
  h.register_node("n1", 2);
  const std::string id = h.create_actor("counter", 1, 1);
  ASSERT_TRUE(h.register_worker(id, 0, "n1"));
  h.register_node("n2", 2);
  h.send(proto::agent_peer("n1"), [&](W::Builder p) {
    auto d = p.initDeregisterNode();
    d.setNodeId("n1");
    d.setReason("agent stop");
  });
  ASSERT_EQ(h.ctl->actor(id)->state, ActorState::kRestarting);
  ASSERT_EQ(h.ctl->actor(id)->node_id, "n2");
  ASSERT_TRUE(h.register_worker(id, 1, "n2"));
  h.worker_exited("n2", id, 1, 9);
  EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kRestarting) << h.ctl->actor(id)->death_cause;
  EXPECT_EQ(h.ctl->actor(id)->num_restarts, 2u);
  EXPECT_EQ(h.ctl->actor(id)->failure_wall_ms.size(), 1u);
}

TEST(ActorTable, AliveToRestartingOnHeartbeatTimeout) {
  Harness h;
  h.register_node("n1", 4);
  const std::string id = h.create_actor("counter", 1, -1);
  ASSERT_TRUE(h.register_worker(id, 0, "n1"));
  for (int i = 0; i < 5; ++i) {  // the agent stays alive, the worker is silent
    h.node_heartbeat("n1");
    h.tick(300);
  }
  EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kRestarting);
  EXPECT_EQ(h.ctl->actor(id)->incarnation, 1u);
}

TEST(ActorTable, PendingCreationToRestartingOnStartTimeout) {
  Harness h;
  h.register_node("n1", 4);
  const std::string id = h.create_actor("counter", 1, 3);
  for (int i = 0; i < 6; ++i) {
    h.node_heartbeat("n1");
    h.tick(1000);
  }
  EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kRestarting);
  EXPECT_NE(h.ctl->actor(id)->last_failure.find("did not register"), std::string::npos);
}

TEST(NodeTable, AliveToDeadOnSilenceReschedulesItsActors) {
  Harness h;
  h.register_node("n1", 2);
  h.register_node("n2", 2);
  const std::string id = h.create_actor("counter", 1, 1);
  const std::string first = h.ctl->actor(id)->node_id;
  ASSERT_TRUE(h.register_worker(id, 0, first));
  const std::string other = first == "n1" ? "n2" : "n1";
  h.take(proto::agent_peer(other));
  for (int i = 0; i < 5; ++i) {
    h.node_heartbeat(other);
    h.send(proto::worker_peer(id, 0), [&](W::Builder p) {
      auto hb = p.initHeartbeat();
      hb.setActorId(id);
      hb.setIncarnation(0);
    });
    h.tick(300);
  }
  EXPECT_EQ(h.ctl->node(first)->state, NodeState::kDead);
  const ActorRecord* a = h.ctl->actor(id);
  EXPECT_EQ(a->state, ActorState::kRestarting);
  EXPECT_EQ(a->node_id, other);
  EXPECT_EQ(h.take(proto::agent_peer(other), W::START_WORKER).size(), 1u);
}

TEST(PlacementGroups, StrictSpreadIsAtomicAndInfeasibleIsReported) {
  Harness h;
  h.register_node("n1", 2);
  h.register_node("n2", 2);
  auto create = [&](const char* strategy, int bundles, double cpus) {
    const uint64_t rid = h.send("cli/t", [&](W::Builder p) {
      auto c = p.initCreatePlacementGroup();
      c.setStrategy(strategy);
      auto bs = c.initBundles(static_cast<unsigned>(bundles));
      for (int i = 0; i < bundles; ++i) {
        auto r = bs[static_cast<unsigned>(i)].initResources(1);
        r[0].setName("CPU");
        r[0].setAmount(cpus);
      }
    });
    for (auto& f : h.take("cli/t"))
      if (f.request_id() == rid) {
        if (f.payload().which() == W::ERROR) return std::string("error: ") + f.payload().getError().getMessage().cStr();
        return std::string(f.payload().getPlacementGroupReply().getPgId().cStr());
      }
    return std::string("no reply");
  };
  const std::string pg = create("STRICT_SPREAD", 2, 1);
  ASSERT_EQ(pg.rfind("pg-", 0), 0u) << pg;
  const PgRecord* p = h.ctl->placement_group(pg);
  EXPECT_EQ(p->state, PgState::kCreated);
  EXPECT_NE(p->bundle_nodes[0], p->bundle_nodes[1]);
  EXPECT_NE(create("STRICT_SPREAD", 3, 1).find("infeasible"), std::string::npos);
  EXPECT_NE(create("PACK", 1, 64).find("fits on none"), std::string::npos);
  // Feasible but not now (each node has 1 CPU left): PENDING, placed once the first is removed.
  const std::string waiting = create("STRICT_PACK", 2, 1);
  EXPECT_EQ(h.ctl->placement_group(waiting)->state, PgState::kPending);
  h.send("cli/t", [&](W::Builder b) { b.initRemovePlacementGroup().setPgId(pg); });
  EXPECT_EQ(h.ctl->placement_group(waiting)->state, PgState::kCreated);
}

const char* kJob = R"(
name = "unit"
kind = "actors"
[actors]
class = "counter"
count = 2
max_restarts = 2
resources = { CPU = 1 }
[placement]
strategy = "SPREAD"
[run]
steps = 3
checkpoint_every = 2
)";

std::string submit(Harness& h, const std::string& spec, std::string* error = nullptr) {
  const uint64_t rid = h.send("cli/t", [&](W::Builder p) {
    auto s = p.initSubmitJob();
    s.setSpecToml(spec);
    s.setSpecPath("job.toml");
  });
  for (auto& f : h.take("cli/t"))
    if (f.request_id() == rid) {
      if (f.payload().which() == W::ERROR) {
        if (error) *error = f.payload().getError().getMessage().cStr();
        return "";
      }
      return f.payload().getSubmitJobReply().getJobId().cStr();
    }
  return "";
}

// Plays every worker of the job: registers the ones being started, answers step calls.
void drive_workers(Harness& h, const std::vector<std::string>& nodes, int rounds) {
  for (int r = 0; r < rounds; ++r) {
    for (auto& n : nodes) {
      for (auto& f : h.take(proto::agent_peer(n), W::START_WORKER)) {
        auto s = f.payload().getStartWorker();
        h.register_worker(s.getActorId().cStr(), s.getIncarnation(), n);
      }
    }
    std::vector<std::pair<std::string, proto::Frame>> calls;
    for (auto it = h.transport.sent.begin(); it != h.transport.sent.end();) {
      if (it->first.rfind("w/", 0) == 0) {
        proto::DecodeOptions o;
        o.token = kTestToken;
        auto f = proto::decode_envelope(it->second.data(), it->second.size(), o, nullptr);
        if (f.ok() && f.value().payload().which() == W::ACTOR_CALL) calls.emplace_back(it->first, std::move(f.value()));
        it = h.transport.sent.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& [peer, f] : calls) {
      proto::Outgoing m(f.request_id(), peer, kTestToken);
      auto ret = m.payload().initActorReturn();
      auto v = proto::encode_struct<proto::Int64Value>([](proto::Int64Value::Builder b) { b.setValue(1); });
      ret.setResult(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(v.data()), v.size()));
      const std::string bytes = m.bytes();
      h.ctl->handle_frame(peer, bytes.data(), bytes.size());
      ASSERT_TRUE(h.ctl->flush().ok());
    }
    h.tick(10);
  }
}

TEST(Jobs, BadSpecsAreRefusedAtSubmit) {
  Harness h;
  h.register_node("n1", 2);
  std::string err;
  EXPECT_EQ(submit(h, "kind = \"nope\"\n", &err), "");
  EXPECT_NE(err.find("unknown job kind"), std::string::npos) << err;
  EXPECT_EQ(submit(h, "kind = \"actors\"\n[run]\nsteps = 1\n", &err), "");
  EXPECT_NE(err.find("actors"), std::string::npos) << err;
  std::string big = kJob;
  big.replace(big.find("CPU = 1"), 7, "CPU = 99");
  EXPECT_EQ(submit(h, big, &err), "");
  EXPECT_NE(err.find("infeasible"), std::string::npos) << err;
  std::string cls = kJob;
  cls.replace(cls.find("\"counter\""), 9, "\"nosuch\"");
  EXPECT_EQ(submit(h, cls, &err), "");
  EXPECT_NE(err.find("no node offers"), std::string::npos) << err;
}

TEST(Jobs, ActorJobRunsToSuccessWithMetricsAndCheckpoints) {
  Harness h;
  h.register_node("n1", 2);
  h.register_node("n2", 2);
  const std::string job = submit(h, kJob);
  ASSERT_FALSE(job.empty());
  drive_workers(h, {"n1", "n2"}, 10);
  const JobRecord* j = h.ctl->job(job);
  ASSERT_EQ(j->state, JobState::kSucceeded) << j->message;
  EXPECT_EQ(j->step, 3);
  EXPECT_EQ(j->checkpoints, 1);
  auto metrics = h.store.scan(Table::kMetrics, job + "/");
  EXPECT_EQ(metrics.value().size(), 3u);
  auto ckpts = h.store.scan(Table::kCheckpoints, job + "/");
  ASSERT_EQ(ckpts.value().size(), 1u);
  EXPECT_NE(ckpts.value()[0].second.find("/state/checkpoints/" + job + "/step-2"), std::string::npos);
  // SPREAD put the two actors on both nodes; the job's end killed them and removed the group.
  EXPECT_EQ(h.ctl->placement_group(j->pg_id)->state, PgState::kRemoved);
  for (auto& id : j->actor_ids) EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kDead);
}

TEST(Jobs, ActorJobSurvivesAControllerRestart) {
  Harness h;
  h.register_node("n1", 2);
  h.register_node("n2", 2);
  std::string spec = kJob;
  spec.replace(spec.find("steps = 3"), 9, "steps = 6");
  const std::string job = submit(h, spec);
  drive_workers(h, {"n1", "n2"}, 2);
  const int64_t before = h.ctl->job(job)->step;
  ASSERT_GT(before, 0);
  ASSERT_LT(before, 6);
  h.transport.sent.clear();
  h.restart();  // everything in memory is gone; RocksDB (here the fake) is all that is left
  EXPECT_EQ(h.ctl->job(job)->step, before);
  EXPECT_EQ(h.ctl->job(job)->state, JobState::kRunning);
  // Agents see the new epoch and register again, listing their workers.
  std::vector<std::pair<std::string, uint32_t>> on_n1, on_n2;
  for (auto& id : h.ctl->job(job)->actor_ids) {
    const ActorRecord* a = h.ctl->actor(id);
    (a->node_id == "n1" ? on_n1 : on_n2).push_back({id, a->incarnation});
  }
  h.register_node("n1", 2, on_n1);
  h.register_node("n2", 2, on_n2);
  drive_workers(h, {"n1", "n2"}, 12);
  const JobRecord* j = h.ctl->job(job);
  ASSERT_EQ(j->state, JobState::kSucceeded) << j->message;
  auto metrics = h.store.scan(Table::kMetrics, job + "/");
  EXPECT_EQ(metrics.value().size(), 6u);  // no metric point lost, none written twice
  EXPECT_EQ(h.store.scan(Table::kCheckpoints, job + "/").value().size(), 3u);
}

TEST(Jobs, StopKillsTheActors) {
  Harness h;
  h.register_node("n1", 2);
  h.register_node("n2", 2);
  std::string spec = kJob;
  spec.replace(spec.find("steps = 3"), 9, "steps = 1000");
  const std::string job = submit(h, spec);
  drive_workers(h, {"n1", "n2"}, 2);
  h.send("cli/t", [&](W::Builder p) { p.initStopJob().setJobId(job); });
  EXPECT_EQ(h.ctl->job(job)->state, JobState::kStopped);
  for (auto& id : h.ctl->job(job)->actor_ids) EXPECT_EQ(h.ctl->actor(id)->state, ActorState::kDead);
  EXPECT_FALSE(h.take(proto::agent_peer("n1"), W::STOP_WORKER).empty());
}

TEST(Controller, QueryAndMetricsText) {
  Harness h;
  h.register_node("n1", 3);
  auto status = h.ctl->query("status", "");
  EXPECT_EQ(status["nodes"]["ALIVE"], 1);
  EXPECT_EQ(status["resources"]["CPU"]["total"], 3.0);
  const std::string text = h.ctl->metrics_text();
  EXPECT_NE(text.find("mariana_nodes{state=\"ALIVE\"} 1"), std::string::npos);
  EXPECT_NE(text.find("mariana_wire_frames_total{result=\"malformed\"} 0"), std::string::npos);
}

}  // namespace
}  // namespace mariana::controller
