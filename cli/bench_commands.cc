// `mariana bench model`: times forward+backward of a model step on random tokens (median of
// several steps after warm-up) and the same run's OpenBLAS sgemm rate, and prints their ratio with
// a per-part time breakdown. Timings are reported, never asserted.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/philox.h"
#include "kernels/ops.h"
#include "model/config.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace mariana::cli {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// GFLOP/s of a 2048³ row-major sgemm, median of `reps` after one warm-up.
double sgemm_gflops(int reps) {
  const int64_t N = 2048;
  std::vector<float> a(N * N), b(N * N), c(N * N);
  philox_fill_uniform(a.data(), N * N, 1, 0);
  philox_fill_uniform(b.data(), N * N, 1, 1);
  std::vector<double> times;
  for (int i = 0; i <= reps; ++i) {
    const double t0 = now_s();
    cpu::gemm(false, false, N, N, N, 1.0f, a.data(), N, b.data(), N, 0.0f, c.data(), N);
    if (i > 0) times.push_back(now_s() - t0);
  }
  return 2.0 * N * N * N / median(times) / 1e9;
}

int bench_model(int argc, char** argv) {
  cxxopts::Options o("mariana bench model", "Time a forward+backward step of a model on the CPU");
  o.add_options()("config", "HF config.json or checkpoint directory",
                  cxxopts::value<std::string>()->default_value("configs/models/tiny.json"))(
      "batch", "sequences per step", cxxopts::value<int64_t>()->default_value("8"))(
      "seq", "tokens per sequence", cxxopts::value<int64_t>()->default_value("256"))(
      "threads", "CPU threads (0: all cores)", cxxopts::value<int>()->default_value("0"))(
      "steps", "timed steps", cxxopts::value<int>()->default_value("5"))(
      "warmup", "untimed steps first", cxxopts::value<int>()->default_value("1"))(
      "train-step", "time the whole training step: also clipping, AdamW and the bias update")(
      "json", "print one JSON object")("h,help", "help");
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  std::string path = r["config"].as<std::string>();
  if (std::filesystem::is_directory(path)) path = (std::filesystem::path(path) / "config.json").string();
  auto cfg = model_config_load(path);
  if (!cfg.ok()) return report(cfg.status());
  const int64_t B = r["batch"].as<int64_t>(), S = r["seq"].as<int64_t>();
  const int steps = r["steps"].as<int>(), warmup = r["warmup"].as<int>();
  if (B <= 0 || S <= 0 || steps <= 0 || warmup < 0)
    return report(InvalidArgument("bench model: --batch, --seq and --steps must be positive"));
  if (S > cfg.value().max_position_embeddings)
    return report(InvalidArgument("bench model: --seq " + std::to_string(S) + " exceeds max_position_embeddings " +
                                  std::to_string(cfg.value().max_position_embeddings) + " of " + path));
  const int threads = r["threads"].as<int>();
  cpu::set_num_threads(threads);

  Model<float> model(cfg.value());
  model.init_weights(0);
  const ModelConfig& c = model.config();
  std::vector<float> u(static_cast<size_t>(B * S));
  philox_fill_uniform(u.data(), B * S, 42, 0);
  std::vector<int32_t> tokens(u.size());
  for (size_t i = 0; i < u.size(); ++i)
    tokens[i] = std::min<int32_t>(static_cast<int32_t>(u[i] * static_cast<float>(c.vocab_size)),
                                  static_cast<int32_t>(c.vocab_size - 1));
  const Batch batch = Batch::from_rows(B, S, tokens);
  LossWeights w;
  std::vector<double> times;
  ForwardResult res;
  const bool train_step = r.count("train-step") > 0;
  AdamW opt(model.table(), AdamWConfig{});
  double optimizer_seconds = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    if (i == warmup) model.profile().reset();
    const double t0 = now_s();
    model.zero_grads();
    Status st = model.forward(batch, w, &res);
    if (!st.ok()) return report(st);
    model.backward();
    if (train_step) {
      const double t1 = now_s();
      clip_grad_norm(model.grads(), model.table(), 1.0);
      opt.step(model.params(), model.grads(), 1e-4);
      for (size_t l = 0; l < res.moe_layers.size(); ++l)
        bias_update(model.param(layer_prefix(res.moe_layers[l]) + "mlp.gate.e_score_correction_bias"),
                    res.expert_counts[l], 0.001);
      if (i >= warmup) optimizer_seconds += now_s() - t1;
    }
    if (i >= warmup) times.push_back(now_s() - t0);
  }
  if (train_step) model.profile().seconds["optimizer (clip, AdamW, bias)"] = optimizer_seconds;
  const double step = median(times);
  const ModelStats stats = model_stats(c, S);
  const double tokens_per_s = static_cast<double>(B * S) / step;
  const double model_gflops = stats.train_flops_per_token * static_cast<double>(B * S) / step / 1e9;
  const double sg = sgemm_gflops(5);
  const double ratio = model_gflops / sg;
  double profiled = 0;
  for (const auto& [k, v] : model.profile().seconds) profiled += v;

  if (r.count("json")) {
    nlohmann::ordered_json j;
    j["config"] = path;
    j["batch"] = B;
    j["seq"] = S;
    j["threads"] = cpu::num_threads();
    j["train_step"] = train_step;
    j["step_seconds"] = step;
    j["tokens_per_s"] = tokens_per_s;
    j["model_gflops"] = model_gflops;
    j["sgemm_gflops"] = sg;
    j["ratio"] = ratio;
    j["loss"] = res.loss;
    nlohmann::ordered_json br;
    for (const auto& [k, v] : model.profile().seconds) br[k] = v / steps;
    j["breakdown_seconds"] = br;
    std::printf("%s\n", j.dump().c_str());
    return kExitOk;
  }
  std::printf("bench model %s: batch %lld x seq %lld, %d thread(s), median of %d steps after %d warm-up\n",
              path.c_str(), (long long)B, (long long)S, cpu::num_threads(), steps, warmup);
  std::printf("  step (%s)  %.4f s   loss %.4f\n", train_step ? "forward+backward+optimizer" : "forward+backward", step,
              res.loss);
  std::printf("  tokens/s                 %.0f\n", tokens_per_s);
  std::printf("  model GFLOP/s            %.2f   (%.3g training FLOPs/token)\n", model_gflops, stats.train_flops_per_token);
  std::printf("  sgemm 2048^3 GFLOP/s     %.2f   (same run, same threads)\n", sg);
  std::printf("  ratio model/sgemm        %.1f%%\n", 100.0 * ratio);
  std::printf("  breakdown (mean per step):\n");
  std::vector<std::pair<double, std::string>> parts;
  for (const auto& [k, v] : model.profile().seconds) parts.emplace_back(v / steps, k);
  std::sort(parts.rbegin(), parts.rend());
  for (const auto& [v, k] : parts)
    std::printf("    %-24s %8.4f s  %5.1f%%\n", k.c_str(), v, 100.0 * v * steps / profiled);
  return kExitOk;
}

}  // namespace

int bench_main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "model") {
    std::fprintf(stderr, "usage: mariana bench model [--config C] [--batch B] [--seq S] [--threads N] [--json]\n");
    return kExitBadInput;
  }
  try {
    return bench_model(argc - 1, argv + 1);
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("bench model: ") + e.what()));
  }
}

}  // namespace mariana::cli
