// LocalCommunicator (the group of one) and the argument checks shared by every backend.
#include "comm/communicator.h"

#include <algorithm>
#include <numeric>

namespace mariana::comm {

std::string describe(const Communicator& c, const std::string& op, size_t floats) {
  return "comm group '" + c.group() + "' (rank " + std::to_string(c.rank()) + " of " +
         std::to_string(c.size()) + "): " + op + (op == "barrier" ? "" : " of " + std::to_string(floats) + " floats");
}

Status check_reduce_scatter(const Communicator& c, size_t in, size_t out) {
  if (in != out * static_cast<size_t>(c.size())) {
    return InvalidArgument(describe(c, "reduce_scatter_sum", in) + ": expected in.size() = size() * out.size() = " +
                           std::to_string(out * c.size()));
  }
  return Status::Ok();
}

Status check_all_gather(const Communicator& c, size_t in, size_t out) {
  if (out != in * static_cast<size_t>(c.size())) {
    return InvalidArgument(describe(c, "all_gather", in) + ": expected out.size() = size() * in.size() = " +
                           std::to_string(in * c.size()) + ", got " + std::to_string(out));
  }
  return Status::Ok();
}

namespace {

// Counts of one side of all_to_all_v: size() entries, none negative, summing to the buffer's size.
Status check_counts(const Communicator& c, size_t in, const char* name, std::span<const int64_t> counts,
                    size_t buffer) {
  const std::string what = describe(c, "all_to_all_v", in);
  if (counts.size() != static_cast<size_t>(c.size())) {
    return InvalidArgument(what + ": expected " + std::to_string(c.size()) + " " + name + ", got " +
                           std::to_string(counts.size()));
  }
  if (std::any_of(counts.begin(), counts.end(), [](int64_t n) { return n < 0; })) {
    return InvalidArgument(what + ": " + name + " has a negative entry");
  }
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  if (static_cast<size_t>(total) != buffer) {
    return InvalidArgument(what + ": " + name + " sum to " + std::to_string(total) + " but the buffer holds " +
                           std::to_string(buffer) + " floats");
  }
  return Status::Ok();
}

}  // namespace

Status check_all_to_all_v(const Communicator& c, size_t in, std::span<const int64_t> send_counts, size_t out,
                          std::span<const int64_t> recv_counts) {
  MARIANA_RETURN_IF_ERROR(check_counts(c, in, "send_counts", send_counts, in));
  return check_counts(c, in, "recv_counts", recv_counts, out);
}

Status check_root(const Communicator& c, int root) {
  if (root < 0 || root >= c.size()) {
    return InvalidArgument(describe(c, "broadcast", 0) + ": root " + std::to_string(root) +
                           " is not a rank of the group (0.." + std::to_string(c.size() - 1) + ")");
  }
  return Status::Ok();
}

Status LocalCommunicator::allreduce_sum(std::span<float>) { return Status::Ok(); }

Status LocalCommunicator::reduce_scatter_sum(std::span<const float> in, std::span<float> out) {
  MARIANA_RETURN_IF_ERROR(check_reduce_scatter(*this, in.size(), out.size()));
  std::copy(in.begin(), in.end(), out.begin());
  return Status::Ok();
}

Status LocalCommunicator::all_gather(std::span<const float> in, std::span<float> out) {
  MARIANA_RETURN_IF_ERROR(check_all_gather(*this, in.size(), out.size()));
  std::copy(in.begin(), in.end(), out.begin());
  return Status::Ok();
}

Status LocalCommunicator::all_to_all_v(std::span<const float> in, std::span<const int64_t> send_counts,
                                       std::span<float> out, std::span<const int64_t> recv_counts) {
  MARIANA_RETURN_IF_ERROR(check_all_to_all_v(*this, in.size(), send_counts, out.size(), recv_counts));
  if (in.size() != out.size()) {  // the one rank sends to itself: what it sends is what it receives
    return InvalidArgument(describe(*this, "all_to_all_v", in.size()) + ": send_counts[0] = " +
                           std::to_string(in.size()) + " but recv_counts[0] = " + std::to_string(out.size()));
  }
  std::copy(in.begin(), in.end(), out.begin());
  return Status::Ok();
}

Status LocalCommunicator::broadcast(std::span<float>, int root) { return check_root(*this, root); }

Status LocalCommunicator::barrier() { return Status::Ok(); }

}  // namespace mariana::comm
