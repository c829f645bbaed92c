// NcclCommunicator: NCCL's unique id through a comm::Store, a non-blocking NCCL communicator, and
// collectives on a stream of its own whose completion is polled against the group's timeout.
#include "comm/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <thread>
#include <vector>

namespace mariana::comm {

namespace {

using Clock = std::chrono::steady_clock;

long long elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

std::string who(const NcclOptions& o) {
  return "comm group '" + o.group + "' (rank " + std::to_string(o.rank) + " of " + std::to_string(o.size) + ")";
}

std::string id_key(const std::string& group) { return "mariana/comm/" + group + "/nccl-id"; }

std::string to_hex(const ncclUniqueId& id) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  for (char c : id.internal) {
    const auto byte = static_cast<unsigned char>(c);
    hex += kDigits[byte >> 4];
    hex += kDigits[byte & 15];
  }
  return hex;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// The id rank 0 published, or nullopt when `hex` is not 2 * sizeof(ncclUniqueId) hex digits.
std::optional<ncclUniqueId> from_hex(const std::string& hex) {
  ncclUniqueId id;
  if (hex.size() != 2 * sizeof(id.internal)) return std::nullopt;
  for (size_t i = 0; i < sizeof(id.internal); ++i) {
    const int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    id.internal[i] = static_cast<char>(hi * 16 + lo);
  }
  return id;
}

// "unhandled system error (ncclSystemError): <NCCL's last message>".
std::string nccl_message(ncclResult_t r, ncclComm_t comm) {
  std::string m = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') m += ": " + std::string(last);
  return m;
}

std::string cuda_message(cudaError_t e) {
  cudaGetLastError();  // clear it, so that it does not stick to the next CUDA call
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

// Polls until the communicator has no operation in progress and (when `stream` is given) the
// stream has drained, or until `deadline`. `what` prefixes the errors: DeadlineExceeded when time
// ran out, Unavailable when NCCL or CUDA reported an error.
Status wait_for(ncclComm_t comm, cudaStream_t stream, const std::string& what, Clock::time_point start,
                Clock::time_point deadline, std::chrono::milliseconds timeout) {
  while (true) {
    ncclResult_t async = ncclSuccess;
    const ncclResult_t r = ncclCommGetAsyncError(comm, &async);
    if (r != ncclSuccess) return Unavailable(what + ": ncclCommGetAsyncError failed: " + nccl_message(r, comm));
    if (async != ncclSuccess && async != ncclInProgress) {
      return Unavailable(what + " failed after " + std::to_string(elapsed_ms(start)) + " ms: " +
                         nccl_message(async, comm));
    }
    if (async == ncclSuccess) {
      if (stream == nullptr) return Status::Ok();
      const cudaError_t q = cudaStreamQuery(stream);
      if (q == cudaSuccess) return Status::Ok();
      if (q != cudaErrorNotReady) {
        return Unavailable(what + " failed after " + std::to_string(elapsed_ms(start)) + " ms: " + cuda_message(q));
      }
    }
    if (Clock::now() >= deadline) {
      return Status(StatusCode::kDeadlineExceeded,
                    what + " timed out after " + std::to_string(elapsed_ms(start)) + " ms (timeout " +
                        std::to_string(timeout.count()) + " ms); a peer is stopped, dead, or never took part");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
}

}  // namespace

struct NcclCommunicator::Handles {
  int device = 0;
  std::chrono::milliseconds timeout{0};  // the group's, also the limit of the final flush
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  float* one = nullptr;  // the barrier's float

  // Aborts the NCCL communicator (no waiting on peers or on the device), for a failed group.
  void abort() {
    if (comm != nullptr) ncclCommAbort(comm);
    comm = nullptr;
  }

  ~Handles() {
    cudaSetDevice(device);
    if (comm != nullptr) {
      // A healthy group: flush and free. Finalize is non-blocking here; should it not complete (a
      // peer gone since the last collective) the communicator is aborted instead.
      const auto start = Clock::now();
      const ncclResult_t f = ncclCommFinalize(comm);
      const bool flushed = (f == ncclSuccess || f == ncclInProgress) &&
                           wait_for(comm, nullptr, "finalize", start, start + timeout, timeout).ok();
      if (flushed) {
        ncclCommDestroy(comm);
      } else {
        ncclCommAbort(comm);
      }
      if (one != nullptr) cudaFree(one);
    }
    // After an abort, cudaFree (which synchronises the device) is skipped: a kernel of the aborted
    // collective may still be winding down, and a 4-byte leak beats a hang.
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
};

NcclCommunicator::NcclCommunicator(NcclOptions options, std::unique_ptr<Handles> handles)
    : options_(std::move(options)), handles_(std::move(handles)) {}

NcclCommunicator::~NcclCommunicator() = default;

Result<std::unique_ptr<NcclCommunicator>> NcclCommunicator::connect(std::shared_ptr<Store> store,
                                                                     const NcclOptions& o) {
  const std::string me = who(o);
  if (o.size < 1 || o.rank < 0 || o.rank >= o.size) return InvalidArgument(me + ": expected 0 <= rank < size");
  if (o.timeout.count() <= 0) return InvalidArgument(me + ": expected a positive timeout");
  if (o.device < 0) return InvalidArgument(me + ": device " + std::to_string(o.device) + " is not a CUDA device");
  const auto start = Clock::now();
  const auto deadline = start + o.timeout;
  const std::string key = id_key(o.group);

  // The unique id: created by rank 0 (a host-only call), read by the others. No CUDA call comes
  // before it, so a group whose rank 0 never arrives fails the same way with or without a device.
  ncclUniqueId id;
  if (o.rank == 0) {
    if (const ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      return Unavailable(me + ": ncclGetUniqueId failed: " + nccl_message(r, nullptr));
    }
    MARIANA_RETURN_IF_ERROR(store->set(key, to_hex(id)));
  } else {
    while (true) {
      MARIANA_ASSIGN_OR_RETURN(std::optional<std::string> hex, store->try_get(key));
      if (hex) {
        std::optional<ncclUniqueId> parsed = from_hex(*hex);
        if (!parsed) {
          return DataLoss(me + ": the value under '" + key + "' is not NCCL's unique id (" +
                          std::to_string(2 * sizeof(id.internal)) + " hex digits)");
        }
        id = *parsed;
        break;
      }
      if (Clock::now() >= deadline) {
        return Status(StatusCode::kDeadlineExceeded,
                      me + ": rendezvous timed out after " + std::to_string(elapsed_ms(start)) + " ms (timeout " +
                          std::to_string(o.timeout.count()) + " ms); rank 0 never published NCCL's unique id under '" +
                          key + "'");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  const std::string on_device = me + " on CUDA device " + std::to_string(o.device);
  if (const cudaError_t e = cudaSetDevice(o.device); e != cudaSuccess) {
    return Unavailable(on_device + ": cudaSetDevice failed: " + cuda_message(e));
  }
  auto handles = std::make_unique<Handles>();
  handles->device = o.device;
  handles->timeout = o.timeout;
  // A blocking stream (not cudaStreamNonBlocking): it waits for work queued on the legacy default
  // stream, so a buffer written there is complete before a collective reads it.
  if (const cudaError_t e = cudaStreamCreate(&handles->stream); e != cudaSuccess) {
    return Unavailable(on_device + ": cudaStreamCreate failed: " + cuda_message(e));
  }
  if (const cudaError_t e = cudaMalloc(&handles->one, sizeof(float)); e != cudaSuccess) {
    return Unavailable(on_device + ": cudaMalloc of the barrier's float failed: " + cuda_message(e));
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // init returns at once; a missing peer is then a timeout, not a hang
  const ncclResult_t r = ncclCommInitRankConfig(&handles->comm, o.size, id, o.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    const std::string message = nccl_message(r, handles->comm);
    handles->abort();
    return Unavailable(on_device + ": ncclCommInitRankConfig failed: " + message);
  }
  if (Status st = wait_for(handles->comm, nullptr, on_device + ": ncclCommInitRankConfig", start, deadline, o.timeout);
      !st.ok()) {
    handles->abort();
    return st;
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(o, std::move(handles)));
}

template <typename Launch>
Status NcclCommunicator::run(const char* op, size_t floats, bool skip, Launch&& launch) {
  const std::string what = describe(*this, op, floats);
  if (!broken_.empty()) {
    return FailedPrecondition(what + ": the group is broken by an earlier failure (" + broken_ + "); rebuild it");
  }
  if (skip) return Status::Ok();
  const auto start = Clock::now();
  Status st;
  if (const cudaError_t e = cudaSetDevice(options_.device); e != cudaSuccess) {
    st = Unavailable(what + ": cudaSetDevice(" + std::to_string(options_.device) + ") failed: " + cuda_message(e));
  } else if (const ncclResult_t r = launch(handles_->comm, handles_->stream); r != ncclSuccess && r != ncclInProgress) {
    st = Unavailable(what + ": launching on CUDA device " + std::to_string(options_.device) +
                     " failed: " + nccl_message(r, handles_->comm));
  } else {
    st = wait_for(handles_->comm, handles_->stream, what + " on CUDA device " + std::to_string(options_.device),
                  start, start + options_.timeout, options_.timeout);
  }
  if (!st.ok()) {
    // Peers may be half way through this collective: the communicator cannot be reused.
    handles_->abort();
    broken_ = op;
  }
  return st;
}

Status NcclCommunicator::allreduce_sum(std::span<float> data) {
  return run("allreduce_sum", data.size(), data.empty(), [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat32, ncclSum, comm, stream);
  });
}

Status NcclCommunicator::reduce_scatter_sum(std::span<const float> in, std::span<float> out) {
  MARIANA_RETURN_IF_ERROR(check_reduce_scatter(*this, in.size(), out.size()));
  return run("reduce_scatter_sum", in.size(), in.empty(), [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclReduceScatter(in.data(), out.data(), out.size(), ncclFloat32, ncclSum, comm, stream);
  });
}

Status NcclCommunicator::all_gather(std::span<const float> in, std::span<float> out) {
  MARIANA_RETURN_IF_ERROR(check_all_gather(*this, in.size(), out.size()));
  return run("all_gather", in.size(), in.empty(), [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllGather(in.data(), out.data(), in.size(), ncclFloat32, comm, stream);
  });
}

Status NcclCommunicator::all_to_all_v(std::span<const float> in, std::span<const int64_t> send_counts,
                                      std::span<float> out, std::span<const int64_t> recv_counts) {
  MARIANA_RETURN_IF_ERROR(check_all_to_all_v(*this, in.size(), send_counts, out.size(), recv_counts));
  // A pair with nothing to exchange is skipped on both of its ranks alike (rank r's send_counts[me]
  // is this rank's recv_counts[r]); a rank with no pair left has nothing to wait for.
  const bool nothing = in.empty() && out.empty();
  return run("all_to_all_v", in.size(), nothing, [&](ncclComm_t comm, cudaStream_t stream) {
    ncclResult_t first = ncclGroupStart();
    if (first != ncclSuccess) return first;
    size_t sent = 0, received = 0;
    for (int r = 0; r < size(); ++r) {
      const auto send = static_cast<size_t>(send_counts[r]), recv = static_cast<size_t>(recv_counts[r]);
      ncclResult_t res = ncclSuccess;
      if (send > 0) res = ncclSend(in.data() + sent, send, ncclFloat32, r, comm, stream);
      if (res == ncclSuccess && recv > 0) res = ncclRecv(out.data() + received, recv, ncclFloat32, r, comm, stream);
      if (first == ncclSuccess) first = res;
      sent += send;
      received += recv;
    }
    const ncclResult_t end = ncclGroupEnd();  // always closes the group, even after an error
    return first != ncclSuccess ? first : end;
  });
}

Status NcclCommunicator::broadcast(std::span<float> data, int root) {
  MARIANA_RETURN_IF_ERROR(check_root(*this, root));
  return run("broadcast", data.size(), data.empty(), [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclBroadcast(data.data(), data.data(), data.size(), ncclFloat32, root, comm, stream);
  });
}

Status NcclCommunicator::barrier() {
  return run("barrier", 0, /*skip=*/false, [&](ncclComm_t comm, cudaStream_t stream) {
    return ncclAllReduce(handles_->one, handles_->one, 1, ncclFloat32, ncclSum, comm, stream);
  });
}

}  // namespace mariana::comm
