// Checkpoint directories of a run: publish, keep-last, newest valid, resolve; training checkpoints.
#include "train/run_checkpoints.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "model/checkpoint.h"
#include "train/trainer.h"

namespace mariana {

namespace fs = std::filesystem;

namespace {

std::vector<fs::path> checkpoint_dirs(const std::string& run_dir) {
  std::vector<fs::path> v;
  const fs::path root = fs::path(run_dir) / "checkpoints";
  if (!fs::is_directory(root)) return v;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    // step-N (pretrain, extend, sft, rm) or iter-N (rl): one kind per run, zero-padded, so
    // name order is age order.
    if (e.is_directory() && (n.rfind("step-", 0) == 0 || n.rfind("iter-", 0) == 0)) v.push_back(e.path());
  }
  std::sort(v.begin(), v.end());
  return v;
}

Tensor f32_view(const float* p, const std::vector<int64_t>& shape) {
  return Tensor::view(const_cast<float*>(p), DType::kF32, shape);
}

}  // namespace

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "step-%08lld", static_cast<long long>(step));
  return buf;
}

std::vector<MomentRun> whole_moment_runs(const ParamTable& table, const float* exp_avg, const float* exp_avg_sq) {
  std::vector<MomentRun> runs;
  for (const ParamSpec& s : table.specs())
    if (s.kind != ParamKind::kGateBias) runs.push_back({&s, 0, s.numel(), exp_avg + s.offset, exp_avg_sq + s.offset});
  return runs;
}

std::string moments_file_name(int64_t rank, int64_t count) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "optimizer-%05lld-of-%05lld.safetensors", static_cast<long long>(rank + 1),
                static_cast<long long>(count));
  return buf;
}

Status write_moments(const std::string& path, const std::vector<MomentRun>& runs) {
  std::vector<std::pair<std::string, Tensor>> items;
  std::map<std::string, std::string> meta;
  for (const MomentRun& r : runs) {
    const bool whole = r.start == 0 && r.n == r.spec->numel();
    const std::vector<int64_t> shape = whole ? r.spec->shape : std::vector<int64_t>{r.n};
    if (!whole) meta["start." + r.spec->name] = std::to_string(r.start);
    items.emplace_back("exp_avg." + r.spec->name, f32_view(r.exp_avg, shape));
    items.emplace_back("exp_avg_sq." + r.spec->name, f32_view(r.exp_avg_sq, shape));
  }
  return safetensors_write(path, items, meta);
}

Status write_trainer_files(const std::string& tmp, const std::string& run_dir, const nlohmann::ordered_json& state,
                           const TrainObjective* objective) {
  MARIANA_RETURN_IF_ERROR(write_file_atomic((fs::path(tmp) / kTrainerStateFile).string(), state.dump(2) + "\n"));
  MARIANA_ASSIGN_OR_RETURN(std::string tok, read_file((fs::path(run_dir) / kTokenizerFile).string()));
  MARIANA_RETURN_IF_ERROR(write_file_atomic((fs::path(tmp) / kTokenizerFile).string(), tok));
  if (objective != nullptr) MARIANA_RETURN_IF_ERROR(objective->save(tmp));
  return Status::Ok();
}

Status write_training_checkpoint(const std::string& run_dir, int64_t step, const Model<float>& model,
                                 const std::vector<MomentRun>& moments, const TrainObjective* objective,
                                 const nlohmann::ordered_json& state, int64_t keep_last, std::string* written) {
  const CheckpointStaging where = checkpoint_staging(run_dir, step_dir_name(step));
  const fs::path tmp = where.tmp;
  MARIANA_RETURN_IF_ERROR(checkpoint_save(tmp.string(), model, CheckpointOptions{}));
  MARIANA_RETURN_IF_ERROR(write_moments((tmp / kOptimizerFile).string(), moments));
  MARIANA_RETURN_IF_ERROR(write_trainer_files(tmp.string(), run_dir, state, objective));
  MARIANA_RETURN_IF_ERROR(checkpoint_publish(run_dir, where.tmp, where.final_dir, step, keep_last));
  *written = where.final_dir;
  return Status::Ok();
}

CheckpointStaging checkpoint_staging_path(const std::string& run_dir, const std::string& name, const std::string& tag) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  return {(root / ("." + name + ".tmp-" + tag)).string(), (root / name).string()};
}

CheckpointStaging checkpoint_staging(const std::string& run_dir, const std::string& name) {
  std::error_code ec;
  fs::create_directories(fs::path(run_dir) / "checkpoints", ec);
  CheckpointStaging where = checkpoint_staging_path(run_dir, name, std::to_string(::getpid()));
  fs::remove_all(where.tmp, ec);
  return where;
}

Status training_moments_load(const std::string& checkpoint_dir, const ParamTable& table, float* exp_avg,
                             float* exp_avg_sq) {
  // The files: one process's, or every rank's of a parallel job (all of optimizer-*-of-N).
  std::vector<std::string> files;
  const fs::path dir(checkpoint_dir);
  if (fs::exists(dir / kOptimizerFile)) {
    files.push_back((dir / kOptimizerFile).string());
  } else {
    long long count = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      long long i = 0, n = 0;
      if (std::sscanf(e.path().filename().c_str(), "optimizer-%lld-of-%lld.safetensors", &i, &n) != 2) continue;
      if (count > 0 && n != count)
        return DataLoss(checkpoint_dir + ": moments files of " + std::to_string(count) + " and of " +
                        std::to_string(n) + " ranks side by side");
      count = n;
    }
    if (count <= 0) return DataLoss(checkpoint_dir + ": no " + kOptimizerFile + " and no optimizer-*-of-*.safetensors");
    for (long long r = 0; r < count; ++r) {
      const fs::path f = dir / moments_file_name(r, count);
      if (!fs::exists(f)) return DataLoss(f.string() + ": missing (the checkpoint's other moments files name " +
                                          std::to_string(count) + " ranks)");
      files.push_back(f.string());
    }
  }
  // Runs of each tensor of `table`, to check that they cover it exactly once.
  std::map<std::string, std::vector<std::pair<int64_t, int64_t>>> covered;
  for (const std::string& path : files) {
    MARIANA_ASSIGN_OR_RETURN(SafetensorsFile sf, SafetensorsFile::open(path));
    for (const SafetensorsEntry& e : sf.entries()) {
      const bool first = e.name.rfind("exp_avg.", 0) == 0;
      if (!first && e.name.rfind("exp_avg_sq.", 0) != 0)
        return DataLoss(path + ": tensor '" + e.name + "' is not a moment (exp_avg.* or exp_avg_sq.*)");
      const std::string name = e.name.substr(first ? 8 : 11);
      const ParamSpec* s = table.find(name);
      if (s == nullptr) continue;  // a tensor this shard does not hold (or not the model's: see below)
      if (s->kind == ParamKind::kGateBias) return DataLoss(path + ": tensor '" + e.name + "': gate biases have no moments");
      int64_t start = 0;
      std::vector<int64_t> expect = s->shape;
      if (auto it = sf.metadata().find("start." + name); it != sf.metadata().end()) {
        char* end = nullptr;
        start = std::strtoll(it->second.c_str(), &end, 10);
        if (end == it->second.c_str() || *end != '\0' || start < 0 || e.shape.size() != 1 ||
            start + e.shape[0] > s->numel())
          return DataLoss(path + ": tensor '" + e.name + "': run start '" + it->second + "' and shape " +
                          Tensor::shape_string(e.shape) + " do not fit a tensor of " + std::to_string(s->numel()) +
                          " elements");
        expect = e.shape;
      }
      if (e.shape != expect || e.dtype != DType::kF32)
        return DataLoss(path + ": tensor '" + e.name + "': expected F32 of shape " + Tensor::shape_string(expect));
      const Tensor v = sf.view(e);
      const int64_t n = v.numel();
      MARIANA_RETURN_IF_ERROR(check_weights_finite(path, e.name, v.data_as<float>(), n, INFINITY));
      std::copy(v.data_as<float>(), v.data_as<float>() + n, (first ? exp_avg : exp_avg_sq) + s->offset + start);
      covered[e.name].push_back({start, n});
    }
  }
  for (const ParamSpec& s : table.specs()) {
    if (s.kind == ParamKind::kGateBias) continue;
    for (const char* moment : {"exp_avg.", "exp_avg_sq."}) {
      auto runs = covered[moment + s.name];
      std::sort(runs.begin(), runs.end());
      int64_t at = 0;
      bool exact = true;  // the runs, in order, tile [0, numel) with no gap and no overlap
      for (const auto& [start, n] : runs) {
        exact = exact && start == at;
        at = start + n;
      }
      if (!exact || at != s.numel())
        return DataLoss(checkpoint_dir + ": moment '" + moment + s.name + "' is " +
                        (runs.empty() ? "missing" : "not covered exactly once by the moments files"));
    }
  }
  return Status::Ok();
}

Result<std::string> resolve_checkpoint(const std::string& path) {
  if (fs::exists(fs::path(path) / "config.json")) return path;
  return latest_valid_checkpoint(path);
}

Status checkpoint_publish(const std::string& run_dir, const std::string& tmp, const std::string& final_dir,
                          int64_t step, int64_t keep_last) {
  MARIANA_RETURN_IF_ERROR(checkpoint_manifest_write(tmp, step));
  std::error_code ec;
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) return Unavailable("checkpoint " + final_dir + ": rename failed: " + ec.message());
  auto dirs = checkpoint_dirs(run_dir);
  while (static_cast<int64_t>(dirs.size()) > keep_last) {
    fs::remove_all(dirs.front(), ec);
    dirs.erase(dirs.begin());
  }
  return Status::Ok();
}

Result<std::string> latest_valid_checkpoint(const std::string& run_dir) {
  auto dirs = checkpoint_dirs(run_dir);
  std::string rejected;  // every checkpoint skipped, and why
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    const Status st = checkpoint_manifest_verify(it->string());
    if (st.ok()) return it->string();
    std::fprintf(stderr, "warning: skipping checkpoint %s: %s\n", it->string().c_str(), st.to_string().c_str());
    rejected += "\n  " + it->string() + ": " + st.message();
  }
  const std::string root = (fs::path(run_dir) / "checkpoints").string();
  if (dirs.empty()) return NotFound(run_dir + ": no checkpoint under " + root);
  return DataLoss(run_dir + ": every checkpoint under " + root + " is corrupt or partial:" + rejected);
}

}  // namespace mariana
