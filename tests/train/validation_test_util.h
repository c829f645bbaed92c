// Test helper for the validation loss (eval.every): the loss it reports, computed from scratch
// from a checkpoint on the batches a test draws.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "model/checkpoint.h"

namespace mariana::testing {

// The mean next-token cross-entropy of checkpoint `ckpt` over the target tokens of `batches`
// batches drawn by `next`: the validation loss's definition, computed from scratch.
inline double checkpoint_loss(const std::string& ckpt, int64_t batches, const std::function<Status(Batch*)>& next) {
  auto ck = checkpoint_load<float>(ckpt);
  EXPECT_TRUE(ck.ok()) << ck.status().to_string();
  if (!ck.ok()) return NAN;
  LossWeights w;
  w.mtp_weight = 0;
  w.balance_alpha = 0;
  double sum = 0;
  int64_t tokens = 0;
  for (int64_t b = 0; b < batches; ++b) {
    Batch batch;
    EXPECT_TRUE(next(&batch).ok());
    ForwardResult res;
    EXPECT_TRUE(ck->model.forward(batch, w, &res).ok());
    sum += res.loss_main * static_cast<double>(res.target_tokens);
    tokens += res.target_tokens;
  }
  return sum / static_cast<double>(tokens);
}

}  // namespace mariana::testing
