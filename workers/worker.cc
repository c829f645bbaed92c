// The worker's event loop (see worker.h).
#include "workers/worker.h"

#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <optional>
#include <thread>

#include <zmq.hpp>

#include "core/file_util.h"
#include "proto/clock.h"
#include "proto/host.h"
#include "proto/wire.h"

namespace mariana::workers {

namespace {

using proto::Envelope;

// Runs an ActorCall frame and returns the reply frame.
std::string run_call(const ActorClass& cls, Actor& actor, const WorkerOptions& o, const std::string& sender,
                     const proto::Frame& f) {
  auto call = f.payload().getActorCall();
  proto::Outgoing out(f.request_id(), sender, o.token);
  auto ret = out.payload().initActorReturn();
  if (call.getActorId() != o.actor_id.c_str() || (call.getIncarnation() != 0 && call.getIncarnation() != o.incarnation)) {
    ret.setCode(static_cast<uint16_t>(StatusCode::kFailedPrecondition));
    ret.setError("this worker hosts " + o.actor_id + " incarnation " + std::to_string(o.incarnation));
    return out.bytes();
  }
  auto args = call.getArgs();
  auto result = actor_invoke(cls, actor, std::string_view(call.getMethod().cStr(), call.getMethod().size()),
                             std::string_view(reinterpret_cast<const char*>(args.begin()), args.size()));
  if (!result.ok()) {
    ret.setCode(static_cast<uint16_t>(result.status().code()));
    ret.setError(result.status().message());
  } else {
    const std::string& r = result.value();
    ret.setResult(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(r.data()), r.size()));
  }
  return out.bytes();
}

// Creates `dir` (mode 0700) if missing; refuses one that is not this user's private directory
// (another user could then connect to the sockets in it, or replace them).
Status private_dir_ensure(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) {
    if (::chmod(dir.c_str(), 0700) != 0) return errno_status(errno, "chmod " + dir);
  } else if (errno != EEXIST) {
    return errno_status(errno, "mkdir " + dir);
  }
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) return errno_status(errno, "lstat " + dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
    return PermissionDenied(dir + " is not a directory of this user with mode 0700");
  return Status::Ok();
}

// Binds the call socket on worker_ipc_path; returns its endpoint, or "" (with a note on stderr)
// when it cannot: callers then use the tcp endpoint.
std::string bind_ipc(zmq::socket_t& router, const WorkerOptions& o) {
  const std::string path = worker_ipc_path(o.actor_id, o.incarnation, static_cast<int>(::getpid()));
  if (path.empty()) {
    std::fprintf(stderr, "worker: %s is too long for a Unix-domain socket; serving calls on tcp only\n",
                 worker_ipc_dir().c_str());
    return "";
  }
  Status st = private_dir_ensure(worker_ipc_dir());
  if (!st.ok()) {
    std::fprintf(stderr, "worker: %s; serving calls on tcp only\n", st.to_string().c_str());
    return "";
  }
  try {
    router.bind("ipc://" + path);
  } catch (const zmq::error_t& e) {
    std::fprintf(stderr, "worker: cannot bind ipc://%s (%s); serving calls on tcp only\n", path.c_str(), e.what());
    return "";
  }
  return "ipc://" + path;
}

// Removes the worker's socket file when the worker returns (libzmq also does when the socket
// closes; this covers the paths where it does not get to).
struct UnlinkAtExit {
  std::string path;
  ~UnlinkAtExit() {
    if (!path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

std::string worker_ipc_dir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = tmp && *tmp ? tmp : "/tmp";
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir + "/mariana-" + std::to_string(::geteuid());
}

std::string worker_ipc_path(const std::string& actor_id, uint32_t incarnation, int pid) {
  constexpr size_t kMaxPath = 99;  // sun_path is 108 bytes with its NUL; keep a margin
  const std::string dir = worker_ipc_dir() + "/";
  const std::string suffix = "-" + std::to_string(incarnation) + "-" + std::to_string(pid) + ".sock";
  if (dir.size() + 1 + suffix.size() > kMaxPath) return "";
  std::string name = actor_id.empty() ? "actor" : actor_id;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') c = '_';
  name.resize(std::min(name.size(), kMaxPath - dir.size() - suffix.size()));
  return dir + name + suffix;
}

namespace {
thread_local const WorkerOptions* t_worker = nullptr;
}  // namespace

const WorkerOptions* this_worker() { return t_worker; }

Status worker_run(const WorkerOptions& o, const ActorRegistry& registry, const std::atomic<bool>* stop) {
  t_worker = &o;
  const ActorClass* cls = registry.find(o.class_name);
  if (!cls) return NotFound("worker: unknown actor class \"" + o.class_name + "\"");
  MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<Actor> actor, cls->create(o.args));
  const std::string identity = proto::worker_peer(o.actor_id, o.incarnation);

  zmq::context_t ctx(1);
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::sndhwm, 100000);
  router.set(zmq::sockopt::rcvhwm, 100000);
  try {
    router.bind("tcp://" + o.bind_host + ":*");
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("worker: cannot bind a call socket: ") + e.what());
  }
  const std::string address = router.get(zmq::sockopt::last_endpoint);
  const std::string local_address = bind_ipc(router, o);
  UnlinkAtExit unlink_ipc{local_address.empty() ? "" : local_address.substr(6)};  // past "ipc://"
  zmq::socket_t ctl(ctx, zmq::socket_type::dealer);
  ctl.set(zmq::sockopt::routing_id, identity);
  ctl.set(zmq::sockopt::linger, 0);
  ctl.set(zmq::sockopt::sndhwm, 100000);
  ctl.set(zmq::sockopt::rcvhwm, 100000);
  if (o.curve.enabled()) MARIANA_RETURN_IF_ERROR(proto::curve_client_apply(ctl, o.curve));
  ctl.connect(o.controller);

  proto::WireCounters counters;
  proto::DecodeOptions dopts;
  dopts.token = o.token;
  dopts.accept_tokenless_errors = true;
  SteadyClock clock;
  uint64_t epoch = 0;
  bool registered = false;
  int64_t last_register = -1000000, last_heartbeat = 0;
  uint64_t next_id = 1;

  auto send_ctl = [&](const std::string& frame) { (void)ctl.send(zmq::buffer(frame), zmq::send_flags::dontwait); };
  auto send_register = [&] {
    proto::Outgoing m(next_id++, identity, o.token);
    auto r = m.payload().initRegisterWorker();
    r.setActorId(o.actor_id);
    r.setIncarnation(o.incarnation);
    r.setNodeId(o.node_id);
    r.setAddress(address);
    r.setPid(static_cast<uint32_t>(::getpid()));
    r.setLocalAddress(local_address);
    r.setHostId(proto::host_id());
    send_ctl(m.bytes());
    last_register = clock.now_ms();
  };
  send_register();

  // The actor's events, sent as ActorReports in order, one in flight, resent until acknowledged.
  std::deque<ActorEvent> reports;
  uint64_t report_seq = 0, report_rid = 0;  // report_rid: the request id of the one in flight
  int64_t report_sent = 0;
  auto send_report = [&] {
    const ActorEvent& e = reports.front();
    report_rid = next_id++;
    proto::Outgoing m(report_rid, identity, o.token);
    auto r = m.payload().initActorReport();
    r.setActorId(o.actor_id);
    r.setIncarnation(o.incarnation);
    r.setSeq(report_seq + 1);
    r.setEvent(e.event);
    r.setStep(e.step);
    r.setJson(e.json);
    r.setPath(e.path);
    r.setMessage(e.message);
    send_ctl(m.bytes());
    report_sent = clock.now_ms();
  };

  // While calls flow (`hot`: the last turn served one), a turn waits on the call socket alone, in
  // a blocking receive of at most kHotWaitMs, and looks at the controller's socket without
  // waiting: a zmq::poll over both sockets costs about a fifth of a sync call's round trip. Idle,
  // a turn polls both. So the controller's messages wait at most kHotWaitMs (plus the calls
  // already queued), and nothing spins.
  constexpr int kHotWaitMs = 2;
  router.set(zmq::sockopt::rcvtimeo, kHotWaitMs);
  // The first part of a call; false when none came (timeout, or a signal: SIGTERM sets *stop).
  auto recv_call_id = [&](zmq::message_t& id, zmq::recv_flags flags) {
    try {
      return router.recv(id, flags).has_value();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      return false;
    }
  };
  // Calls run one at a time in arrival order: most on this thread as they come; a long method
  // (ActorClass::long_methods) on a thread of its own, which signals an eventfd the loop polls
  // when it is done, while the loop keeps heartbeating and queues the calls that arrive meanwhile.
  struct QueuedCall {
    std::optional<std::string> route;  // the caller's routing id on the call socket; none: the controller
    proto::Frame frame;
  };
  struct LongCallEnd {  // shared with the long call's thread, which may outlive this loop at exit
    int fd = -1;
    std::string reply;  // written before fd is signalled
    ~LongCallEnd() {
      if (fd >= 0) ::close(fd);
    }
  };
  auto long_end = std::make_shared<LongCallEnd>();
  long_end->fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (long_end->fd < 0) return errno_status(errno, "worker: eventfd");
  std::deque<QueuedCall> calls;
  std::thread long_call;
  std::optional<std::string> long_route;  // the caller of the long call running, if any
  bool long_running = false;
  auto send_reply = [&](const std::optional<std::string>& route, const std::string& reply) {
    if (!route) return send_ctl(reply);
    (void)router.send(zmq::buffer(*route), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    (void)router.send(zmq::buffer(reply), zmq::send_flags::dontwait);
  };
  // Whether a call must wait its turn: a long call is running or calls are queued, or it is itself
  // long (it then starts from serve_calls). Otherwise it runs at once, as it arrives.
  auto must_queue = [&](const proto::Frame& f) {
    if (long_running || !calls.empty()) return true;
    auto method = f.payload().getActorCall().getMethod();
    return cls->long_methods.count(std::string_view(method.cStr(), method.size())) > 0;
  };
  auto serve_calls = [&] {
    if (long_running) {
      uint64_t signalled = 0;
      if (::read(long_end->fd, &signalled, sizeof signalled) != static_cast<ssize_t>(sizeof signalled)) return;
      long_call.join();
      long_running = false;
      send_reply(long_route, long_end->reply);
    }
    while (!calls.empty()) {
      QueuedCall c = std::move(calls.front());
      calls.pop_front();
      auto method = c.frame.payload().getActorCall().getMethod();
      if (cls->long_methods.count(std::string_view(method.cStr(), method.size()))) {
        long_running = true;
        long_route = c.route;
        long_call = std::thread([end = long_end, cls, self = actor.get(), opts = o, identity,
                                 frame = std::move(c.frame)]() {
          t_worker = &opts;
          end->reply = run_call(*cls, *self, opts, identity, frame);
          const uint64_t one = 1;
          (void)!::write(end->fd, &one, sizeof one);
        });
        return;
      }
      send_reply(c.route, run_call(*cls, *actor, o, identity, c.frame));
    }
  };
  // On return with a long call still running: it keeps the actor and its end (the process is ending).
  struct DetachAtExit {
    std::thread& t;
    std::unique_ptr<Actor>& a;
    ~DetachAtExit() {
      if (t.joinable()) {
        t.detach();
        (void)a.release();
      }
    }
  } detach_at_exit{long_call, actor};
  bool hot = false;
  while (!stop->load()) {
    if (!hot) {
      zmq::pollitem_t items[] = {{router.handle(), 0, ZMQ_POLLIN, 0},
                                 {ctl.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, long_end->fd, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, 3, std::chrono::milliseconds(std::clamp<int64_t>(o.heartbeat_ms / 2, 10, 50)));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
        continue;  // a signal (SIGTERM sets *stop)
      }
    }
    // Direct calls: [routing id][frame].
    int served = 0;
    for (; served < 1024; ++served) {
      zmq::message_t id, body;
      if (!recv_call_id(id, hot && served == 0 ? zmq::recv_flags::none : zmq::recv_flags::dontwait)) break;
      if (!id.more()) continue;
      (void)router.recv(body, zmq::recv_flags::none);
      bool more = body.more();
      while (more) {
        zmq::message_t extra;
        (void)router.recv(extra, zmq::recv_flags::none);
        more = extra.more();
      }
      uint64_t rid = 0;
      std::string reply;
      auto f = proto::decode_envelope(body.data(), body.size(), dopts, &counters, &rid);
      if (!f.ok()) {
        reply = proto::encode_error(rid, identity, "", f.status());
      } else if (f.value().payload().which() == Envelope::Payload::ACTOR_CALL) {
        if (!must_queue(f.value())) {
          reply = run_call(*cls, *actor, o, identity, f.value());
        } else {
          calls.push_back({std::string(static_cast<const char*>(id.data()), id.size()), std::move(f).value()});
          continue;  // run in turn by serve_calls, which replies
        }
      } else if (f.value().payload().which() == Envelope::Payload::PING) {
        proto::Outgoing m(rid, identity, o.token);
        m.payload().setOk();
        reply = m.bytes();
      } else {
        reply = proto::encode_error(rid, identity, o.token,
                                    InvalidArgument("a worker does not accept " +
                                                    proto::payload_name(f.value().payload().which())));
      }
      (void)router.send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      (void)router.send(zmq::buffer(reply), zmq::send_flags::dontwait);
    }
    // The controller: replies to our registration and heartbeats, its own calls, shutdown.
    for (int i = 0; i < 1024; ++i) {
      zmq::message_t body;
      if (!ctl.recv(body, zmq::recv_flags::dontwait)) break;
      auto f = proto::decode_envelope(body.data(), body.size(), dopts, &counters);
      if (!f.ok()) {
        std::fprintf(stderr, "worker %s: bad frame from the controller: %s\n", identity.c_str(),
                     f.status().to_string().c_str());
        continue;
      }
      auto p = f.value().payload();
      switch (p.which()) {
        case Envelope::Payload::ACTOR_CALL:
          if (!must_queue(f.value())) send_ctl(run_call(*cls, *actor, o, identity, f.value()));
          else calls.push_back({std::nullopt, std::move(f).value()});
          break;
        case Envelope::Payload::REGISTER_WORKER_REPLY: {
          auto r = p.getRegisterWorkerReply();
          if (!r.getAccept()) {
            std::fprintf(stderr, "worker %s: rejected by the controller: %s\n", identity.c_str(), r.getReason().cStr());
            return Status::Ok();
          }
          registered = true;
          epoch = r.getEpoch();
          break;
        }
        case Envelope::Payload::HEARTBEAT_REPLY: {
          auto r = p.getHeartbeatReply();
          if (!r.getKnown() || r.getEpoch() != epoch) {
            registered = false;
            send_register();
          }
          break;
        }
        case Envelope::Payload::SHUTDOWN: return Status::Ok();
        case Envelope::Payload::OK:
        case Envelope::Payload::ERROR:
          if (report_rid != 0 && f.value().request_id() == report_rid) {
            if (p.which() == Envelope::Payload::ERROR)
              std::fprintf(stderr, "worker %s: report %s dropped: %s\n", identity.c_str(),
                           reports.front().event.c_str(), proto::error_status(p.getError()).to_string().c_str());
            reports.pop_front();
            ++report_seq;
            report_rid = 0;
          }
          break;
        default: break;
      }
    }
    serve_calls();  // the calls queued from both sockets, and the end of a long call
    hot = served > 0 && !long_running;  // while a long call runs, wait in poll, which sees its end at once
    for (auto& e : actor->take_events()) reports.push_back(std::move(e));
    const int64_t now = clock.now_ms();
    if (registered && !reports.empty() && (report_rid == 0 || now - report_sent > 1000)) send_report();
    if (!registered) report_rid = 0;  // resent once registered again
    if (!registered && now - last_register > 1000) send_register();
    if (now - last_heartbeat >= o.heartbeat_ms) {
      last_heartbeat = now;
      proto::Outgoing m(next_id++, identity, o.token);
      auto h = m.payload().initHeartbeat();
      h.setNodeId(o.node_id);
      h.setActorId(o.actor_id);
      h.setIncarnation(o.incarnation);
      send_ctl(m.bytes());
    }
  }
  return Status::Ok();
}

}  // namespace mariana::workers
