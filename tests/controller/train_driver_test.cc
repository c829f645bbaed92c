// The training job driver on fakes (train_driver.cc): the trainer actor is started with the last
// registered checkpoint, its reports become metric points and checkpoint records (durable before
// the ack), a worker death restarts it from that checkpoint and supersedes later metric points,
// stale incarnations are refused, repeated reports and a controller restart change nothing.
#include <gtest/gtest.h>

#include "tests/controller/controller_harness.h"

namespace mariana::controller {
namespace {

using W = proto::Envelope::Payload;

constexpr const char* kTrainJob = "[job]\nname = \"t\"\nphase = \"pretrain\"\n[model]\nconfig = \"/m.json\"\n[train]\nsteps = 10\n";

struct Trainer {
  Harness& h;
  std::string actor;
  uint32_t inc = 0;

  std::string peer() const { return proto::worker_peer(actor, inc); }

  // Registers the worker the agent was told to start; returns the start call's args.
  proto::StructValue<proto::TrainerStart> start() {
    auto starts = h.take(proto::agent_peer("n1"), W::START_WORKER);
    EXPECT_FALSE(starts.empty());
    actor = starts.back().payload().getStartWorker().getActorId().cStr();
    inc = starts.back().payload().getStartWorker().getIncarnation();
    EXPECT_TRUE(h.register_worker(actor, inc, "n1"));
    return take_start();
  }

  proto::StructValue<proto::TrainerStart> take_start() {
    auto calls = h.take(peer(), W::ACTOR_CALL);
    EXPECT_EQ(calls.size(), 1u);
    auto call = calls.back().payload().getActorCall();
    EXPECT_EQ(std::string(call.getMethod().cStr()), "start");
    auto args = proto::StructValue<proto::TrainerStart>::decode(
        std::string_view(reinterpret_cast<const char*>(call.getArgs().begin()), call.getArgs().size()), "args");
    EXPECT_TRUE(args.ok());
    answer(calls.back().request_id(), StatusCode::kOk, "");
    return std::move(args.value());
  }

  // The worker's reply to the controller's call `rid` (the harness's send() picks its own ids).
  void answer(uint64_t rid, StatusCode code, const std::string& error) {
    proto::Outgoing m(rid, peer(), kTestToken);
    auto r = m.payload().initActorReturn();
    r.setCode(static_cast<uint16_t>(code));
    r.setError(error);
    const std::string bytes = m.bytes();
    h.ctl->handle_frame(peer(), bytes.data(), bytes.size());
    EXPECT_TRUE(h.ctl->flush().ok());
  }

  // Sends one report; returns the reply's payload kind (OK or ERROR).
  W::Which report(const std::string& event, int64_t step, const std::string& json = "", const std::string& path = "",
                  uint32_t as_inc = UINT32_MAX) {
    const uint32_t i = as_inc == UINT32_MAX ? inc : as_inc;
    const std::string from = proto::worker_peer(actor, i);
    const uint64_t rid = h.send(from, [&](W::Builder p) {
      auto r = p.initActorReport();
      r.setActorId(actor);
      r.setIncarnation(i);
      r.setEvent(event);
      r.setStep(step);
      r.setJson(json);
      r.setPath(path);
    });
    for (auto& f : h.take(from))
      if (f.request_id() == rid) return f.payload().which();
    return W::PING;  // no reply
  }

  void steps(int64_t from, int64_t to) {
    for (int64_t s = from; s <= to; ++s)
      EXPECT_EQ(report("step", s, "{\"loss\": " + std::to_string(10.0 - s) + "}"), W::OK);
  }
};

std::string ckpt(int64_t step) { return "/state/runs/job-1/checkpoints/step-" + std::to_string(step); }

std::vector<int64_t> metric_steps(Harness& h) {
  std::vector<int64_t> out;
  auto rows = h.store.scan(Table::kMetrics, "job-1/");
  for (auto& [k, v] : rows.value()) out.push_back(nlohmann::json::parse(v)["step"]);
  return out;
}

TEST(TrainJobs, RestartResumesFromTheRegisteredCheckpointAndSupersedesLaterMetrics) {
  Harness h;
  h.register_node("n1", 2);
  const uint64_t rid = h.send("cli/t", [&](W::Builder p) {
    auto s = p.initSubmitJob();
    s.setSpecToml(kTrainJob);
    s.setSpecPath("t.toml");
  });
  auto reply = h.take("cli/t");
  ASSERT_EQ(reply.size(), 1u);
  ASSERT_EQ(reply[0].request_id(), rid);
  ASSERT_EQ(reply[0].payload().which(), W::SUBMIT_JOB_REPLY);
  const JobRecord* j = h.ctl->job("job-1");
  EXPECT_EQ(j->kind, "pretrain");
  EXPECT_EQ(j->total_steps, 10);
  EXPECT_EQ(j->run_dir, "/state/runs/job-1");

  Trainer t{h, "", 0};
  auto args = t.start();
  EXPECT_EQ(std::string(args.get().getRunDir().cStr()), "/state/runs/job-1");
  EXPECT_EQ(std::string(args.get().getResumeFrom().cStr()), "");
  EXPECT_EQ(std::string(args.get().getSpecToml().cStr()), kTrainJob);
  EXPECT_EQ(t.report("started", 0, "{\"steps\": 10}"), W::OK);
  t.steps(1, 4);
  EXPECT_EQ(t.report("checkpoint", 4, "", ckpt(4)), W::OK);
  EXPECT_EQ(t.report("checkpoint", 4, "", ckpt(4)), W::OK);  // resent: no second record
  t.steps(5, 6);
  EXPECT_EQ(j->step, 6);
  EXPECT_EQ(j->checkpoints, 1);
  EXPECT_EQ(j->last_checkpoint, ckpt(4));
  EXPECT_EQ(j->last_metrics.value("loss", 0.0), 4.0);

  // kill -9 of the worker: a new incarnation, started from the registered checkpoint.
  h.worker_exited("n1", t.actor, 0, 9);
  EXPECT_EQ(h.ctl->actor(t.actor)->state, ActorState::kRestarting);
  h.tick(200);
  args = t.start();
  EXPECT_EQ(t.inc, 1u);
  EXPECT_EQ(std::string(args.get().getResumeFrom().cStr()), ckpt(4));
  // The dead incarnation's late reports are refused; the new one's start supersedes steps 5-6.
  EXPECT_EQ(t.report("step", 7, "{}", "", 0), W::ERROR);
  EXPECT_EQ(t.report("started", 4, "{\"steps\": 10}", ckpt(4)), W::OK);
  EXPECT_EQ(j->step, 4);
  EXPECT_EQ(metric_steps(h), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(j->last_metrics.value("loss", 0.0), 6.0);
  EXPECT_EQ(j->checkpoints, 1);

  // A controller restart: the start call is repeated to the same incarnation; nothing is lost.
  t.steps(5, 8);
  EXPECT_EQ(t.report("checkpoint", 8, "", ckpt(8)), W::OK);
  h.restart();
  j = h.ctl->job("job-1");
  EXPECT_TRUE(h.register_worker(t.actor, t.inc, "n1"));
  h.tick(200);
  args = t.take_start();
  EXPECT_EQ(std::string(args.get().getResumeFrom().cStr()), ckpt(8));
  EXPECT_EQ(t.report("checkpoint", 8, "", ckpt(8)), W::OK);  // the resend of the one in flight
  t.steps(9, 10);
  EXPECT_EQ(t.report("checkpoint", 10, "", ckpt(10)), W::OK);
  EXPECT_EQ(t.report("done", 10, "{}", ckpt(10)), W::OK);
  j = h.ctl->job("job-1");
  EXPECT_EQ(j->state, JobState::kSucceeded) << j->message;
  EXPECT_EQ(j->step, 10);
  EXPECT_EQ(j->checkpoints, 3);
  EXPECT_NE(j->message.find(ckpt(10)), std::string::npos);
  EXPECT_EQ(metric_steps(h), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  EXPECT_EQ(h.store.scan(Table::kCheckpoints, "job-1/").value().size(), 3u);
  auto doc = h.ctl->query("job", "job-1");
  EXPECT_EQ(doc["checkpoint_paths"].size(), 3u);
  EXPECT_EQ(doc["last_metrics"].value("step", 0), 10);
}

// A node failure where the worker's timeout fires before the node's: the replacement must not be
// started on the node that is already silent (it would die there too and burn a second restart);
// it waits for the node's verdict and then runs on the other node, one restart in all.
TEST(TrainJobs, AWorkerTimeoutOnASilentNodeDoesNotPlaceTheReplacementThere) {
  Harness h;
  h.register_node("n1", 2);
  h.send("cli/t", [&](W::Builder p) { p.initSubmitJob().setSpecToml(kTrainJob); });
  Trainer t{h, "", 0};
  t.start();
  h.register_node("n2", 2);
  // The worker's last heartbeat is at t = 0, n1's at t = 300; n2 stays alive throughout.
  h.tick(300);
  h.node_heartbeat("n1");
  for (int i = 0; i < 6; ++i) {
    h.node_heartbeat("n2");
    h.tick(150);  // t = 1200: the worker's 1000 ms timeout fires while n1 (silent 900 ms) is still ALIVE
  }
  const ActorRecord* a = h.ctl->actor(t.actor);
  EXPECT_EQ(a->state, ActorState::kRestarting);
  EXPECT_EQ(a->num_restarts, 1u);
  EXPECT_EQ(h.ctl->node("n1")->state, NodeState::kAlive);
  EXPECT_TRUE(h.take(proto::agent_peer("n1"), W::START_WORKER).empty()) << "replacement sent to the silent node";
  EXPECT_NE(a->pending_reason.find("n1"), std::string::npos) << a->pending_reason;
  for (int i = 0; i < 6; ++i) {
    h.node_heartbeat("n2");
    h.tick(150);  // n1 is declared DEAD; its bundle moves to n2
  }
  EXPECT_EQ(h.ctl->node("n1")->state, NodeState::kDead);
  a = h.ctl->actor(t.actor);
  EXPECT_EQ(a->num_restarts, 1u) << "the node failure burned a second restart: " << a->last_failure;
  EXPECT_EQ(a->node_id, "n2");
  EXPECT_EQ(h.take(proto::agent_peer("n2"), W::START_WORKER).size(), 1u);
}

// The restart budget counts failures within a window (job.max_restarts per job.restart_window_s):
// failures spread out never exhaust it; max_restarts + 1 failures inside one window fail the job.
TEST(TrainJobs, TheRestartBudgetCountsFailuresInAWindow) {
  const std::string spec =
      "[job]\nname = \"t\"\nphase = \"pretrain\"\nmax_restarts = 2\nrestart_window_s = 60\n[model]\nconfig = "
      "\"/m.json\"\n[train]\nsteps = 10\n";
  Harness h;
  h.register_node("n1", 2);
  h.send("cli/t", [&](W::Builder p) { p.initSubmitJob().setSpecToml(spec); });
  Trainer t{h, "", 0};
  t.start();
  // Five failures 40 s apart: never more than two inside any 60 s window.
  for (int i = 0; i < 5; ++i) {
    h.clock.advance(40000);
    h.node_heartbeat("n1");
    h.worker_exited("n1", t.actor, t.inc, 9);
    ASSERT_EQ(h.ctl->actor(t.actor)->state, ActorState::kRestarting) << "failure " << i;
    h.tick(200);
    t.start();
  }
  EXPECT_EQ(h.ctl->actor(t.actor)->num_restarts, 5u);
  // A quiet minute, then three failures within seconds: the third exceeds the budget and the job
  // fails, saying why.
  h.clock.advance(61000);
  h.node_heartbeat("n1");
  h.tick(0);
  for (int i = 0; i < 2; ++i) {
    h.clock.advance(1000);
    h.node_heartbeat("n1");
    h.worker_exited("n1", t.actor, t.inc, 9);
    h.tick(200);
    t.start();
  }
  h.clock.advance(1000);
  h.node_heartbeat("n1");
  h.worker_exited("n1", t.actor, t.inc, 9);
  EXPECT_EQ(h.ctl->actor(t.actor)->state, ActorState::kDead);
  const JobRecord* j = h.ctl->job("job-1");
  EXPECT_EQ(j->state, JobState::kFailed);
  EXPECT_NE(j->message.find("3 failures within 60 s"), std::string::npos) << j->message;
  // The fields are validated at submit.
  std::string bad = spec;
  bad.replace(bad.find("restart_window_s = 60"), 21, "restart_window_s = -1");
  auto parsed = job_spec_parse(bad, "t.toml");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("job.restart_window_s"), std::string::npos) << parsed.status().message();
}

// A clean stop of the trainer's agent (deregisterNode) moves the trainer to another node without
// spending the restart budget: even job.max_restarts = 0 survives a drain, but not a crash.
TEST(TrainJobs, ADrainedNodeRestartsTheTrainerWithoutSpendingTheBudget) {
  const std::string spec =
      "[job]\nname = \"t\"\nphase = \"pretrain\"\nmax_restarts = 0\n[model]\nconfig = \"/m.json\"\n[train]\nsteps = 10\n";
  Harness h;
  h.register_node("n1", 2);
  h.send("cli/t", [&](W::Builder p) { p.initSubmitJob().setSpecToml(spec); });
  Trainer t{h, "", 0};
  t.start();
  h.register_node("n2", 2);
  h.send(proto::agent_peer("n1"), [&](W::Builder p) {
    auto d = p.initDeregisterNode();
    d.setNodeId("n1");
    d.setReason("agent stop");
  });
  EXPECT_EQ(h.ctl->node("n1")->state, NodeState::kDead);
  const ActorRecord* a = h.ctl->actor(t.actor);
  EXPECT_EQ(a->state, ActorState::kRestarting) << a->death_cause;
  EXPECT_EQ(a->node_id, "n2");
  EXPECT_TRUE(a->failure_wall_ms.empty());
  EXPECT_EQ(h.ctl->job("job-1")->state, JobState::kRunning);
  EXPECT_EQ(h.take(proto::agent_peer("n2"), W::START_WORKER).size(), 1u);
  ASSERT_TRUE(h.register_worker(t.actor, 1, "n2"));
  // A crash is a failure: with no budget the job fails.
  h.worker_exited("n2", t.actor, 1, 9);
  EXPECT_EQ(h.ctl->actor(t.actor)->state, ActorState::kDead);
  EXPECT_EQ(h.ctl->job("job-1")->state, JobState::kFailed);
}

TEST(TrainJobs, AStartErrorOrAFailedReportFailsTheJob) {
  Harness h;
  h.register_node("n1", 2);
  h.send("cli/t", [&](W::Builder p) { p.initSubmitJob().setSpecToml(kTrainJob); });
  Trainer t{h, "", 0};
  auto starts = h.take(proto::agent_peer("n1"), W::START_WORKER);
  ASSERT_EQ(starts.size(), 1u);
  t.actor = starts[0].payload().getStartWorker().getActorId().cStr();
  ASSERT_TRUE(h.register_worker(t.actor, 0, "n1"));
  auto calls = h.take(t.peer(), W::ACTOR_CALL);
  ASSERT_EQ(calls.size(), 1u);
  t.answer(calls[0].request_id(), StatusCode::kInvalidArgument, "t.toml: field 'train.seq_len': expected >= 2");
  const JobRecord* j = h.ctl->job("job-1");
  EXPECT_EQ(j->state, JobState::kFailed);
  EXPECT_NE(j->message.find("train.seq_len"), std::string::npos) << j->message;
  EXPECT_EQ(h.ctl->actor(t.actor)->state, ActorState::kDead);
}

TEST(TrainJobs, ATrainerFailureFailsTheJob) {
  Harness h;
  h.register_node("n1", 2);
  h.send("cli/t", [&](W::Builder p) { p.initSubmitJob().setSpecToml(kTrainJob); });
  Trainer t{h, "", 0};
  t.start();
  EXPECT_EQ(t.report("started", 0, "{}"), W::OK);
  h.send(t.peer(), [&](W::Builder p) {
    auto r = p.initActorReport();
    r.setActorId(t.actor);
    r.setEvent("failed");
    r.setMessage("DataLoss: shard 3 is corrupt");
  });
  const JobRecord* j = h.ctl->job("job-1");
  EXPECT_EQ(j->state, JobState::kFailed);
  EXPECT_NE(j->message.find("shard 3"), std::string::npos) << j->message;
}

}  // namespace
}  // namespace mariana::controller
