// Weight sync, learner → rollout generators: the policy's parameters broadcast over a comm/ group
// (Gloo now, NCCL on GPUs behind the same Communicator), in buckets, stamped with the policy
// version that produced them. Collective: the root (the learner) sends, every other member (a
// generator) receives into its own model.
//
// What a receiver may rely on: weight_sync returns OK only when it holds exactly the root's
// parameters of `version` (every bucket arrived; with `verify`, the XXH64 of its arena equals the
// root's too). After a failure its parameters may be partly overwritten (a lost peer mid-way), so
// it must not sample from them until a later sync succeeds; a generator that syncs only between
// rollouts therefore never mixes two versions in one sample. A receiver whose model differs from
// the root's fails and keeps its parameters (it drains the buckets into a scratch buffer).
//
// Wire: a header broadcast (a magic word, the version, the arena's length and, with verify, its
// XXH64, as raw bits in eight floats), then the arena in buckets of bucket_bytes (no copy: each
// bucket is a span of the model's own arena). With verify, one allreduce of failure flags ends it,
// so every member, the root included, learns of any member's failure.
#pragma once

#include <cstdint>

#include "comm/communicator.h"
#include "core/status.h"
#include "model/model.h"

namespace mariana::rl {

struct WeightSyncOptions {
  int64_t bucket_bytes = 32LL << 20;  // bigger buckets: fewer round trips; smaller: less memory in flight
  // Checksum the arena on both sides and agree on the outcome (one more round trip, and two passes
  // over the weights); off, a sync is the header and the buckets only. TCP already checks each
  // segment, so verify is for doubt (a new transport, a suspected bug), not for every update.
  // The root's choice holds for every member (it travels in the header).
  bool verify = false;
};

struct WeightSyncResult {
  int64_t version = 0;  // the root's
  int64_t bytes = 0;    // the arena's
  int64_t buckets = 0;
  double seconds = 0;
};

// `version` is read on the root and ignored elsewhere. FailedPrecondition naming both sizes on a
// member whose model differs from the root's (its parameters untouched); DataLoss on a receiver
// whose checksum differs (verify); with verify every other member fails too, naming the cause; a
// comm failure (timeout, lost peer) as the Communicator reports it.
Result<WeightSyncResult> weight_sync(comm::Communicator& group, int root, Model<float>& model, int64_t version,
                                     const WeightSyncOptions& options = {});

}  // namespace mariana::rl
