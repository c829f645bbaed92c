// `mariana checkpoint export RUN_OR_CHECKPOINT --out DIR`: a run's newest valid checkpoint (or a
// named one) as a plain HuggingFace directory — config.json, the weights (one model.safetensors, or
// shards + model.safetensors.index.json) and tokenizer.json — without the trainer's files, for HF
// transformers, DeepSeek's model.py and `mariana model logits`. A parallel job's checkpoints are
// already in this layout (rank 0 gathers them), so any run exports the same way.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <cxxopts.hpp>

#include "cli/cli.h"
#include "model/checkpoint.h"
#include "train/run_checkpoints.h"

namespace mariana::cli {

namespace {

namespace fs = std::filesystem;

int checkpoint_export(int argc, char** argv) {
  cxxopts::Options o("mariana checkpoint export", "Write a run's checkpoint as a plain HF checkpoint directory");
  o.add_options()("source", "a run directory (its newest valid checkpoint) or a checkpoint directory",
                  cxxopts::value<std::string>())("out", "the HF directory to write", cxxopts::value<std::string>())(
      "dtype", "f32 or bf16", cxxopts::value<std::string>()->default_value("f32"))(
      "max-shard-bytes", "split the weights into shards above this size (with model.safetensors.index.json)",
      cxxopts::value<int64_t>()->default_value("5000000000"))(
      "overwrite", "replace a directory already at --out (refused otherwise)")("h,help", "help");
  o.parse_positional({"source"});
  o.positional_help("RUN_OR_CHECKPOINT");
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (!r.count("source") || !r.count("out"))
    return report(InvalidArgument("checkpoint export: expected RUN_OR_CHECKPOINT and --out DIR"));
  const std::string dt = r["dtype"].as<std::string>();
  if (dt != "f32" && dt != "bf16")
    return report(InvalidArgument("checkpoint export: --dtype: expected f32 or bf16, got '" + dt + "'"));
  if (r["max-shard-bytes"].as<int64_t>() <= 0)
    return report(InvalidArgument("checkpoint export: --max-shard-bytes: expected a positive size"));
  const std::string out = r["out"].as<std::string>();
  if (Status st = check_out_dir(out, r.count("overwrite") > 0, "checkpoint export"); !st.ok()) return report(st);
  std::error_code ec;
  auto src = resolve_checkpoint(r["source"].as<std::string>());
  if (!src.ok()) return report(src.status());
  auto ck = checkpoint_load<float>(src.value());  // verifies the manifest and every tensor
  if (!ck.ok()) return report(ck.status());
  // Written into a sibling temporary directory, then renamed into place: never a partial export.
  const fs::path final_dir = fs::absolute(out);
  const fs::path tmp = final_dir.parent_path() / ("." + final_dir.filename().string() + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  CheckpointOptions opt;
  opt.dtype = dt == "bf16" ? DType::kBF16 : DType::kF32;
  opt.max_shard_bytes = r["max-shard-bytes"].as<int64_t>();
  if (Status st = checkpoint_save(tmp.string(), ck.value().model, opt); !st.ok()) return report(st);
  const fs::path tok = fs::path(src.value()) / kTokenizerFile;
  if (fs::exists(tok)) {
    fs::copy_file(tok, tmp / kTokenizerFile, ec);
    if (ec) {
      fs::remove_all(tmp, ec);
      return report(Unavailable(out + ": cannot copy " + tok.string() + ": " + ec.message()));
    }
  }
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    return report(Unavailable(out + ": rename failed: " + ec.message()));
  }
  std::printf("exported %s -> %s (%s%s)\n", src.value().c_str(), out.c_str(), dt.c_str(),
              fs::exists(tok) ? ", with tokenizer.json" : "");
  return kExitOk;
}

}  // namespace

int checkpoint_main(int argc, char** argv) {
  try {
    if (argc >= 2 && std::string(argv[1]) == "export") return checkpoint_export(argc - 1, argv + 1);
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("checkpoint export: ") + e.what()));
  }
  return report(InvalidArgument("checkpoint: expected a subcommand: export"));
}

}  // namespace mariana::cli
