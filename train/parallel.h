// Parallel training: one rank of a job laid out as dp × ep ranks (JobSpec's [parallel]). The
// rank's communicators (ParallelGroups) and ZeRO-1 (ZeroOptimizer): gradients reduce-scattered,
// AdamW over this rank's slice of the fp32 weights with its slice of the moments, the updated
// slices all-gathered, the global gradient norm clipped over all slices.
//
// Layout. World rank w = d·ep + e (d the dp rank, e the ep rank):
// - "world": all ranks. Every rank trains on its own rows of the step's global batch, so the
//   parameters outside the routed experts (attention, dense MLPs, shared experts, gates, norms,
//   embedding, head) are data-parallel over the whole world: their gradients are reduced over it
//   and their ZeRO-1 slices are 1/world each.
// - "ep<d>": the ep ranks of dp replica d; ep rank e holds routed experts [e·E/ep, (e+1)·E/ep) of
//   every MoE layer and the tokens of the replica move between them by all-to-all-v (model/moe.h).
// - "edp<e>": the dp replicas of ep rank e; its experts' gradients are reduced over it and their
//   ZeRO-1 slices are 1/dp each.
// With ep > 1 a rank's model holds only its routed experts (a ParamTable of its ShardFilter,
// shard_filter_of_rank): the others' parameters, gradients and moments are not in its memory.
//
// Checkpoints are sharded: every rank writes the tensors checkpoint_layout_of_ranks gives it
// (model-0000r-of-0000W.safetensors, the HF sharded layout) and its ZeRO-1 slices of the moments
// (optimizer-0000r-of-0000W.safetensors); rank 0 then writes the index and the trainer's files and
// publishes the manifest once every rank has written (write_rank_checkpoint). Nothing is gathered.
// Any layout resumes from any other: the model loads through the index and the moments by their
// runs (training_moments_load).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/store.h"
#include "core/status.h"
#include "model/checkpoint.h"
#include "model/params.h"
#include "train/job_spec.h"
#include "train/optimizer.h"
#include "train/run_checkpoints.h"

namespace mariana {

struct ParallelRank {
  int64_t rank = 0, world = 1;  // this rank and dp·ep
  int64_t dp = 1, ep = 1;
  int64_t dp_rank() const { return rank / ep; }
  int64_t ep_rank() const { return rank % ep; }
};

// This rank's communicators. Groups of one are LocalCommunicators.
class ParallelGroups {
 public:
  // Joins the world group, then this rank's ep group, then its edp group, through `store` (every
  // rank of the job calls it with the same store, spec and its own rank). `host`: the address this
  // rank listens on for its peers (a gang rank's worker's bind address; loopback on one machine).
  static Result<std::unique_ptr<ParallelGroups>> connect(std::shared_ptr<comm::Store> store, const JobSpec& spec,
                                                         int64_t rank, const std::string& host = "127.0.0.1");
  const ParallelRank& layout() const { return layout_; }
  comm::Communicator& world() { return *world_; }
  comm::Communicator& ep() { return *ep_; }
  comm::Communicator& edp() { return *edp_; }

 private:
  ParallelRank layout_;
  std::unique_ptr<comm::Communicator> world_, ep_, edp_;
};

// Bytes this process has passed to write/send system calls so far (/proc/self/io wchar), -1 when
// unreadable: a step's collectives are its only writes, so the difference measures them.
int64_t process_bytes_written();

// Sums doubles over a group through fp32 collectives: each value as a float and its rounding
// error, summed apart. The float sum of the high parts rounds too, so a sum keeps about float
// precision relative to itself (integers below 2^24 stay exact); enough for losses and norms.
Status allreduce_doubles(comm::Communicator& c, std::vector<double>* values);

// Every rank learns whether any rank failed a step only some ranks run (rank 0 writing a
// checkpoint, preparing the data): `mine` where this rank failed, else Unavailable naming `what` and
// pointing at the other ranks' logs, else OK. Collective.
Status agree_status(comm::Communicator& world, const Status& mine, const std::string& what);

// The part of the model rank `rank` holds: every tensor but the routed experts of other ep ranks.
ShardFilter shard_filter_of_rank(const ParallelRank& layout, int64_t n_routed_experts);

// Which rank writes which tensor of a checkpoint: one file per rank; a routed expert goes to one of
// the dp replicas of the ep rank that holds it, every other tensor (and each MTP shared head) to any
// rank; in table order, each to the candidate with the fewest elements so far (ties: the lowest rank).
CheckpointLayout checkpoint_layout_of_ranks(const ModelConfig& config, const ParamTable& full, const ParallelRank& layout);

// The mechanism of a checkpoint every rank writes into (collective): a staging directory named by
// rank 0's pid (which the ranks agree on by broadcast), emptied and created by rank 0, which then
// writes its own first files into it (`first`, may be null); each rank writes its files (`mine`);
// once every rank has, rank 0 checks that each rank r's files_of(r) are visible (a shared file
// system may show another node's file late), completes the directory (`last`, may be null) and
// publishes it as run_dir/checkpoints/<name> (manifest, keep_last). A failure on any rank fails
// every rank, and nothing is published. *written: the checkpoint's directory, on every rank.
using CheckpointWriter = std::function<Status(const std::string& staging_dir)>;
Status write_checkpoint_of_ranks(ParallelGroups& groups, const std::string& run_dir, const std::string& name,
                                 int64_t step, int64_t keep_last, const CheckpointWriter& first,
                                 const CheckpointWriter& mine,
                                 const std::function<std::vector<std::string>(int64_t rank)>& files_of,
                                 const CheckpointWriter& last, std::string* written);

class TrainObjective;
// Writes run_dir/checkpoints/step-N with every rank of the job (write_checkpoint_of_ranks): rank 0 empties the
// shared staging directory (named by rank 0's pid, which the ranks agree on); each rank writes its model file (checkpoint_layout_of_ranks) from
// `model` and its moments file from `moments`; once every rank has, rank 0 writes config.json, the
// index and the trainer's files (write_trainer_files) and publishes. A failure on any rank fails
// every rank, and nothing is published. *written: the checkpoint's directory, on every rank.
Status write_rank_checkpoint(ParallelGroups& groups, const std::string& run_dir, int64_t step,
                             const Model<float>& model, const ParamTable& full, const std::vector<MomentRun>& moments,
                             const TrainObjective* objective, const nlohmann::ordered_json& state, int64_t keep_last,
                             std::string* written);

// A rank's rows of a global batch: rows [rank·B/world, (rank+1)·B/world).
struct Batch;
Batch batch_rows_of_rank(const Batch& global, int64_t rank, int64_t world);

// ZeRO-1 over a model's parameter arena (see the layout above). Gate biases are not optimizer
// parameters (the bias update sets them, identically on every rank).
class ZeroOptimizer {
 public:
  // table: this rank's model's (a shard's with ep > 1); full: the full model's, whose tensors name
  // the moment runs of checkpoints.
  ZeroOptimizer(const ParamTable& table, const ParamTable& full, int64_t n_routed_experts, AdamWConfig cfg,
                ParallelGroups& groups);

  // Sums the gradients over the ranks that share each parameter (reduce-scatter: this rank keeps
  // the sum of its slice) and returns the global L2 norm of all gradients (fp64 partial sums).
  Result<double> reduce_gradients(const float* grads);
  // Clips the reduced slice by max_norm / norm when the norm exceeds max_norm (> 0), runs AdamW on
  // this rank's slice at lr and all-gathers the updated slices into `params` (every rank's arena
  // ends identical in the parameters it uses).
  Status update(float* params, double norm, double max_norm, double lr);
  // This rank's slices of both moments as runs of the full model's tensors (for its checkpoint
  // file); valid until the next update.
  std::vector<MomentRun> moment_runs() const;
  // Takes this rank's slices of moments laid out as this rank's arena (`table`'s; resume, read
  // from a checkpoint of any earlier layout by training_moments_load).
  void load_moments(const float* exp_avg, const float* exp_avg_sq, int64_t steps);
  int64_t steps() const { return t_; }
  // The bytes this rank sends in one step's reduce-scatter and all-gather, by the algorithms'
  // count: (G − 1)/G of each flat buffer, twice, over its group of G (bench: against measured).
  int64_t step_bytes_analytic() const;

  // A contiguous run of the arena in one of the two flat buffers.
  struct Segment {
    int64_t offset = 0, n = 0;  // arena offset and length
    int64_t flat = 0;           // position in the flat buffer
    bool decay = false;
    const ParamSpec* full_spec = nullptr;  // the tensor, in the full model's table
  };

 private:
  struct Flat {
    std::vector<Segment> segments;
    int64_t n = 0, padded = 0, slice = 0;  // elements, padded to a multiple of the group, one slice
    comm::Communicator* group = nullptr;
    std::vector<float> buf, grad_slice, m, v, p_slice;
  };
  Status reduce(Flat& f, const float* grads);
  Status apply(Flat& f, float* params, float scale, double lr);
  void gather_flat(const Flat& f, const float* arena, float* flat) const;
  // Each segment's run of `flat` into `arena` at its offset in this rank's arena.
  void scatter_flat(const std::vector<Segment>& segments, const float* flat, float* arena) const;

  const ParamTable& table_;
  const ParamTable& full_;
  int64_t E_;
  AdamWConfig cfg_;
  ParallelGroups& groups_;
  Flat dense_, experts_;
  int64_t t_ = 0;
};

}  // namespace mariana
