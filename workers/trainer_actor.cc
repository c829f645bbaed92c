// The "trainer" actor class: runs a `pretrain`, `extend`, `sft` or `rm` job (train/trainer.h,
// sft/) or an `rl` job (GRPO, rl/grpo.h; its iterations are the job's steps) inside a worker.
// start(TrainerStart) parses the spec and runs train_run on a thread of its own, so the worker's
// thread keeps heartbeating and serving calls; every step's metrics, every checkpoint written, and
// the end (done or failed) become ActorEvents the worker reports to the controller. A restarted
// incarnation is started with the last checkpoint the controller registered and resumes from it
// (train_run with resume: bit for bit the run that never stopped).
// A parallel job ([parallel] dp·ep > 1) runs as a gang of these actors, one per rank: each joins
// the gang's groups through the controller's key-value table (keys under gang/<job>/<generation>/)
// on its training thread, then trains its rows; rank 0 reports the steps, checkpoints and the end,
// and any rank reports its failure. The controller restarts the whole gang when one rank dies.
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <nlohmann/json.hpp>

#include "comm/store.h"
#include "core/toml_util.h"
#include "proto/wire.h"
#include "rl/grpo.h"
#include "sft/reward_model.h"
#include "sft/sft_data.h"
#include "train/job_spec.h"
#include "train/parallel.h"
#include "train/trainer.h"
#include "workers/actor.h"
#include "workers/controller_kv_store.h"
#include "workers/rl_campaign.h"
#include "workers/worker.h"

namespace mariana::workers {

namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// [job] phase of a job file's text ("" when it has none or does not parse: the parser then says why).
std::string job_phase_of(const std::string& toml_text) {
  auto tbl = toml_parse(toml_text, "job");
  if (!tbl.ok()) return "";
  auto* phase = tbl.value()["job"]["phase"].as_string();
  return phase ? phase->get() : "";
}

// Each rank has published its node; rank 0 prints where every rank runs and warns when the ep ranks'
// real nodes do not follow [parallel] nodes (node-limited routing limits tokens by the declared
// layout: ep / nodes consecutive ep ranks per node). The groups are joined, so every rank has
// published (before joining) when rank 0 looks; a key still missing is reported, not waited for.
void report_gang_layout(comm::Store& store, const JobSpec& spec, int64_t rank) {
  if (rank != 0) return;
  std::string layout;
  std::vector<std::string> nodes(static_cast<size_t>(spec.world()));
  for (int64_t r = 0; r < spec.world(); ++r) {
    for (int tries = 0; tries < 50 && nodes[r].empty(); ++tries) {
      auto v = store.try_get("node/" + std::to_string(r));
      if (v.ok() && v.value().has_value()) nodes[r] = *v.value();
      else std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    layout += (r ? ", " : "") + std::to_string(r) + "@" + (nodes[r].empty() ? "?" : nodes[r]);
  }
  std::printf("trainer: gang layout (rank@node): %s\n", layout.c_str());
  if (spec.ep > 1) {
    const int64_t per_node = spec.ep / spec.nodes;
    for (int64_t d = 0; d < spec.dp; ++d)
      for (int64_t e = 0; e < spec.ep; ++e) {
        const std::string& mine = nodes[d * spec.ep + e];
        for (int64_t f = 0; f < spec.ep; ++f) {
          const bool same_declared = f / per_node == e / per_node;
          const bool same_real = nodes[d * spec.ep + f] == mine;
          if (same_declared != same_real) {
            std::printf("trainer: warning: parallel.nodes = %lld declares ep ranks %lld and %lld on %s nodes, but they "
                        "run on %s and %s; node-limited routing follows the declared layout\n",
                        (long long)spec.nodes, (long long)e, (long long)f, same_declared ? "the same" : "different",
                        mine.c_str(), nodes[d * spec.ep + f].c_str());
            std::fflush(stdout);
            return;
          }
        }
      }
  }
  std::fflush(stdout);
}

// Where a gang rank rendezvouses: its worker's controller (and CURVE keys), node and address, and
// the gang's start (its generation).
struct GangAddress {
  std::string job_id, controller, token, node, host = "127.0.0.1";
  proto::CurveClientKeys curve;
  uint64_t generation = 0;
};

// The gang's rank `rank` of a start(): rank and world from the call (checked against the job's
// `world`), and for world > 1 the worker's address. InvalidArgument / FailedPrecondition naming why.
Result<GangAddress> gang_address(const std::string& job_id, int64_t rank, int64_t world, int64_t job_world,
                                 uint64_t generation) {
  if (world != job_world)
    return InvalidArgument("trainer.start: the gang has " + std::to_string(world) + " rank(s), the job's [parallel] " +
                           std::to_string(job_world));
  if (rank < 0 || rank >= world) return InvalidArgument("trainer.start: rank " + std::to_string(rank) + " outside the gang");
  GangAddress g;
  g.job_id = job_id;
  g.generation = generation;
  if (world > 1) {
    const WorkerOptions* w = this_worker();
    if (w == nullptr) return FailedPrecondition("trainer.start: a gang rank needs its worker's controller");
    g.controller = w->controller;
    g.node = w->node_id;
    g.token = w->token;
    g.curve = w->curve;
    g.host = w->bind_host;
  }
  return g;
}

// Joins the gang's groups through the controller's key-value table (keys under
// gang/<job>/<generation>/); waits for every rank, so it runs on the training thread.
Result<std::unique_ptr<ParallelGroups>> join_gang(const GangAddress& g, const JobSpec& layout, int64_t rank) {
  auto kv = std::make_shared<ControllerKvStore>(g.controller, g.token, 5000, g.curve);
  auto store = std::make_shared<comm::PrefixStore>(kv, "gang/" + g.job_id + "/" + std::to_string(g.generation) + "/");
  (void)store->set("node/" + std::to_string(rank), g.node);  // before the rendezvous: rank 0 reads it after
  MARIANA_ASSIGN_OR_RETURN(std::unique_ptr<ParallelGroups> groups, ParallelGroups::connect(store, layout, rank, g.host));
  report_gang_layout(*store, layout, rank);
  std::printf("trainer: rank %lld of %lld joined gang generation %llu\n", (long long)rank, (long long)layout.world(),
              (unsigned long long)g.generation);
  std::fflush(stdout);
  return groups;
}

class Trainer final : public Actor {
 public:
  ~Trainer() override {
    // train_run cannot be interrupted; the worker is exiting, so let the thread end with it.
    if (thread_.joinable()) thread_.detach();
  }

  Result<std::string> start(std::string_view args) {
    MARIANA_ASSIGN_OR_RETURN(auto a, proto::StructValue<proto::TrainerStart>::decode(args, "trainer.start args"));
    const std::string job_id = text(a.get().getJobId());
    if (thread_.joinable()) {
      if (job_id == job_id_) {  // a repeated start (the controller restarted): already running this job
        // Its end may have been reported to the old controller and lost with it: report it again.
        std::lock_guard<std::mutex> lock(mu_);
        if (terminal_.has_value()) events_.push_back(*terminal_);
        return std::string();
      }
      return FailedPrecondition("trainer: already running job " + job_id_ + ", cannot start " + job_id);
    }
    const std::string path = text(a.get().getSpecPath());
    if (job_phase_of(text(a.get().getSpecToml())) == "rl") {
      MARIANA_RETURN_IF_ERROR(start_rl(a.get(), job_id, path));
      return std::string();
    }
    MARIANA_ASSIGN_OR_RETURN(JobSpec spec, job_spec_parse(text(a.get().getSpecToml()), path, {}));
    if (text(a.get().getRunDir()).empty()) return InvalidArgument("trainer.start: empty run directory");
    TrainOptions opt;
    opt.spec = std::move(spec);
    opt.run_dir = text(a.get().getRunDir());
    opt.resume_from = text(a.get().getResumeFrom());
    opt.resume = !opt.resume_from.empty();
    opt.quiet = false;  // a line per step on stdout: the worker's log (`mariana jobs logs`)
    opt.progress = false;
    const int64_t total = opt.spec.steps;  // train.epochs > 0: derived from the data (the started event)
    const int64_t rank = a.get().getRank(), world = std::max<int64_t>(1, a.get().getWorld());
    MARIANA_ASSIGN_OR_RETURN(const GangAddress gang,
                             gang_address(job_id, rank, world, opt.spec.world(), a.get().getGeneration()));
    const bool lead = rank == 0;  // reports for the gang
    if (!lead) opt.quiet = true;
    opt.on_start = started_reporter(a.get().getRecordedStep(), opt.run_dir);
    // The step's metrics: its metrics.jsonl line (written on the training thread, just before on_step).
    auto line = std::make_shared<std::string>();
    opt.on_metrics_line = [line](const std::string& l) { *line = l; };
    opt.on_step = [this, line](const StepMetrics& m) { push({"step", m.step, *line, "", ""}); };
    opt.on_checkpoint = [this](int64_t step, const std::string& dir) { push({"checkpoint", step, "", dir, ""}); };
    if (!lead) {  // rank 0 reports for the gang
      opt.on_start = nullptr;
      opt.on_step = nullptr;
    }
    job_id_ = job_id;
    std::printf("trainer: job %s, phase %s, %lld steps, run dir %s%s%s\n", job_id.c_str(), opt.spec.phase.c_str(),
                (long long)total, opt.run_dir.c_str(), opt.resume ? ", resuming from " : "",
                opt.resume_from.c_str());
    std::fflush(stdout);
    thread_ = std::thread([this, opt = std::move(opt), rank, world, gang, lead]() mutable {
      std::unique_ptr<ParallelGroups> groups;
      if (world > 1) {  // the rendezvous waits for every rank: on this thread, not the worker's
        auto g = join_gang(gang, opt.spec, rank);
        if (!g.ok()) return gang_join_failed(rank, g.status());
        groups = std::move(g).value();
        opt.parallel = groups.get();
      }
      auto res = opt.spec.phase == "sft"  ? sft_train_run(opt)
                 : opt.spec.phase == "rm" ? rm_train_run(opt)
                                          : train_run(opt);
      if (!res.ok()) {
        std::fprintf(stderr, "trainer: job %s failed: %s\n", job_id_.c_str(), res.status().to_string().c_str());
        push({"failed", 0, "", "", (world > 1 ? "rank " + std::to_string(rank) + ": " : "") + res.status().to_string()});
        return;
      }
      if (!lead) return;
      const TrainSummary& s = res.value();
      nlohmann::ordered_json summary = train_summary_json(s);  // as in the run dir's summary.json
      summary["steps_done"] = s.steps_done;
      summary["loss"] = s.last.loss;
      summary["final_checkpoint"] = s.final_checkpoint;
      std::printf("trainer: job %s done at step %lld, final checkpoint %s\n", job_id_.c_str(),
                  (long long)s.steps_done, s.final_checkpoint.c_str());
      std::fflush(stdout);
      push({"done", s.steps_done, summary.dump(), s.final_checkpoint, ""});
    });
    return std::string();
  }

  // An rl job: grpo_run on the training thread, its iterations reported as steps.
  Status start_rl(proto::TrainerStart::Reader a, const std::string& job_id, const std::string& path) {
    MARIANA_ASSIGN_OR_RETURN(rl::RlSpec spec, rl::rl_spec_parse(text(a.getSpecToml()), path, {}));
    if (text(a.getRunDir()).empty()) return InvalidArgument("trainer.start: empty run directory");
    const int64_t rank = a.getRank(), world = std::max<int64_t>(1, a.getWorld());
    MARIANA_ASSIGN_OR_RETURN(const GangAddress gang, gang_address(job_id, rank, world, spec.dp, a.getGeneration()));
    const bool lead = rank == 0;  // reports for the gang (grpo_run calls the callbacks on rank 0 only)
    rl::RlOptions opt;
    opt.spec = std::move(spec);
    opt.run_dir = text(a.getRunDir());
    opt.resume_from = text(a.getResumeFrom());
    opt.resume = !opt.resume_from.empty();
    opt.quiet = !lead;
    opt.on_start = started_reporter(a.getRecordedStep(), opt.run_dir);
    auto line = std::make_shared<std::string>();
    opt.on_metrics_line = [line](const std::string& l) { *line = l; };
    opt.on_iteration = [this, line](const rl::RlIterationMetrics& m) { push({"step", m.iteration, *line, "", ""}); };
    opt.on_checkpoint = [this](int64_t it, const std::string& dir) { push({"checkpoint", it, "", dir, ""}); };
    if (opt.spec.campaign_generators > 0) {  // a campaign: the job's other roles generate, score and hold the reference
      const WorkerOptions* w = this_worker();
      if (w == nullptr) return FailedPrecondition("trainer.start: a campaign's learner needs its worker's controller");
      CampaignAddress where;
      where.controller = w->controller;
      where.token = w->token;
      where.job_id = job_id;
      where.curve = w->curve;
      where.broadcast = opt.spec.campaign_weight_sync == "broadcast";
      where.host = w->bind_host;
      opt.services = [where](const rl::RolloutSetup& setup) { return campaign_rollout_services(where, setup); };
    }
    job_id_ = job_id;
    std::printf("trainer: job %s, phase rl, %lld iterations, run dir %s%s%s%s\n", job_id.c_str(),
                (long long)opt.spec.iterations, opt.run_dir.c_str(), opt.resume ? ", resuming from " : "",
                opt.resume_from.c_str(),
                opt.spec.campaign_generators > 0
                    ? (", campaign of " + std::to_string(opt.spec.campaign_generators) + " generator(s), " +
                       std::to_string(opt.spec.campaign_scorers) + " scorer(s) and a reference")
                          .c_str()
                    : "");
    std::fflush(stdout);
    thread_ = std::thread([this, opt = std::move(opt), rank, world, gang, lead]() mutable {
      std::unique_ptr<ParallelGroups> groups;
      if (world > 1) {  // data-parallel learner ranks
        auto g = join_gang(gang, rl::rl_parallel_layout(opt.spec), rank);
        if (!g.ok()) return gang_join_failed(rank, g.status());
        groups = std::move(g).value();
        opt.parallel = groups.get();
      }
      auto res = rl::grpo_run(opt);
      if (!res.ok()) {
        std::fprintf(stderr, "trainer: job %s failed: %s\n", job_id_.c_str(), res.status().to_string().c_str());
        push({"failed", 0, "", "", (world > 1 ? "rank " + std::to_string(rank) + ": " : "") + res.status().to_string()});
        return;
      }
      if (!lead) return;
      const rl::RlSummary& s = res.value();
      const int64_t done = std::max(s.iterations, s.resumed_from);
      nlohmann::ordered_json summary = {{"iterations", done},
                                        {"resumed_from", s.resumed_from},
                                        {"eval_before", s.eval_before},
                                        {"eval_after", s.eval_after},
                                        {"final_checkpoint", s.final_checkpoint}};
      std::printf("trainer: job %s done at iteration %lld, final checkpoint %s\n", job_id_.c_str(), (long long)done,
                  s.final_checkpoint.c_str());
      std::fflush(stdout);
      push({"done", done, summary.dump(), s.final_checkpoint, ""});
    });
    return Status::Ok();
  }

  // The started event, after re-reporting the steps between the last one the controller holds
  // (`recorded`) and the one the run resumes from, from the run's metrics.jsonl: a checkpoint
  // registered while the controller was down, then a predecessor that died with its reports
  // queued, would otherwise leave a gap in the job's metrics.
  std::function<void(int64_t, const std::string&, int64_t)> started_reporter(int64_t recorded, std::string run_dir) {
    return [this, recorded, run_dir = std::move(run_dir)](int64_t step, const std::string& ckpt, int64_t total) {
      if (step > recorded) {
        auto lines = metrics_lines_read(run_dir + "/metrics.jsonl", recorded, step);
        const size_t n = lines.ok() ? lines.value().size() : 0;
        if (n != static_cast<size_t>(step - recorded))
          std::fprintf(stderr, "trainer: warning: metrics.jsonl has %zu of the %lld steps %lld..%lld to re-report\n", n,
                       (long long)(step - recorded), (long long)recorded + 1, (long long)step);
        else if (n > 0)
          std::printf("trainer: re-reporting steps %lld..%lld from metrics.jsonl\n", (long long)recorded + 1,
                      (long long)step);
        if (lines.ok())
          for (auto& [s, line] : lines.value()) push({"step", s, line, "", ""});
      }
      push({"started", step, nlohmann::json({{"steps", total}}).dump(), ckpt, ""});
    };
  }

  void gang_join_failed(int64_t rank, const Status& st) {
    std::fprintf(stderr, "trainer: job %s rank %lld: %s\n", job_id_.c_str(), (long long)rank, st.to_string().c_str());
    push({"failed", 0, "", "", "rank " + std::to_string(rank) + ": " + st.to_string()});
  }

  std::vector<ActorEvent> take_events() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<ActorEvent> out;
    out.swap(events_);
    return out;
  }

 private:
  void push(ActorEvent e) {
    std::lock_guard<std::mutex> lock(mu_);
    if (e.event == "done" || e.event == "failed") terminal_ = e;
    events_.push_back(std::move(e));
  }

  std::mutex mu_;
  std::vector<ActorEvent> events_;  // guarded by mu_
  std::optional<ActorEvent> terminal_;  // guarded by mu_: the run's end, once it has ended
  std::string job_id_;              // set before the thread starts
  std::thread thread_;
};

}  // namespace

ActorClass trainer_actor_class() { return ActorClassBuilder<Trainer>("trainer").method("start", &Trainer::start).build(); }

}  // namespace mariana::workers
