// Checkpoint directories of a run: publish, keep-last, newest valid, resolve; training checkpoints.
#include "train/run_checkpoints.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

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

Status write_training_checkpoint(const std::string& run_dir, int64_t step, const Model<float>& model,
                                 const float* exp_avg, const float* exp_avg_sq, const TrainObjective* objective,
                                 const nlohmann::ordered_json& state, int64_t keep_last, std::string* written) {
  const CheckpointStaging where = checkpoint_staging(run_dir, step_dir_name(step));
  const fs::path tmp = where.tmp;
  MARIANA_RETURN_IF_ERROR(checkpoint_save(tmp.string(), model, CheckpointOptions{}));
  std::vector<std::pair<std::string, Tensor>> moments;
  for (const ParamSpec& s : model.table().specs()) {
    if (s.kind == ParamKind::kGateBias) continue;
    moments.emplace_back("exp_avg." + s.name, f32_view(exp_avg + s.offset, s.shape));
    moments.emplace_back("exp_avg_sq." + s.name, f32_view(exp_avg_sq + s.offset, s.shape));
  }
  MARIANA_RETURN_IF_ERROR(safetensors_write((tmp / kOptimizerFile).string(), moments));
  MARIANA_RETURN_IF_ERROR(write_file_atomic((tmp / kTrainerStateFile).string(), state.dump(2) + "\n"));
  MARIANA_ASSIGN_OR_RETURN(std::string tok, read_file((fs::path(run_dir) / kTokenizerFile).string()));
  MARIANA_RETURN_IF_ERROR(write_file_atomic((tmp / kTokenizerFile).string(), tok));
  if (objective != nullptr) MARIANA_RETURN_IF_ERROR(objective->save(tmp.string()));
  MARIANA_RETURN_IF_ERROR(checkpoint_publish(run_dir, where.tmp, where.final_dir, step, keep_last));
  *written = where.final_dir;
  return Status::Ok();
}

CheckpointStaging checkpoint_staging(const std::string& run_dir, const std::string& name) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  fs::create_directories(root, ec);
  const fs::path tmp = root / ("." + name + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  return {tmp.string(), (root / name).string()};
}

Status training_moments_load(const std::string& checkpoint_dir, const ParamTable& table, float* exp_avg,
                             float* exp_avg_sq) {
  MARIANA_ASSIGN_OR_RETURN(SafetensorsFile sf, SafetensorsFile::open((fs::path(checkpoint_dir) / kOptimizerFile).string()));
  for (const ParamSpec& s : table.specs()) {
    if (s.kind == ParamKind::kGateBias) continue;
    for (int which = 0; which < 2; ++which) {
      const std::string name = (which == 0 ? "exp_avg." : "exp_avg_sq.") + s.name;
      const SafetensorsEntry* e = sf.find(name);
      if (e == nullptr || e->shape != s.shape || e->dtype != DType::kF32)
        return DataLoss(sf.path() + ": tensor '" + name + "' missing or malformed");
      const Tensor v = sf.view(*e);
      MARIANA_RETURN_IF_ERROR(check_weights_finite(sf.path(), name, v.data_as<float>(), s.numel(), INFINITY));
      std::copy(v.data_as<float>(), v.data_as<float>() + s.numel(), (which == 0 ? exp_avg : exp_avg_sq) + s.offset);
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
