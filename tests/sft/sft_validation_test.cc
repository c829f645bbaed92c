// The sft phase's validation loss (eval.every): the held-out conversations are a split of the
// data, and val_loss is the checkpoint's loss on their first batches.
#include <gtest/gtest.h>

#include <sstream>

#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "sft/sft_data.h"
#include "tests/sft/sft_test_util.h"
#include "tests/train/validation_test_util.h"

namespace mariana {
namespace {

class SftValidationTest : public testing::SftRunTest {};

TEST_F(SftValidationTest, SftValLossIsTheCheckpointsLossOnHeldOutConversations) {
  const JobSpec spec = job("sft", "arithmetic-chat",
                           {"data.documents=60", "train.seq_len=96", "train.steps=4", "train.checkpoint_every=2",
                            "eval.every=2", "eval.batches=2", "eval.held_out=0.2"});
  TrainOptions o;
  o.spec = spec;
  o.run_dir = p("r");
  o.quiet = true;
  auto r = sft_train_run(o);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const Tokenizer tok = Tokenizer::load(p("r/tokenizer.json")).value();
  // The split: every conversation on exactly one side, the held-out side not empty.
  auto train = sft_batch_source(spec, tok, p("r"), DataSplit::kTrain);
  auto held = sft_batch_source(spec, tok, p("r"), DataSplit::kHeldOut);
  ASSERT_TRUE(train.ok() && held.ok());
  const int64_t n_train = static_cast<SftLoader*>(train->get())->num_samples();
  const int64_t n_held = static_cast<SftLoader*>(held->get())->num_samples();
  EXPECT_GT(n_held, 0);
  EXPECT_EQ(n_train + n_held, 60);
  std::vector<nlohmann::json> lines;
  std::istringstream in(read_file(p("r/metrics.jsonl")).value());
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(lines.size(), 4u);
  for (int64_t step : {2, 4}) {
    ASSERT_TRUE(lines[step - 1].contains("val_loss"));
    auto src = sft_batch_source(spec, tok, p("r"), DataSplit::kHeldOut);
    ASSERT_TRUE(src.ok());
    char name[32];
    std::snprintf(name, sizeof(name), "r/checkpoints/step-%08lld", (long long)step);
    const double expect = testing::checkpoint_loss(p(name), 2, [&](Batch* b) { return (*src)->next(spec.rows, b); });
    EXPECT_NEAR(lines[step - 1]["val_loss"].get<double>(), expect, 1e-9 * expect) << "step " << step;
  }
  EXPECT_FALSE(lines[0].contains("val_loss"));
}

}  // namespace
}  // namespace mariana
