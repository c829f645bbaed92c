// `mariana model init|info|logits`.
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/npy.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/model.h"

namespace mariana::cli {

namespace {

// A checkpoint directory's config.json, or a config file itself.
Result<ModelConfig> load_config_arg(const std::string& arg) {
  if (std::filesystem::is_directory(arg)) return model_config_load((std::filesystem::path(arg) / "config.json").string());
  return model_config_load(arg);
}

std::string human(double v) {
  char buf[64];
  if (v >= 1e9) std::snprintf(buf, sizeof(buf), "%.2fB", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof(buf), "%.2fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof(buf), "%.2fK", v / 1e3);
  else std::snprintf(buf, sizeof(buf), "%.0f", v);
  return buf;
}

std::string human_bytes(double b) {
  char buf[64];
  if (b >= 1 << 20) std::snprintf(buf, sizeof(buf), "%.2f MiB", b / (1 << 20));
  else if (b >= 1 << 10) std::snprintf(buf, sizeof(buf), "%.2f KiB", b / (1 << 10));
  else std::snprintf(buf, sizeof(buf), "%.0f B", b);
  return buf;
}

int model_init(int argc, char** argv) {
  cxxopts::Options o("mariana model init", "Initialise a DeepSeek-V3 model and write an HF checkpoint");
  o.add_options()("config", "HF config.json", cxxopts::value<std::string>())(
      "seed", "RNG seed", cxxopts::value<uint64_t>()->default_value("0"))(
      "out", "output checkpoint directory", cxxopts::value<std::string>())(
      "dtype", "f32 or bf16", cxxopts::value<std::string>()->default_value("f32"))(
      "max-shard-bytes", "split model.safetensors into shards above this size",
      cxxopts::value<int64_t>()->default_value("5000000000"))(
      "overwrite", "replace a checkpoint already in --out (refused otherwise)")("h,help", "help");
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (!r.count("config") || !r.count("out")) return report(InvalidArgument("model init: --config and --out are required"));
  const std::string dt = r["dtype"].as<std::string>();
  if (dt != "f32" && dt != "bf16") return report(InvalidArgument("model init: --dtype: expected f32 or bf16, got '" + dt + "'"));
  const std::string out = r["out"].as<std::string>();
  if (Status st = check_out_dir(out, r.count("overwrite") > 0, "model init"); !st.ok()) return report(st);
  auto cfg = model_config_load(r["config"].as<std::string>());
  if (!cfg.ok()) return report(cfg.status());
  const ModelStats stats = model_stats(cfg.value(), cfg.value().max_position_embeddings);
  Model<float> model(std::move(cfg).value());
  model.init_weights(r["seed"].as<uint64_t>());
  CheckpointOptions opt;
  opt.dtype = dt == "bf16" ? DType::kBF16 : DType::kF32;
  opt.max_shard_bytes = r["max-shard-bytes"].as<int64_t>();
  Status st = checkpoint_save(out, model, opt);
  if (!st.ok()) return report(st);
  // The model's parameters as `model info` counts them (MTP apart, as DeepSeek-V3 counts its 671B),
  // then what the checkpoint holds; the two counts come from model_stats and the tensors.
  std::printf("wrote %s (%s), seed %llu: %s parameters (%lld) + MTP %s (%lld) = %s in the checkpoint (%lld)\n",
              out.c_str(), dt.c_str(), static_cast<unsigned long long>(r["seed"].as<uint64_t>()),
              human(stats.total_params).c_str(), (long long)stats.total_params, human(stats.mtp_params).c_str(),
              (long long)stats.mtp_params, human(model.table().num_params()).c_str(),
              (long long)model.table().num_params());
  return kExitOk;
}

int model_info(int argc, char** argv) {
  cxxopts::Options o("mariana model info", "Sizes of a model: parameters, FLOPs, KV cache");
  o.add_options()("target", "checkpoint directory or config.json", cxxopts::value<std::string>())(
      "seq", "sequence length for attention FLOPs (default: the pretraining length)",
      cxxopts::value<int64_t>())("json", "print one JSON object")("h,help", "help");
  o.parse_positional({"target"});
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (!r.count("target")) return report(InvalidArgument("model info: expected a checkpoint directory or a config.json"));
  auto cfg = load_config_arg(r["target"].as<std::string>());
  if (!cfg.ok()) return report(cfg.status());
  const ModelConfig& c = cfg.value();
  const int64_t seq = r.count("seq") ? r["seq"].as<int64_t>()
                                     : (c.yarn.enabled ? c.yarn.original_max_position : c.max_position_embeddings);
  if (seq <= 0) return report(InvalidArgument("model info: --seq must be positive"));
  const ModelStats s = model_stats(c, seq);
  const int64_t elem = 2;  // bf16 cache entries
  if (r.count("json")) {
    nlohmann::ordered_json j;
    j["config"] = c.source;
    j["total_params"] = s.total_params;
    j["activated_params"] = s.activated_params;
    j["mtp_params"] = s.mtp_params;
    j["activated_mtp_params"] = s.activated_mtp_params;
    j["seq_len"] = seq;
    j["forward_flops_per_token"] = s.forward_flops_per_token;
    j["train_flops_per_token"] = s.train_flops_per_token;
    j["kv_cache_bytes_per_token_naive"] = s.kv_naive_values_per_token * elem;
    j["kv_cache_bytes_per_token_latent"] = s.kv_latent_values_per_token * elem;
    j["softmax_scale"] = c.softmax_scale();
    std::printf("%s\n", j.dump().c_str());
    return kExitOk;
  }
  std::printf("model %s\n", c.source.c_str());
  std::printf("  layers %lld (%lld dense, %lld MoE), hidden %lld, heads %lld, experts %lld routed + %lld shared, top-%lld\n",
              (long long)c.num_hidden_layers, (long long)c.first_k_dense_replace,
              (long long)(c.num_hidden_layers - c.first_k_dense_replace), (long long)c.hidden_size,
              (long long)c.num_attention_heads, (long long)c.n_routed_experts, (long long)c.n_shared_experts,
              (long long)c.num_experts_per_tok);
  std::printf("  total parameters          %10s  (%lld)\n", human(s.total_params).c_str(), (long long)s.total_params);
  std::printf("  activated per token       %10s  (%lld)\n", human(s.activated_params).c_str(), (long long)s.activated_params);
  std::printf("  MTP modules (own params)  %10s  (%lld, %lld module(s); embedding and head shared)\n",
              human(s.mtp_params).c_str(), (long long)s.mtp_params, (long long)c.num_nextn_predict_layers);
  std::printf("  in a checkpoint (+ MTP)   %10s  (%lld)\n", human(s.total_params + s.mtp_params).c_str(),
              (long long)(s.total_params + s.mtp_params));
  std::printf("  training FLOPs per token  %10s  (forward %s; seq %lld, MTP included)\n",
              human(s.train_flops_per_token).c_str(), human(s.forward_flops_per_token).c_str(), (long long)seq);
  std::printf("  KV cache per token (bf16) naive %s (%lld values)  latent %s (%lld values)  %.1fx smaller\n",
              human_bytes(static_cast<double>(s.kv_naive_values_per_token * elem)).c_str(),
              (long long)s.kv_naive_values_per_token,
              human_bytes(static_cast<double>(s.kv_latent_values_per_token * elem)).c_str(),
              (long long)s.kv_latent_values_per_token,
              static_cast<double>(s.kv_naive_values_per_token) / static_cast<double>(s.kv_latent_values_per_token));
  std::printf("  softmax scale %.7f%s\n", c.softmax_scale(), c.yarn.enabled ? " (YaRN mscale applied)" : "");
  return kExitOk;
}

int model_logits(int argc, char** argv) {
  cxxopts::Options o("mariana model logits", "fp32 logits at every position, as a .npy [S, V]");
  o.add_options()("checkpoint", "checkpoint directory", cxxopts::value<std::string>())(
      "tokens", "token ids, space separated", cxxopts::value<std::string>())(
      "out", "output .npy file", cxxopts::value<std::string>())("no-verify", kNoVerifyHelp)("h,help", "help");
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  if (!r.count("checkpoint") || !r.count("tokens") || !r.count("out"))
    return report(InvalidArgument("model logits: --checkpoint, --tokens and --out are required"));
  auto ck = checkpoint_load<float>(r["checkpoint"].as<std::string>(), {.verify_manifest = !r.count("no-verify")});
  if (!ck.ok()) return report(ck.status());
  Model<float>& model = ck.value().model;
  auto toks = parse_token_ids("--tokens", r["tokens"].as<std::string>(), model.config().vocab_size);
  if (!toks.ok()) return report(toks.status());
  if (toks.value().empty()) return report(InvalidArgument("--tokens: expected at least one token id"));
  const int64_t S = static_cast<int64_t>(toks.value().size());
  const Batch batch = Batch::from_rows(1, S, toks.value());
  ForwardResult res;
  Status st = model.forward(batch, LossWeights{}, &res);
  if (!st.ok()) return report(st);
  st = npy_write_f32(r["out"].as<std::string>(), model.logits(), {S, model.config().vocab_size});
  if (!st.ok()) return report(st);
  std::printf("wrote %s: logits [%lld, %lld]\n", r["out"].as<std::string>().c_str(), (long long)S,
              (long long)model.config().vocab_size);
  return kExitOk;
}

}  // namespace

int model_main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mariana model init|info|logits ...\n");
    return kExitBadInput;
  }
  const std::string sub = argv[1];
  try {
    if (sub == "init") return model_init(argc - 1, argv + 1);
    if (sub == "info") return model_info(argc - 1, argv + 1);
    if (sub == "logits") return model_logits(argc - 1, argv + 1);
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("model ") + sub + ": " + e.what()));
  }
  std::fprintf(stderr, "mariana model: unknown subcommand '%s' (init, info, logits)\n", sub.c_str());
  return kExitBadInput;
}

}  // namespace mariana::cli
