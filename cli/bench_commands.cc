// `mariana bench model`: times forward+backward of a model step on random tokens (median of
// several steps after warm-up) and the same run's OpenBLAS sgemm rate, and prints their ratio with
// a per-part time breakdown. Timings are reported, never asserted.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "core/philox.h"
#include "kernels/ops.h"
#include "model/config.h"
#include "model/checkpoint.h"
#include "train/tokenizer.h"
#include "model/inference/generate.h"
#include "model/model.h"
#include "rl/arithmetic_task.h"
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

// Decode tokens/s with the latent cache vs the naive K/V cache at several context lengths (random
// weights: the speed does not depend on them), and, given a trained checkpoint, MTP speculative
// decoding against plain greedy decoding on held-out arithmetic prompts.
int bench_decode(int argc, char** argv) {
  cxxopts::Options o("mariana bench decode", "Decode speed: latent vs naive KV cache; speculative decoding");
  o.add_options()("config", "model config", cxxopts::value<std::string>()->default_value("configs/models/small.json"))(
      "contexts", "context lengths", cxxopts::value<std::string>()->default_value("128,512,2048"))(
      "tokens", "tokens decoded per measurement", cxxopts::value<int64_t>()->default_value("32"))(
      "batch", "sequences decoded together", cxxopts::value<int64_t>()->default_value("1"))(
      "checkpoint", "a trained checkpoint: also measure speculative decoding", cxxopts::value<std::string>())(
      "prompts", "speculative: held-out arithmetic prompts", cxxopts::value<int64_t>()->default_value("64"))(
      "format", "speculative: prompt format (chat|raw)", cxxopts::value<std::string>()->default_value("chat"))(
      "threads", "CPU threads (0: all)", cxxopts::value<int>()->default_value("0"))("json", "one JSON object")(
      "h,help", "help");
  auto r = o.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", o.help().c_str());
    return kExitOk;
  }
  cpu::set_num_threads(r["threads"].as<int>());
  nlohmann::json out;
  out["sgemm_gflops"] = sgemm_gflops(3);
  std::vector<int64_t> contexts;
  {
    std::string t = r["contexts"].as<std::string>();
    for (char& ch : t)
      if (ch == ',') ch = ' ';
    std::istringstream in(t);
    int64_t v;
    while (in >> v) {
      if (v < 1) return report(InvalidArgument("--contexts: each length must be >= 1"));
      contexts.push_back(v);
    }
    if (contexts.empty()) return report(InvalidArgument("--contexts: expected a comma-separated list"));
  }
  const int64_t tokens = r["tokens"].as<int64_t>(), batch = r["batch"].as<int64_t>();
  if (tokens < 1 || batch < 1) return report(InvalidArgument("--tokens and --batch must be >= 1"));
  auto cfg = model_config_load(r["config"].as<std::string>());
  if (!cfg.ok()) return report(cfg.status());
  ModelConfig c = cfg.value();
  c.max_position_embeddings = std::max<int64_t>(c.max_position_embeddings,
                                                *std::max_element(contexts.begin(), contexts.end()) + tokens + 2);
  Model<float> model(c);
  model.init_weights(1);
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t ctx : contexts) {
    nlohmann::json row = {{"context", ctx}};
    for (KvCacheKind kind : {KvCacheKind::kLatent, KvCacheKind::kNaive}) {
      InferenceEngine<float> eng(model, kind);
      std::vector<int64_t> ids;
      std::vector<std::vector<int32_t>> prompt;
      for (int64_t b = 0; b < batch; ++b) {
        ids.push_back(eng.add_sequence());
        std::vector<float> u(static_cast<size_t>(ctx));
        philox_fill_uniform(u.data(), ctx, 2, static_cast<uint64_t>(b));
        std::vector<int32_t> t(u.size());
        for (size_t i = 0; i < u.size(); ++i)
          t[i] = std::min<int32_t>(static_cast<int32_t>(u[i] * c.vocab_size), c.vocab_size - 1);
        prompt.push_back(t);
      }
      EngineOutput<float> eo;
      Status st = eng.extend(ids, prompt, &eo);
      if (!st.ok()) return report(st);
      std::vector<double> step_s;
      for (int64_t k = 0; k < tokens; ++k) {
        std::vector<std::vector<int32_t>> next(static_cast<size_t>(batch), std::vector<int32_t>{static_cast<int32_t>(k % 7)});
        const double t0 = now_s();
        st = eng.extend(ids, next, &eo);
        if (!st.ok()) return report(st);
        step_s.push_back(now_s() - t0);
      }
      const char* name = kind == KvCacheKind::kLatent ? "latent" : "naive";
      row[name] = {{"tokens_per_s", static_cast<double>(batch) / median(step_s)},
                   {"cache_bytes_per_token", eng.cache_bytes_per_token()}};
      if (kind == KvCacheKind::kLatent && c.num_nextn_predict_layers > 0) {
        // What one speculative step costs against a plain one at this context: the main model
        // over 2 tokens per sequence (verification; rolled back after each timing) and the MTP
        // module over 1 (the draft). With acceptance a, MTP speculation gains at most
        // (1 + a) / (verify + draft) in units of a plain step.
        std::vector<double> verify_s, draft_s;
        const std::vector<std::vector<float>> hidden(static_cast<size_t>(batch),
                                                     std::vector<float>(static_cast<size_t>(c.hidden_size), 0.5f));
        const std::vector<std::vector<int32_t>> two(static_cast<size_t>(batch), std::vector<int32_t>{3, 5});
        const std::vector<std::vector<int32_t>> one(static_cast<size_t>(batch), std::vector<int32_t>{4});
        for (int64_t k = 0; k < tokens; ++k) {
          const int64_t len = eng.length(ids[0]);
          double t0 = now_s();
          st = eng.extend(ids, two, &eo);
          if (!st.ok()) return report(st);
          verify_s.push_back(now_s() - t0);
          for (int64_t id : ids) eng.truncate(id, len);
          const int64_t mlen = eng.mtp_length(ids[0]);
          t0 = now_s();
          st = eng.mtp_extend(ids, one, hidden, &eo);
          if (!st.ok()) return report(st);
          draft_s.push_back(now_s() - t0);
          for (int64_t id : ids) eng.truncate_mtp(id, mlen);
        }
        row["step_cost"] = {{"plain_ms", 1e3 * median(step_s)},
                            {"verify_2_tokens", median(verify_s) / median(step_s)},
                            {"mtp_draft", median(draft_s) / median(step_s)}};
      }
    }
    row["speedup"] = row["latent"]["tokens_per_s"].get<double>() / row["naive"]["tokens_per_s"].get<double>();
    rows.push_back(row);
  }
  out["config"] = r["config"].as<std::string>();
  out["batch"] = batch;
  out["decode"] = rows;
  if (r.count("checkpoint")) {
    const std::string dir = r["checkpoint"].as<std::string>();
    auto ck = checkpoint_load<float>(dir);
    if (!ck.ok()) return report(ck.status());
    auto tok = Tokenizer::load(dir + "/tokenizer.json");
    if (!tok.ok()) return report(tok.status());
    auto fmt = rl::prompt_format_parse(r["format"].as<std::string>());
    if (!fmt.ok()) return report(fmt.status());
    ArithmeticOptions ao;
    ao.max_digits = 2;
    ao.ops = "+-";
    ao.split = ArithmeticSplit::kHeldOut;
    std::vector<GenerateRequest> reqs;
    for (int64_t i = 0; i < r["prompts"].as<int64_t>(); ++i) {
      GenerateRequest q;
      q.prompt = rl::arithmetic_prompt(tok.value(), make_arithmetic(7000 + static_cast<uint64_t>(i), ao), fmt.value());
      q.max_new_tokens = 160;
      q.stop_tokens = {tok.value().eos_id()};
      reqs.push_back(q);
    }
    // One request at a time, as an interactive user would decode; median of per-request rates.
    InferenceEngine<float> eng(ck.value().model);
    std::vector<double> plain_tps, spec_tps;
    int64_t drafted = 0, accepted = 0, generated = 0;
    bool identical = true;
    double plain_s = 0, spec_s = 0;
    for (const GenerateRequest& q : reqs) {
      auto a = generate(eng, {q}, GenerateOptions{false});
      auto b = generate(eng, {q}, GenerateOptions{true});
      if (!a.ok()) return report(a.status());
      if (!b.ok()) return report(b.status());
      const GenerateResult &pa = a.value()[0], &pb = b.value()[0];
      identical = identical && pa.tokens == pb.tokens;
      plain_tps.push_back(pa.stats.tokens_per_s);
      spec_tps.push_back(pb.stats.tokens_per_s);
      plain_s += pa.stats.seconds;
      spec_s += pb.stats.seconds;
      drafted += pb.stats.drafted;
      accepted += pb.stats.accepted;
      generated += pb.stats.generated_tokens;
    }
    // All prompts as one batch: every expert's weights are read each step anyway, so verifying two
    // tokens per step costs little more than one.
    double batch_plain_s = 0, batch_spec_s = 0;
    int64_t batch_tokens = 0;
    for (bool spec : {false, true}) {
      const double t0 = now_s();
      auto res = generate(eng, reqs, GenerateOptions{spec});
      if (!res.ok()) return report(res.status());
      (spec ? batch_spec_s : batch_plain_s) = now_s() - t0;
      if (!spec)
        for (const auto& g : res.value()) batch_tokens += g.stats.generated_tokens;
    }
    out["speculative_batched"] = {{"requests", reqs.size()},
                                  {"plain_tokens_per_s", static_cast<double>(batch_tokens) / batch_plain_s},
                                  {"speculative_tokens_per_s", static_cast<double>(batch_tokens) / batch_spec_s},
                                  {"speedup", batch_plain_s / batch_spec_s}};
    out["speculative"] = {{"checkpoint", dir},
                          {"prompts", reqs.size()},
                          {"generated_tokens", generated},
                          {"acceptance_rate", drafted > 0 ? static_cast<double>(accepted) / drafted : 0.0},
                          {"plain_tokens_per_s", median(plain_tps)},
                          {"speculative_tokens_per_s", median(spec_tps)},
                          {"speedup_median", median(spec_tps) / median(plain_tps)},
                          {"speedup_total_time", plain_s / spec_s},
                          {"greedy_outputs_identical", identical}};
  }
  if (r.count("json")) {
    std::printf("%s\n", out.dump().c_str());
    return kExitOk;
  }
  std::printf("decode, %s, batch %lld, sgemm %.1f GFLOP/s\n", out["config"].get<std::string>().c_str(),
              (long long)batch, out["sgemm_gflops"].get<double>());
  std::printf("%10s %16s %16s %8s   cache bytes/token: latent %lld, naive %lld\n", "context", "latent tok/s",
              "naive tok/s", "ratio", (long long)rows[0]["latent"]["cache_bytes_per_token"].get<int64_t>(),
              (long long)rows[0]["naive"]["cache_bytes_per_token"].get<int64_t>());
  for (const auto& row : rows)
    std::printf("%10lld %16.1f %16.1f %8.2f\n", (long long)row["context"].get<int64_t>(),
                row["latent"]["tokens_per_s"].get<double>(), row["naive"]["tokens_per_s"].get<double>(),
                row["speedup"].get<double>());
  for (const auto& row : rows)
    if (row.contains("step_cost"))
      std::printf("step cost at context %lld (latent, batch %lld): plain %.2f ms; verifying 2 tokens %.2fx, "
                  "MTP draft %.2fx a plain step -> speculation gains at most (1 + a) / %.2f\n",
                  (long long)row["context"].get<int64_t>(), (long long)batch,
                  row["step_cost"]["plain_ms"].get<double>(), row["step_cost"]["verify_2_tokens"].get<double>(),
                  row["step_cost"]["mtp_draft"].get<double>(),
                  row["step_cost"]["verify_2_tokens"].get<double>() + row["step_cost"]["mtp_draft"].get<double>());
  if (out.contains("speculative")) {
    const auto& sp = out["speculative"];
    std::printf("speculative (MTP) on %lld prompts: acceptance %.3f, %.1f -> %.1f tokens/s (median), speed-up %.2fx "
                "(total time %.2fx), greedy outputs identical: %s\n",
                (long long)sp["prompts"].get<int64_t>(), sp["acceptance_rate"].get<double>(),
                sp["plain_tokens_per_s"].get<double>(), sp["speculative_tokens_per_s"].get<double>(),
                sp["speedup_median"].get<double>(), sp["speedup_total_time"].get<double>(),
                sp["greedy_outputs_identical"].get<bool>() ? "yes" : "NO");
    const auto& sb = out["speculative_batched"];
    std::printf("speculative, all %lld prompts in one batch: %.1f -> %.1f tokens/s, speed-up %.2fx\n",
                (long long)sb["requests"].get<int64_t>(), sb["plain_tokens_per_s"].get<double>(),
                sb["speculative_tokens_per_s"].get<double>(), sb["speedup"].get<double>());
  }
  return kExitOk;
}

int bench_main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "decode") {
    try {
      return bench_decode(argc - 1, argv + 1);
    } catch (const cxxopts::exceptions::exception& e) {
      return report(InvalidArgument(std::string("bench decode: ") + e.what()));
    }
  }
  if (argc < 2 || std::string(argv[1]) != "model") {
    std::fprintf(stderr, "usage: mariana bench model|decode ... (see --help)\n");
    return kExitBadInput;
  }
  try {
    return bench_model(argc - 1, argv + 1);
  } catch (const cxxopts::exceptions::exception& e) {
    return report(InvalidArgument(std::string("bench model: ") + e.what()));
  }
}

}  // namespace mariana::cli
