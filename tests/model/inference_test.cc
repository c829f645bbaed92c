// The inference engine against the training forward: incremental decode over a latent (and a
// naive) cache gives the full-sequence logits and MTP logits for mixed-length batches; the cache
// holds (r + dr)·L values per token; greedy speculative decoding equals plain greedy decoding;
// sampling is reproducible from its seed on any thread count.
#include <omp.h>

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "model/inference/engine.h"
#include "model/inference/generate.h"
#include "tests/model/model_test_util.h"

namespace mariana {
namespace {

template <typename F>
double rel_err(const F* a, const F* b, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

std::vector<int32_t> random_tokens(int64_t n, int64_t V, uint64_t seed) {
  std::vector<float> u(static_cast<size_t>(n));
  philox_fill_uniform(u.data(), n, seed, 3);
  std::vector<int32_t> t(u.size());
  for (size_t i = 0; i < u.size(); ++i) t[i] = std::min<int32_t>(static_cast<int32_t>(u[i] * V), V - 1);
  return t;
}

template <typename F>
void check_incremental(KvCacheKind kind, double tol, bool yarn = false) {
  ModelConfig c = testing::load_config("configs/models/tiny.json");
  if (yarn) {  // YaRN's mscale on the rotated parts and the softmax scale; plain q_proj
    c.q_lora_rank = 0;
    c.yarn.enabled = true;
    c.yarn.factor = 4;
    c.yarn.original_max_position = 4;
    c.yarn.mscale = 1.0;
    c.yarn.mscale_all_dim = 0.8;
  }
  Model<F> model(c);
  testing::randomise(model, 21, 0.1);
  const int64_t V = c.vocab_size, C = c.hidden_size;
  const std::vector<int64_t> lens = {7, 11, 4};
  // Reference: the training forward over each whole sequence.
  std::vector<std::vector<int32_t>> seqs;
  std::vector<std::vector<F>> ref, ref_hidden, ref_mtp;
  for (size_t i = 0; i < lens.size(); ++i) {
    seqs.push_back(random_tokens(lens[i], V, 100 + i));
    ForwardResult r;
    ASSERT_TRUE(model.forward(Batch::from_rows(1, lens[i], seqs[i]), LossWeights{}, &r).ok());
    ref.emplace_back(model.logits(), model.logits() + lens[i] * V);
    ref_hidden.emplace_back(model.final_hidden(), model.final_hidden() + lens[i] * C);
    ref_mtp.emplace_back(model.mtp_logits(0), model.mtp_logits(0) + lens[i] * V);
  }
  InferenceEngine<F> eng(model, kind);
  std::vector<int64_t> ids;
  for (size_t i = 0; i < lens.size(); ++i) ids.push_back(eng.add_sequence());
  std::vector<int64_t> done(lens.size(), 0);
  std::vector<std::vector<F>> hidden(lens.size());
  // Chunks: a mixed prefill, then 2-token and 1-token steps, sequences dropping out as they end.
  const std::vector<std::vector<int64_t>> chunks = {{3, 6, 1}, {2, 1, 2}, {1, 2, 1}, {1, 1, 0}, {0, 1, 0}};
  int64_t checked_rows = 0;
  for (const auto& chunk : chunks) {
    std::vector<int64_t> call_ids;
    std::vector<std::vector<int32_t>> toks;
    std::vector<size_t> which;
    for (size_t i = 0; i < lens.size(); ++i) {
      const int64_t n = std::min(chunk[i], lens[i] - done[i]);
      if (n <= 0) continue;
      call_ids.push_back(ids[i]);
      toks.emplace_back(seqs[i].begin() + done[i], seqs[i].begin() + done[i] + n);
      which.push_back(i);
    }
    EngineOutput<F> out;
    ASSERT_TRUE(eng.extend(call_ids, toks, &out).ok());
    int64_t row = 0;
    for (size_t k = 0; k < which.size(); ++k) {
      const size_t i = which[k];
      for (size_t j = 0; j < toks[k].size(); ++j, ++row) {
        const int64_t p = done[i] + static_cast<int64_t>(j);
        EXPECT_LE(rel_err(out.logits.data() + row * V, ref[i].data() + p * V, V), tol)
            << "sequence " << i << " position " << p;
        hidden[i].insert(hidden[i].end(), out.hidden.begin() + row * C, out.hidden.begin() + (row + 1) * C);
        ++checked_rows;
      }
      done[i] += static_cast<int64_t>(toks[k].size());
      EXPECT_EQ(eng.length(ids[i]), done[i]);
    }
  }
  EXPECT_EQ(checked_rows, 7 + 11 + 4);
  // The MTP module over positions 0..len-2 (token after each, the engine's hidden) in two calls.
  for (size_t i = 0; i < lens.size(); ++i) {
    const int64_t n = lens[i] - 1, half = n / 2;
    int64_t at = 0;
    for (int64_t part : {half, n - half}) {
      if (part == 0) continue;
      std::vector<int32_t> nt(seqs[i].begin() + at + 1, seqs[i].begin() + at + 1 + part);
      std::vector<F> hid(hidden[i].begin() + at * C, hidden[i].begin() + (at + part) * C);
      EngineOutput<F> out;
      ASSERT_TRUE(eng.mtp_extend({ids[i]}, {nt}, {hid}, &out).ok());
      for (int64_t j = 0; j < part; ++j)
        EXPECT_LE(rel_err(out.logits.data() + j * V, ref_mtp[i].data() + (at + j) * V, V), tol)
            << "MTP sequence " << i << " position " << at + j;
      at += part;
    }
  }
  // Roll back and redo: the same logits again.
  eng.truncate(ids[1], 5);
  EngineOutput<F> out;
  ASSERT_TRUE(eng.extend({ids[1]}, {{seqs[1][5]}}, &out).ok());
  EXPECT_LE(rel_err(out.logits.data(), ref[1].data() + 5 * V, V), tol);
}

TEST(InferenceEngine, LatentCacheMatchesFullForwardFloat) { check_incremental<float>(KvCacheKind::kLatent, 1e-5); }
TEST(InferenceEngine, LatentCacheMatchesFullForwardDouble) { check_incremental<double>(KvCacheKind::kLatent, 1e-12); }
TEST(InferenceEngine, NaiveCacheMatchesFullForward) { check_incremental<float>(KvCacheKind::kNaive, 1e-5); }
TEST(InferenceEngine, LatentCacheWithYarnAndPlainQuery) { check_incremental<double>(KvCacheKind::kLatent, 1e-12, true); }

TEST(InferenceEngine, LatentCacheBytesPerToken) {
  const ModelConfig c = testing::load_config("configs/models/tiny.json");
  Model<float> model(c);
  InferenceEngine<float> eng(model);
  const int64_t expect = (c.kv_lora_rank + c.qk_rope_head_dim) * c.num_hidden_layers * 4;
  EXPECT_EQ(eng.cache_bytes_per_token(), expect);
  const int64_t id = eng.add_sequence();
  EngineOutput<float> out;
  ASSERT_TRUE(eng.extend({id}, {random_tokens(13, c.vocab_size, 1)}, &out).ok());
  EXPECT_EQ(eng.cache_bytes(id), 13 * expect);
  InferenceEngine<float> naive(model, KvCacheKind::kNaive);
  EXPECT_EQ(naive.cache_bytes_per_token(),
            c.num_attention_heads * (c.qk_head_dim() + c.v_head_dim) * c.num_hidden_layers * 4);
}

TEST(InferenceEngine, RejectsBadInput) {
  const ModelConfig c = testing::load_config("configs/models/tiny.json");
  Model<float> model(c);
  InferenceEngine<float> eng(model);
  const int64_t id = eng.add_sequence();
  EngineOutput<float> out;
  EXPECT_FALSE(eng.extend({id}, {{static_cast<int32_t>(c.vocab_size)}}, &out).ok());
  EXPECT_FALSE(eng.extend({id + 7}, {{1}}, &out).ok());
  EXPECT_FALSE(eng.extend({id, id}, {{1}, {2}}, &out).ok());
  EXPECT_FALSE(eng.extend({id}, {random_tokens(c.max_position_embeddings + 1, c.vocab_size, 2)}, &out).ok());
  EXPECT_EQ(eng.length(id), 0);
}

std::vector<GenerateRequest> requests(const ModelConfig& c, double temperature) {
  std::vector<GenerateRequest> rq;
  for (int i = 0; i < 3; ++i) {
    GenerateRequest r;
    r.prompt = random_tokens(3 + 4 * i, c.vocab_size, 50 + i);
    r.max_new_tokens = 24 - 5 * i;
    r.sampling.temperature = temperature;
    r.sampling.seed = 9;
    r.sampling.top_k = temperature > 0 ? 50 : 0;
    r.sampling.top_p = temperature > 0 ? 0.95 : 1.0;
    rq.push_back(r);
  }
  return rq;
}

TEST(Generate, GreedySpeculativeEqualsPlainGreedy) {
  const ModelConfig c = testing::load_config("configs/models/tiny.json");
  Model<double> model(c);
  testing::randomise(model, 5, 0.3);
  InferenceEngine<double> eng(model);
  const auto rq = requests(c, 0);
  auto plain = generate(eng, rq, GenerateOptions{false});
  auto spec = generate(eng, rq, GenerateOptions{true});
  ASSERT_TRUE(plain.ok() && spec.ok());
  int64_t drafted = 0;
  for (size_t i = 0; i < rq.size(); ++i) {
    EXPECT_EQ(spec.value()[i].tokens, plain.value()[i].tokens) << "request " << i;
    EXPECT_EQ(spec.value()[i].finish, plain.value()[i].finish);
    EXPECT_EQ(static_cast<int64_t>(plain.value()[i].tokens.size()), rq[i].max_new_tokens);
    const GenerateStats& st = spec.value()[i].stats;
    drafted += st.drafted;
    EXPECT_GE(st.acceptance_rate, 0.0);
    EXPECT_LE(st.acceptance_rate, 1.0);
    // Each main step of speculative decoding emits one or two tokens.
    EXPECT_LE(st.main_steps, plain.value()[i].stats.main_steps);
  }
  EXPECT_GT(drafted, 0);
}

TEST(Generate, SamplingIsReproducibleOnAnyThreadCount) {
  const ModelConfig c = testing::load_config("configs/models/tiny.json");
  Model<float> model(c);
  testing::randomise(model, 6, 0.3);
  InferenceEngine<float> eng(model);
  const auto rq = requests(c, 0.8);
  for (bool spec : {false, true}) {
    omp_set_num_threads(1);
    auto a = generate(eng, rq, GenerateOptions{spec});
    omp_set_num_threads(2);
    auto b = generate(eng, rq, GenerateOptions{spec});
    ASSERT_TRUE(a.ok() && b.ok());
    for (size_t i = 0; i < rq.size(); ++i) EXPECT_EQ(a.value()[i].tokens, b.value()[i].tokens);
    auto other = rq;
    for (auto& r : other) r.sampling.seed = 10;
    auto d = generate(eng, other, GenerateOptions{spec});
    ASSERT_TRUE(d.ok());
    EXPECT_NE(d.value()[0].tokens, a.value()[0].tokens);
  }
}

TEST(Generate, StopTokenEndsARequest) {
  const ModelConfig c = testing::load_config("configs/models/tiny.json");
  Model<float> model(c);
  testing::randomise(model, 7, 0.3);
  InferenceEngine<float> eng(model);
  auto rq = requests(c, 0);
  auto full = generate(eng, rq, GenerateOptions{false});
  ASSERT_TRUE(full.ok());
  const int32_t stop = full.value()[0].tokens[4];
  rq[0].stop_tokens = {stop};
  auto cut = generate(eng, rq, GenerateOptions{true});
  ASSERT_TRUE(cut.ok());
  EXPECT_EQ(cut.value()[0].finish, "stop");
  const auto& t = full.value()[0].tokens;
  const size_t first = static_cast<size_t>(std::find(t.begin(), t.end(), stop) - t.begin());
  EXPECT_EQ(cut.value()[0].tokens, std::vector<int32_t>(t.begin(), t.begin() + first));
}

TEST(Sampling, TopKAndTopPRestrictTheDistribution) {
  const std::vector<float> logits = {1.0f, 3.0f, 2.0f, 0.0f, 2.5f};
  SamplingParams p;
  std::vector<double> pr;
  sampling_distribution(logits.data(), 5, p, &pr);
  EXPECT_EQ(pr, (std::vector<double>{0, 1, 0, 0, 0}));
  p.temperature = 1;
  p.top_k = 2;
  sampling_distribution(logits.data(), 5, p, &pr);
  EXPECT_GT(pr[1], pr[4]);
  EXPECT_NEAR(pr[1] + pr[4], 1.0, 1e-12);
  EXPECT_EQ(pr[0] + pr[2] + pr[3], 0.0);
  p.top_k = 0;
  p.top_p = 0.5;  // the most likely id alone holds ~0.43 < 0.5, so two are kept
  sampling_distribution(logits.data(), 5, p, &pr);
  EXPECT_EQ((pr[1] > 0) + (pr[4] > 0) + (pr[2] > 0) + (pr[0] > 0) + (pr[3] > 0), 2);
  EXPECT_EQ(sample_index({0.0, 0.25, 0.0, 0.75}, 0.1), 1);
  EXPECT_EQ(sample_index({0.0, 0.25, 0.0, 0.75}, 0.3), 3);
}

}  // namespace
}  // namespace mariana
