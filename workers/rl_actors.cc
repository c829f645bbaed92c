// The RL campaign's role classes: rl_generator, rl_scorer, rl_reference (see rl_campaign.h).
#include <xxhash.h>

#include <cstring>
#include <map>

#include "comm/gloo_communicator.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/inference/generate.h"
#include "proto/wire.h"
#include "rl/grpo.h"
#include "rl/rewards/reward.h"
#include "rl/rollout_services.h"
#include "rl/weight_sync.h"
#include "workers/controller_kv_store.h"
#include "workers/rl_campaign.h"
#include "workers/worker.h"

namespace mariana::workers {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

std::vector<int32_t> ints(capnp::List<int32_t>::Reader l) {
  std::vector<int32_t> out;
  out.reserve(l.size());
  for (int32_t x : l) out.push_back(x);
  return out;
}

std::vector<std::vector<int32_t>> int_lists(capnp::List<capnp::List<int32_t>>::Reader l) {
  std::vector<std::vector<int32_t>> out;
  out.reserve(l.size());
  for (auto x : l) out.push_back(ints(x));
  return out;
}

// Holds the policy's weights as the learner pushes them, one version at a time, and samples from
// the version it holds whole.
class Generator final : public Actor {
 public:
  Result<std::string> load_weights(std::string_view args) {
    MARIANA_ASSIGN_OR_RETURN(auto a, proto::StructValue<proto::RlWeights>::decode(args, "rl_generator.load_weights args"));
    const auto w = a.get();
    const std::string dir = text(w.getModelDir());
    MARIANA_RETURN_IF_ERROR(ensure_model(dir));
    const int64_t n = model_->table().arena_size();
    if (w.getTotal() != n)
      return FailedPrecondition("rl_generator: the learner's arena has " + std::to_string(w.getTotal()) +
                                " floats, this model (" + dir + ") " + std::to_string(n));
    const auto data = w.getData();
    const int64_t off = w.getOffset(), len = static_cast<int64_t>(data.size() / sizeof(float));
    if (off < 0 || data.size() % sizeof(float) != 0 || off + len > n)
      return InvalidArgument("rl_generator: bucket [" + std::to_string(off) + ", +" + std::to_string(len) +
                             ") outside the arena of " + std::to_string(n));
    if (w.getVersion() != staging_version_ || off == 0) {  // a new push starts
      staging_.assign(static_cast<size_t>(n), 0.0f);
      staging_version_ = w.getVersion();
      received_ = 0;
    }
    std::memcpy(staging_.data() + off, data.begin(), data.size());
    received_ += len;
    if (off + len < n) return std::string();
    // The last bucket: take the version only when it arrived whole.
    if (received_ != n || XXH64(staging_.data(), staging_.size() * sizeof(float), 0) != w.getChecksum())
      return DataLoss("rl_generator: version " + std::to_string(w.getVersion()) +
                      " arrived incomplete or with a checksum other than the learner's; it keeps version " +
                      std::to_string(version_));
    std::memcpy(model_->params(), staging_.data(), staging_.size() * sizeof(float));
    version_ = w.getVersion();
    staging_.clear();
    staging_.shrink_to_fit();
    staging_version_ = -1;
    return std::string();
  }

  // Joins the learner's weights group (replacing any earlier one).
  Result<std::string> join_group(std::string_view args) {
    MARIANA_ASSIGN_OR_RETURN(auto a, proto::StructValue<proto::RlWeightsGroup>::decode(args, "rl_generator.join_group args"));
    const auto g = a.get();
    MARIANA_RETURN_IF_ERROR(ensure_model(text(g.getModelDir())));
    const WorkerOptions* w = this_worker();
    if (w == nullptr) return FailedPrecondition("rl_generator.join_group: needs its worker's controller");
    group_.reset();
    auto kv = std::make_shared<ControllerKvStore>(w->controller, w->token, 5000, w->curve);
    auto store = std::make_shared<comm::PrefixStore>(kv, text(g.getPrefix()));
    comm::GlooOptions o;
    o.group = text(g.getGroup());
    o.rank = g.getRank();
    o.size = g.getWorld();
    o.timeout = std::chrono::milliseconds(g.getTimeoutMs());
    o.host = w->bind_host;
    MARIANA_ASSIGN_OR_RETURN(group_, comm::GlooCommunicator::connect(store, o));
    return std::string();
  }

  // The weights group it is in (RlWeightsGroup with only `group` set; "" for none): the learner
  // asks before each broadcast, so that a generator restarted since (in no group) is never waited
  // for inside a collective.
  Result<std::string> weights_group(std::string_view) {
    return proto::encode_struct<proto::RlWeightsGroup>(
        [&](proto::RlWeightsGroup::Builder b) { b.setGroup(group_ ? group_->group() : std::string()); });
  }

  // The receiving side of the learner's broadcast (rl/weight_sync.h). Until it succeeds the
  // generator holds no version (the arena may be partly overwritten); a failure leaves the group.
  Result<std::string> receive_weights(std::string_view args) {
    MARIANA_ASSIGN_OR_RETURN(auto a,
                             proto::StructValue<proto::RlWeightsReceive>::decode(args, "rl_generator.receive_weights args"));
    if (!group_ || !model_) return FailedPrecondition("rl_generator: in no weights group (a new incarnation?)");
    version_ = -1;
    rl::WeightSyncOptions o;
    o.bucket_bytes = a.get().getBucketBytes();
    auto r = rl::weight_sync(*group_, 0, *model_, 0, o);
    if (!r.ok()) {
      group_.reset();
      return r.status();
    }
    version_ = r.value().version;
    return std::string();
  }

  Result<std::string> generate(std::string_view args) {
    MARIANA_ASSIGN_OR_RETURN(auto a, proto::StructValue<proto::RlGenerate>::decode(args, "rl_generator.generate args"));
    const auto g = a.get();
    if (!model_ || g.getVersion() != version_)
      return FailedPrecondition("rl_generator: asked to sample from policy version " + std::to_string(g.getVersion()) +
                                ", holds " + (version_ < 0 ? std::string("none") : "version " + std::to_string(version_)));
    cpu::set_num_threads(g.getThreads());
    std::vector<GenerateRequest> reqs;
    for (auto r : g.getRequests()) {
      GenerateRequest q;
      q.prompt = ints(r.getPrompt());
      q.max_new_tokens = r.getMaxNewTokens();
      q.sampling.temperature = r.getTemperature();
      q.sampling.top_p = r.getTopP();
      q.sampling.top_k = r.getTopK();
      q.sampling.seed = r.getSeed();
      q.sampling.stream = r.getStream();
      q.stop_tokens = ints(r.getStopTokens());
      reqs.push_back(std::move(q));
    }
    InferenceEngine<float> engine(*model_);
    MARIANA_ASSIGN_OR_RETURN(std::vector<GenerateResult> out, mariana::generate(engine, reqs, GenerateOptions{}));
    return proto::encode_struct<proto::RlGenerated>([&](proto::RlGenerated::Builder b) {
      b.setVersion(version_);
      auto toks = b.initTokens(static_cast<unsigned>(out.size()));
      auto fin = b.initFinish(static_cast<unsigned>(out.size()));
      for (size_t i = 0; i < out.size(); ++i) {
        auto t = toks.init(static_cast<unsigned>(i), static_cast<unsigned>(out[i].tokens.size()));
        for (size_t k = 0; k < out[i].tokens.size(); ++k) t.set(static_cast<unsigned>(k), out[i].tokens[k]);
        fin.set(static_cast<unsigned>(i), out[i].finish);
      }
    });
  }

 private:
  // The model shaped by `dir`'s config.json (built once; another dir builds another).
  Status ensure_model(const std::string& dir) {
    if (model_ && dir == model_dir_) return Status::Ok();
    MARIANA_ASSIGN_OR_RETURN(ModelConfig cfg, model_config_load(dir + "/config.json"));
    model_ = std::make_unique<Model<float>>(cfg);
    model_dir_ = dir;
    version_ = -1;
    return Status::Ok();
  }

  std::unique_ptr<comm::Communicator> group_;  // the learner's weights group, when joined
  std::unique_ptr<Model<float>> model_;
  std::string model_dir_;
  int64_t version_ = -1;  // the version sampled from; −1 none
  std::vector<float> staging_;  // the push in progress
  int64_t staging_version_ = -1, received_ = 0;
};

class Scorer final : public Actor {
 public:
  Result<std::string> score(std::string_view args) {
    MARIANA_ASSIGN_OR_RETURN(auto a, proto::StructValue<proto::RlScore>::decode(args, "rl_scorer.score args"));
    const auto q = a.get();
    std::vector<std::string> names;
    std::vector<double> weights;
    for (auto n : q.getScorers()) names.push_back(text(n));
    for (double w : q.getWeights()) weights.push_back(w);
    const std::string reward_model = text(q.getRewardModel());
    cpu::set_num_threads(q.getThreads());
    const std::string key = nlohmann::json({names, weights, reward_model}).dump();
    auto it = scorers_.find(key);
    if (it == scorers_.end()) {
      MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<rl::RewardScorer> made, rl::composite_scorer(names, weights, reward_model));
      it = scorers_.emplace(key, std::move(made)).first;
    }
    std::vector<rl::RewardResult> results;
    for (auto x : q.getSamples()) {
      rl::RewardSample s;
      s.prompt = text(x.getPrompt());
      s.response.assign(reinterpret_cast<const char*>(x.getResponse().begin()), x.getResponse().size());
      if (x.getHasAnswer()) s.answer = text(x.getAnswer());
      for (auto t : x.getTests()) s.tests.push_back({text(t.getStdin()), text(t.getStdout())});
      MARIANA_ASSIGN_OR_RETURN(rl::RewardResult r, it->second->score(s));
      results.push_back(std::move(r));
    }
    return proto::encode_struct<proto::RlScored>([&](proto::RlScored::Builder b) {
      const auto n = static_cast<unsigned>(results.size());
      auto rw = b.initRewards(n);
      auto ok = b.initOk(n);
      auto reasons = b.initReasons(n);
      auto parts = b.initParts(n);
      for (unsigned i = 0; i < n; ++i) {
        rw.set(i, results[i].reward);
        ok.set(i, results[i].ok);
        reasons.set(i, results[i].reason);
        parts.set(i, nlohmann::json(results[i].parts).dump());
      }
    });
  }

 private:
  std::map<std::string, std::unique_ptr<rl::RewardScorer>> scorers_;  // by (names, weights, reward model)
};

class Reference final : public Actor {
 public:
  Result<std::string> logprobs(std::string_view args) {
    MARIANA_ASSIGN_OR_RETURN(auto a,
                             proto::StructValue<proto::RlReferenceLogprobs>::decode(args, "rl_reference.logprobs args"));
    const auto q = a.get();
    const std::string dir = text(q.getReferenceDir());
    if (!ref_ || dir != dir_) {
      ref_.reset();
      MARIANA_ASSIGN_OR_RETURN(LoadedCheckpoint<float> ck, checkpoint_load<float>(dir));
      ref_ = std::make_unique<LoadedCheckpoint<float>>(std::move(ck));
      dir_ = dir;
    }
    cpu::set_num_threads(q.getThreads());
    rl::LearnerBatch b;
    b.prompts = int_lists(q.getPrompts());
    b.responses = int_lists(q.getResponses());
    b.advantages.assign(b.prompts.size(), 0.0);
    MARIANA_ASSIGN_OR_RETURN(rl::PackedBatch pk, rl::pack_learner_batch(b, q.getPadId()));
    MARIANA_ASSIGN_OR_RETURN(std::vector<double> lp, rl::tempered_target_logprobs(ref_->model, pk, q.getTemperature()));
    return proto::encode_struct<proto::RlLogprobs>([&](proto::RlLogprobs::Builder r) {
      auto v = r.initValues(static_cast<unsigned>(lp.size()));
      for (size_t i = 0; i < lp.size(); ++i) v.set(static_cast<unsigned>(i), lp[i]);
    });
  }

 private:
  std::unique_ptr<LoadedCheckpoint<float>> ref_;
  std::string dir_;
};

}  // namespace

ActorClass rl_generator_class() {
  return ActorClassBuilder<Generator>("rl_generator")
      .long_method("load_weights", &Generator::load_weights)
      .long_method("join_group", &Generator::join_group)
      .long_method("receive_weights", &Generator::receive_weights)
      .method("weights_group", &Generator::weights_group)
      .long_method("generate", &Generator::generate)
      .build();
}
ActorClass rl_scorer_class() { return ActorClassBuilder<Scorer>("rl_scorer").long_method("score", &Scorer::score).build(); }
ActorClass rl_reference_class() {
  return ActorClassBuilder<Reference>("rl_reference").long_method("logprobs", &Reference::logprobs).build();
}

}  // namespace mariana::workers
