// comm::Communicator: the collectives a group of ranks runs over fp32 buffers (allreduce-sum,
// reduce-scatter, all-gather, all-to-all-v, broadcast, barrier), and LocalCommunicator, the
// one-rank group the single-process trainer uses. Backends: gloo_communicator.h (TCP between CPU
// processes), nccl_communicator.h (device buffers between GPU processes, when CUDA is built).
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>

#include "core/status.h"

namespace mariana::comm {

// Every rank of a group calls the same collectives in the same order with matching sizes (the
// contract of every collective library). Calls are blocking and synchronous; one thread at a time.
// Each collective fails with a Status, never hangs: a peer that does not take part within
// timeout() makes it DeadlineExceeded/Unavailable, with a message naming the group, the rank, the
// op and its size. After a failed collective the group is broken (peers may be half way through
// it); every later call returns FailedPrecondition, and the caller rebuilds the group.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The group's name, used in errors and as the rendezvous key prefix ("dp", "ep", "world").
  virtual const std::string& group() const = 0;
  // The end-to-end limit of each collective.
  virtual std::chrono::milliseconds timeout() const = 0;

  // data[i] := the sum over ranks of data[i]. Same data.size() on every rank.
  virtual Status allreduce_sum(std::span<float> data) = 0;
  // in holds size() equal blocks of out.size() floats; out := the sum over ranks of block rank()
  // of their in. in.size() == size() * out.size() on every rank.
  virtual Status reduce_scatter_sum(std::span<const float> in, std::span<float> out) = 0;
  // out block r (in.size() floats at r * in.size()) := rank r's in. Same in.size() on every rank;
  // out.size() == size() * in.size().
  virtual Status all_gather(std::span<const float> in, std::span<float> out) = 0;
  // in holds send_counts[r] floats for each rank r, in rank order; out receives recv_counts[r]
  // floats from each rank r, in rank order. Counts have size() entries, may be zero, and this
  // rank's recv_counts[r] must equal rank r's send_counts[rank()].
  virtual Status all_to_all_v(std::span<const float> in, std::span<const int64_t> send_counts,
                              std::span<float> out, std::span<const int64_t> recv_counts) = 0;
  // data := root's data on every rank. Same data.size() on every rank.
  virtual Status broadcast(std::span<float> data, int root) = 0;
  // Returns once every rank has entered the barrier.
  virtual Status barrier() = 0;
};

// The group of one: every collective is a copy (or nothing). Sizes are checked exactly as a real
// group checks them, so code that passes here passes the checks of a larger group.
class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(std::string group = "local") : group_(std::move(group)) {}

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& group() const override { return group_; }
  std::chrono::milliseconds timeout() const override { return std::chrono::milliseconds(0); }

  Status allreduce_sum(std::span<float> data) override;
  Status reduce_scatter_sum(std::span<const float> in, std::span<float> out) override;
  Status all_gather(std::span<const float> in, std::span<float> out) override;
  Status all_to_all_v(std::span<const float> in, std::span<const int64_t> send_counts,
                      std::span<float> out, std::span<const int64_t> recv_counts) override;
  Status broadcast(std::span<float> data, int root) override;
  Status barrier() override;

 private:
  std::string group_;
};

// The argument checks every backend runs before a collective; InvalidArgument names the group,
// the rank and the op. Shared so that LocalCommunicator and the backends agree exactly.
Status check_reduce_scatter(const Communicator& c, size_t in, size_t out);
Status check_all_gather(const Communicator& c, size_t in, size_t out);
Status check_all_to_all_v(const Communicator& c, size_t in, std::span<const int64_t> send_counts,
                          size_t out, std::span<const int64_t> recv_counts);
Status check_root(const Communicator& c, int root);

// "comm group 'dp' (rank 1 of 3): allreduce_sum of 1000 floats": the prefix of every error.
std::string describe(const Communicator& c, const std::string& op, size_t floats);

}  // namespace mariana::comm
