// The learner's side of an RL campaign: RolloutServices over the campaign's roles (see rl_campaign.h).
#include "workers/rl_campaign.h"

#include <xxhash.h>

#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "comm/gloo_communicator.h"
#include "proto/wire.h"
#include "rl/weight_sync.h"
#include "workers/actor_mesh.h"
#include "workers/controller_kv_store.h"

namespace mariana::workers {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

template <typename List>
void set_ints(List l, const std::vector<int32_t>& v) {
  for (size_t k = 0; k < v.size(); ++k) l.set(static_cast<unsigned>(k), v[k]);
}

void set_int_lists(capnp::List<capnp::List<int32_t>>::Builder l, const std::vector<std::vector<int32_t>>& v) {
  for (size_t i = 0; i < v.size(); ++i) set_ints(l.init(static_cast<unsigned>(i), static_cast<unsigned>(v[i].size())), v[i]);
}

// fn() as a Status, a thrown exception (a reply past Cap'n Proto's limits) as Internal.
Status guarded(const std::function<Status()>& fn) {
  try {
    return fn();
  } catch (const kj::Exception& e) {
    return Internal(std::string("campaign: ") + e.getDescription().cStr());
  } catch (const std::exception& e) {
    return Internal(std::string("campaign: ") + e.what());
  }
}

// fn(i) for i in [0, n) on a thread each; the first error by index, else OK.
Status parallel_for(int64_t n, const std::function<Status(int64_t)>& fn) {
  std::vector<Status> st(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int64_t i = 0; i < n; ++i)
    threads.emplace_back([&, i] { st[static_cast<size_t>(i)] = guarded([&] { return fn(i); }); });
  for (auto& t : threads) t.join();
  for (const Status& s : st) MARIANA_RETURN_IF_ERROR(s);
  return Status::Ok();
}

// [lo, hi) of n items for part i of parts: contiguous, sizes differing by at most one.
std::pair<size_t, size_t> slice(size_t n, int64_t parts, int64_t i) {
  const size_t p = static_cast<size_t>(parts), k = static_cast<size_t>(i);
  return {n * k / p, n * (k + 1) / p};
}

class CampaignServices final : public rl::RolloutServices {
 public:
  CampaignServices(CampaignAddress where, rl::RolloutSetup setup, ActorMesh generators, ActorMesh scorers)
      : where_(std::move(where)),
        setup_(std::move(setup)),
        generators_(std::move(generators)),
        scorers_(std::move(scorers)),
        reference_(where_.controller, where_.token, where_.job_id, kReferenceRole, 0, where_.curve) {}

  Status publish(Model<float>& policy, int64_t version) override {
    // What a push to a generator that lost the version sends: the policy itself while nothing
    // changes it before the next publish (on-policy), else a copy of it now.
    const int64_t n = policy.table().arena_size();
    if (setup_.snapshot) {
      snapshot_.assign(policy.params(), policy.params() + n);
      published_ = snapshot_.data();
    } else {
      published_ = policy.params();
    }
    published_n_ = n;
    {
      std::lock_guard<std::mutex> lock(checksum_mu_);
      checksum_.reset();  // computed by the first push that needs it
    }
    version_ = version;
    if (where_.broadcast && backoff_ == 0) {
      const Status st = guarded([&] { return broadcast(policy); });
      if (st.ok()) return st;
      group_.reset();  // formed again for the next version (after a failed formation: 10 versions later)
      std::fprintf(stderr, "campaign: weight broadcast of version %lld failed (%s); sending it by actor calls\n",
                   (long long)version, st.to_string().c_str());
    } else if (backoff_ > 0) {
      --backoff_;
    }
    return parallel_for(generators_.size(), [&](int64_t g) { return push(g); });
  }

  Result<std::vector<GenerateResult>> generate(const std::vector<GenerateRequest>& requests, int64_t version) override {
    if (version != version_)
      return FailedPrecondition("generate: asked for policy version " + std::to_string(version) + ", published " +
                                std::to_string(version_));
    std::vector<GenerateResult> out(requests.size());
    MARIANA_RETURN_IF_ERROR(parallel_for(generators_.size(), [&](int64_t g) -> Status {
      const auto [lo, hi] = slice(requests.size(), generators_.size(), g);
      if (lo == hi) return Status::Ok();
      const std::string args = proto::encode_struct<proto::RlGenerate>([&](proto::RlGenerate::Builder b) {
        b.setVersion(version);
        b.setThreads(setup_.threads);
        auto rs = b.initRequests(static_cast<unsigned>(hi - lo));
        for (size_t i = lo; i < hi; ++i) {
          const GenerateRequest& q = requests[i];
          auto r = rs[static_cast<unsigned>(i - lo)];
          set_ints(r.initPrompt(static_cast<unsigned>(q.prompt.size())), q.prompt);
          r.setMaxNewTokens(q.max_new_tokens);
          r.setTemperature(q.sampling.temperature);
          r.setTopP(q.sampling.top_p);
          r.setTopK(q.sampling.top_k);
          r.setSeed(q.sampling.seed);
          r.setStream(q.sampling.stream);
          set_ints(r.initStopTokens(static_cast<unsigned>(q.stop_tokens.size())), q.stop_tokens);
        }
      });
      for (int attempt = 0;; ++attempt) {
        auto reply = generators_.at(g).call("generate", args, where_.call_timeout_ms);
        if (!reply.ok()) {
          // A generator that does not hold the version (a new incarnation, or one whose push
          // was cut short): send it the version, then ask again.
          if (reply.status().code() != StatusCode::kFailedPrecondition || attempt >= 4)
            return Status(reply.status().code(), "generator " + std::to_string(g) + ": " + reply.status().message());
          std::fprintf(stderr, "campaign: generator %lld: %s; sending version %lld again\n", (long long)g,
                       reply.status().message().c_str(), (long long)version);
          MARIANA_RETURN_IF_ERROR(push(g));
          continue;
        }
        MARIANA_ASSIGN_OR_RETURN(auto v, proto::StructValue<proto::RlGenerated>::decode(reply.value(), "rl_generator reply"));
        // Each list read once: Cap'n Proto charges every read of a list against the traversal limit.
        const auto r = v.get();
        const auto tokens = r.getTokens();
        const auto finish = r.getFinish();
        if (r.getVersion() != version || tokens.size() != hi - lo || finish.size() != hi - lo)
          return Internal("generator " + std::to_string(g) + " answered " + std::to_string(tokens.size()) +
                          " samples of version " + std::to_string(r.getVersion()) + " for " + std::to_string(hi - lo) +
                          " of version " + std::to_string(version));
        for (size_t i = lo; i < hi; ++i) {
          for (int32_t x : tokens[static_cast<unsigned>(i - lo)]) out[i].tokens.push_back(x);
          out[i].finish = text(finish[static_cast<unsigned>(i - lo)]);
        }
        return Status::Ok();
      }
    }));
    return out;
  }

  Result<std::vector<rl::RewardResult>> score(const std::vector<rl::RewardSample>& samples) override {
    std::vector<rl::RewardResult> out(samples.size());
    MARIANA_RETURN_IF_ERROR(parallel_for(scorers_.size(), [&](int64_t k) -> Status {
      const auto [lo, hi] = slice(samples.size(), scorers_.size(), k);
      if (lo == hi) return Status::Ok();
      const std::string args = proto::encode_struct<proto::RlScore>([&](proto::RlScore::Builder b) {
        auto names = b.initScorers(static_cast<unsigned>(setup_.scorers.size()));
        for (size_t i = 0; i < setup_.scorers.size(); ++i) names.set(static_cast<unsigned>(i), setup_.scorers[i]);
        auto w = b.initWeights(static_cast<unsigned>(setup_.weights.size()));
        for (size_t i = 0; i < setup_.weights.size(); ++i) w.set(static_cast<unsigned>(i), setup_.weights[i]);
        b.setRewardModel(setup_.reward_model);
        b.setThreads(setup_.threads);
        auto s = b.initSamples(static_cast<unsigned>(hi - lo));
        for (size_t i = lo; i < hi; ++i) {
          const rl::RewardSample& x = samples[i];
          auto o = s[static_cast<unsigned>(i - lo)];
          o.setPrompt(x.prompt);
          o.setResponse(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(x.response.data()), x.response.size()));
          o.setHasAnswer(x.answer.has_value());
          if (x.answer) o.setAnswer(*x.answer);
          auto tests = o.initTests(static_cast<unsigned>(x.tests.size()));
          for (size_t t = 0; t < x.tests.size(); ++t) {
            tests[static_cast<unsigned>(t)].setStdin(x.tests[t].stdin_text);
            tests[static_cast<unsigned>(t)].setStdout(x.tests[t].expected_stdout);
          }
        }
      });
      MARIANA_ASSIGN_OR_RETURN(std::string reply, scorers_.at(k).call("score", args, where_.call_timeout_ms));
      MARIANA_ASSIGN_OR_RETURN(auto v, proto::StructValue<proto::RlScored>::decode(reply, "rl_scorer reply"));
      const auto r = v.get();
      const auto rewards = r.getRewards();
      const auto ok = r.getOk();
      const auto reasons = r.getReasons();
      const auto parts_json = r.getParts();
      if (rewards.size() != hi - lo || parts_json.size() != hi - lo || ok.size() != hi - lo || reasons.size() != hi - lo)
        return Internal("scorer " + std::to_string(k) + " answered " + std::to_string(rewards.size()) +
                        " rewards for " + std::to_string(hi - lo) + " samples");
      for (size_t i = lo; i < hi; ++i) {
        const unsigned j = static_cast<unsigned>(i - lo);
        rl::RewardResult& rr = out[i];
        rr.reward = rewards[j];
        rr.ok = ok[j];
        rr.reason = text(reasons[j]);
        auto parts = nlohmann::json::parse(text(parts_json[j]), nullptr, false);
        if (!parts.is_object()) return Internal("scorer " + std::to_string(k) + ": parts are not a JSON object");
        for (auto& [name, value] : parts.items()) rr.parts[name] = value.get<double>();
      }
      return Status::Ok();
    }));
    return out;
  }

  Result<std::vector<double>> reference_logprobs(const rl::LearnerBatch& b, const rl::PackedBatch& packed) override {
    const std::string args = proto::encode_struct<proto::RlReferenceLogprobs>([&](proto::RlReferenceLogprobs::Builder q) {
      q.setReferenceDir(setup_.reference_dir);
      q.setTemperature(setup_.temperature);
      q.setPadId(setup_.pad_id);
      q.setThreads(setup_.threads);
      set_int_lists(q.initPrompts(static_cast<unsigned>(b.prompts.size())), b.prompts);
      set_int_lists(q.initResponses(static_cast<unsigned>(b.responses.size())), b.responses);
    });
    MARIANA_ASSIGN_OR_RETURN(std::string reply, reference_.call("logprobs", args, where_.call_timeout_ms));
    std::vector<double> out;
    MARIANA_RETURN_IF_ERROR(guarded([&]() -> Status {
      MARIANA_ASSIGN_OR_RETURN(auto v, proto::StructValue<proto::RlLogprobs>::decode(reply, "rl_reference reply"));
      const auto vals = v.get().getValues();
      if (static_cast<int64_t>(vals.size()) != packed.batch.B * packed.batch.S)
        return Internal("the reference answered " + std::to_string(vals.size()) + " log-probs for a batch of " +
                        std::to_string(packed.batch.B) + " x " + std::to_string(packed.batch.S));
      out.reserve(vals.size());
      for (double x : vals) out.push_back(x);
      return Status::Ok();
    }));
    return out;
  }

 private:
  // The weights group of the learner (rank 0) and every generator, under a name of its own.
  Status form_group() {
    const int world = static_cast<int>(generators_.size()) + 1;
    const std::string name = "weights-" + std::to_string(::getpid()) + "-" + std::to_string(++formations_);
    const std::string prefix = "campaign/" + where_.job_id + "/";
    std::vector<Status> joined(static_cast<size_t>(generators_.size()));
    std::vector<std::thread> threads;
    for (int64_t g = 0; g < generators_.size(); ++g)
      threads.emplace_back([&, g] {
        const std::string args = proto::encode_struct<proto::RlWeightsGroup>([&](proto::RlWeightsGroup::Builder b) {
          b.setGroup(name);
          b.setPrefix(prefix);
          b.setRank(static_cast<int32_t>(g + 1));
          b.setWorld(world);
          b.setTimeoutMs(where_.group_timeout_ms);
          b.setModelDir(setup_.policy_dir);
        });
        joined[static_cast<size_t>(g)] = generators_.at(g).call("join_group", args, where_.call_timeout_ms).status();
      });
    comm::GlooOptions o;
    o.group = name;
    o.rank = 0;
    o.size = world;
    o.timeout = std::chrono::milliseconds(where_.group_timeout_ms);
    o.host = where_.host;
    auto root = comm::GlooCommunicator::connect(std::make_shared<comm::PrefixStore>(kv_, prefix), o);
    for (auto& t : threads) t.join();
    MARIANA_RETURN_IF_ERROR(root.status());
    for (size_t g = 0; g < joined.size(); ++g)
      if (!joined[g].ok()) return Status(joined[g].code(), "generator " + std::to_string(g) + ": " + joined[g].message());
    group_ = std::move(root).value();
    group_name_ = name;
    std::printf("campaign: weights group %s of the learner and %lld generator(s) formed\n", name.c_str(),
                (long long)generators_.size());
    std::fflush(stdout);
    return Status::Ok();
  }

  // Whether every generator is still in the weights group (a short call to each, at once): a
  // generator restarted since its last call is in none, and a broadcast would wait for it until
  // the group's timeout.
  bool group_intact() {
    std::vector<std::string> names(static_cast<size_t>(generators_.size()));
    const Status st = parallel_for(generators_.size(), [&](int64_t g) -> Status {
      MARIANA_ASSIGN_OR_RETURN(std::string reply, generators_.at(g).call("weights_group", "", where_.call_timeout_ms));
      MARIANA_ASSIGN_OR_RETURN(auto v, proto::StructValue<proto::RlWeightsGroup>::decode(reply, "weights_group reply"));
      names[static_cast<size_t>(g)] = text(v.get().getGroup());
      return Status::Ok();
    });
    if (!st.ok()) return false;
    for (const std::string& n : names)
      if (n != group_name_) return false;
    return true;
  }

  // The published version broadcast over the weights group (formed first when there is none, or
  // when a generator left it: restarted, or failed an earlier broadcast). A generator that dies
  // during the broadcast fails it after the group's timeout, and the version goes by calls.
  Status broadcast(Model<float>& policy) {
    if (!group_ || !group_intact()) {
      group_.reset();
      const Status f = form_group();
      if (!f.ok()) {
        backoff_ = 10;
        return f;
      }
    }
    std::vector<Status> received(static_cast<size_t>(generators_.size()));
    std::vector<std::thread> threads;
    const std::string args = proto::encode_struct<proto::RlWeightsReceive>(
        [&](proto::RlWeightsReceive::Builder b) { b.setBucketBytes(where_.broadcast_bucket_bytes); });
    for (int64_t g = 0; g < generators_.size(); ++g)
      threads.emplace_back([&, g] {
        received[static_cast<size_t>(g)] = generators_.at(g).call("receive_weights", args, where_.call_timeout_ms).status();
      });
    rl::WeightSyncOptions o;
    o.bucket_bytes = where_.broadcast_bucket_bytes;
    auto sent = rl::weight_sync(*group_, 0, policy, version_, o);
    for (auto& t : threads) t.join();
    MARIANA_RETURN_IF_ERROR(sent.status());
    for (size_t g = 0; g < received.size(); ++g)
      if (!received[g].ok())
        return Status(received[g].code(), "generator " + std::to_string(g) + ": " + received[g].message());
    return Status::Ok();
  }

  // The published version to generator g, in buckets; repeated from the start when the generator
  // restarted mid-way (it then refuses the last bucket).
  Status push(int64_t g) {
    const int64_t n = published_n_;
    uint64_t checksum = 0;
    {
      std::lock_guard<std::mutex> lock(checksum_mu_);
      if (!checksum_) checksum_ = XXH64(published_, static_cast<size_t>(n) * sizeof(float), 0);
      checksum = *checksum_;
    }
    const int64_t per = std::max<int64_t>(1, where_.weight_bucket_bytes / static_cast<int64_t>(sizeof(float)));
    for (int attempt = 0;; ++attempt) {
      Status st = Status::Ok();
      for (int64_t off = 0; off < n && st.ok(); off += per) {
        const int64_t len = std::min(per, n - off);
        const std::string args = proto::encode_struct<proto::RlWeights>([&](proto::RlWeights::Builder w) {
          w.setVersion(version_);
          w.setModelDir(setup_.policy_dir);
          w.setOffset(off);
          w.setTotal(n);
          w.setData(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(published_ + off),
                                        static_cast<size_t>(len) * sizeof(float)));
          w.setChecksum(checksum);
        });
        st = generators_.at(g).call("load_weights", args, where_.call_timeout_ms).status();
      }
      if (st.ok()) return st;
      if (st.code() != StatusCode::kDataLoss || attempt >= 3)
        return Status(st.code(), "weights of version " + std::to_string(version_) + " to generator " + std::to_string(g) +
                                     ": " + st.message());
    }
  }

  CampaignAddress where_;
  rl::RolloutSetup setup_;
  ActorMesh generators_, scorers_;
  ActorHandle reference_;
  std::shared_ptr<ControllerKvStore> kv_ =
      std::make_shared<ControllerKvStore>(where_.controller, where_.token, 5000, where_.curve);
  std::unique_ptr<comm::Communicator> group_;  // the weights group, when formed
  std::string group_name_;                    // its name, which every generator in it answers
  int64_t formations_ = 0, backoff_ = 0;       // backoff_: versions to send by calls before forming again
  std::vector<float> snapshot_;     // the published version's arena, when rollouts run beside the learner
  const float* published_ = nullptr;  // the published version's arena: the policy's or snapshot_
  int64_t published_n_ = 0;
  std::mutex checksum_mu_;
  std::optional<uint64_t> checksum_;  // of the published arena, once a push needed it
  int64_t version_ = -1;
};

}  // namespace

Result<std::unique_ptr<rl::RolloutServices>> campaign_rollout_services(const CampaignAddress& where,
                                                                      const rl::RolloutSetup& setup) {
  MARIANA_ASSIGN_OR_RETURN(ActorMesh generators, ActorMesh::resolve(where.controller, where.token, where.job_id,
                                                                     kGeneratorRole, 10000, where.curve));
  MARIANA_ASSIGN_OR_RETURN(ActorMesh scorers, ActorMesh::resolve(where.controller, where.token, where.job_id,
                                                                 kScorerRole, 10000, where.curve));
  return std::unique_ptr<rl::RolloutServices>(
      std::make_unique<CampaignServices>(where, setup, std::move(generators), std::move(scorers)));
}

}  // namespace mariana::workers
