// The worker process (`mariana worker`, started by an agent): hosts one actor. One thread runs
// everything: a ROUTER socket bound on loopback tcp and on a Unix-domain socket (worker_ipc_path;
// callers on the same host use that one) serves direct calls (drivers, other actors,
// benchmarks); a DEALER socket to the controller (routing id "w/<actor>/<incarnation>")
// registers, heartbeats, and serves the controller's own calls (job drivers). It re-registers
// when the controller's epoch changes (the controller restarted) and exits when the controller
// rejects it (a stale incarnation) or when its agent dies (PR_SET_PDEATHSIG). Events the actor
// produces on its own threads (Actor::take_events) go to the controller as ActorReports, in order,
// one in flight, resent until acknowledged (wire_format.md).
#pragma once

#include <atomic>
#include <string>

#include "core/status.h"
#include "proto/curve.h"
#include "workers/actor.h"

namespace mariana::workers {

struct WorkerOptions {
  std::string controller;  // tcp://127.0.0.1:PORT
  std::string token;
  std::string actor_id;
  uint32_t incarnation = 0;
  std::string class_name;
  std::string args;  // the actor's constructor arguments (JSON object text; "" = none)
  std::string node_id;
  int64_t heartbeat_ms = 500;
  std::string bind_host = "127.0.0.1";  // the call socket's tcp address, and this actor's comm/ groups' (agent --bind-host)
  proto::CurveClientKeys curve;  // for a non-loopback controller
};

// $TMPDIR (or /tmp) + "/mariana-<uid>": the directory of the workers' Unix-domain sockets, which
// the worker creates with mode 0700 (and uses only if it is this user's and mode 0700).
std::string worker_ipc_dir();
// The Unix-domain socket of a worker's call ROUTER: worker_ipc_dir() + "/<actor>-<incarnation>-<pid>.sock",
// the actor id reduced to [A-Za-z0-9_.-] and cut short so that the path stays under 100 bytes
// (sockaddr_un holds 108); "" when not even one character of it fits. The worker removes the file
// when it exits; its agent removes it when it reaps the worker (which may have been killed).
std::string worker_ipc_path(const std::string& actor_id, uint32_t incarnation, int pid);

// Returns OK when told to stop (shutdown, rejection, *stop); an error if the class is unknown or
// a socket cannot be bound.
Status worker_run(const WorkerOptions& options, const ActorRegistry& registry, const std::atomic<bool>* stop);
// The options of the worker_run on this thread (null elsewhere): an actor's methods run on it, so
// a method can reach its worker's controller (the trainer's gang rendezvous does).
const WorkerOptions* this_worker();

}  // namespace mariana::workers
