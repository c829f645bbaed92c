// The tiny model's forward (logits, MTP logits, losses) and backward (every gradient tensor) are
// bitwise the same on 1, 2 and 3 threads: every reduction's order is fixed by the problem, never
// by the thread count. The batch (5 rows of 200 tokens) is large enough that every kernel takes
// its OpenMP path and OpenBLAS threads its products, and T = 1000 is a reduction length OpenBLAS
// would block differently on one thread than on several.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "model_test_util.h"

namespace mariana {
namespace {

struct Outputs {
  std::vector<float> logits, mtp_logits, grads;
  double loss = 0, loss_main = 0, loss_mtp = 0, loss_balance = 0;
};

Outputs forward_backward(int threads) {
  cpu::set_num_threads(threads);
  Model<float> m(testing::load_config("configs/models/tiny.json"));
  testing::randomise(m, 11);
  const int64_t B = 5, S = 200, V = m.config().vocab_size;
  const Batch batch = testing::random_batch(B, S, V, 12);
  ForwardResult res;
  const Status st = m.forward(batch, LossWeights{}, &res);
  EXPECT_TRUE(st.ok()) << st.to_string();
  m.zero_grads();
  m.backward();
  Outputs o;
  const int64_t T = m.tokens();
  o.logits.assign(m.logits(), m.logits() + T * V);
  o.mtp_logits.assign(m.mtp_logits(0), m.mtp_logits(0) + T * V);
  o.grads.assign(m.grads(), m.grads() + m.table().arena_size());
  o.loss = res.loss;
  o.loss_main = res.loss_main;
  o.loss_mtp = res.loss_mtp;
  o.loss_balance = res.loss_balance;
  cpu::set_num_threads(0);
  return o;
}

// Number of entries of b that differ bitwise from a (NaN patterns included).
int64_t bitwise_diffs(const float* a, const float* b, int64_t n) {
  int64_t d = 0;
  for (int64_t i = 0; i < n; ++i) d += std::memcmp(a + i, b + i, sizeof(float)) != 0;
  return d;
}

TEST(ThreadInvariance, ForwardAndBackwardBitwiseOnOneTwoThreeThreads) {
  const Outputs one = forward_backward(1);
  const ParamTable table(testing::load_config("configs/models/tiny.json"));
  for (int threads : {2, 3}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    const Outputs o = forward_backward(threads);
    EXPECT_EQ(bitwise_diffs(one.logits.data(), o.logits.data(), int64_t(one.logits.size())), 0) << "logits";
    EXPECT_EQ(bitwise_diffs(one.mtp_logits.data(), o.mtp_logits.data(), int64_t(one.mtp_logits.size())), 0)
        << "MTP logits";
    EXPECT_EQ(one.loss, o.loss);
    EXPECT_EQ(one.loss_main, o.loss_main);
    EXPECT_EQ(one.loss_mtp, o.loss_mtp);
    EXPECT_EQ(one.loss_balance, o.loss_balance);
    for (const ParamSpec& s : table.specs()) {
      EXPECT_EQ(bitwise_diffs(one.grads.data() + s.offset, o.grads.data() + s.offset, s.numel()), 0)
          << "gradient of " << s.name;
    }
  }
}

}  // namespace
}  // namespace mariana
