// Bucketed, checksummed, versioned broadcast of a model's parameters (see weight_sync.h).
#include "rl/weight_sync.h"

#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <span>
#include <vector>

namespace mariana::rl {

namespace {

constexpr uint32_t kMagic = 0x4D574753;  // "MWGS"
constexpr size_t kHeaderFloats = 8;

void put_u64(float* at, uint64_t v) { std::memcpy(at, &v, sizeof v); }
uint64_t get_u64(const float* at) {
  uint64_t v = 0;
  std::memcpy(&v, at, sizeof v);
  return v;
}

uint64_t arena_hash(const Model<float>& model) {
  return XXH64(model.params(), static_cast<size_t>(model.table().arena_size()) * sizeof(float), 0);
}

// Every member learns whether any member failed: each contributes 1 for its own failure.
Result<bool> any_failed(comm::Communicator& group, bool mine) {
  std::vector<float> flag = {mine ? 1.0f : 0.0f};
  MARIANA_RETURN_IF_ERROR(group.allreduce_sum(flag));
  return flag[0] > 0.0f;
}

}  // namespace

Result<WeightSyncResult> weight_sync(comm::Communicator& group, int root, Model<float>& model, int64_t version,
                                     const WeightSyncOptions& options) {
  MARIANA_RETURN_IF_ERROR(comm::check_root(group, root));
  if (options.bucket_bytes < static_cast<int64_t>(sizeof(float)))
    return InvalidArgument("weight sync: bucket_bytes must be at least 4");
  const auto t0 = std::chrono::steady_clock::now();
  const bool sender = group.rank() == root;
  const int64_t n = model.table().arena_size();
  std::vector<float> header(kHeaderFloats, 0.0f);
  if (sender) {
    uint32_t magic = kMagic, verify = options.verify ? 1 : 0;
    std::memcpy(header.data(), &magic, sizeof magic);
    std::memcpy(header.data() + 1, &verify, sizeof verify);
    put_u64(header.data() + 2, static_cast<uint64_t>(version));
    put_u64(header.data() + 4, static_cast<uint64_t>(n));
    if (options.verify) put_u64(header.data() + 6, arena_hash(model));  // header[1] says so
  }
  MARIANA_RETURN_IF_ERROR(group.broadcast(header, root));
  uint32_t magic = 0;
  std::memcpy(&magic, header.data(), sizeof magic);
  if (magic != kMagic) return DataLoss("weight sync (group " + group.group() + "): the header is not a weight sync's");
  uint32_t root_verify = 0;  // the root's choice: every member must make the same collective calls
  std::memcpy(&root_verify, header.data() + 1, sizeof root_verify);
  const bool verify = root_verify != 0;
  const int64_t root_n = static_cast<int64_t>(get_u64(header.data() + 4));
  const bool mismatch = root_n != n;
  WeightSyncResult out;
  out.version = static_cast<int64_t>(get_u64(header.data() + 2));
  out.bytes = root_n * static_cast<int64_t>(sizeof(float));
  const int64_t per = std::max<int64_t>(1, options.bucket_bytes / static_cast<int64_t>(sizeof(float)));
  std::vector<float> scratch;  // a member whose model differs drains the buckets here
  if (mismatch) scratch.resize(static_cast<size_t>(std::min(per, root_n)));
  for (int64_t off = 0; off < root_n; off += per) {
    const size_t len = static_cast<size_t>(std::min(per, root_n - off));
    MARIANA_RETURN_IF_ERROR(group.broadcast(std::span<float>(mismatch ? scratch.data() : model.params() + off, len), root));
    ++out.buckets;
  }
  const std::string where = "weight sync (group " + group.group() + ") of version " + std::to_string(out.version);
  const Status mine =
      mismatch ? FailedPrecondition(where + ": this member's model has " + std::to_string(n) +
                                    " parameter slots, the root's (rank " + std::to_string(root) + ") " +
                                    std::to_string(root_n) + "; its parameters are unchanged")
      : verify && !sender && arena_hash(model) != get_u64(header.data() + 6)
          ? DataLoss(where + ": the parameters arrived with a checksum that differs from the root's; do not sample "
                             "from them")
          : Status::Ok();
  if (verify) {
    MARIANA_ASSIGN_OR_RETURN(bool any, any_failed(group, !mine.ok()));
    if (any && mine.ok()) return Unavailable(where + ": another member failed it (see its log)");
  }
  MARIANA_RETURN_IF_ERROR(mine);
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace mariana::rl
