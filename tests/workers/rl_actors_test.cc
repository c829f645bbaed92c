// The RL campaign's role classes in process (workers/rl_actors.cc), called as a worker calls them:
// a generator takes a pushed version only when every bucket arrived and the checksum agrees, and
// samples only from the exact version it is asked for (so no sample can mix two versions); its
// samples equal the one-process engine's on the same weights; the scorer and the reference answer
// what the learner would compute itself.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <filesystem>

#include "core/file_util.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/inference/generate.h"
#include "proto/wire.h"
#include "rl/grpo.h"
#include "rl/rollout_services.h"
#include "workers/actor.h"
#include "workers/rl_campaign.h"

namespace mariana::workers {
namespace {

namespace fs = std::filesystem;

class RlActors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mariana-rl-actors-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    const std::string cfg_text = read_file(std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json").value();
    ASSERT_TRUE(write_file_atomic((dir_ / "config.json").string(), cfg_text).ok());
    auto cfg = model_config_load((dir_ / "config.json").string());
    ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
    model_ = std::make_unique<Model<float>>(cfg.value());
    model_->init_weights(5);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // One bucket [off, off + len) of the model's arena as version `version`.
  std::string bucket(int64_t version, int64_t off, int64_t len, uint64_t checksum) const {
    const int64_t n = model_->table().arena_size();
    return proto::encode_struct<proto::RlWeights>([&](proto::RlWeights::Builder w) {
      w.setVersion(version);
      w.setModelDir(dir_.string());
      w.setOffset(off);
      w.setTotal(n);
      w.setData(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(model_->params() + off),
                                    static_cast<size_t>(len) * sizeof(float)));
      w.setChecksum(checksum);
    });
  }
  uint64_t checksum() const {
    return XXH64(model_->params(), static_cast<size_t>(model_->table().arena_size()) * sizeof(float), 0);
  }
  static std::string generate_args(int64_t version, const std::vector<GenerateRequest>& reqs) {
    return proto::encode_struct<proto::RlGenerate>([&](proto::RlGenerate::Builder b) {
      b.setVersion(version);
      b.setThreads(1);
      auto rs = b.initRequests(static_cast<unsigned>(reqs.size()));
      for (size_t i = 0; i < reqs.size(); ++i) {
        auto r = rs[static_cast<unsigned>(i)];
        auto p = r.initPrompt(static_cast<unsigned>(reqs[i].prompt.size()));
        for (size_t k = 0; k < reqs[i].prompt.size(); ++k) p.set(static_cast<unsigned>(k), reqs[i].prompt[k]);
        r.setMaxNewTokens(reqs[i].max_new_tokens);
        r.setTemperature(reqs[i].sampling.temperature);
        r.setTopP(reqs[i].sampling.top_p);
        r.setTopK(reqs[i].sampling.top_k);
        r.setSeed(reqs[i].sampling.seed);
        r.setStream(reqs[i].sampling.stream);
        r.initStopTokens(0);
      }
    });
  }

  fs::path dir_;
  std::unique_ptr<Model<float>> model_;
};

TEST_F(RlActors, AGeneratorSamplesOnlyFromTheWholeVersionItWasAskedFor) {
  const ActorClass* cls = builtin_actor_registry().find("rl_generator");
  ASSERT_NE(cls, nullptr);
  EXPECT_TRUE(cls->long_methods.count("generate"));  // off the worker's thread: heartbeats go on
  auto gen = std::move(cls->create("")).value();
  std::vector<GenerateRequest> reqs(3);
  for (size_t i = 0; i < reqs.size(); ++i) {
    reqs[i].prompt = {1, 2, static_cast<int32_t>(3 + i)};
    reqs[i].max_new_tokens = 6;
    reqs[i].sampling.temperature = 1.0;
    reqs[i].sampling.seed = 11;
    reqs[i].sampling.stream = static_cast<int64_t>(7 + i);
  }
  // Nothing pushed yet: refused.
  auto none = actor_invoke(*cls, *gen, "generate", generate_args(0, reqs));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("holds none"), std::string::npos) << none.status().to_string();

  const int64_t n = model_->table().arena_size(), half = n / 2;
  // Version 3 in two buckets, the second with a wrong checksum: not taken.
  ASSERT_TRUE(actor_invoke(*cls, *gen, "load_weights", bucket(3, 0, half, checksum() + 1)).ok());
  auto bad = actor_invoke(*cls, *gen, "load_weights", bucket(3, half, n - half, checksum() + 1));
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss) << bad.status().to_string();
  EXPECT_EQ(actor_invoke(*cls, *gen, "generate", generate_args(3, reqs)).status().code(),
            StatusCode::kFailedPrecondition);
  // Only the last bucket of a new push (a restarted push that lost its start): not taken either.
  EXPECT_EQ(actor_invoke(*cls, *gen, "load_weights", bucket(4, half, n - half, checksum())).status().code(),
            StatusCode::kDataLoss);
  // Whole and checksummed: taken.
  ASSERT_TRUE(actor_invoke(*cls, *gen, "load_weights", bucket(4, 0, half, checksum())).ok());
  ASSERT_TRUE(actor_invoke(*cls, *gen, "load_weights", bucket(4, half, n - half, checksum())).ok());
  EXPECT_EQ(actor_invoke(*cls, *gen, "generate", generate_args(3, reqs)).status().code(),
            StatusCode::kFailedPrecondition);  // another version than the one it holds
  auto got = actor_invoke(*cls, *gen, "generate", generate_args(4, reqs));
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  auto v = proto::StructValue<proto::RlGenerated>::decode(got.value(), "reply");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v.value().get().getVersion(), 4);
  // The same tokens as the one-process engine on these weights, request by request.
  InferenceEngine<float> engine(*model_);
  auto want = generate(engine, reqs, GenerateOptions{});
  ASSERT_TRUE(want.ok());
  ASSERT_EQ(v.value().get().getTokens().size(), reqs.size());
  for (unsigned i = 0; i < reqs.size(); ++i) {
    std::vector<int32_t> toks;
    for (int32_t t : v.value().get().getTokens()[i]) toks.push_back(t);
    EXPECT_EQ(toks, want.value()[i].tokens) << "request " << i;
    EXPECT_EQ(std::string(v.value().get().getFinish()[i].cStr()), want.value()[i].finish);
  }
  // A push of a version cut short leaves the version held before it in use.
  ASSERT_TRUE(actor_invoke(*cls, *gen, "load_weights", bucket(5, 0, half, checksum())).ok());
  EXPECT_TRUE(actor_invoke(*cls, *gen, "generate", generate_args(4, reqs)).ok());
  EXPECT_EQ(actor_invoke(*cls, *gen, "generate", generate_args(5, reqs)).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(RlActors, TheReferenceAnswersTheLearnersOwnLogprobs) {
  const ActorClass* cls = builtin_actor_registry().find("rl_reference");
  ASSERT_NE(cls, nullptr);
  auto ref = std::move(cls->create("")).value();
  // A checkpoint of the model to serve as the reference.
  const std::string ck = (dir_ / "ref").string();
  ASSERT_TRUE(checkpoint_save(ck, *model_, CheckpointOptions{}).ok());
  rl::LearnerBatch b;
  b.prompts = {{1, 2, 3}, {4, 5}};
  b.responses = {{6, 7}, {8, 9, 10, 2}};
  b.advantages = {0.5, -0.5};
  auto args = proto::encode_struct<proto::RlReferenceLogprobs>([&](proto::RlReferenceLogprobs::Builder q) {
    q.setReferenceDir(ck);
    q.setTemperature(0.7);
    q.setPadId(0);
    q.setThreads(1);
    auto p = q.initPrompts(2);
    auto r = q.initResponses(2);
    for (unsigned i = 0; i < 2; ++i) {
      auto pi = p.init(i, static_cast<unsigned>(b.prompts[i].size()));
      for (unsigned k = 0; k < b.prompts[i].size(); ++k) pi.set(k, b.prompts[i][k]);
      auto ri = r.init(i, static_cast<unsigned>(b.responses[i].size()));
      for (unsigned k = 0; k < b.responses[i].size(); ++k) ri.set(k, b.responses[i][k]);
    }
  });
  auto got = actor_invoke(*cls, *ref, "logprobs", args);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  auto v = proto::StructValue<proto::RlLogprobs>::decode(got.value(), "reply");
  ASSERT_TRUE(v.ok());
  auto pk = rl::pack_learner_batch(b, 0);
  ASSERT_TRUE(pk.ok());
  auto want = rl::tempered_target_logprobs(*model_, pk.value(), 0.7);
  ASSERT_TRUE(want.ok());
  ASSERT_EQ(v.value().get().getValues().size(), want.value().size());
  int nonzero = 0;
  for (unsigned i = 0; i < want.value().size(); ++i) {
    EXPECT_EQ(v.value().get().getValues()[i], want.value()[i]) << "position " << i;  // bit for bit
    nonzero += want.value()[i] != 0;
  }
  EXPECT_EQ(nonzero, 6);  // one per response token
}

TEST_F(RlActors, TheScorerAnswersTheCompositeReward) {
  const ActorClass* cls = builtin_actor_registry().find("rl_scorer");
  ASSERT_NE(cls, nullptr);
  auto scorer = std::move(cls->create("")).value();
  // Responses with invalid UTF-8 travel as bytes.
  const std::vector<std::pair<std::string, std::string>> samples = {
      {"12", "so\n#### 12"}, {"12", "#### 13"}, {"7", std::string("\xff\xfe garbage")}};
  auto args = proto::encode_struct<proto::RlScore>([&](proto::RlScore::Builder b) {
    auto names = b.initScorers(2);
    names.set(0, "math");
    names.set(1, "format");
    auto w = b.initWeights(2);
    w.set(0, 1.0);
    w.set(1, 0.1);
    auto s = b.initSamples(static_cast<unsigned>(samples.size()));
    for (unsigned i = 0; i < samples.size(); ++i) {
      s[i].setPrompt("q");
      s[i].setResponse(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(samples[i].second.data()),
                                           samples[i].second.size()));
      s[i].setHasAnswer(true);
      s[i].setAnswer(samples[i].first);
    }
  });
  auto got = actor_invoke(*cls, *scorer, "score", args);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  auto v = proto::StructValue<proto::RlScored>::decode(got.value(), "reply");
  ASSERT_TRUE(v.ok());
  auto local = rl::composite_scorer({"math", "format"}, {1.0, 0.1});
  ASSERT_TRUE(local.ok());
  ASSERT_EQ(v.value().get().getRewards().size(), samples.size());
  for (unsigned i = 0; i < samples.size(); ++i) {
    rl::RewardSample s;
    s.prompt = "q";
    s.response = samples[i].second;
    s.answer = samples[i].first;
    auto want = local.value()->score(s);
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(v.value().get().getRewards()[i], want.value().reward) << "sample " << i;
  }
  EXPECT_GT(v.value().get().getRewards()[0], 1.0);  // right answer and format
  EXPECT_EQ(v.value().get().getRewards()[2], 0.0);
}

// Code samples carry their tests to the scorer actor, which runs them in its sandbox.
TEST_F(RlActors, TheScorerRunsCodeTests) {
  const ActorClass* cls = builtin_actor_registry().find("rl_scorer");
  ASSERT_NE(cls, nullptr);
  auto scorer = std::move(cls->create("")).value();
  const std::vector<std::string> programs = {"```python\na, b = map(int, input().split())\nprint(a + b)\n```",
                                             "```python\nprint(0)\n```"};
  auto args = proto::encode_struct<proto::RlScore>([&](proto::RlScore::Builder b) {
    b.initScorers(1).set(0, "code");
    b.initWeights(1).set(0, 1.0);
    auto s = b.initSamples(static_cast<unsigned>(programs.size()));
    for (unsigned i = 0; i < programs.size(); ++i) {
      s[i].setPrompt("add two numbers");
      s[i].setResponse(
          capnp::Data::Reader(reinterpret_cast<const kj::byte*>(programs[i].data()), programs[i].size()));
      auto tests = s[i].initTests(2);
      tests[0].setStdin("2 3\n");
      tests[0].setStdout("5\n");
      tests[1].setStdin("10 -4\n");
      tests[1].setStdout("6\n");
    }
  });
  auto got = actor_invoke(*cls, *scorer, "score", args);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  auto v = proto::StructValue<proto::RlScored>::decode(got.value(), "reply");
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v.value().get().getRewards().size(), 2u);
  EXPECT_EQ(v.value().get().getRewards()[0], 1.0) << v.value().get().getReasons()[0].cStr();
  EXPECT_EQ(v.value().get().getRewards()[1], 0.0);
  EXPECT_EQ(std::string(v.value().get().getReasons()[1].cStr()), "wrong answer");
}

}  // namespace
}  // namespace mariana::workers
