// NcclCommunicator: the Communicator between GPU processes, over NCCL, for fp32 buffers in device
// memory. Ranks exchange NCCL's unique id through a comm::Store (the same seam Gloo uses); the
// communicator is created non-blocking and every wait is polled against the group's timeout.
// Compiled only when CUDA is (MARIANA_WITH_NCCL is defined then).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/store.h"

namespace mariana::comm {

struct NcclOptions {
  std::string group = "world";  // names the group in errors; prefixes its rendezvous key
  int rank = 0;
  int size = 1;
  int device = 0;  // the CUDA device this rank runs on (one device per rank)
  // The limit of the rendezvous (waiting for the id, then NCCL's init) and of each collective.
  std::chrono::milliseconds timeout{30000};
};

// Every span handed to a collective holds DEVICE pointers on options().device (cudaMalloc'd or
// managed memory), never host memory. Collectives run on the communicator's own CUDA stream, which
// synchronises with the legacy default stream: work the caller queued on stream 0 is complete
// before a collective reads its input; work on other streams the caller must finish first. Each
// call returns once the collective has completed on the device (the output is ready to read).
class NcclCommunicator final : public Communicator {
 public:
  // Joins the group. Rank 0 creates NCCL's unique id and publishes it (hex) under
  // "mariana/comm/<group>/nccl-id" in `store`; the other ranks poll for it until the timeout
  // (DeadlineExceeded naming the group: no CUDA call is made before the id is there). Then
  // cudaSetDevice(device), a stream of its own, and ncclCommInitRankConfig with blocking = 0,
  // polled until it completes; a peer that never joins makes it DeadlineExceeded (the half-made
  // communicator is aborted). Each group name is used once per store.
  static Result<std::unique_ptr<NcclCommunicator>> connect(std::shared_ptr<Store> store,
                                                           const NcclOptions& options);
  ~NcclCommunicator() override;

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }
  const std::string& group() const override { return options_.group; }
  std::chrono::milliseconds timeout() const override { return options_.timeout; }

  // Device buffers (above). Arguments are checked before anything is launched; collectives of zero
  // floats return OK at once without communicating (on every rank alike; all_to_all_v skips the
  // pairs whose count is zero, so a rank with nothing to send or receive returns at once). A
  // collective that does not complete within timeout() aborts the NCCL communicator and returns
  // DeadlineExceeded; NCCL's own errors return Unavailable. Either breaks the group.
  Status allreduce_sum(std::span<float> data) override;
  Status reduce_scatter_sum(std::span<const float> in, std::span<float> out) override;
  Status all_gather(std::span<const float> in, std::span<float> out) override;
  Status all_to_all_v(std::span<const float> in, std::span<const int64_t> send_counts,
                      std::span<float> out, std::span<const int64_t> recv_counts) override;
  Status broadcast(std::span<float> data, int root) override;
  // An allreduce of one float in a small device buffer of the communicator's own.
  Status barrier() override;

  const NcclOptions& options() const { return options_; }

 private:
  struct Handles;  // ncclComm_t, cudaStream_t, the barrier's buffer (kept out of this header)
  NcclCommunicator(NcclOptions options, std::unique_ptr<Handles> handles);
  // Refuses once broken; skips empty collectives; else sets the device, runs `launch` (which
  // queues NCCL calls on the stream and returns NCCL's result) and waits for completion.
  template <typename Launch>
  Status run(const char* op, size_t floats, bool skip, Launch&& launch);

  NcclOptions options_;
  std::unique_ptr<Handles> handles_;
  std::string broken_;  // the first failure; non-empty once the group is unusable
};

}  // namespace mariana::comm
