// Helpers for the model tests: configs, randomised models and batches, finite differences.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "core/philox.h"
#include "model/config.h"
#include "model/model.h"

namespace mariana::testing {

inline std::string source_path(const std::string& rel) { return std::string(MARIANA_SOURCE_DIR) + "/" + rel; }

inline ModelConfig load_config(const std::string& rel) {
  auto c = model_config_load(source_path(rel));
  if (!c.ok()) {
    std::fprintf(stderr, "%s\n", c.status().to_string().c_str());
    std::abort();
  }
  return c.value();
}

inline std::vector<double> normals(int64_t n, uint64_t seed, uint64_t stream, double std = 1.0) {
  std::vector<double> v(static_cast<size_t>(n));
  philox_fill_normal(v.data(), n, seed, stream, 0.0, std);
  return v;
}

// Weights N(0, std); norms 1 + 0.1·N; gate biases 0.05·N — so that no term is trivially 1 or 0.
template <typename F>
void randomise(Model<F>& m, uint64_t seed, double std = 0.1) {
  uint64_t stream = 0;
  for (const ParamSpec& s : m.table().specs()) {
    const auto z = normals(s.numel(), seed, stream++);
    F* p = m.params() + s.offset;
    for (int64_t i = 0; i < s.numel(); ++i) {
      switch (s.kind) {
        case ParamKind::kNorm: p[i] = static_cast<F>(1.0 + 0.1 * z[i]); break;
        case ParamKind::kGateBias: p[i] = static_cast<F>(0.05 * z[i]); break;
        default: p[i] = static_cast<F>(std * z[i]);
      }
    }
  }
}

// B rows of S random tokens; row 0 holds two documents when S >= 4.
inline Batch random_batch(int64_t B, int64_t S, int64_t V, uint64_t seed) {
  std::vector<float> u(static_cast<size_t>(B * S));
  philox_fill_uniform(u.data(), B * S, seed, 7);
  std::vector<int32_t> tokens(u.size());
  for (size_t i = 0; i < u.size(); ++i)
    tokens[i] = std::min<int32_t>(static_cast<int32_t>(u[i] * static_cast<float>(V)), static_cast<int32_t>(V - 1));
  Batch b = Batch::from_rows(B, S, tokens);
  if (S >= 4) {
    const int64_t split = S / 2;
    for (int64_t i = split; i < S; ++i) b.doc_start[i] = static_cast<int32_t>(split);
    b.targets[split - 1] = -1;
  }
  return b;
}

}  // namespace mariana::testing
