// reference_dump: the C++ side of the PyTorch oracle. Builds a model from a config with random
// weights (norms and gate biases perturbed so nothing is trivially 1 or 0), a packed batch with
// document boundaries and ignored targets, runs forward and backward, and writes
//   OUT/checkpoint/{config.json, model.safetensors}, OUT/batch.safetensors, OUT/mariana.safetensors
// for tests/reference/check_reference.py to compare against its own implementation.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "core/philox.h"
#include "core/safetensors.h"
#include "core/tensor.h"
#include "model/checkpoint.h"
#include "model/model.h"

using namespace mariana;

namespace {

Tensor i32_tensor(const std::vector<int32_t>& v, std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::kI32, std::move(shape));
  std::copy(v.begin(), v.end(), t.data_as<int32_t>());
  return t;
}

Tensor f32_tensor(const float* p, std::vector<int64_t> shape) {
  Tensor t = Tensor::zeros(DType::kF32, std::move(shape));
  std::copy(p, p + t.numel(), t.data_as<float>());
  return t;
}

int fail(const Status& st) {
  std::fprintf(stderr, "reference_dump: %s\n", st.to_string().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options o("reference_dump", "Dump a model, a batch and Mariana's outputs for the PyTorch oracle");
  o.add_options()("config", "config.json", cxxopts::value<std::string>())(
      "seed", "seed", cxxopts::value<uint64_t>()->default_value("7"))(
      "batch", "rows", cxxopts::value<int64_t>()->default_value("2"))(
      "seq", "tokens per row", cxxopts::value<int64_t>()->default_value("24"))(
      "mtp-weight", "λ", cxxopts::value<double>()->default_value("0.3"))(
      "balance-alpha", "α", cxxopts::value<double>()->default_value("0.01"))(
      "out", "output directory", cxxopts::value<std::string>());
  auto r = o.parse(argc, argv);
  if (!r.count("config") || !r.count("out")) return fail(InvalidArgument("--config and --out are required"));
  auto cfg = model_config_load(r["config"].as<std::string>());
  if (!cfg.ok()) return fail(cfg.status());
  const uint64_t seed = r["seed"].as<uint64_t>();
  const int64_t B = r["batch"].as<int64_t>(), S = r["seq"].as<int64_t>();
  Model<float> model(cfg.value());
  const ModelConfig& c = model.config();
  model.init_weights(seed);
  // Perturb norms (1 + 0.1·N(0,1)) and gate biases (0.05·N(0,1)).
  uint64_t stream = 1000;
  for (const ParamSpec& s : model.table().specs()) {
    if (s.kind == ParamKind::kNorm || s.kind == ParamKind::kGateBias) {
      float* p = model.params() + s.offset;
      std::vector<float> noise(static_cast<size_t>(s.numel()));
      philox_fill_normal(noise.data(), s.numel(), seed, stream++, 0.0f, 1.0f);
      for (int64_t i = 0; i < s.numel(); ++i)
        p[i] = s.kind == ParamKind::kNorm ? 1.0f + 0.1f * noise[i] : 0.05f * noise[i];
    }
  }
  const std::string out = r["out"].as<std::string>();
  std::filesystem::create_directories(out);
  Status st = checkpoint_save(out + "/checkpoint", model, CheckpointOptions{});
  if (!st.ok()) return fail(st);

  // Batch: random tokens; row 0 packs two documents (split at S/2, no target across the split);
  // the last row's final target is ignored; other rows are single documents.
  std::vector<float> u(static_cast<size_t>(B * S));
  philox_fill_uniform(u.data(), B * S, seed, 99);
  std::vector<int32_t> tokens(u.size());
  for (size_t i = 0; i < u.size(); ++i)
    tokens[i] = std::min<int32_t>(static_cast<int32_t>(u[i] * c.vocab_size), static_cast<int32_t>(c.vocab_size - 1));
  Batch batch = Batch::from_rows(B, S, tokens);
  const int64_t split = S / 2;
  for (int64_t i = split; i < S; ++i) batch.doc_start[i] = static_cast<int32_t>(split);
  batch.targets[split - 1] = -1;
  batch.targets[(B - 1) * S + S - 2] = -1;
  st = safetensors_write(out + "/batch.safetensors",
                         {{"tokens", i32_tensor(batch.tokens, {B, S})},
                          {"targets", i32_tensor(batch.targets, {B, S})},
                          {"doc_start", i32_tensor(batch.doc_start, {B, S})}});
  if (!st.ok()) return fail(st);

  LossWeights w;
  w.mtp_weight = r["mtp-weight"].as<double>();
  w.balance_alpha = r["balance-alpha"].as<double>();
  ForwardResult res;
  st = model.forward(batch, w, &res);
  if (!st.ok()) return fail(st);
  model.zero_grads();
  model.backward();

  std::vector<std::pair<std::string, Tensor>> items;
  const int64_t V = c.vocab_size, T = B * S;
  items.emplace_back("logits", f32_tensor(model.logits(), {B, S, V}));
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k)
    items.emplace_back("mtp_logits." + std::to_string(k + 1), f32_tensor(model.mtp_logits(k), {B, S, V}));
  auto scalar = [&](const char* name, double v) {
    const float f = static_cast<float>(v);
    items.emplace_back(name, f32_tensor(&f, {}));
  };
  scalar("loss", res.loss);
  scalar("loss_main", res.loss_main);
  scalar("loss_mtp", res.loss_mtp);
  scalar("loss_balance", res.loss_balance);
  for (size_t i = 0; i < res.moe_layers.size(); ++i) {
    const int32_t* idx = model.routing(static_cast<int64_t>(i));
    items.emplace_back("routing." + std::to_string(res.moe_layers[i]),
                       i32_tensor(std::vector<int32_t>(idx, idx + T * c.num_experts_per_tok),
                                  {T, c.num_experts_per_tok}));
  }
  for (const ParamSpec& s : model.table().specs()) {
    if (s.kind == ParamKind::kGateBias) continue;
    items.emplace_back("grad." + s.name, f32_tensor(model.grads() + s.offset, s.shape));
  }
  auto exact = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.17g", v);
    return std::string(buf);
  };
  st = safetensors_write(out + "/mariana.safetensors", items,
                         {{"mtp_weight", exact(w.mtp_weight)}, {"balance_alpha", exact(w.balance_alpha)}});
  if (!st.ok()) return fail(st);
  std::printf("reference_dump: loss %.6f (main %.6f, mtp %.6f, balance %.6f) -> %s\n", res.loss, res.loss_main,
              res.loss_mtp, res.loss_balance, out.c_str());
  return 0;
}
