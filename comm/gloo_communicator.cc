// GlooCommunicator: rendezvous over a comm::Store, collectives through Gloo's algorithms.
#include "comm/gloo_communicator.h"

#include <signal.h>

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/alltoallv.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/reduce_scatter.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <climits>
#include <thread>

namespace mariana::comm {

namespace {

using Clock = std::chrono::steady_clock;

long long elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

std::string key_prefix(const std::string& group) { return "mariana/comm/" + group + "/"; }

// Gloo's rendezvous::Store over a comm::Store: Gloo's blocking wait becomes polling try_get with
// the group's deadline, so a store implementation needs no waiting of its own.
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(comm::Store& store, std::string prefix, std::chrono::milliseconds timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    const Status st = store_.set(prefix_ + key, std::string(data.begin(), data.end()));
    if (!st.ok()) throw gloo::IoException(st.to_string());
  }
  std::vector<char> get(const std::string& key) override {
    const std::string v = poll(key, Clock::now() + timeout_, timeout_);
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    const auto deadline = Clock::now() + timeout;
    for (const std::string& key : keys) poll(key, deadline, timeout);
  }

 private:
  // The value of `key`, asking the store every 5 ms until it is there or `deadline` passes.
  std::string poll(const std::string& key, Clock::time_point deadline, std::chrono::milliseconds timeout) {
    while (true) {
      Result<std::optional<std::string>> v = store_.try_get(prefix_ + key);
      if (!v.ok()) throw gloo::IoException(v.status().to_string());
      if (v->has_value()) return std::move(v->value());
      if (Clock::now() >= deadline)
        throw gloo::IoException("store wait timed out after " + std::to_string(timeout.count()) + " ms for key '" +
                                prefix_ + key + "'");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  comm::Store& store_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

std::string rank_list(const std::vector<int>& ranks) {
  std::string s = "[";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s + "]";
}

// Sets "<prefix><rank>", then waits up to `limit` for "<prefix><r>" of every rank r; returns the
// ranks whose key is still missing (empty when all arrived).
Result<std::vector<int>> mark_and_wait(Store& store, const std::string& prefix, int rank, int size,
                                       std::chrono::milliseconds limit) {
  const auto start = Clock::now();
  MARIANA_RETURN_IF_ERROR(store.set(prefix + std::to_string(rank), "1"));
  std::vector<int> missing;
  for (int r = 0; r < size; ++r) missing.push_back(r);
  while (true) {
    std::vector<int> still;
    for (int r : missing) {
      MARIANA_ASSIGN_OR_RETURN(std::optional<std::string> v, store.try_get(prefix + std::to_string(r)));
      if (!v) still.push_back(r);
    }
    missing = std::move(still);
    if (missing.empty() || Clock::now() - start >= limit) return missing;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void sum_floats(void* c, const void* a, const void* b, size_t n) { gloo::sum<float>(c, a, b, n); }

}  // namespace

struct GlooCommunicator::Mesh {
  std::shared_ptr<gloo::transport::Device> device;
  std::shared_ptr<gloo::rendezvous::Context> context;
};

GlooCommunicator::GlooCommunicator(GlooOptions options, std::shared_ptr<Store> store, std::unique_ptr<Mesh> mesh)
    : options_(std::move(options)), store_(std::move(store)), mesh_(std::move(mesh)) {}

GlooCommunicator::~GlooCommunicator() = default;

Result<std::unique_ptr<GlooCommunicator>> GlooCommunicator::connect(std::shared_ptr<Store> shared_store,
                                                                     const GlooOptions& o) {
  // A peer that dies mid-collective closes its sockets; writing to them must fail the collective
  // (EPIPE), not kill this process with SIGPIPE. Process-wide, as in every program that writes to
  // sockets.
  ::signal(SIGPIPE, SIG_IGN);
  Store& store = *shared_store;
  const std::string who = "comm group '" + o.group + "' (rank " + std::to_string(o.rank) + " of " +
                          std::to_string(o.size) + ")";
  if (o.size < 1 || o.rank < 0 || o.rank >= o.size) {
    return InvalidArgument(who + ": expected 0 <= rank < size");
  }
  if (o.timeout.count() <= 0) return InvalidArgument(who + ": expected a positive timeout");
  const std::string prefix = key_prefix(o.group);
  const auto start = Clock::now();

  // Arrival: every rank announces itself, then waits for the others, so that a missing rank is
  // reported by number rather than as a timeout deep inside Gloo's connect.
  MARIANA_ASSIGN_OR_RETURN(std::vector<int> missing,
                           mark_and_wait(store, prefix + "arrived/", o.rank, o.size, o.timeout));
  if (!missing.empty()) {
    return Status(StatusCode::kDeadlineExceeded,
                  who + ": rendezvous timed out after " + std::to_string(elapsed_ms(start)) + " ms (timeout " +
                      std::to_string(o.timeout.count()) + " ms); ranks " + rank_list(missing) + " never arrived");
  }

  auto mesh = std::make_unique<Mesh>();
  try {
    gloo::transport::tcp::attr attr;
    attr.hostname = o.host;
    mesh->device = gloo::transport::tcp::CreateDevice(attr);
    mesh->context = std::make_shared<gloo::rendezvous::Context>(o.rank, o.size);
    mesh->context->setTimeout(o.timeout);
    GlooStoreAdapter adapter(store, prefix + "gloo/", o.timeout);
    mesh->context->connectFullMesh(adapter, mesh->device);
  } catch (const std::exception& e) {
    return Unavailable(who + ": connecting the TCP mesh on " + o.host + " failed after " +
                       std::to_string(elapsed_ms(start)) + " ms: " + e.what());
  }
  return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(o, std::move(shared_store), std::move(mesh)));
}

std::shared_ptr<gloo::Context> GlooCommunicator::gloo_context() const { return mesh_->context; }

template <typename Fn>
Status GlooCommunicator::run(const char* op, size_t floats, bool skip_if_empty, Fn&& fn) {
  const uint32_t tag = next_tag_++;
  if (!broken_.empty()) {
    return FailedPrecondition(describe(*this, op, floats) + ": the group is broken by an earlier failure (" +
                              broken_ + "); rebuild it");
  }
  if (skip_if_empty && floats == 0) return Status::Ok();
  const auto start = Clock::now();
  try {
    fn(tag);
    return Status::Ok();
  } catch (const std::exception& e) {
    const std::string what = e.what();
    const long long ms = elapsed_ms(start);
    const bool timed_out = ms >= options_.timeout.count() || what.find("imed out") != std::string::npos ||
                           what.find("imeout") != std::string::npos;
    std::string message = describe(*this, op, floats) + (timed_out ? " timed out" : " failed") + " after " +
                          std::to_string(ms) + " ms (timeout " + std::to_string(options_.timeout.count()) +
                          " ms): " + what;
    const std::string unreported = unreported_ranks(tag);
    if (!unreported.empty()) {
      message += "; ranks " + unreported + " did not report this failure (stopped, dead, or never entered " + op + ")";
    }
    broken_ = std::string(op) + " #" + std::to_string(tag);
    return Status(timed_out ? StatusCode::kDeadlineExceeded : StatusCode::kUnavailable, std::move(message));
  }
}

std::string GlooCommunicator::unreported_ranks(uint32_t tag) {
  const std::chrono::milliseconds grace = std::min(options_.timeout, std::chrono::milliseconds(1000));
  Result<std::vector<int>> missing = mark_and_wait(
      *store_, key_prefix(options_.group) + "failed/" + std::to_string(tag) + "/", rank(), size(), grace);
  return missing.ok() && !missing->empty() ? rank_list(*missing) : "";
}

Status GlooCommunicator::allreduce_sum(std::span<float> data) {
  return run("allreduce_sum", data.size(), /*skip_if_empty=*/true, [&](uint32_t tag) {
    gloo::AllreduceOptions opts(mesh_->context);
    opts.setOutput(data.data(), data.size());
    opts.setReduceFunction(&sum_floats);
    opts.setAlgorithm(data.size() * sizeof(float) >= options_.ring_allreduce_min_bytes
                          ? gloo::AllreduceOptions::Algorithm::RING
                          : gloo::AllreduceOptions::Algorithm::BCUBE);
    opts.setTag(tag);
    opts.setTimeout(options_.timeout);
    gloo::allreduce(opts);
  });
}

Status GlooCommunicator::reduce_scatter_sum(std::span<const float> in, std::span<float> out) {
  MARIANA_RETURN_IF_ERROR(check_reduce_scatter(*this, in.size(), out.size()));
  if (in.size() > static_cast<size_t>(INT_MAX)) {
    return InvalidArgument(describe(*this, "reduce_scatter_sum", in.size()) +
                           ": Gloo's reduce-scatter counts elements in an int; split the buffer");
  }
  return run("reduce_scatter_sum", in.size(), /*skip_if_empty=*/true, [&](uint32_t) {
    // Gloo's halving-doubling reduce-scatter (a pair-based algorithm: it runs under the context's
    // timeout, set from ours) reduces in place and leaves this rank's block at the front.
    scratch_.assign(in.begin(), in.end());
    const std::vector<int> counts(size(), static_cast<int>(out.size()));
    gloo::ReduceScatterHalvingDoubling<float> algorithm(mesh_->context, {scratch_.data()},
                                                        static_cast<int>(in.size()), counts);
    algorithm.run();
    std::copy_n(scratch_.begin(), out.size(), out.begin());
  });
}

Status GlooCommunicator::all_gather(std::span<const float> in, std::span<float> out) {
  MARIANA_RETURN_IF_ERROR(check_all_gather(*this, in.size(), out.size()));
  return run("all_gather", in.size(), /*skip_if_empty=*/true, [&](uint32_t tag) {
    gloo::AllgatherOptions opts(mesh_->context);
    opts.setInput(const_cast<float*>(in.data()), in.size());  // Gloo only reads the input
    opts.setOutput(out.data(), out.size());
    opts.setTag(tag);
    opts.setTimeout(options_.timeout);
    gloo::allgather(opts);
  });
}

Status GlooCommunicator::all_to_all_v(std::span<const float> in, std::span<const int64_t> send_counts,
                                      std::span<float> out, std::span<const int64_t> recv_counts) {
  MARIANA_RETURN_IF_ERROR(check_all_to_all_v(*this, in.size(), send_counts, out.size(), recv_counts));
  // Zero floats on this rank does not mean zero on the others: every rank always takes part.
  return run("all_to_all_v", in.size(), /*skip_if_empty=*/false, [&](uint32_t tag) {
    float dummy = 0;  // Gloo wants a buffer even for zero floats
    gloo::AlltoallvOptions opts(mesh_->context);
    opts.setInput(in.empty() ? &dummy : const_cast<float*>(in.data()),
                  std::vector<int64_t>(send_counts.begin(), send_counts.end()));
    opts.setOutput(out.empty() ? &dummy : out.data(), std::vector<int64_t>(recv_counts.begin(), recv_counts.end()));
    opts.setTag(tag);
    opts.setTimeout(options_.timeout);
    gloo::alltoallv(opts);
  });
}

Status GlooCommunicator::broadcast(std::span<float> data, int root) {
  MARIANA_RETURN_IF_ERROR(check_root(*this, root));
  return run("broadcast", data.size(), /*skip_if_empty=*/true, [&](uint32_t tag) {
    gloo::BroadcastOptions opts(mesh_->context);
    opts.setOutput(data.data(), data.size());
    opts.setRoot(root);
    opts.setTag(tag);
    opts.setTimeout(options_.timeout);
    gloo::broadcast(opts);
  });
}

Status GlooCommunicator::barrier() {
  return run("barrier", 0, /*skip_if_empty=*/false, [&](uint32_t tag) {
    gloo::BarrierOptions opts(mesh_->context);
    opts.setTag(tag);
    opts.setTimeout(options_.timeout);
    gloo::barrier(opts);
  });
}

}  // namespace mariana::comm
