// HF-layout checkpoints: round trip, byte-identical import→export (single file, shards, bf16),
// bad checkpoints rejected with the file and tensor named, the manifest verified on every load,
// non-finite or absurd weights refused on load and on save, the activation estimate, checkpoints
// saved by HF transformers (no MTP tensors) loaded without MTP, and a config.json HF reads as the
// same model.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "model/checkpoint.h"
#include "model/inference/engine.h"
#include "model/inference/generate.h"
#include "checkpoint_test_util.h"
#include "model_test_util.h"
#include "tests/model/checkpoint_poke.h"

namespace mariana {
namespace {

namespace fs = std::filesystem;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mariana_ckpt_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& rel) const { return (dir_ / rel).string(); }
  static std::string bytes(const std::string& p) { return read_file(p).value(); }
  fs::path dir_;
};

Model<float> tiny_model() {
  Model<float> m(testing::load_config("configs/models/tiny.json"));
  m.init_weights(11);
  return m;
}

TEST_F(CheckpointTest, RoundTripKeepsEveryParameter) {
  Model<float> m = tiny_model();
  ASSERT_TRUE(checkpoint_save(path("a"), m, CheckpointOptions{}).ok());
  EXPECT_TRUE(fs::exists(path("a/config.json")));
  EXPECT_TRUE(fs::exists(path("a/model.safetensors")));
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const Model<float>& l = r.value().model;
  ASSERT_EQ(l.table().arena_size(), m.table().arena_size());
  for (int64_t i = 0; i < m.table().arena_size(); ++i) ASSERT_EQ(l.params()[i], m.params()[i]) << i;
  // HF names, including the MTP module's shared head copy.
  auto sf = SafetensorsFile::open(path("a/model.safetensors"));
  ASSERT_TRUE(sf.ok());
  EXPECT_NE(sf.value().find("model.layers.3.shared_head.head.weight"), nullptr);
  EXPECT_NE(sf.value().find("model.layers.1.mlp.gate.e_score_correction_bias"), nullptr);
  EXPECT_NE(sf.value().find("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"), nullptr);
  EXPECT_EQ(sf.value().find("model.layers.0.mlp.gate.weight"), nullptr);  // layer 0 is dense
}

// CheckpointOptions::shard writes exactly the tensors the filter selects (a rank's part).
TEST_F(CheckpointTest, ShardWritesOnlyItsTensors) {
  Model<float> m = tiny_model();
  CheckpointOptions opt;
  opt.shard = ShardFilter{2, 4, 0, 4};  // layers 2 and 3 (the MTP module), experts [0, 4)
  ASSERT_TRUE(checkpoint_save(path("a"), m, opt).ok());
  auto sf = SafetensorsFile::open(path("a/model.safetensors"));
  ASSERT_TRUE(sf.ok());
  std::set<std::string> got, want;
  for (const SafetensorsEntry& e : sf.value().entries()) got.insert(e.name);
  for (const ParamSpec* s : m.table().select(opt.shard)) want.insert(s->name);
  want.insert("model.layers.3.shared_head.head.weight");  // the MTP module's copy of lm_head
  EXPECT_EQ(got, want);
  EXPECT_TRUE(got.count("model.layers.2.mlp.experts.3.up_proj.weight"));
  EXPECT_FALSE(got.count("model.layers.2.mlp.experts.4.up_proj.weight"));
  EXPECT_FALSE(got.count("model.layers.1.input_layernorm.weight"));
}

TEST_F(CheckpointTest, ImportThenExportIsByteIdentical) {
  Model<float> m = tiny_model();
  ASSERT_TRUE(checkpoint_save(path("a"), m, CheckpointOptions{}).ok());
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_TRUE(r.ok());
  CheckpointOptions opt;
  opt.layout = &r.value().layout;
  ASSERT_TRUE(checkpoint_save(path("b"), r.value().model, opt).ok());
  EXPECT_EQ(bytes(path("a/model.safetensors")), bytes(path("b/model.safetensors")));
  EXPECT_EQ(bytes(path("a/config.json")), bytes(path("b/config.json")));
}

TEST_F(CheckpointTest, ShardedBf16ImportThenExportIsByteIdentical) {
  Model<float> m = tiny_model();
  CheckpointOptions opt;
  opt.dtype = DType::kBF16;
  opt.max_shard_bytes = 200'000;
  ASSERT_TRUE(checkpoint_save(path("a"), m, opt).ok());
  ASSERT_TRUE(fs::exists(path("a/model.safetensors.index.json")));
  EXPECT_FALSE(fs::exists(path("a/model.safetensors")));
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().layout.dtype, DType::kBF16);
  ASSERT_GT(r.value().layout.shards.size(), 1u);
  CheckpointOptions again;
  again.layout = &r.value().layout;
  ASSERT_TRUE(checkpoint_save(path("b"), r.value().model, again).ok());
  for (const auto& e : fs::directory_iterator(path("a"))) {
    const std::string name = e.path().filename().string();
    EXPECT_EQ(bytes(e.path().string()), bytes(path("b/" + name))) << name;
  }
  // bf16 storage rounds each weight to nearest-even bf16.
  const float w = m.param("lm_head.weight")[5];
  EXPECT_EQ(r.value().model.param("lm_head.weight")[5], bf16_to_f32(f32_to_bf16(w)));
}

TEST_F(CheckpointTest, SaveReplacesAnExistingCheckpoint) {
  Model<float> m = tiny_model();
  ASSERT_TRUE(checkpoint_save(path("a"), m, CheckpointOptions{}).ok());
  m.param("model.norm.weight")[0] = 3.0f;
  ASSERT_TRUE(checkpoint_save(path("a"), m, CheckpointOptions{}).ok());
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().model.param("model.norm.weight")[0], 3.0f);
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir_)) { (void)e; ++entries; }
  EXPECT_EQ(entries, 1);  // no temporary or old directories left behind
}

// Rewrites a.safetensors with one tensor replaced by `t` (or removed when t is undefined).
void rewrite(const std::string& file, const std::string& name, const Tensor* t, const std::string& extra = "") {
  auto sf = SafetensorsFile::open(file);
  ASSERT_TRUE(sf.ok());
  std::vector<std::pair<std::string, Tensor>> items;
  for (const auto& e : sf.value().entries()) {
    if (e.name == name) {
      if (t) items.emplace_back(name, *t);
      continue;
    }
    items.emplace_back(e.name, sf.value().view(e));
  }
  if (!extra.empty()) items.emplace_back(extra, Tensor::zeros(DType::kF32, {2}));
  ASSERT_TRUE(safetensors_write(file, items, sf.value().metadata()).ok());
}

TEST_F(CheckpointTest, WrongShapeNamesTheTensor) {
  ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
  const Tensor bad = Tensor::zeros(DType::kF32, {32, 65});
  rewrite(path("a/model.safetensors"), "model.layers.0.self_attn.q_a_proj.weight", &bad);
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("model.layers.0.self_attn.q_a_proj.weight"), std::string::npos);
  EXPECT_NE(r.status().message().find("[32, 64]"), std::string::npos) << r.status().message();
}

TEST_F(CheckpointTest, MissingTensorIsNamed) {
  ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
  rewrite(path("a/model.safetensors"), "model.norm.weight", nullptr);
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.norm.weight"), std::string::npos);
}

TEST_F(CheckpointTest, UnknownTensorIsNamed) {
  ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
  rewrite(path("a/model.safetensors"), "", nullptr, "model.layers.9.mystery.weight");
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.layers.9.mystery.weight"), std::string::npos);
}

TEST_F(CheckpointTest, SharedHeadMustEqualLmHead) {
  ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
  const Tensor other = Tensor::zeros(DType::kF32, {1024, 64});
  rewrite(path("a/model.safetensors"), "model.layers.3.shared_head.head.weight", &other);
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("shared_head.head"), std::string::npos);
}

TEST_F(CheckpointTest, TruncatedFileIsDataLoss) {
  ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
  const std::string full = bytes(path("a/model.safetensors"));
  ASSERT_TRUE(write_file_atomic(path("a/model.safetensors"), full.substr(0, full.size() - 100)).ok());
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find("model.safetensors"), std::string::npos);
}

TEST_F(CheckpointTest, CorruptHeaderIsDataLoss) {
  ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
  std::string b = bytes(path("a/model.safetensors"));
  b[12] = '#';  // inside the JSON header
  ASSERT_TRUE(write_file_atomic(path("a/model.safetensors"), b).ok());
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
}

// Main-head logits of `m` on a fixed batch (MTP modules run too when the model has them).
std::vector<float> main_logits(Model<float>& m) {
  const Batch b = testing::random_batch(2, 12, m.config().vocab_size, 3);
  ForwardResult fr;
  EXPECT_TRUE(m.forward(b, LossWeights{}, &fr).ok());
  return std::vector<float>(m.logits(), m.logits() + m.tokens() * m.config().vocab_size);
}

void expect_loads_without_mtp(const std::string& dir, Model<float>& full) {
  auto r = checkpoint_load<float>(dir);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  Model<float>& m = r.value().model;
  EXPECT_EQ(m.config().num_nextn_predict_layers, 0);
  EXPECT_EQ(m.config().mtp_missing, 1);
  for (const ParamSpec& s : m.table().specs()) {
    const float* a = m.params() + s.offset;
    const float* b = full.param(s.name);
    for (int64_t i = 0; i < s.numel(); ++i) ASSERT_EQ(a[i], b[i]) << s.name << "[" << i << "]";
  }
  EXPECT_EQ(main_logits(m), main_logits(full));  // bitwise
  // MTP speculative decoding says what is missing.
  InferenceEngine<float> eng(m);
  GenerateRequest rq;
  rq.prompt = {1, 2, 3};
  rq.max_new_tokens = 2;
  auto plain = generate(eng, {rq}, GenerateOptions{false});
  EXPECT_TRUE(plain.ok()) << plain.status().to_string();
  auto spec = generate(eng, {rq}, GenerateOptions{true});
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("needs MTP weights"), std::string::npos) << spec.status().to_string();
  EXPECT_NE(spec.status().message().find("model.layers.3."), std::string::npos) << spec.status().to_string();
}

TEST_F(CheckpointTest, HfCheckpointWithoutMtpLoadsForInference) {
  Model<float> m = tiny_model();
  ASSERT_TRUE(checkpoint_save(path("a"), m, CheckpointOptions{}).ok());
  testing::checkpoint_drop_tensors(path("a"), "model.layers.3.");
  expect_loads_without_mtp(path("a"), m);
  // Saved again, it stays an MTP-less checkpoint whose config.json still declares the module.
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(checkpoint_save(path("b"), r.value().model, CheckpointOptions{}).ok());
  expect_loads_without_mtp(path("b"), m);
}

TEST_F(CheckpointTest, ShardedHfCheckpointWithoutMtpLoadsForInference) {
  Model<float> m = tiny_model();
  CheckpointOptions opt;
  opt.max_shard_bytes = 200'000;
  ASSERT_TRUE(checkpoint_save(path("a"), m, opt).ok());
  ASSERT_TRUE(fs::exists(path("a/model.safetensors.index.json")));
  testing::checkpoint_drop_tensors(path("a"), "model.layers.3.");
  expect_loads_without_mtp(path("a"), m);
}

TEST_F(CheckpointTest, PartlyMissingMtpIsStillAnError) {
  ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
  rewrite(path("a/model.safetensors"), "model.layers.3.enorm.weight", nullptr);
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.layers.3.enorm.weight"), std::string::npos);
}

TEST_F(CheckpointTest, ConfigJsonIsUnambiguousForHf) {
  // tiny_variant: q_lora_rank 0 (plain q_proj), no architectures; HF reads 0 as a 0-wide q_a_proj.
  Model<float> m(testing::load_config("tests/reference/configs/tiny_variant.json"));
  m.init_weights(3);
  ASSERT_TRUE(checkpoint_save(path("a"), m, CheckpointOptions{}).ok());
  const nlohmann::json j = nlohmann::json::parse(bytes(path("a/config.json")));
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"DeepseekV3ForCausalLM"}));
  EXPECT_EQ(j["model_type"], "deepseek_v3");
  ASSERT_TRUE(j.contains("q_lora_rank"));
  EXPECT_TRUE(j["q_lora_rank"].is_null()) << j["q_lora_rank"];
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().model.config().q_lora_rank, 0);
  ASSERT_EQ(r.value().model.table().arena_size(), m.table().arena_size());
  for (int64_t i = 0; i < m.table().arena_size(); ++i) ASSERT_EQ(r.value().model.params()[i], m.params()[i]) << i;
}

TEST_F(CheckpointTest, MissingDirectoryIsNotFound) {
  auto r = checkpoint_load<float>(path("nope"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

// A weight that is NaN, ±inf or beyond 2^64 (1e30) is refused on every load, manifest or not,
// naming the file, the tensor and the element.
TEST_F(CheckpointTest, NonFiniteOrAbsurdWeightIsRefusedNamingTheTensor) {
  const std::string name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight";
  for (float bad : {std::nanf(""), INFINITY, -INFINITY, 1e30f}) {
    ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
    ASSERT_TRUE(testing::poke_f32(path("a/model.safetensors"), name, 7, bad).ok());
    auto r = checkpoint_load<float>(path("a"), {.verify_manifest = false});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(r.status().message().find("model.safetensors: tensor '" + name + "': element 7 is"), std::string::npos)
        << r.status().message();
  }
  // Large but plausible weights load.
  ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
  ASSERT_TRUE(testing::poke_f32(path("a/model.safetensors"), name, 7, 1e6f).ok());
  EXPECT_TRUE(checkpoint_load<float>(path("a")).ok());
}

// With a manifest, any changed byte is refused (naming the file) unless verification is off;
// without one (an HF download) the directory loads.
TEST_F(CheckpointTest, ManifestIsVerifiedOnLoadWhenPresent) {
  ASSERT_TRUE(checkpoint_save(path("a"), tiny_model(), CheckpointOptions{}).ok());
  ASSERT_TRUE(checkpoint_manifest_write(path("a"), 3).ok());
  ASSERT_TRUE(checkpoint_load<float>(path("a")).ok());
  ASSERT_TRUE(testing::poke_f32(path("a/model.safetensors"), "model.norm.weight", 0, 0.5f).ok());
  auto r = checkpoint_load<float>(path("a"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find(path("a/model.safetensors") + ": size or checksum differs"), std::string::npos)
      << r.status().message();
  EXPECT_TRUE(checkpoint_load<float>(path("a"), {.verify_manifest = false}).ok());
  std::ofstream(path("a/extra.txt")) << "x";
  fs::remove(path("a/manifest.json"));
  EXPECT_TRUE(checkpoint_load<float>(path("a")).ok());
}

TEST_F(CheckpointTest, SaveRefusesNonFiniteWeights) {
  Model<float> m = tiny_model();
  m.param("model.norm.weight")[3] = std::nanf("");
  const Status st = checkpoint_save(path("a"), m, CheckpointOptions{});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kOutOfRange);
  EXPECT_NE(st.message().find("tensor 'model.norm.weight': element 3 is nan"), std::string::npos) << st.message();
  EXPECT_FALSE(fs::exists(path("a")));
}

// The estimate counts what forward() allocates: at least the main and MTP logits and the logits'
// gradient, growing with the batch.
TEST_F(CheckpointTest, ActivationBytesCountTheLogits) {
  const Model<float> m = tiny_model();
  const ModelConfig& c = m.config();
  const int64_t T = 4 * 32;
  const int64_t logits = (2 + c.num_nextn_predict_layers) * T * c.vocab_size * int64_t{sizeof(float)};
  EXPECT_GT(m.activation_bytes(4, 32), logits);
  EXPECT_GT(m.activation_bytes(8, 32), m.activation_bytes(4, 32) + logits);
}

}  // namespace
}  // namespace mariana
