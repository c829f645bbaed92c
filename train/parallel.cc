// ParallelGroups and ZeRO-1.
#include "train/parallel.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "comm/gloo_communicator.h"
#include "model/checkpoint.h"
#include "model/model.h"

namespace mariana {

namespace fs = std::filesystem;

namespace {

Result<std::unique_ptr<comm::Communicator>> join(std::shared_ptr<comm::Store> store, const std::string& group,
                                                 int64_t rank, int64_t size, double timeout_s, const std::string& host) {
  if (size == 1) return std::unique_ptr<comm::Communicator>(std::make_unique<comm::LocalCommunicator>(group));
  comm::GlooOptions o;
  o.group = group;
  o.rank = static_cast<int>(rank);
  o.size = static_cast<int>(size);
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  o.host = host;
  MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<comm::GlooCommunicator> c, comm::GlooCommunicator::connect(store, o));
  return std::unique_ptr<comm::Communicator>(std::move(c));
}

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace

Result<std::unique_ptr<ParallelGroups>> ParallelGroups::connect(std::shared_ptr<comm::Store> store,
                                                                const JobSpec& spec, int64_t rank,
                                                                const std::string& host) {
  auto g = std::unique_ptr<ParallelGroups>(new ParallelGroups());
  g->layout_ = ParallelRank{rank, spec.world(), spec.dp, spec.ep};
  if (rank < 0 || rank >= spec.world())
    return InvalidArgument("parallel: rank " + std::to_string(rank) + " outside [0, " + std::to_string(spec.world()) + ")");
  const ParallelRank& l = g->layout_;
  MARIANA_ASSIGN_OR_RETURN(g->world_, join(store, "world", rank, l.world, spec.parallel_timeout_s, host));
  MARIANA_ASSIGN_OR_RETURN(g->ep_, join(store, "ep" + std::to_string(l.dp_rank()), l.ep_rank(), l.ep,
                                        spec.parallel_timeout_s, host));
  MARIANA_ASSIGN_OR_RETURN(g->edp_, join(store, "edp" + std::to_string(l.ep_rank()), l.dp_rank(), l.dp,
                                         spec.parallel_timeout_s, host));
  return g;
}

int64_t process_bytes_written() {
  std::ifstream in("/proc/self/io");
  std::string key;
  int64_t value = 0;
  while (in >> key >> value)
    if (key == "wchar:") return value;
  return -1;
}

Status allreduce_doubles(comm::Communicator& c, std::vector<double>* values) {
  std::vector<float> parts(values->size() * 2);
  for (size_t i = 0; i < values->size(); ++i) {
    parts[2 * i] = static_cast<float>((*values)[i]);
    parts[2 * i + 1] = static_cast<float>((*values)[i] - static_cast<double>(parts[2 * i]));
  }
  MARIANA_RETURN_IF_ERROR(c.allreduce_sum(parts));
  for (size_t i = 0; i < values->size(); ++i)
    (*values)[i] = static_cast<double>(parts[2 * i]) + static_cast<double>(parts[2 * i + 1]);
  return Status::Ok();
}

Status agree_status(comm::Communicator& world, const Status& mine, const std::string& what) {
  std::vector<float> failed = {mine.ok() ? 0.0f : 1.0f};
  MARIANA_RETURN_IF_ERROR(world.allreduce_sum(failed));
  if (failed[0] == 0.0f) return Status::Ok();
  if (!mine.ok()) return mine;
  return Unavailable(what + " failed on another rank (see rank 0's log)");
}

Batch batch_rows_of_rank(const Batch& global, int64_t rank, int64_t world) {
  const int64_t rows = global.B / world, S = global.S;
  const auto from = static_cast<std::ptrdiff_t>(rank * rows * S), to = static_cast<std::ptrdiff_t>((rank + 1) * rows * S);
  Batch b;
  b.B = rows;
  b.S = S;
  b.tokens.assign(global.tokens.begin() + from, global.tokens.begin() + to);
  b.targets.assign(global.targets.begin() + from, global.targets.begin() + to);
  b.doc_start.assign(global.doc_start.begin() + from, global.doc_start.begin() + to);
  return b;
}

ShardFilter shard_filter_of_rank(const ParallelRank& layout, int64_t n_routed_experts) {
  ShardFilter f;
  if (layout.ep > 1) {
    const int64_t per = n_routed_experts / layout.ep;
    f.expert_begin = layout.ep_rank() * per;
    f.expert_end = f.expert_begin + per;
  }
  return f;
}

CheckpointLayout checkpoint_layout_of_ranks(const ModelConfig& config, const ParamTable& full, const ParallelRank& layout) {
  CheckpointLayout out;
  out.shards.assign(static_cast<size_t>(layout.world), {});
  std::vector<int64_t> elems(static_cast<size_t>(layout.world), 0);
  const int64_t per = config.n_routed_experts / layout.ep;
  for (const std::string& name : checkpoint_tensor_names(config, full)) {
    const ParamSpec& s = *checkpoint_tensor_spec(full, name);  // a shared head: lm_head, replicated
    int64_t best = -1;
    for (int64_t r = 0; r < layout.world; ++r) {
      if (s.expert >= 0 && r % layout.ep != s.expert / per) continue;  // not holding it
      if (best < 0 || elems[r] < elems[best]) best = r;
    }
    out.shards[best].push_back(name);
    elems[best] += s.numel();
  }
  return out;
}

Status write_checkpoint_of_ranks(ParallelGroups& groups, const std::string& run_dir, const std::string& name,
                                 int64_t step, int64_t keep_last, const CheckpointWriter& first,
                                 const CheckpointWriter& mine,
                                 const std::function<std::vector<std::string>(int64_t rank)>& files_of,
                                 const CheckpointWriter& last, std::string* written) {
  comm::Communicator& world = groups.world();
  const int64_t rank = world.rank(), ranks = world.size();
  const std::string what = "writing checkpoint " + name;
  // The staging directory is named by rank 0's pid, agreed on by broadcast: a rank left over from
  // an earlier gang (same step, other rank 0) never writes into this gang's.
  std::vector<float> tag_bits(1, 0.0f);
  uint32_t tag = static_cast<uint32_t>(::getpid());
  if (rank == 0) std::memcpy(tag_bits.data(), &tag, sizeof tag);
  MARIANA_RETURN_IF_ERROR(world.broadcast(tag_bits, 0));  // bytes copied as they are
  std::memcpy(&tag, tag_bits.data(), sizeof tag);
  const CheckpointStaging where = checkpoint_staging_path(run_dir, name, "ranks-" + std::to_string(tag));
  Status st;
  if (rank == 0) {  // a staging directory left by a gang that died is emptied first
    std::error_code ec;
    fs::remove_all(where.tmp, ec);
    fs::create_directories(where.tmp, ec);
    if (ec) st = Unavailable("checkpoint " + where.tmp + ": cannot create: " + ec.message());
    if (st.ok() && first) st = first(where.tmp);
  }
  MARIANA_RETURN_IF_ERROR(agree_status(world, st, what));
  st = mine(where.tmp);
  MARIANA_RETURN_IF_ERROR(agree_status(world, st, what));
  // Every rank's files are written: rank 0 completes the checkpoint and publishes its manifest.
  if (rank == 0) {
    for (int64_t r = 0; r < ranks && st.ok(); ++r)
      for (const std::string& f : files_of(r))
        if (st.ok() && !fs::exists(fs::path(where.tmp) / f))
          st = Unavailable("checkpoint " + where.final_dir + ": rank " + std::to_string(r) + "'s " + f +
                           " is not in " + where.tmp + " although it was written");
    if (st.ok() && last) st = last(where.tmp);
    if (st.ok()) st = checkpoint_publish(run_dir, where.tmp, where.final_dir, step, keep_last);
  }
  MARIANA_RETURN_IF_ERROR(agree_status(world, st, what));
  *written = where.final_dir;
  return Status::Ok();
}

Status write_rank_checkpoint(ParallelGroups& groups, const std::string& run_dir, int64_t step,
                             const Model<float>& model, const ParamTable& full, const std::vector<MomentRun>& moments,
                             const TrainObjective* objective, const nlohmann::ordered_json& state, int64_t keep_last,
                             std::string* written) {
  const ParallelRank& at = groups.layout();
  const std::string final_dir = (fs::path(run_dir) / "checkpoints" / step_dir_name(step)).string();
  const CheckpointLayout layout = checkpoint_layout_of_ranks(model.config(), full, at);
  return write_checkpoint_of_ranks(
      groups, run_dir, step_dir_name(step), step, keep_last, nullptr,
      [&](const std::string& tmp) -> Status {
        MARIANA_RETURN_IF_ERROR(
            checkpoint_write_files(tmp, model, layout, {static_cast<size_t>(at.rank)}, "checkpoint " + final_dir));
        return write_moments((fs::path(tmp) / moments_file_name(at.rank, at.world)).string(), moments);
      },
      [&](int64_t r) {
        return std::vector<std::string>{checkpoint_file_name(static_cast<size_t>(r), static_cast<size_t>(at.world)),
                                        moments_file_name(r, at.world)};
      },
      [&](const std::string& tmp) -> Status {
        MARIANA_RETURN_IF_ERROR(checkpoint_write_index(tmp, model.config(), full, layout));
        return write_trainer_files(tmp, run_dir, state, objective);
      },
      written);
}

ZeroOptimizer::ZeroOptimizer(const ParamTable& table, const ParamTable& full, int64_t n_routed_experts, AdamWConfig cfg,
                             ParallelGroups& groups)
    : table_(table), full_(full), E_(n_routed_experts), cfg_(cfg), groups_(groups) {
  for (const ParamSpec& s : table.specs()) {
    if (s.kind == ParamKind::kGateBias || s.expert >= 0) continue;
    const bool decay = s.kind == ParamKind::kMatrix || s.kind == ParamKind::kEmbedding;
    dense_.segments.push_back({s.offset, s.numel(), dense_.n, decay, &full.at(s.name)});
    dense_.n += s.numel();
  }
  // This rank's experts in its own arena (and where they go in the full one).
  for (const ParamSpec& s : table.specs()) {
    if (s.expert < 0) continue;
    experts_.segments.push_back({s.offset, s.numel(), experts_.n, true, &full.at(s.name)});
    experts_.n += s.numel();
  }
  dense_.group = &groups.world();
  experts_.group = &groups.edp();
  for (Flat* f : {&dense_, &experts_}) {
    const int64_t size = f->group->size();
    f->padded = round_up(std::max<int64_t>(f->n, 1), size);
    f->slice = f->padded / size;
    f->buf.assign(static_cast<size_t>(f->padded), 0.0f);
    f->grad_slice.assign(static_cast<size_t>(f->slice), 0.0f);
    f->p_slice.assign(static_cast<size_t>(f->slice), 0.0f);
    f->m.assign(static_cast<size_t>(f->slice), 0.0f);
    f->v.assign(static_cast<size_t>(f->slice), 0.0f);
  }
}

void ZeroOptimizer::gather_flat(const Flat& f, const float* arena, float* flat) const {
  for (const Segment& s : f.segments) std::memcpy(flat + s.flat, arena + s.offset, static_cast<size_t>(s.n) * sizeof(float));
  std::fill(flat + f.n, flat + f.padded, 0.0f);
}

void ZeroOptimizer::scatter_flat(const std::vector<Segment>& segments, const float* flat, float* arena) const {
  for (const Segment& s : segments)
    std::memcpy(arena + s.offset, flat + s.flat, static_cast<size_t>(s.n) * sizeof(float));
}

Status ZeroOptimizer::reduce(Flat& f, const float* grads) {
  gather_flat(f, grads, f.buf.data());
  return f.group->reduce_scatter_sum(f.buf, f.grad_slice);
}

Result<double> ZeroOptimizer::reduce_gradients(const float* grads) {
  MARIANA_RETURN_IF_ERROR(reduce(dense_, grads));
  MARIANA_RETURN_IF_ERROR(reduce(experts_, grads));
  double sq = 0;
  for (const Flat* f : {&dense_, &experts_})
    for (float g : f->grad_slice) sq += static_cast<double>(g) * g;
  std::vector<double> total = {sq};
  MARIANA_RETURN_IF_ERROR(allreduce_doubles(groups_.world(), &total));
  return std::sqrt(std::max(0.0, total[0]));
}

Status ZeroOptimizer::apply(Flat& f, float* params, float scale, double lr) {
  const int64_t begin = f.group->rank() * f.slice, end = begin + f.slice;
  gather_flat(f, params, f.buf.data());
  std::copy(f.buf.begin() + begin, f.buf.begin() + end, f.p_slice.begin());
  if (scale != 1.0f)
    for (float& g : f.grad_slice) g *= scale;
  const AdamWStepConstants c = adamw_step_constants(cfg_, t_, lr);
  // The slice in runs of one decay flag (the segments it overlaps).
  for (const Segment& s : f.segments) {
    const int64_t a = std::max(begin, s.flat), b = std::min(end, s.flat + s.n);
    if (a >= b) continue;
    const int64_t i = a - begin;
    adamw_update(f.p_slice.data() + i, f.grad_slice.data() + i, f.m.data() + i, f.v.data() + i, b - a, c, s.decay);
  }
  MARIANA_RETURN_IF_ERROR(f.group->all_gather(f.p_slice, f.buf));
  scatter_flat(f.segments, f.buf.data(), params);
  return Status::Ok();
}

Status ZeroOptimizer::update(float* params, double norm, double max_norm, double lr) {
  ++t_;
  const float scale = max_norm > 0 && norm > max_norm ? static_cast<float>(max_norm / norm) : 1.0f;
  MARIANA_RETURN_IF_ERROR(apply(dense_, params, scale, lr));
  return apply(experts_, params, scale, lr);
}

std::vector<MomentRun> ZeroOptimizer::moment_runs() const {
  std::vector<MomentRun> runs;
  for (const Flat* f : {&dense_, &experts_}) {
    const int64_t begin = f->group->rank() * f->slice, end = begin + f->slice;
    for (const Segment& s : f->segments) {
      const int64_t a = std::max(begin, s.flat), b = std::min(end, s.flat + s.n);
      if (a >= b) continue;
      runs.push_back({s.full_spec, a - s.flat, b - a, f->m.data() + (a - begin), f->v.data() + (a - begin)});
    }
  }
  return runs;
}

int64_t ZeroOptimizer::step_bytes_analytic() const {
  int64_t bytes = 0;
  for (const Flat* f : {&dense_, &experts_}) {
    const int64_t g = f->group->size();
    bytes += 2 * (g - 1) * f->slice * static_cast<int64_t>(sizeof(float));
  }
  return bytes;
}

void ZeroOptimizer::load_moments(const float* exp_avg, const float* exp_avg_sq, int64_t steps) {
  t_ = steps;
  for (Flat* f : {&dense_, &experts_}) {
    const int64_t begin = f->group->rank() * f->slice;
    for (int which = 0; which < 2; ++which) {
      const float* src = which == 0 ? exp_avg : exp_avg_sq;
      for (const Segment& s : f->segments)
        std::memcpy(f->buf.data() + s.flat, src + s.offset, static_cast<size_t>(s.n) * sizeof(float));
      std::fill(f->buf.begin() + f->n, f->buf.end(), 0.0f);
      std::vector<float>& dst = which == 0 ? f->m : f->v;
      std::copy(f->buf.begin() + begin, f->buf.begin() + begin + f->slice, dst.begin());
    }
  }
}

}  // namespace mariana
