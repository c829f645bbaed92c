// The GRPO job end to end on a tiny random model: spec errors name their field; a short run logs
// one metrics line per iteration with every field, bumps the policy version per iteration,
// leaves the weights alone when every group has zero variance, and writes a loadable checkpoint; prompts take the documented forms.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "comm/store.h"
#include "model/checkpoint.h"
#include "rl/arithmetic_task.h"
#include "rl/grpo.h"
#include "rl/prompts.h"
#include "train/corpora.h"
#include "train/run_checkpoints.h"
#include "train/trainer.h"
#include "tests/comm/process_group.h"
#include "tests/rl/rewards/math_verify_test_venv.h"

namespace mariana::rl {
namespace {

namespace fs = std::filesystem;

class GrpoRun : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mariana_grpo_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A tiny random model with a tokenizer trained on arithmetic text, as a checkpoint directory.
  std::string make_checkpoint(uint64_t seed = 5, const std::string& name = "init") {
    auto cfg = model_config_load(std::string(MARIANA_SOURCE_DIR) + "/configs/models/tiny.json");
    EXPECT_TRUE(cfg.ok());
    Model<float> m(cfg.value());
    m.init_weights(seed);
    const std::string ck = (dir_ / name).string();
    EXPECT_TRUE(checkpoint_save(ck, m, CheckpointOptions{}).ok());
    std::vector<std::string> texts;
    ArithmeticOptions ao;
    for (uint64_t i = 0; i < 200; ++i) texts.push_back(make_arithmetic(i, ao).text);
    TokenizerTrainOptions to;
    to.vocab_size = 400;
    auto tok = Tokenizer::train_from_texts(texts, to);
    EXPECT_TRUE(tok.ok());
    EXPECT_TRUE(tok.value().save(ck + "/tokenizer.json").ok());
    return ck;
  }
  // Options of a quiet run in dir_/run of the job starting from `ck`, with `sets` applied.
  RlOptions run_options(const std::string& ck, const std::vector<std::string>& sets) {
    auto spec = rl_spec_parse("[job]\nname = \"t\"\nphase = \"rl\"\n[model]\ninit_from = \"" + ck + "\"\n",
                              "rl.toml", sets);
    EXPECT_TRUE(spec.ok()) << spec.status().to_string();
    RlOptions o;
    if (spec.ok()) o.spec = spec.value();
    o.run_dir = (dir_ / "run").string();
    o.quiet = true;
    return o;
  }
  fs::path dir_;
};

TEST_F(GrpoRun, SpecErrorsNameTheField) {
  auto r = rl_spec_parse("[job]\nphase = \"rl\"\n[model]\ninit_from = \"x\"\n[rollout]\ngroup_size = 1\n", "rl.toml", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("rollout.group_size"), std::string::npos) << r.status().to_string();
  r = rl_spec_parse("[job]\nphase = \"rl\"\n[model]\ninit_from = \"x\"\n[grpo]\nbogus = 1\n", "rl.toml", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("grpo.bogus"), std::string::npos) << r.status().to_string();
  r = rl_spec_parse("[job]\nphase = \"rl\"\n[model]\ninit_from = \"x\"\n[reward]\nweights = [1.0]\n", "rl.toml", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("reward.weights"), std::string::npos) << r.status().to_string();
  r = rl_spec_parse("[job]\nphase = \"rl\"\n", "rl.toml", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.init_from"), std::string::npos);
  // The "model" scorer needs its reward model, and a reward model needs the "model" scorer.
  for (const char* reward : {"scorers = [\"math\", \"model\"]\nweights = [1.0, 0.5]\n", "model = \"rm\"\n"}) {
    r = rl_spec_parse("[job]\nphase = \"rl\"\n[model]\ninit_from = \"x\"\n[reward]\n" + std::string(reward), "rl.toml", {});
    ASSERT_FALSE(r.ok()) << reward;
    EXPECT_NE(r.status().message().find("reward.model"), std::string::npos) << r.status().to_string();
  }
  for (const char* bad : {"parallel.dp=0", "rl.max_staleness=9", "campaign.scorers=0", "campaign.weight_sync=\"pigeon\""}) {
    r = rl_spec_parse("[job]\nphase = \"rl\"\n[model]\ninit_from = \"x\"\n", "rl.toml", {bad});
    ASSERT_FALSE(r.ok()) << bad;
    const std::string field = std::string(bad).substr(0, std::string(bad).find('='));
    EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status().to_string();
  }
  r = rl_spec_parse("[job]\nphase = \"rl\"\n[model]\ninit_from = \"x\"\n", "rl.toml", {"grpo.kl_beta=-1"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("grpo.kl_beta"), std::string::npos);
}

TEST_F(GrpoRun, AdvantageSettingsParseWithDocumentedDefaults) {
  const std::string base = "[job]\nphase = \"rl\"\n[model]\ninit_from = \"x\"\n";
  auto r = rl_spec_parse(base, "rl.toml", {});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->advantages.std, AdvantageStd::kPopulation);
  EXPECT_EQ(r->advantages.scale, RewardScaling::kGroup);
  EXPECT_EQ(r->advantages.eps, 1e-6);
  r = rl_spec_parse(base + "[grpo]\nstd = \"sample\"\nscale_rewards = \"batch\"\nadv_eps = 1e-4\n", "rl.toml", {});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->advantages.std, AdvantageStd::kSample);
  EXPECT_EQ(r->advantages.scale, RewardScaling::kBatch);
  EXPECT_EQ(r->advantages.eps, 1e-4);
  r = rl_spec_parse(base, "rl.toml", {"grpo.scale_rewards=none"});
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->advantages.scale, RewardScaling::kNone);
  for (const auto& [override_, field] : std::vector<std::pair<std::string, std::string>>{
           {"grpo.std=unbiased", "grpo.std"}, {"grpo.scale_rewards=global", "grpo.scale_rewards"},
           {"grpo.adv_eps=-1", "grpo.adv_eps"}}) {
    r = rl_spec_parse(base, "rl.toml", {override_});
    ASSERT_FALSE(r.ok()) << override_;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("'" + field + "'"), std::string::npos) << r.status().to_string();
  }
  r = rl_spec_parse(base, "rl.toml", {"grpo.std=unbiased"});
  EXPECT_NE(r.status().message().find("\"population\" or \"sample\""), std::string::npos) << r.status().to_string();
}

TEST_F(GrpoRun, ShortRunLogsEveryIterationAndWritesACheckpoint) {
  const std::string ck = make_checkpoint();
  RlOptions o = run_options(ck, {"rollout.prompts=2", "rollout.group_size=3", "rollout.max_new_tokens=10",
                                 "grpo.iterations=3", "grpo.inner_updates=2", "grpo.lr=1e-2", "eval.problems=4",
                                 "eval.max_new_tokens=6", "train.checkpoint_every=2", "train.threads=1"});
  std::vector<RlIterationMetrics> seen;
  o.on_iteration = [&](const RlIterationMetrics& m) { seen.push_back(m); };
  auto res = grpo_run(o);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  ASSERT_EQ(seen.size(), 3u);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].iteration, static_cast<int64_t>(i + 1));
    EXPECT_EQ(seen[i].policy_version, static_cast<int64_t>(i + 1));
    EXPECT_EQ(seen[i].responses, 6);
    EXPECT_GT(seen[i].tokens, 0);
    EXPECT_GE(seen[i].kl, 0.0);
    EXPECT_GT(seen[i].entropy, 0.0);
    EXPECT_EQ(seen[i].reward_parts.size(), 2u);
    // A random model earns nothing: every group has zero variance, so no advantage.
    EXPECT_EQ(seen[i].zero_variance_groups, 2);
    EXPECT_EQ(seen[i].reward, 0.0);
  }
  EXPECT_GE(seen.back().eval_accuracy, 0.0);  // evaluated after the last iteration
  std::ifstream metrics(dir_ / "run" / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(metrics, line)) {
    const auto j = nlohmann::json::parse(line);
    for (const char* k : {"iteration", "policy_version", "reward", "reward_parts", "accuracy", "kl", "clip_frac",
                          "entropy", "response_len", "zero_variance_groups"})
      EXPECT_TRUE(j.contains(k)) << k;
    ++lines;
  }
  EXPECT_EQ(lines, 3);
  // The final checkpoint loads and holds the tokenizer. With zero advantages everywhere and the
  // reference equal to the policy, the surrogate and the KL gradient are exactly zero, and with
  // weight decay 0 the weights must not move at all (zero-variance groups teach nothing).
  ASSERT_FALSE(res.value().final_checkpoint.empty());
  EXPECT_TRUE(fs::exists(fs::path(res.value().final_checkpoint) / "tokenizer.json"));
  auto a = checkpoint_load<float>(ck), b = checkpoint_load<float>(res.value().final_checkpoint);
  ASSERT_TRUE(a.ok() && b.ok());
  const auto& ma = a.value().model;
  const auto& mb = b.value().model;
  double diff = 0;
  for (int64_t i = 0; i < ma.table().arena_size(); ++i) diff += std::abs(ma.params()[i] - mb.params()[i]);
  EXPECT_EQ(diff, 0.0);
  // keep_last = 2 with checkpoints at iterations 2 and 3.
  int dirs = 0;
  for (const auto& e : fs::directory_iterator(dir_ / "run" / "checkpoints")) dirs += e.is_directory();
  EXPECT_EQ(dirs, 2);
  // Each iter-N checkpoint carries a manifest: the run directory resolves to the newest one, and a
  // damaged newest one is skipped for the one before (as for training runs).
  auto newest = resolve_checkpoint((dir_ / "run").string());
  ASSERT_TRUE(newest.ok()) << newest.status().to_string();
  EXPECT_EQ(fs::path(newest.value()), fs::path(res.value().final_checkpoint));
  {
    std::ofstream f(fs::path(res.value().final_checkpoint) / "rl_state.json", std::ios::app);
    f << " ";
  }
  auto fallback = latest_valid_checkpoint((dir_ / "run").string());
  ASSERT_TRUE(fallback.ok()) << fallback.status().to_string();
  EXPECT_EQ(fs::path(fallback.value()).filename(), "iter-000002");
}

// reward.scorers selects the math_verify scorer by name (its venv from $MARIANA_MATH_VERIFY_VENV).
TEST_F(GrpoRun, MathVerifyScorerByName) {
  const std::string ck = make_checkpoint();
  ASSERT_EQ(::setenv("MARIANA_MATH_VERIFY_VENV", math_verify_test_venv().c_str(), 1), 0);
  auto spec = rl_spec_parse("[job]\nname = \"t\"\nphase = \"rl\"\n[model]\ninit_from = \"" + ck +
                                "\"\n[reward]\nscorers = [\"math_verify\", \"format\"]\nweights = [1.0, 0.1]\n",
                            "rl.toml",
                            {"rollout.prompts=1", "rollout.group_size=2", "rollout.max_new_tokens=6",
                             "grpo.iterations=1", "eval.problems=2", "eval.max_new_tokens=4", "train.threads=1"});
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  RlOptions o;
  o.spec = spec.value();
  o.run_dir = (dir_ / "run").string();
  o.quiet = true;
  auto res = grpo_run(o);
  ::unsetenv("MARIANA_MATH_VERIFY_VENV");
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->last.responses, 2);
  EXPECT_EQ(res->last.reward_parts.count("math_verify"), 1u);
  EXPECT_EQ(res->last.reward_parts.count("format"), 1u);
}

TEST_F(GrpoRun, PromptFormats) {
  const std::string ck = make_checkpoint();
  auto tok = Tokenizer::load(ck + "/tokenizer.json");
  ASSERT_TRUE(tok.ok());
  ArithmeticProblem p = make_arithmetic(3, ArithmeticOptions{});
  const auto chat = arithmetic_prompt(tok.value(), p, PromptFormat::kChat);
  const auto raw = arithmetic_prompt(tok.value(), p, PromptFormat::kRaw);
  EXPECT_EQ(chat.front(), tok.value().bos_id());
  EXPECT_EQ(chat.back(), tok.value().special_id(SpecialToken::kAssistant));
  EXPECT_EQ(raw.front(), tok.value().bos_id());
  const std::string raw_text = tok.value().decode(std::vector<int32_t>(raw.begin() + 1, raw.end()));
  EXPECT_EQ(raw_text, "Q: " + std::to_string(p.a) + " " + p.op + " " + std::to_string(p.b) + " = ?\nA:");
}

// Held-out evaluation with sampling: K responses per problem are K different draws (the report's
// first examples are problem 0's responses), reproducible from the seed, and the counts add up.
TEST_F(GrpoRun, EvalSamplesSeveralResponsesPerProblem) {
  const std::string ck = make_checkpoint();
  auto loaded = checkpoint_load<float>(ck);
  auto tok = Tokenizer::load(ck + "/tokenizer.json");
  ASSERT_TRUE(loaded.ok() && tok.ok());
  ArithmeticEvalOptions eo;
  eo.problems = 5;
  eo.max_new_tokens = 12;
  eo.examples = 4;
  auto greedy = eval_arithmetic(loaded.value().model, tok.value(), eo);
  ASSERT_TRUE(greedy.ok()) << greedy.status().to_string();
  EXPECT_EQ(greedy.value().problems, 5);
  EXPECT_EQ(greedy.value().samples, 1);
  EXPECT_EQ(greedy.value().solved, greedy.value().correct);  // one response per problem
  eo.samples = 4;
  eo.temperature = 1.0;
  eo.sample_seed = 11;
  eo.batch = 7;  // problems split across generate() calls: 7 / 4 -> one problem per batch
  auto a = eval_arithmetic(loaded.value().model, tok.value(), eo);
  auto b = eval_arithmetic(loaded.value().model, tok.value(), eo);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().to_string();
  const ArithmeticEvalResult& r = a.value();
  EXPECT_EQ(r.problems, 5);
  EXPECT_EQ(r.samples, 4);
  int64_t per_op = 0;
  for (const auto& [op, cell] : r.by_op) per_op += cell.second;
  EXPECT_EQ(per_op, 20);  // every response is judged
  EXPECT_LE(r.solved, r.correct);
  EXPECT_LE(r.correct, 4 * r.solved);
  EXPECT_DOUBLE_EQ(r.accuracy, static_cast<double>(r.correct) / 20.0);
  EXPECT_DOUBLE_EQ(r.pass_at_k, static_cast<double>(r.solved) / 5.0);
  ASSERT_EQ(r.examples.size(), 4u);
  EXPECT_EQ(r.examples, b.value().examples);  // same seed, same responses
  std::set<std::string> distinct(r.examples.begin(), r.examples.end());
  EXPECT_GT(distinct.size(), 1u) << "the 4 responses to problem 0 should be different draws";
  EXPECT_TRUE(r.responses.empty());  // only kept when asked
  eo.keep_responses = true;
  auto kept = eval_arithmetic(loaded.value().model, tok.value(), eo);
  ASSERT_TRUE(kept.ok());
  ASSERT_EQ(kept.value().responses.size(), 20u);
  int64_t kept_correct = 0;
  for (const ArithmeticEvalResponse& x : kept.value().responses) {
    kept_correct += x.correct;
    EXPECT_NE(x.question.find(" = ?"), std::string::npos) << x.question;
    EXPECT_FALSE(x.answer.empty());
  }
  EXPECT_EQ(kept_correct, r.correct);
  EXPECT_EQ(kept.value().responses[0].question + " -> " + kept.value().responses[0].response,
            r.examples[0].substr(0, r.examples[0].rfind("  [")));
  eo.keep_responses = false;
  eo.sample_seed = 12;
  auto c = eval_arithmetic(loaded.value().model, tok.value(), eo);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c.value().examples, r.examples);
  eo.temperature = 0;
  EXPECT_FALSE(eval_arithmetic(loaded.value().model, tok.value(), eo).ok());  // K > 1 needs sampling
}

// The metrics lines of a run without their timings (wall-clock seconds differ between runs).
std::vector<std::string> metrics_without_timings(const fs::path& run_dir) {
  std::vector<std::string> out;
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    for (const char* timing : kRlTimingFields) j.erase(timing);
    out.push_back(j.dump());
  }
  return out;
}

std::string file_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// An RL run stopped after iteration 2 (its interrupt) and resumed ends bit for bit where the
// uninterrupted run does: weights, AdamW moments and every metric. The reference differs from the
// policy, so the KL term moves the weights and the moments are not trivial.
TEST_F(GrpoRun, ResumeContinuesBitForBit) {
  const std::string ck = make_checkpoint();
  const std::string ref = make_checkpoint(6, "ref");
  const std::vector<std::string> sets = {"rollout.prompts=2", "rollout.group_size=3", "rollout.max_new_tokens=8",
                                         "grpo.iterations=4", "grpo.inner_updates=2", "grpo.lr=1e-2",
                                         "grpo.kl_beta=0.5", "eval.problems=2", "eval.max_new_tokens=4",
                                         "train.checkpoint_every=10", "train.threads=1"};
  auto spec = rl_spec_parse("[job]\nname = \"t\"\nphase = \"rl\"\n[model]\ninit_from = \"" + ck +
                                "\"\nreference = \"" + ref + "\"\n",
                            "rl.toml", sets);
  ASSERT_TRUE(spec.ok()) << spec.status().to_string();
  RlOptions whole;
  whole.spec = spec.value();
  whole.run_dir = (dir_ / "whole").string();
  whole.quiet = true;
  auto a = grpo_run(whole);
  ASSERT_TRUE(a.ok()) << a.status().to_string();

  RlOptions part = whole;
  part.run_dir = (dir_ / "parts").string();
  std::atomic<bool> stop{false};
  part.interrupt = &stop;
  part.on_iteration = [&](const RlIterationMetrics& m) { stop = m.iteration == 2; };
  auto b1 = grpo_run(part);
  ASSERT_TRUE(b1.ok()) << b1.status().to_string();
  EXPECT_TRUE(b1.value().interrupted);
  EXPECT_EQ(b1.value().iterations, 2);
  EXPECT_EQ(fs::path(b1.value().final_checkpoint).filename(), "iter-000002");
  part.interrupt = nullptr;
  part.on_iteration = nullptr;
  part.resume = true;
  auto b2 = grpo_run(part);
  ASSERT_TRUE(b2.ok()) << b2.status().to_string();
  EXPECT_EQ(b2.value().resumed_from, 2);
  EXPECT_EQ(b2.value().eval_before, a.value().eval_before);
  EXPECT_EQ(b2.value().eval_after, a.value().eval_after);

  const fs::path fa = a.value().final_checkpoint, fb = b2.value().final_checkpoint;
  EXPECT_EQ(fa.filename(), fb.filename());
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "rl_state.json"})
    EXPECT_TRUE(file_bytes(fa / f) == file_bytes(fb / f)) << f << " differs from the uninterrupted run's";
  EXPECT_EQ(metrics_without_timings(dir_ / "whole"), metrics_without_timings(dir_ / "parts"));
  EXPECT_EQ(metrics_without_timings(dir_ / "parts").size(), 4u);
  // Not a trivial equality: the KL term moved the weights.
  EXPECT_FALSE(file_bytes(fa / "model.safetensors") == file_bytes(fs::path(ck) / "model.safetensors"));

  // A checkpoint without the optimizer's state (written before RL checkpoints carried it) is refused.
  const fs::path iter2 = dir_ / "parts" / "checkpoints" / "iter-000004";
  auto state = nlohmann::json::parse(file_bytes(iter2 / "rl_state.json"));
  state.erase("optimizer_steps");
  std::ofstream(iter2 / "rl_state.json") << state.dump(2) << "\n";
  ASSERT_TRUE(checkpoint_manifest_write(iter2.string(), 4).ok());
  auto refused = grpo_run(part);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("cannot resume exactly"), std::string::npos) << refused.status().to_string();
}

// rl.max_staleness = k: the rollout k iterations ahead is made beside the learner from the policy
// k versions older than the one it updates (after a warm-up of k rollouts from the start policy),
// every sample stamped with that version. The schedule depends on iterations only, so the run is
// reproducible: stopped after iteration 2 and resumed (its checkpoint carries the rollouts made
// ahead) it ends bit for bit where the uninterrupted run does. It is not the on-policy run.
TEST_F(GrpoRun, AsynchronousRolloutsAreStaleByAtMostKAndResumeBitForBit) {
  const std::string ck = make_checkpoint();
  const std::string ref = make_checkpoint(6, "ref");
  auto spec_with = [&](int k) {
    const std::vector<std::string> sets = {"rollout.prompts=2", "rollout.group_size=3", "rollout.max_new_tokens=8",
                                           "grpo.iterations=5", "grpo.lr=1e-2", "grpo.kl_beta=0.5",
                                           "eval.problems=2", "eval.max_new_tokens=4", "train.checkpoint_every=10",
                                           "train.threads=1", "rl.max_staleness=" + std::to_string(k)};
    auto spec = rl_spec_parse("[job]\nname = \"t\"\nphase = \"rl\"\n[model]\ninit_from = \"" + ck +
                                  "\"\nreference = \"" + ref + "\"\n",
                              "rl.toml", sets);
    EXPECT_TRUE(spec.ok()) << spec.status().to_string();
    return spec.value();
  };
  for (int k : {1, 2}) {
    SCOPED_TRACE("max_staleness " + std::to_string(k));
    const std::string tag = "k" + std::to_string(k);
    RlOptions whole;
    whole.spec = spec_with(k);
    whole.run_dir = (dir_ / (tag + "-whole")).string();
    whole.quiet = true;
    auto a = grpo_run(whole);
    ASSERT_TRUE(a.ok()) << a.status().to_string();
    std::ifstream in(fs::path(whole.run_dir) / "metrics.jsonl");
    int64_t it = 0;
    for (std::string line; std::getline(in, line);) {
      auto m = nlohmann::json::parse(line);
      ++it;
      const int64_t stale = m["staleness"].get<int64_t>();
      EXPECT_EQ(stale, std::min<int64_t>(it - 1, k)) << line;  // warm-up: the first k from version 0
      EXPECT_EQ(m["sample_version"].get<int64_t>(), it - 1 - stale) << line;
      EXPECT_LE(stale, k);
    }
    EXPECT_EQ(it, 5);

    RlOptions part = whole;
    part.run_dir = (dir_ / (tag + "-parts")).string();
    std::atomic<bool> stop{false};
    part.interrupt = &stop;
    part.on_iteration = [&](const RlIterationMetrics& m) { stop = m.iteration == 2; };
    auto b1 = grpo_run(part);
    ASSERT_TRUE(b1.ok()) << b1.status().to_string();
    ASSERT_EQ(b1.value().iterations, 2);
    EXPECT_TRUE(fs::exists(fs::path(b1.value().final_checkpoint) / "pending_rollouts.json"));
    part.interrupt = nullptr;
    part.on_iteration = nullptr;
    part.resume = true;
    RlOptions other = part;  // a resume with another max_staleness is refused, naming the field
    other.spec = spec_with(k + 1);
    auto refused = grpo_run(other);
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(refused.status().message().find("rl.max_staleness"), std::string::npos) << refused.status().to_string();
    auto b2 = grpo_run(part);
    ASSERT_TRUE(b2.ok()) << b2.status().to_string();
    const fs::path fa = a.value().final_checkpoint, fb = b2.value().final_checkpoint;
    for (const char* f : {"model.safetensors", "optimizer.safetensors", "rl_state.json"})
      EXPECT_TRUE(file_bytes(fa / f) == file_bytes(fb / f)) << f << " differs from the uninterrupted run's";
    EXPECT_EQ(metrics_without_timings(whole.run_dir), metrics_without_timings(part.run_dir));
  }
  // Not the on-policy run: its batches came from newer policies.
  RlOptions on;
  on.spec = spec_with(0);
  on.run_dir = (dir_ / "k0").string();
  on.quiet = true;
  auto c = grpo_run(on);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_FALSE(file_bytes(fs::path(c.value().final_checkpoint) / "model.safetensors") ==
               file_bytes(dir_ / "k1-whole" / "checkpoints" / "iter-000005" / "model.safetensors"));
}

// Dynamic sampling on a random model, whose groups all earn 0: every group is dropped, every round
// is drawn, nothing is trained on and the policy version stays.
TEST_F(GrpoRun, DynamicSamplingDropsGroupsWithoutSignal) {
  const std::string ck = make_checkpoint();
  RlOptions o = run_options(ck, {"rollout.prompts=2", "rollout.group_size=3", "rollout.max_new_tokens=6",
                                 "grpo.iterations=2", "rl.dynamic_sampling=true", "rl.max_sample_rounds=3",
                                 "eval.problems=2", "eval.max_new_tokens=4", "train.threads=1"});
  std::vector<RlIterationMetrics> seen;
  o.on_iteration = [&](const RlIterationMetrics& m) { seen.push_back(m); };
  auto res = grpo_run(o);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  ASSERT_EQ(seen.size(), 2u);
  for (const RlIterationMetrics& m : seen) {
    EXPECT_EQ(m.sample_rounds, 3);
    EXPECT_EQ(m.prompts_sampled, 6);
    EXPECT_EQ(m.dropped_groups, 6);
    EXPECT_EQ(m.responses, 0);
    EXPECT_EQ(m.policy_version, 0);
  }
  // The second iteration drew the prompts after the first one's three rounds.
  auto state = nlohmann::json::parse(file_bytes(fs::path(res.value().final_checkpoint) / "rl_state.json"));
  EXPECT_EQ(state.at("prompt_position").get<int64_t>(), 12);
}

// A JSONL prompt set (math problems) and its held-out set: the run trains on the file's prompts,
// evaluates on the held-out file, and a malformed line is refused by file, line and field.
TEST_F(GrpoRun, JsonlPromptSets) {
  const std::string ck = make_checkpoint();
  const fs::path train = dir_ / "train.jsonl", held = dir_ / "held.jsonl";
  std::ofstream(train) << "{\"prompt\": \"1 + 1 = ?\", \"answer\": 2}\n\n{\"prompt\": \"2 + 5 = ?\", \"answer\": \"7\"}\n";
  std::ofstream(held) << "{\"prompt\": \"3 + 4 = ?\", \"answer\": 7}\n{\"prompt\": \"9 - 4 = ?\", \"answer\": 5}\n";
  const std::string head = "[job]\nname = \"t\"\nphase = \"rl\"\n[model]\ninit_from = \"" + ck + "\"\n";
  const std::vector<std::string> sets = {"task.dataset=" + train.string(), "task.eval_dataset=" + held.string(),
                                         "rollout.prompts=2", "rollout.group_size=2", "rollout.max_new_tokens=4",
                                         "grpo.iterations=1", "eval.max_new_tokens=4", "train.threads=1"};
  RlOptions o = run_options(ck, sets);
  auto res = grpo_run(o);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res.value().last.prompts_sampled, 2);
  // The held-out accuracy is over the held-out file's problems, in file order, as many as it has.
  {
    auto model = checkpoint_load<float>(ck);
    auto tok = Tokenizer::load(ck + "/tokenizer.json");
    auto set = PromptSet::jsonl(held.string(), 7);
    auto math = make_scorer("math", nlohmann::json::object());
    ASSERT_TRUE(model.ok() && tok.ok() && set.ok() && math.ok());
    PromptEvalOptions pe;
    pe.problems = 5;
    pe.max_new_tokens = 4;
    auto ev = eval_prompt_set(model.value().model, tok.value(), set.value(), *math.value(), pe);
    ASSERT_TRUE(ev.ok()) << ev.status().to_string();
    EXPECT_EQ(ev.value().problems, 2);
    EXPECT_EQ(ev.value().accuracy, static_cast<double>(ev.value().correct) / 2.0);
    EXPECT_EQ(set.value().row(1).question, "9 - 4 = ?");
  }

  // Each epoch visits every line once, in an order fixed by the seed.
  auto set = PromptSet::jsonl(train.string(), 7);
  ASSERT_TRUE(set.ok());
  ASSERT_EQ(set.value().size(), 2);
  std::multiset<std::string> epoch0 = {set.value().at(0).question, set.value().at(1).question};
  EXPECT_EQ(epoch0, (std::multiset<std::string>{"1 + 1 = ?", "2 + 5 = ?"}));
  EXPECT_EQ(set.value().at(3).question, PromptSet::jsonl(train.string(), 7).value().at(3).question);
  EXPECT_EQ(set.value().row(0).answer.value(), "2");

  // Malformed input: named by file and line.
  std::ofstream(held) << "{\"prompt\": \"3 + 4 = ?\"}\n";
  auto missing = grpo_run(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(held.string() + ":1: expected either field 'answer'"), std::string::npos)
      << missing.status().to_string();
  // A dataset without its held-out set is refused at parse time.
  auto no_eval = rl_spec_parse(head, "rl.toml", {"task.dataset=" + train.string()});
  ASSERT_FALSE(no_eval.ok());
  EXPECT_NE(no_eval.status().message().find("task.eval_dataset"), std::string::npos);
}

}  // namespace
}  // namespace mariana::rl

namespace mariana::rl {
namespace {

// [parallel] dp = 2: two forked learner ranks over a file store, rank 0 making the rollouts. The
// ranks' gradients sum to the whole batch's in another order than one process's GEMMs do, so the
// run equals the one-process run to rounding, not bit for bit: the same samples and rewards at
// every iteration (the tiny weight differences flip no sampled token here), the losses within
// 1e-5 relative, the final weights within 1e-5. Stopped after iteration 2 and resumed, the dp run
// ends bit for bit as the uninterrupted dp run; its checkpoint (one optimizer file per rank)
// resumes in one process too.
class GrpoDataParallel : public GrpoRun {
 protected:
  RlSpec spec(int dp, int iterations) {
    const std::string ck = make_checkpoint();
    const std::string ref = make_checkpoint(6, "ref");
    const std::vector<std::string> sets = {"rollout.prompts=3", "rollout.group_size=3", "rollout.max_new_tokens=8",
                                           "grpo.iterations=" + std::to_string(iterations), "grpo.lr=1e-3",
                                           "grpo.kl_beta=0.5", "grpo.inner_updates=2", "eval.problems=2",
                                           "eval.max_new_tokens=4", "train.checkpoint_every=2", "train.threads=1",
                                           "parallel.dp=" + std::to_string(dp), "parallel.timeout_s=60"};
    auto sp = rl_spec_parse("[job]\nname = \"t\"\nphase = \"rl\"\n[model]\ninit_from = \"" + ck + "\"\nreference = \"" +
                                ref + "\"\n",
                            "rl.toml", sets);
    EXPECT_TRUE(sp.ok()) << sp.status().to_string();
    return sp.value();
  }
  // The spec's dp ranks as forked processes; "" when every rank succeeded, else the reports.
  std::string run_ranks(const RlSpec& sp, const std::string& run_dir, bool resume, int stop_after = 0) {
    const std::string store = run_dir + ".store-" + std::to_string(resume);
    fs::remove_all(store);
    fs::create_directories(store);
    const auto outcomes = comm::run_ranks(
        static_cast<int>(sp.dp), store,
        [&](int rank) -> std::string {
          auto kv = comm::FileStore::open(store);
          if (!kv.ok()) return kv.status().to_string();
          auto groups = ParallelGroups::connect(std::shared_ptr<comm::Store>(std::move(kv).value()),
                                                rl_parallel_layout(sp), rank);
          if (!groups.ok()) return groups.status().to_string();
          RlOptions o;
          o.spec = sp;
          o.run_dir = run_dir;
          o.quiet = true;
          o.resume = resume;
          o.parallel = groups.value().get();
          std::atomic<bool> stop{false};
          if (stop_after > 0) {
            o.interrupt = &stop;
            o.on_iteration = [&](const RlIterationMetrics& m) { stop = m.iteration == stop_after; };
          }
          auto r = grpo_run(o);
          return r.ok() ? "" : r.status().to_string();
        },
        std::chrono::seconds(120));
    std::string reports;
    for (size_t r = 0; r < outcomes.size(); ++r)
      if (!outcomes[r].exited || !outcomes[r].report.empty())
        reports += "rank " + std::to_string(r) + ": " + (outcomes[r].exited ? outcomes[r].report : "did not exit") + "\n";
    return reports;
  }
  static std::vector<float> weights(const fs::path& checkpoint) {
    auto ck = checkpoint_load<float>(checkpoint.string());
    EXPECT_TRUE(ck.ok()) << ck.status().to_string();
    if (!ck.ok()) return {};
    return std::vector<float>(ck.value().model.params(), ck.value().model.params() + ck.value().model.table().arena_size());
  }
};

TEST_F(GrpoDataParallel, TwoRanksLearnAsOneProcessAndResumeBitForBit) {
  RlOptions one;
  one.spec = spec(1, 4);
  one.run_dir = (dir_ / "one").string();
  one.quiet = true;
  auto a = grpo_run(one);
  ASSERT_TRUE(a.ok()) << a.status().to_string();

  const RlSpec sp = spec(2, 4);
  const std::string whole = (dir_ / "dp2").string();
  ASSERT_EQ(run_ranks(sp, whole, false), "");
  std::ifstream ia(dir_ / "one" / "metrics.jsonl"), ib(fs::path(whole) / "metrics.jsonl");
  int lines = 0;
  for (std::string la, lb; std::getline(ia, la) && std::getline(ib, lb);) {
    ++lines;
    const auto ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
    for (const char* exact : {"reward", "responses", "tokens", "response_len", "policy_version"})
      EXPECT_EQ(ja[exact], jb[exact]) << exact << " at iteration " << lines;
    for (const char* close : {"loss", "kl", "entropy", "grad_norm"})
      EXPECT_NEAR(ja[close].get<double>(), jb[close].get<double>(), 1e-5 * std::abs(ja[close].get<double>()) + 1e-9)
          << close << " at iteration " << lines;
  }
  EXPECT_EQ(lines, 4);
  const auto wa = weights(dir_ / "one" / "checkpoints" / "iter-000004");
  const auto wb = weights(fs::path(whole) / "checkpoints" / "iter-000004");
  ASSERT_EQ(wa.size(), wb.size());
  double worst = 0;
  for (size_t i = 0; i < wa.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(wa[i] - wb[i])));
  EXPECT_LT(worst, 1e-5);
  const auto w0 = weights(dir_ / "init");
  double moved = 0;
  for (size_t i = 0; i < wa.size(); ++i) moved = std::max(moved, static_cast<double>(std::abs(wa[i] - w0[i])));
  EXPECT_GT(moved, 1e-4);  // the comparison is not between two untouched models
  // Every rank's ZeRO-1 slices, one file each.
  EXPECT_TRUE(fs::exists(fs::path(whole) / "checkpoints" / "iter-000004" / moments_file_name(0, 2)));
  EXPECT_TRUE(fs::exists(fs::path(whole) / "checkpoints" / "iter-000004" / moments_file_name(1, 2)));

  // Interrupted after iteration 2 and resumed: bit for bit the uninterrupted dp run.
  const std::string parts = (dir_ / "dp2-parts").string();
  ASSERT_EQ(run_ranks(sp, parts, false, 2), "");
  ASSERT_TRUE(fs::exists(fs::path(parts) / "checkpoints" / "iter-000002"));
  ASSERT_FALSE(fs::exists(fs::path(parts) / "checkpoints" / "iter-000004"));
  ASSERT_EQ(run_ranks(sp, parts, true), "");
  for (const char* f : {"model.safetensors", "rl_state.json"})
    EXPECT_TRUE(file_bytes(fs::path(whole) / "checkpoints" / "iter-000004" / f) ==
                file_bytes(fs::path(parts) / "checkpoints" / "iter-000004" / f))
        << f;
  for (int r = 0; r < 2; ++r)
    EXPECT_TRUE(file_bytes(fs::path(whole) / "checkpoints" / "iter-000004" / moments_file_name(r, 2)) ==
                file_bytes(fs::path(parts) / "checkpoints" / "iter-000004" / moments_file_name(r, 2)));
  EXPECT_EQ(metrics_without_timings(whole), metrics_without_timings(parts));

  // A dp checkpoint resumes in one process (the moments reassembled from the ranks' files).
  const std::string solo = (dir_ / "solo").string();
  fs::create_directories(fs::path(solo) / "checkpoints");
  fs::copy(fs::path(whole) / "checkpoints" / "iter-000002", fs::path(solo) / "checkpoints" / "iter-000002",
           fs::copy_options::recursive);
  RlOptions cont;
  cont.spec = spec(1, 4);
  cont.run_dir = solo;
  cont.quiet = true;
  cont.resume = true;
  auto c = grpo_run(cont);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c.value().resumed_from, 2);
  EXPECT_EQ(c.value().iterations, 4);
}

}  // namespace
}  // namespace mariana::rl
