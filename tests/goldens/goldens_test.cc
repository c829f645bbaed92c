// Bitwise goldens of the model and the trainer: the logits, each loss part and every parameter
// gradient of one forward/backward (tiny and small), and the losses and weights of 20 training
// steps of train_run (tiny), checked against tests/goldens/data/*.golden. Refactors of model/ and
// train/ that must not change a bit (issue 13: re-partitioning the model and the step) run these.
//
// A golden line is "<name> <xxh64 of the raw bytes> n=<elements> <first values>"; the values are
// there to diagnose a mismatch, only the hash is compared. Floating-point results depend on the
// OpenBLAS kernels, so ctest runs this binary with OPENBLAS_CORETYPE=Haswell and the tests refuse
// to run under any other core type; everything runs on one thread (OpenBLAS's Haswell sgemm rounds
// differently on one thread than on two). To record the goldens again (after a change that is meant to
// alter results): MARIANA_WRITE_GOLDENS=1 OPENBLAS_CORETYPE=Haswell build/tests/test_goldens
#include <cblas.h>
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "tests/model/model_test_util.h"
#include "tests/train/trainer_test_util.h"
#include "train/trainer.h"

namespace mariana {
namespace {

constexpr const char* kCoreType = "Haswell";
constexpr int kSampleValues = 3;

bool write_mode() {
  const char* v = std::getenv("MARIANA_WRITE_GOLDENS");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// The OpenBLAS kernels decide the last bits of every matmul; goldens hold for one core type.
::testing::AssertionResult kernels_pinned() {
  const char* core = openblas_get_corename();
  if (core != nullptr && std::strcmp(core, kCoreType) == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "OpenBLAS runs its '" << (core ? core : "?") << "' kernels; the goldens "
                                       << "hold for '" << kCoreType << "': run with OPENBLAS_CORETYPE=" << kCoreType
                                       << " (ctest sets it)";
}

// Records named tensors and scalars as golden lines, then checks them against a file (or writes it).
class Goldens {
 public:
  template <typename T>
  void tensor(const std::string& name, const T* p, int64_t n) {
    char hash[17];
    std::snprintf(hash, sizeof hash, "%016" PRIx64, XXH64(p, static_cast<size_t>(n) * sizeof(T), 0));
    std::ostringstream line;
    line << name << ' ' << hash << " n=" << n;
    for (int64_t i = 0; i < std::min<int64_t>(n, kSampleValues); ++i) {
      char v[40];
      std::snprintf(v, sizeof v, sizeof(T) == 8 ? " %.17g" : " %.9g", static_cast<double>(p[i]));
      line << v;
    }
    lines_.push_back(line.str());
  }
  void scalar(const std::string& name, double v) { tensor(name, &v, 1); }

  // Writes tests/goldens/data/<file> in write mode; else every line must equal the golden's hash.
  void check(const std::string& file) const {
    const std::string path = testing::source_path("tests/goldens/data/" + file);
    std::string text;
    for (const std::string& l : lines_) text += l + "\n";
    if (write_mode()) {
      const Status s = write_file_atomic(path, text);
      ASSERT_TRUE(s.ok()) << s.to_string();
      std::printf("wrote %s (%zu lines)\n", path.c_str(), lines_.size());
      return;
    }
    auto golden = read_file(path);
    ASSERT_TRUE(golden.ok()) << path << ": no golden file (" << golden.status().to_string()
                             << "); record it with MARIANA_WRITE_GOLDENS=1";
    std::vector<std::string> want;
    std::istringstream in(golden.value());
    for (std::string l; std::getline(in, l);) want.push_back(l);
    ASSERT_EQ(want.size(), lines_.size()) << path << ": the golden has " << want.size() << " lines, this run "
                                          << lines_.size();
    int differ = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      // Name and hash: the first two words.
      const size_t end_w = want[i].find(" n="), end_g = lines_[i].find(" n=");
      if (want[i].substr(0, end_w) == lines_[i].substr(0, end_g)) continue;
      if (++differ <= 10)
        ADD_FAILURE() << path << ":" << i + 1 << ": differs from the golden\n  golden: " << want[i]
                      << "\n  now:    " << lines_[i];
    }
    EXPECT_EQ(differ, 0) << path << ": " << differ << " of " << want.size() << " lines differ";
  }

 private:
  std::vector<std::string> lines_;
};

void record_losses(Goldens& g, const std::string& prefix, const ForwardResult& r) {
  g.scalar(prefix + "loss", r.loss);
  g.scalar(prefix + "loss_main", r.loss_main);
  g.scalar(prefix + "loss_mtp", r.loss_mtp);
  for (size_t k = 0; k < r.loss_mtp_k.size(); ++k) g.scalar(prefix + "loss_mtp." + std::to_string(k), r.loss_mtp_k[k]);
  g.scalar(prefix + "loss_balance", r.loss_balance);
  for (size_t i = 0; i < r.expert_counts.size(); ++i)
    g.tensor(prefix + "expert_counts." + std::to_string(r.moe_layers[i]), r.expert_counts[i].data(),
             static_cast<int64_t>(r.expert_counts[i].size()));
}

// One forward/backward of a randomised model on a random batch of B rows of S tokens.
void forward_backward_goldens(const std::string& config, int64_t B, int64_t S, const std::string& file) {
  ASSERT_TRUE(kernels_pinned());
  cpu::set_num_threads(1);
  Model<float> m(testing::load_config("configs/models/" + config + ".json"));
  testing::randomise(m, /*seed=*/13);
  const int64_t V = m.config().vocab_size;
  const Batch batch = testing::random_batch(B, S, V, /*seed=*/14);
  ForwardResult r;
  ASSERT_TRUE(m.forward(batch, LossWeights{}, &r).ok());
  m.zero_grads();
  m.backward();
  Goldens g;
  const int64_t T = m.tokens();
  g.tensor("logits", m.logits(), T * V);
  for (int64_t k = 0; k < m.config().num_nextn_predict_layers; ++k)
    g.tensor("mtp_logits." + std::to_string(k), m.mtp_logits(k), T * V);
  g.tensor("final_hidden", m.final_hidden(), T * m.config().hidden_size);
  record_losses(g, "", r);
  for (const ParamSpec& s : m.table().specs()) g.tensor("grad:" + s.name, m.grads() + s.offset, s.numel());
  g.check(file);
}

TEST(Goldens, TinyForwardBackward) { forward_backward_goldens("tiny", 4, 32, "tiny_forward_backward.golden"); }

TEST(Goldens, SmallForwardBackward) { forward_backward_goldens("small", 1, 64, "small_forward_backward.golden"); }

class GoldensTrain : public testing::TrainRunTest {};

// 20 steps of train_run on tiny (train.threads = 1): every step's losses and gradient norm, then
// every final weight.
TEST_F(GoldensTrain, TinyTwentySteps) {
  ASSERT_TRUE(kernels_pinned());
  Goldens g;
  TrainOptions o;
  o.spec = job({"train.steps=20", "train.checkpoint_every=20"});
  o.run_dir = p("run");
  o.quiet = true;
  o.on_step = [&](const StepMetrics& m) {
    const std::string s = "step." + std::to_string(m.step) + ".";
    g.scalar(s + "loss", m.loss);
    g.scalar(s + "loss_main", m.loss_main);
    g.scalar(s + "loss_mtp", m.loss_mtp);
    g.scalar(s + "loss_balance", m.loss_balance);
    g.scalar(s + "grad_norm", m.grad_norm);
  };
  auto r = train_run(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  auto ck = checkpoint_load<float>(r.value().final_checkpoint);
  ASSERT_TRUE(ck.ok()) << ck.status().to_string();
  const Model<float>& m = ck.value().model;
  for (const ParamSpec& s : m.table().specs()) g.tensor("weight:" + s.name, m.params() + s.offset, s.numel());
  g.check("tiny_train_20_steps.golden");
}

}  // namespace
}  // namespace mariana
