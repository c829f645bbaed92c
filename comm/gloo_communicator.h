// GlooCommunicator: the Communicator between CPU processes, over Gloo's TCP transport. Ranks
// rendezvous through a comm::Store (store.h), then every collective runs one of Gloo's own
// algorithms (ring or bcube allreduce, halving-doubling reduce-scatter, allgather, alltoallv,
// broadcast, barrier) under the group's timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/store.h"

namespace gloo {
class Context;
}

namespace mariana::comm {

struct GlooOptions {
  std::string group = "world";  // names the group in errors; prefixes its rendezvous keys
  int rank = 0;
  int size = 1;
  // The limit of the rendezvous and of each collective (end to end, Gloo's own timeout).
  std::chrono::milliseconds timeout{30000};
  // The address this rank listens on for its peers (loopback: every rank on this machine).
  std::string host = "127.0.0.1";
  // Allreduce runs Gloo's ring from this many bytes up (bandwidth-optimal on large buffers) and
  // Gloo's bcube (recursive halving-doubling) below: Gloo's ring stalls for about 40 ms per call
  // (TCP delayed acks) between roughly 16 KB and 1 MB on loopback (bench/RESULTS.md, comm).
  size_t ring_allreduce_min_bytes = size_t{4} << 20;
};

class GlooCommunicator final : public Communicator {
 public:
  // Joins the group: publishes this rank's arrival under "mariana/comm/<group>/" in `store`,
  // waits for every rank's (DeadlineExceeded naming the ranks that never arrived), then connects
  // the full mesh of TCP pairs through Gloo's rendezvous. Every rank of a group calls this with
  // the same group, size and store; a group name is used once per store. The communicator keeps
  // the store: after a failed collective, the ranks that failed it leave a mark there, and each
  // names the ranks it has not heard from (see run()).
  static Result<std::unique_ptr<GlooCommunicator>> connect(std::shared_ptr<Store> store,
                                                           const GlooOptions& options);
  ~GlooCommunicator() override;

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }
  const std::string& group() const override { return options_.group; }
  std::chrono::milliseconds timeout() const override { return options_.timeout; }

  // Collectives of zero floats return OK at once without communicating (on every rank alike).
  Status allreduce_sum(std::span<float> data) override;
  Status reduce_scatter_sum(std::span<const float> in, std::span<float> out) override;
  Status all_gather(std::span<const float> in, std::span<float> out) override;
  Status all_to_all_v(std::span<const float> in, std::span<const int64_t> send_counts,
                      std::span<float> out, std::span<const int64_t> recv_counts) override;
  Status broadcast(std::span<float> data, int root) override;
  Status barrier() override;

  // The connected Gloo context, for code that calls Gloo directly (`mariana bench comm` times raw
  // Gloo beside the communicator). Calls on it must not overlap this communicator's.
  std::shared_ptr<gloo::Context> gloo_context() const;
  const GlooOptions& options() const { return options_; }

 private:
  struct Mesh;
  GlooCommunicator(GlooOptions options, std::shared_ptr<Store> store, std::unique_ptr<Mesh> mesh);
  // Runs one Gloo collective: refuses once broken, turns Gloo's exceptions into a Status that
  // names the group, the op, its size and the time it waited, and marks the group broken.
  // skip_if_empty: zero floats means zero on every rank, so nothing is exchanged.
  // Gloo's timeout does not say which peer is missing, so a rank whose collective failed marks
  // "<group>/failed/<tag>/<rank>" in the store and waits up to min(timeout, 1 s) for the other
  // ranks' marks; the message lists those that never marked it (stopped, dead, or not in the op).
  template <typename Fn>
  Status run(const char* op, size_t floats, bool skip_if_empty, Fn&& fn);

  // The ranks that did not mark collective `tag` as failed within the grace period, as "[2, 3]";
  // "" when the store cannot tell.
  std::string unreported_ranks(uint32_t tag);

  GlooOptions options_;
  std::shared_ptr<Store> store_;
  std::unique_ptr<Mesh> mesh_;
  uint32_t next_tag_ = 0;     // one Gloo tag per collective, the same sequence on every rank
  std::string broken_;        // the first failure; non-empty once the group is unusable
  std::vector<float> scratch_;  // reduce-scatter works in place on a copy of its input
};

}  // namespace mariana::comm
