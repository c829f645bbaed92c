// Model<F>'s passes over micro-batches and layer ranges (model.h, "Passes"): what a schedule does
// with them equals forward()/backward() bit for bit, and micro-batches held side by side do not
// disturb each other.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "model/model.h"
#include "tests/model/model_test_util.h"

namespace mariana {
namespace {

Batch test_batch(int64_t B, int64_t S, int32_t salt) {
  std::vector<int32_t> tokens(static_cast<size_t>(B * S));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919 + 13 * salt) % 1024);
  return Batch::from_rows(B, S, tokens);
}

std::vector<float> grads_of(Model<float>& m) {
  return std::vector<float>(m.grads(), m.grads() + m.table().arena_size());
}

// forward/backward over explicit passes and layer ranges equal the one-call forms, bit for bit.
TEST(ModelPasses, LayerRangesEqualTheWholePass) {
  Model<float> m(testing::load_config("configs/models/tiny.json"));
  m.init_weights(5);
  const Batch b = test_batch(2, 16, 1);
  LossWeights w;
  ForwardResult whole, split;
  m.zero_grads();
  ASSERT_TRUE(m.forward(b, w, &whole).ok());
  m.backward();
  const std::vector<float> g_whole = grads_of(m);

  auto a = m.make_activations();
  const int64_t L = m.config().num_hidden_layers;
  m.zero_grads();
  ASSERT_TRUE(m.forward_begin(*a, b, w).ok());
  m.forward_embed(*a);
  m.forward_blocks(*a, 0, 1);
  m.forward_blocks(*a, 1, L);
  ASSERT_TRUE(m.forward_head(*a, &split).ok());
  m.backward_head(*a, nullptr, nullptr);
  m.backward_blocks(*a, 1, L);
  m.backward_blocks(*a, 0, 1);
  m.backward_embed(*a);
  EXPECT_EQ(whole.loss, split.loss);
  EXPECT_EQ(whole.expert_counts, split.expert_counts);
  EXPECT_EQ(g_whole, grads_of(m));
}

// Two micro-batches in flight (forward 1, forward 2, backward 2, backward 1, as a pipeline
// schedule interleaves them): the gradients are those of the two run one after the other.
TEST(ModelPasses, InterleavedMicroBatchesKeepTheirOwnActivations) {
  Model<float> m(testing::load_config("configs/models/tiny.json"));
  m.init_weights(6);
  const Batch b1 = test_batch(2, 16, 1), b2 = test_batch(2, 16, 2);
  LossWeights w;
  ForwardResult r1, r2, s1, s2;
  m.zero_grads();
  ASSERT_TRUE(m.forward(b2, w, &r2).ok());
  m.backward();
  ASSERT_TRUE(m.forward(b1, w, &r1).ok());
  m.backward();
  const std::vector<float> sequential = grads_of(m);

  auto a1 = m.make_activations(), a2 = m.make_activations();
  m.zero_grads();
  ASSERT_TRUE(m.forward(*a1, b1, w, &s1).ok());
  ASSERT_TRUE(m.forward(*a2, b2, w, &s2).ok());
  m.backward(*a2);
  m.backward(*a1);
  EXPECT_EQ(r1.loss, s1.loss);
  EXPECT_EQ(r2.loss, s2.loss);
  EXPECT_EQ(sequential, grads_of(m));
  EXPECT_NE(r1.loss, r2.loss);  // the two micro-batches differ, so a mix-up would show
}

// The B/W split: with weight gradients deferred, backward (B) leaves the linear layers' weight
// gradients undone (the norms' are done), and backward_weights (W) completes them; two
// micro-batches B2 B1 W2 W1 end bit for bit where the fused backward 2, backward 1 ends.
TEST(ModelPasses, DeferredWeightGradientsEqualTheFusedBackward) {
  Model<float> m(testing::load_config("configs/models/tiny.json"));
  m.init_weights(7);
  const Batch b1 = test_batch(2, 16, 1), b2 = test_batch(2, 16, 2);
  LossWeights w;
  ForwardResult r1, r2;
  auto a1 = m.make_activations(), a2 = m.make_activations();
  m.zero_grads();
  ASSERT_TRUE(m.forward(*a1, b1, w, &r1).ok());
  ASSERT_TRUE(m.forward(*a2, b2, w, &r2).ok());
  m.backward(*a2);
  m.backward(*a1);
  const std::vector<float> fused = grads_of(m);

  m.zero_grads();
  ASSERT_TRUE(m.forward(*a1, b1, w, &r1).ok());
  ASSERT_TRUE(m.forward(*a2, b2, w, &r2).ok());
  m.set_defer_weight_grads(*a1, true);
  m.set_defer_weight_grads(*a2, true);
  m.backward(*a2);
  m.backward(*a1);
  EXPECT_GT(m.pending_weight_grads(*a1), 0);
  EXPECT_EQ(m.pending_weight_grads(*a1), m.pending_weight_grads(*a2));
  auto tensor_abs_sum = [&](const std::string& name) {
    const ParamSpec& s = m.table().at(name);
    double sum = 0;
    for (int64_t i = 0; i < s.numel(); ++i) sum += std::abs(m.grads()[s.offset + i]);
    return sum;
  };
  // After B only: no linear weight has a gradient yet, the norms and the embedding have theirs.
  for (const char* name : {"model.layers.0.self_attn.o_proj.weight", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
                           "model.layers.1.mlp.experts.0.down_proj.weight", "model.layers.1.mlp.gate.weight",
                           "lm_head.weight"})
    EXPECT_EQ(tensor_abs_sum(name), 0.0) << name;
  EXPECT_GT(tensor_abs_sum("model.layers.0.input_layernorm.weight"), 0.0);
  EXPECT_GT(tensor_abs_sum("model.embed_tokens.weight"), 0.0);
  m.backward_weights(*a2);
  m.backward_weights(*a1);
  EXPECT_EQ(m.pending_weight_grads(*a1), 0);
  EXPECT_EQ(fused, grads_of(m));

  // Deferral off again: the fused backward, with nothing left queued.
  m.zero_grads();
  m.set_defer_weight_grads(*a1, false);
  ASSERT_TRUE(m.forward(*a1, b1, w, &r1).ok());
  m.backward(*a1);
  EXPECT_EQ(m.pending_weight_grads(*a1), 0);
  EXPECT_GT(tensor_abs_sum("model.layers.0.self_attn.o_proj.weight"), 0.0);
}

// Gradient accumulation: two half batches with the whole batch's denominators give the whole
// batch's loss and gradients (to rounding: the sums are added in another order).
TEST(ModelPasses, MicroBatchesWithGlobalDenominatorsAddUpToTheBatch) {
  Model<float> m(testing::load_config("configs/models/tiny.json"));
  m.init_weights(7);
  const Batch whole = test_batch(4, 16, 3);
  LossWeights w;
  ForwardResult r;
  m.zero_grads();
  ASSERT_TRUE(m.forward(whole, w, &r).ok());
  m.backward();
  const std::vector<float> g_whole = grads_of(m);

  LossWeights gw = w;
  set_global_denominators(whole, m.config().num_nextn_predict_layers, &gw);
  double loss = 0;
  m.zero_grads();
  for (int half = 0; half < 2; ++half) {
    Batch b;
    b.B = 2;
    b.S = 16;
    const auto from = static_cast<std::ptrdiff_t>(half * 32), to = from + 32;
    b.tokens.assign(whole.tokens.begin() + from, whole.tokens.begin() + to);
    b.targets.assign(whole.targets.begin() + from, whole.targets.begin() + to);
    b.doc_start.assign(whole.doc_start.begin() + from, whole.doc_start.begin() + to);
    auto a = m.make_activations();
    ForwardResult part;
    ASSERT_TRUE(m.forward(*a, b, gw, &part).ok());
    m.backward(*a);
    loss += part.loss;
  }
  EXPECT_NEAR(loss, r.loss, 1e-6 * r.loss);
  const std::vector<float> g = grads_of(m);
  double scale = 0, worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(g_whole[i])));
    worst = std::max(worst, static_cast<double>(std::abs(g_whole[i] - g[i])));
  }
  EXPECT_LE(worst, 1e-5 * scale);
}

}  // namespace
}  // namespace mariana
