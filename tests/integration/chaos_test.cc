// The chaos test: one cluster training job through every fault the control plane promises to
// survive, in a seeded order at seeded steps — kill -9 of the trainer's worker, of its agent (down
// longer than the node timeout, then back), of the controller, and "controller down, then the
// worker killed" (the registered checkpoint pruned meanwhile). The job must succeed with final
// weights byte-identical to an uninterrupted `mariana train` run, every step's metrics on the
// controller exactly once and equal to that run's, and exactly one restart per fault that killed
// the trainer (job.max_restarts = 3 leaves no spare: a burned extra restart fails the job).
// MARIANA_CHAOS_SEED=N replays one order.
#include <gtest/gtest.h>

#include <signal.h>

#include <algorithm>
#include <future>
#include <random>
#include <thread>

#include "tests/integration/train_job_util.h"

namespace mariana::integration {
namespace {

constexpr int kSteps = 160;  // fast steps: room for four faults and their recoveries
constexpr int kEvery = 4;

std::string sets() { return pretrain_sets(kSteps, kEvery, "--set job.max_restarts=3 --set job.restart_window_s=600"); }

enum class Fault { kWorker, kAgent, kController, kControllerThenWorker };
const char* fault_name(Fault f) {
  switch (f) {
    case Fault::kWorker: return "kill -9 worker";
    case Fault::kAgent: return "kill -9 agent (down 2.5 s)";
    case Fault::kController: return "kill -9 controller";
    case Fault::kControllerThenWorker: return "controller down, then kill -9 worker";
  }
  return "?";
}

TEST(Chaos, EveryFaultInOneTrainingJobEndsBitForBitWithEveryStepOnce) {
  const char* env = std::getenv("MARIANA_CHAOS_SEED");
  const uint32_t seed = env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : std::random_device{}();
  std::fprintf(stderr, "chaos seed %u (MARIANA_CHAOS_SEED=%u replays this order)\n", seed, seed);
  std::mt19937 rng(seed);
  std::vector<Fault> faults = {Fault::kWorker, Fault::kAgent, Fault::kController, Fault::kControllerThenWorker};
  std::shuffle(faults.begin(), faults.end(), rng);

  Cluster c;
  std::future<CommandResult> ref;
  const std::string ref_dir = start_reference_run(c, sets(), &ref, 300);
  c.start_controller();
  c.start_agent("n1", 2);
  c.start_agent("n2", 2);
  ASSERT_TRUE(c.wait_nodes_alive(2));
  const std::string job = c.submit(pretrain_job_file(), sets());
  const std::string run_dir = c.state_dir() + "/runs/" + job;

  // The trainer's ALIVE incarnation: {pid, node, actor id}.
  struct Trainer {
    int pid = 0;
    std::string node, actor;
    uint32_t incarnation = 0;
  };
  auto trainer = [&]() -> Trainer {
    for (auto& a : c.query("actors list"))
      if (a.value("job_id", "") == job && a.value("state", "") == "ALIVE")
        return {a.value("pid", 0), a.value("node_id", ""), a.value("id", ""), a.value("incarnation", 0u)};
    return {};
  };
  // Waits until the job is RUNNING past `step` with an ALIVE trainer.
  auto running_past = [&](int step, Trainer* t) {
    return Cluster::wait_for(
        [&] {
          auto j = c.job(job);
          if (!j.is_object() || j.value("state", "") != "RUNNING" || j.value("step", 0) < step) return false;
          *t = trainer();
          return t->pid > 0;
        },
        120);
  };

  int killed_trainer = 0;
  Trainer t;
  int at = 0;
  for (Fault f : faults) {
    at += std::uniform_int_distribution<int>(2, 6)(rng);
    ASSERT_TRUE(running_past(at, &t)) << "the job did not reach step " << at << " before " << fault_name(f) << ": "
                                      << c.job(job).dump();
    at = c.job(job).value("step", at);
    ASSERT_LT(at, kSteps - 2 * kEvery) << "the job is too close to its end for " << fault_name(f);
    std::fprintf(stderr, "step %d: %s (trainer %s incarnation %u pid %d on %s)\n", at, fault_name(f), t.actor.c_str(),
                 t.incarnation, t.pid, t.node.c_str());
    switch (f) {
      case Fault::kWorker:
        ASSERT_EQ(::kill(t.pid, SIGKILL), 0);
        ++killed_trainer;
        break;
      case Fault::kAgent:
        c.kill9_agent(t.node);  // its workers die with it
        std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // node timeout: 1.5 s
        c.start_agent(t.node, 2);
        ++killed_trainer;
        break;
      case Fault::kController:
        c.kill9_controller();
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        c.start_controller();
        break;
      case Fault::kControllerThenWorker: {
        const int registered = c.job(job).value("last_checkpoint_step", 0);
        c.kill9_controller();
        ASSERT_TRUE(Cluster::wait_for([&] { return newest_checkpoint_on_disk(run_dir) >= registered + 2 * kEvery; }, 120));
        ASSERT_LT(newest_checkpoint_on_disk(run_dir), kSteps) << "the job ended while the controller was down";
        ASSERT_EQ(::kill(t.pid, SIGKILL), 0);
        ++killed_trainer;
        std::fprintf(stderr, "  registered checkpoint %d pruned; worker killed with step-%d on disk\n", registered,
                     newest_checkpoint_on_disk(run_dir));
        c.start_controller();
        break;
      }
    }
  }

  ASSERT_EQ(c.wait_end(job, 240), "SUCCEEDED") << c.job(job).dump();
  auto r = ref.get();
  ASSERT_EQ(r.exit_code, 0) << r.out;

  auto a = c.query("actors show " + t.actor);
  ASSERT_TRUE(a.is_object());
  EXPECT_EQ(a.value("num_restarts", 0), killed_trainer) << "one restart per fault that killed the trainer: " << a.dump();

  expect_job_equals_reference(c, job, ref_dir, kSteps);
}

}  // namespace
}  // namespace mariana::integration
