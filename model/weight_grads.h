// The B/W split of a backward pass (zero-bubble and DualPipe pipeline schedules): B computes the
// gradients a stage must send upstream now; W, run later to fill a bubble, computes the linear
// layers' weight gradients. A WeightGradQueue records each linear layer's weight gradient that a
// backward pass leaves for W: dW += dyᵀ·x with copies of dy and x (the scratch that held them is
// reused before W runs). run() computes them in the recorded order, so B then W accumulates
// exactly what the fused backward would, bit for bit. Only the GEMM weight gradients wait (the
// projections, the experts', the heads', the MoE router's); the norms' and the embedding's are
// computed in B (they are cheap).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/ops.h"

namespace mariana {

template <typename F>
class WeightGradQueue {
 public:
  // dx += dy·Wᵀ now (dx may be null); dW += dyᵀ·x recorded for run().
  void linear_backward(F* dx, F* dW, const F* dy, const F* x, const F* W, int64_t T, int64_t in, int64_t out) {
    if (dx != nullptr) cpu::linear_backward(dx, static_cast<F*>(nullptr), dy, x, W, T, in, out);
    if (dW == nullptr || T == 0) return;
    Item it{dW, store_used_, store_used_ + T * out, T, in, out};
    grow(store_used_ + T * (out + in));
    std::memcpy(store_.data() + it.dy, dy, static_cast<size_t>(T * out) * sizeof(F));
    std::memcpy(store_.data() + it.x, x, static_cast<size_t>(T * in) * sizeof(F));
    store_used_ += T * (out + in);
    items_.push_back(it);
  }
  // Every recorded weight gradient, in order; then the queue is empty (its storage is kept, so a
  // schedule's steady state allocates nothing).
  void run() {
    for (const Item& it : items_)
      cpu::linear_backward(static_cast<F*>(nullptr), it.dW, store_.data() + it.dy, store_.data() + it.x,
                           static_cast<const F*>(nullptr), it.T, it.in, it.out);
    items_.clear();
    store_used_ = 0;
  }
  int64_t pending() const { return static_cast<int64_t>(items_.size()); }
  int64_t bytes_held() const { return store_used_ * static_cast<int64_t>(sizeof(F)); }

 private:
  struct Item {
    F* dW;
    int64_t dy, x;  // offsets into store_
    int64_t T, in, out;
  };
  void grow(int64_t need) {
    if (need > static_cast<int64_t>(store_.size())) store_.resize(static_cast<size_t>(need + need / 2));
  }
  std::vector<Item> items_;
  std::vector<F> store_;
  int64_t store_used_ = 0;
};

// cpu::linear_backward, or its weight gradient deferred to `defer` when one is given.
template <typename F>
inline void linear_backward_or_defer(WeightGradQueue<F>* defer, F* dx, F* dW, const F* dy, const F* x, const F* W,
                                     int64_t T, int64_t in, int64_t out) {
  if (defer != nullptr) {
    defer->linear_backward(dx, dW, dy, x, W, T, in, out);
  } else {
    cpu::linear_backward(dx, dW, dy, x, W, T, in, out);
  }
}

}  // namespace mariana
