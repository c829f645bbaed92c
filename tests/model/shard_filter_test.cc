// ShardFilter and model_weights (model/weights.h): which tensors a layer range and a routed-expert
// range select, and that a shard's views alias the full model's arena (no copies).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "model/checkpoint.h"
#include "model/weights.h"
#include "model_test_util.h"

namespace mariana {
namespace {

std::set<std::string> names(const ParamTable& t, const ShardFilter& f) {
  std::set<std::string> out;
  for (const ParamSpec* s : t.select(f)) out.insert(s->name);
  return out;
}

class ShardFilterTest : public ::testing::Test {
 protected:
  // tiny: L = 3 (layer 0 dense, 1 and 2 MoE with 8 experts and a shared one), one MTP module (layer 3).
  Model<float> m{testing::load_config("configs/models/tiny.json")};
  const ParamTable& t = m.table();
};

TEST_F(ShardFilterTest, DefaultSelectsEverything) {
  EXPECT_EQ(t.select(ShardFilter{}).size(), t.specs().size());
}

TEST_F(ShardFilterTest, LayerAndExpertRange) {
  const ShardFilter f{1, 2, 2, 4};  // layers [1, 2), experts [2, 4)
  const std::set<std::string> got = names(t, f);
  std::set<std::string> want;
  for (const ParamSpec& s : t.specs()) {
    const std::string p = "model.layers.1.";
    if (s.name.rfind(p, 0) != 0) continue;
    const bool routed = s.name.find(".experts.") != std::string::npos;
    if (!routed || s.name.rfind(p + "mlp.experts.2.", 0) == 0 || s.name.rfind(p + "mlp.experts.3.", 0) == 0)
      want.insert(s.name);
  }
  EXPECT_EQ(got, want);
  EXPECT_TRUE(got.count("model.layers.1.mlp.gate.weight"));
  EXPECT_TRUE(got.count("model.layers.1.mlp.shared_experts.up_proj.weight"));
  EXPECT_TRUE(got.count("model.layers.1.mlp.experts.3.down_proj.weight"));
  EXPECT_FALSE(got.count("model.layers.1.mlp.experts.4.down_proj.weight"));
  EXPECT_EQ(want.size(), 14u + 6u);  // 9 block tensors, router, bias, 3 shared; 2 experts × 3
}

TEST_F(ShardFilterTest, EmbeddingAndHeadGoWithTheirStages) {
  auto has = [&](int64_t a, int64_t b, const std::string& n) {
    return names(t, ShardFilter{a, b}).count(n) == 1;
  };
  const std::string embed = "model.embed_tokens.weight", norm = "model.norm.weight", head = "lm_head.weight";
  EXPECT_TRUE(has(0, 1, embed));  // first stage embeds
  EXPECT_FALSE(has(0, 1, head));
  EXPECT_FALSE(has(1, 2, embed));
  EXPECT_FALSE(has(1, 2, norm));
  EXPECT_TRUE(has(2, 3, norm));   // the stage with layer L − 1 runs the head
  EXPECT_TRUE(has(2, 3, head));
  EXPECT_FALSE(has(2, 3, embed));
  EXPECT_TRUE(has(3, 4, embed));  // the MTP module embeds and shares the head
  EXPECT_TRUE(has(3, 4, head));
  EXPECT_TRUE(has(3, 4, "model.layers.3.eh_proj.weight"));
  EXPECT_FALSE(has(0, 3, "model.layers.3.eh_proj.weight"));
}

TEST_F(ShardFilterTest, ShardViewsAliasTheFullModel) {
  const ModelWeights<float*> full = model_weights<float*>(t, m.params());
  const ShardFilter f{2, 4, 5, 8};
  const ModelWeights<float*> shard = model_weights<float*>(t, m.params(), f);
  EXPECT_EQ(shard.embed, full.embed);
  EXPECT_EQ(shard.lm_head, full.lm_head);
  ASSERT_NE(full.embed, nullptr);
  EXPECT_EQ(shard.blocks[0].hf_layer, -1);
  EXPECT_EQ(shard.blocks[0].attn.o_proj, nullptr);
  EXPECT_EQ(shard.blocks[1].router, nullptr);
  for (size_t l : {2u, 3u}) {
    const BlockWeights<float*>& a = full.blocks[l];
    const BlockWeights<float*>& b = shard.blocks[l];
    EXPECT_EQ(b.hf_layer, static_cast<int64_t>(l));
    ASSERT_NE(a.attn.kv_b_proj, nullptr);
    EXPECT_EQ(b.attn.kv_b_proj, a.attn.kv_b_proj);
    EXPECT_EQ(b.router, a.router);
    EXPECT_EQ(b.shared.down_proj, a.shared.down_proj);
    ASSERT_EQ(b.experts.size(), 8u);
    for (size_t e = 0; e < 8; ++e) {
      EXPECT_EQ(b.experts[e].up_proj, e >= 5 ? a.experts[e].up_proj : nullptr) << "layer " << l << " expert " << e;
    }
  }
  EXPECT_EQ(shard.mtp[0].eh_proj, full.mtp[0].eh_proj);
  // A write through the shard's view is a write to the model's own tensor.
  shard.blocks[2].experts[6].gate_proj[0] = 42.f;
  EXPECT_EQ(m.param("model.layers.2.mlp.experts.6.gate_proj.weight")[0], 42.f);
}

// A model built for a shard allocates only its tensors, in the full table's order, and draws for
// each exactly the values the full model draws (one Philox stream per tensor of the full table).
TEST_F(ShardFilterTest, AShardModelHoldsOnlyItsTensorsWithTheFullModelsValues) {
  ShardFilter f;
  f.expert_begin = 4;
  f.expert_end = 8;  // ep rank 1 of 2
  Model<float> shard(testing::load_config("configs/models/tiny.json"), f);
  m.init_weights(11);
  shard.init_weights(11);
  const ParamTable& st = shard.table();
  EXPECT_EQ(st.specs().size(), t.select(f).size());
  int64_t dropped = 0;
  for (const ParamSpec& s : t.specs())
    if (s.expert >= 0 && s.expert < 4) dropped += s.numel();
  EXPECT_GT(dropped, 0);
  EXPECT_LE(st.arena_size(), t.arena_size() - dropped + 16 * static_cast<int64_t>(t.specs().size()));
  EXPECT_EQ(st.find("model.layers.1.mlp.experts.0.up_proj.weight"), nullptr);
  int64_t last_index = -1;
  for (const ParamSpec& s : st.specs()) {
    EXPECT_GT(s.index, last_index) << s.name;  // the full table's order
    last_index = s.index;
    EXPECT_EQ(s.index, t.at(s.name).index);
    EXPECT_TRUE(std::equal(shard.param(s.name), shard.param(s.name) + s.numel(), m.param(s.name))) << s.name;
  }
  // The views of the experts it does not hold are null.
  const ModelWeights<const float*> w = model_weights<const float*>(st, shard.params());
  EXPECT_EQ(w.blocks[1].experts[0].up_proj, nullptr);
  EXPECT_NE(w.blocks[1].experts[5].up_proj, nullptr);
}

// checkpoint_load with a shard reads only the shard's tensors, with the values a whole load has; a
// name the model does not have is still refused.
TEST_F(ShardFilterTest, ACheckpointLoadsIntoAShard) {
  m.init_weights(12);
  const std::string dir = ::testing::TempDir() + "/shard_load_" + std::to_string(::getpid());
  ASSERT_TRUE(checkpoint_save(dir, m, CheckpointOptions{}).ok());
  CheckpointLoadOptions lo;
  lo.shard.expert_begin = 0;
  lo.shard.expert_end = 4;
  auto part = checkpoint_load<float>(dir, lo);
  ASSERT_TRUE(part.ok()) << part.status().to_string();
  const Model<float>& shard = part.value().model;
  EXPECT_EQ(shard.table().specs().size(), t.select(lo.shard).size());
  EXPECT_EQ(shard.table().find("model.layers.1.mlp.experts.5.up_proj.weight"), nullptr);
  for (const ParamSpec& s : shard.table().specs())
    EXPECT_TRUE(std::equal(shard.param(s.name), shard.param(s.name) + s.numel(), m.param(s.name))) << s.name;
  // A tensor the model does not have (here, in place of one of another shard's experts) is refused.
  {
    auto sf = SafetensorsFile::open(dir + "/model.safetensors");
    ASSERT_TRUE(sf.ok());
    std::vector<std::pair<std::string, Tensor>> items;
    for (const SafetensorsEntry& e : sf.value().entries()) {
      const std::string name = e.name == "model.layers.1.mlp.experts.5.up_proj.weight"
                                   ? "model.layers.1.mlp.experts.50.up_proj.weight"
                                   : e.name;
      const Tensor v = sf.value().view(e);
      Tensor copy = Tensor::zeros(v.dtype(), v.shape());
      std::memcpy(copy.data(), v.data(), v.nbytes());
      items.emplace_back(name, std::move(copy));
    }
    ASSERT_TRUE(safetensors_write(dir + "/model.safetensors", items).ok());
  }
  auto refused = checkpoint_load<float>(dir, lo);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("experts.50.up_proj.weight' is not a parameter of this config"),
            std::string::npos)
      << refused.status().to_string();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mariana
