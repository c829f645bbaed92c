// `mariana run JOB.toml [--set key=value]... [--state-dir DIR]`: the embedded mode. One process
// hosts the real controller (RocksDB under DIR, default ./.mariana, and a ZeroMQ ROUTER on a
// loopback port) and the real node agent on threads of their own; the agent starts the job's
// workers as processes, exactly as on a cluster. It submits the job, shows live progress (step,
// loss, tokens/s), prints a summary and exits with the job's status: 0 SUCCEEDED, 1 FAILED or
// STOPPED (Ctrl-C stops the job), 2 a bad job file. When the state dir holds unfinished jobs of an
// earlier run (a `run` that was killed), it says so and needs a choice: --resume follows the
// earlier job to its end instead of submitting again, --fresh stops the earlier jobs and submits;
// without either it exits 2 naming them and both flags.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "cli/cluster_client.h"
#include "controller/server.h"
#include "core/file_util.h"
#include "workers/actor.h"
#include "workers/agent.h"

namespace mariana::cli {

namespace {

std::atomic<bool> g_interrupted{false};
void on_interrupt(int) { g_interrupted.store(true); }

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// The controller and the agent on their own threads; stop() ends both (the agent kills its workers).
class Embedded {
 public:
  ~Embedded() { stop(); }

  // cpus: what the agent offers, at least the machine's cores (a parallel job's gang needs one per rank).
  Status start(const std::string& state_dir, int64_t heartbeat_ms, int64_t cpus) {
    controller::ServerOptions so;
    so.listen = "tcp://127.0.0.1:*";
    so.state_dir = state_dir;
    so.metrics_port = 0;
    so.controller.heartbeat_ms = heartbeat_ms;
    so.on_ready = [this](const std::string& address) {
      std::lock_guard<std::mutex> lock(mu_);
      address_ = address;
      cv_.notify_all();
    };
    controller_ = std::thread([this, so] {
      Status st = controller::controller_run(so, &controller_stop_);
      std::lock_guard<std::mutex> lock(mu_);
      controller_status_ = st;
      controller_done_ = true;
      cv_.notify_all();
    });
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return !address_.empty() || controller_done_; }))
        return Status(StatusCode::kDeadlineExceeded, "run: the controller did not start within 60 s");
      if (address_.empty())
        return controller_status_.ok() ? Internal("run: the controller stopped at once") : controller_status_;
    }
    MARIANA_ASSIGN_OR_RETURN(auto token, read_file(state_dir + "/cluster.token"));
    workers::AgentOptions ao;
    ao.controller = address_;
    ao.token = trim(token);
    ao.token_file = state_dir + "/cluster.token";
    ao.node_id = "local";
    ao.resources["CPU"] = static_cast<double>(std::max<int64_t>(cpus, std::max(1u, std::thread::hardware_concurrency())));
    ao.resources["GPU"] = 0;
    ao.actor_classes = workers::builtin_actor_registry().names();
    ao.log_dir = state_dir + "/logs";
    ao.heartbeat_ms = heartbeat_ms;
    agent_ = std::thread([this, ao] {
      Status st = workers::agent_run(ao, &launcher_, &agent_stop_);
      if (!st.ok()) std::fprintf(stderr, "mariana run: agent: %s\n", st.to_string().c_str());
    });
    return Status::Ok();
  }

  void stop() {
    // The agent first: it deregisters from the controller as it stops.
    agent_stop_.store(true);
    if (agent_.joinable()) agent_.join();
    controller_stop_.store(true);
    if (controller_.joinable()) controller_.join();
  }

  const std::string& address() const { return address_; }

 private:
  std::atomic<bool> agent_stop_{false}, controller_stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::string address_;
  Status controller_status_;
  bool controller_done_ = false;
  workers::PosixLauncher launcher_;
  std::thread controller_, agent_;
};

std::string progress_line(const nlohmann::json& j, double elapsed_s) {
  const auto& m = j.contains("last_metrics") && j["last_metrics"].is_object() ? j["last_metrics"] : nlohmann::json::object();
  const int64_t step = j.value("step", int64_t{0}), total = j.value("total_steps", int64_t{0});
  char buf[512];
  const int width = 24;
  const int filled = total > 0 ? static_cast<int>(width * std::min(step, total) / total) : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  int n = std::snprintf(buf, sizeof buf, "[%s] %s step %lld/%lld", bar.c_str(), j.value("state", "").c_str(),
                        (long long)step, (long long)total);
  if (m.contains("loss") && m["loss"].is_number())
    n += std::snprintf(buf + n, sizeof buf - n, "  loss %.4f", m["loss"].get<double>());
  if (m.contains("tokens_per_s") && m["tokens_per_s"].is_number())
    n += std::snprintf(buf + n, sizeof buf - n, "  %.0f tokens/s", m["tokens_per_s"].get<double>());
  if (const std::string eta = format_eta(j); !eta.empty()) n += std::snprintf(buf + n, sizeof buf - n, "  %s", eta.c_str());
  for (const auto& st : j.value("stages", nlohmann::json::array()))  // a pipeline: its running stages
    if (st.value("state", "") == "RUNNING" && n < static_cast<int>(sizeof buf) - 1)
      n += std::snprintf(buf + n, sizeof buf - n, "  %s %lld/%lld", st.value("name", "").c_str(),
                         (long long)st.value("step", int64_t{0}), (long long)st.value("total_steps", int64_t{0}));
  if (n < static_cast<int>(sizeof buf) - 1) std::snprintf(buf + n, sizeof buf - n, "  %.1f s", elapsed_s);
  return buf;
}

// What the progress line shows that changes with progress: the job's step, or for a pipeline the
// sum of its stages' steps (so that the line follows the running stages).
int64_t progress_of(const nlohmann::json& j) {
  if (!j.contains("stages")) return j.value("step", int64_t{0});
  int64_t sum = 0;
  for (const auto& st : j["stages"]) sum += st.value("step", int64_t{0});
  return sum;
}

}  // namespace

int run_main(int argc, char** argv) {
  cxxopts::Options o("mariana run", "Run a job on an embedded controller and agent (loopback), showing progress");
  o.add_options()("job", "job file (TOML): a training job or an actor job", cxxopts::value<std::string>())(
      "set", kSetHelp, cxxopts::value<std::vector<std::string>>())(
      "state-dir", "controller state, run directories and worker logs",
      cxxopts::value<std::string>()->default_value(".mariana"))(
      "heartbeat-ms", "agent and worker heartbeat interval", cxxopts::value<int64_t>()->default_value("500"))(
      "resume", "the state dir holds an unfinished job of an earlier run: follow it to its end (no new job)")(
      "fresh", "the state dir holds unfinished jobs of an earlier run: stop them, then submit this job")(
      "h,help", "help");
  o.parse_positional({"job"});
  o.positional_help("JOB.toml");
  auto taken = take_set_flags(argc, argv);
  if (!taken.ok()) return report(taken.status());
  const std::vector<std::string> sets = taken.value();
  cxxopts::ParseResult r;
  try {
    r = o.parse(argc, argv);
  } catch (const std::exception& e) {
    return report(InvalidArgument(std::string("run: ") + e.what()));
  }
  if (r.count("help")) return std::printf("%s\n", o.help().c_str()), kExitOk;
  if (!r.count("job")) return report(InvalidArgument("run: expected a job file (JOB.toml)"));
  // Validate before starting anything: a bad file is exit 2 with nothing written.
  auto job = job_submission_prepare(r["job"].as<std::string>(), sets);
  if (!job.ok()) return report(job.status());
  const std::string state_dir = r["state-dir"].as<std::string>();

  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);

  const auto t0 = std::chrono::steady_clock::now();
  Embedded cluster;
  Status st = cluster.start(state_dir, r["heartbeat-ms"].as<int64_t>(), job.value().ranks);
  if (!st.ok()) return report(st);
  ClientTarget target;
  target.address = cluster.address();
  target.token_file = state_dir + "/cluster.token";
  auto tok = read_file(target.token_file);
  if (!tok.ok()) return report(tok.status());
  target.token = trim(tok.value());
  ClusterClient client(target);
  // The agent registers within a heartbeat; submit checks the job against the registered nodes.
  for (int i = 0; i < 100; ++i) {
    auto s = client.query("status", "", 5000);
    if (s.ok() && s.value()["nodes"].value("ALIVE", 0) > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Jobs an earlier `run` on this state dir left unfinished: the controller resumed them on start.
  std::vector<std::string> unfinished;
  if (auto jobs = client.query("jobs", "", 10000); jobs.ok()) {
    for (const auto& j : jobs.value()) {
      const std::string st = j.value("state", "");
      // A pipeline's stages go with it: only top-level jobs count.
      if (!job_doc_terminal(st) && j.value("parent", "").empty()) unfinished.push_back(j.value("id", ""));
    }
  }
  std::string listed;
  for (const std::string& id : unfinished) listed += (listed.empty() ? "" : ", ") + id;
  if (r.count("resume") && r.count("fresh")) return report(InvalidArgument("run: --resume and --fresh exclude each other"));
  if (!unfinished.empty() && !r.count("resume") && !r.count("fresh"))
    return report(FailedPrecondition("run: " + state_dir + " holds unfinished job(s) of an earlier run: " + listed +
                                     "; pass --resume to continue it, or --fresh to stop it and start this job"));
  std::string job_id;
  if (!unfinished.empty() && r.count("resume")) {
    job_id = unfinished.front();
    std::fprintf(stderr, "mariana run: resuming %s, unfinished in %s (no new job submitted)\n", job_id.c_str(),
                 state_dir.c_str());
  } else {
    for (const std::string& id : unfinished) {
      std::fprintf(stderr, "mariana run: --fresh: stopping %s, unfinished in %s\n", id.c_str(), state_dir.c_str());
      (void)client.rpc().call([&](proto::Envelope::Payload::Builder p) { p.initStopJob().setJobId(id); }, 5000);
    }
    auto submitted = job_submit(client.rpc(), job.value(), 10000);
    if (!submitted.ok()) return report(submitted.status());
    job_id = submitted.value();
    std::fprintf(stderr, "mariana run: %s submitted (state in %s, controller %s)\n", job_id.c_str(), state_dir.c_str(),
                 cluster.address().c_str());
  }

  const bool tty = ::isatty(STDOUT_FILENO);
  int64_t last_step = -1;
  std::string last_state;
  nlohmann::json doc;
  bool stop_sent = false;
  double tokens_per_s_sum = 0;
  int64_t tokens_per_s_n = 0;
  for (;;) {
    if (g_interrupted.load() && !stop_sent) {
      stop_sent = true;
      std::fprintf(stderr, "\nmariana run: interrupted; stopping %s\n", job_id.c_str());
      (void)client.rpc().call([&](proto::Envelope::Payload::Builder p) { p.initStopJob().setJobId(job_id); }, 5000);
    }
    auto q = client.query("job", job_id, 10000);
    if (!q.ok()) return report(q.status());
    doc = q.value();
    const std::string state = doc.value("state", "");
    const int64_t step = progress_of(doc);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (step != last_step || state != last_state) {
      if (step != last_step && doc["last_metrics"].is_object() && doc["last_metrics"].contains("tokens_per_s")) {
        tokens_per_s_sum += doc["last_metrics"].value("tokens_per_s", 0.0);
        ++tokens_per_s_n;
      }
      last_step = step;
      last_state = state;
      if (tty) std::printf("\r%s\x1b[K", progress_line(doc, elapsed).c_str());
      else std::printf("%s\n", progress_line(doc, elapsed).c_str());
      std::fflush(stdout);
    }
    if (job_doc_terminal(state)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (tty) std::printf("\n");
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string state = doc.value("state", "");
  std::printf("%s %s in %.1f s: %lld/%lld steps", job_id.c_str(), state.c_str(), elapsed,
              (long long)doc.value("step", int64_t{0}), (long long)doc.value("total_steps", int64_t{0}));
  const auto& m = doc["last_metrics"];
  if (m.is_object() && m.contains("loss") && m["loss"].is_number()) std::printf(", loss %.4f", m["loss"].get<double>());
  if (tokens_per_s_n > 0) std::printf(", %.0f tokens/s", tokens_per_s_sum / static_cast<double>(tokens_per_s_n));
  std::printf("\n");
  if (!doc.value("message", "").empty()) std::printf("  %s\n", doc.value("message", "").c_str());
  if (!doc.value("run_dir", "").empty()) std::printf("  run dir %s\n", doc.value("run_dir", "").c_str());
  if (doc.contains("stages"))  // a pipeline: each stage's end and where its run is
    for (const auto& st : doc["stages"])
      std::printf("  stage %-12s %-10s %-8s %s\n", st.value("name", "").c_str(), st.value("state", "").c_str(),
                  st.value("job_id", "").c_str(), st.value("run_dir", "").c_str());
  std::printf("  worker logs in %s/logs/\n", state_dir.c_str());
  std::fflush(stdout);
  cluster.stop();
  return state == "SUCCEEDED" ? kExitOk : kExitFailure;
}

}  // namespace mariana::cli
