// The one kernel API. Each op is declared once, in kernels/ops_list.inc, and implemented by two
// backends with identical signatures: mariana::cpu (kernels/cpu/, OpenBLAS + OpenMP, fp32) and
// mariana::cuda (kernels/cuda/, cuBLAS/cuBLASLt + own kernels, device pointers). A backend may
// implement a subset; calling an op a backend lacks fails to link.
//
// Conventions
// - Every CPU op exists for float and double (overloads); CUDA ops for float.
// - Row-major, contiguous unless a stride argument says otherwise. Shapes are in comments, with
//   the letters: T tokens (= B·S), B sequences, S sequence length, C hidden_size, H heads,
//   D head dim, V vocab_size, E n_routed_experts, K num_experts_per_tok, F ffn width.
// - Outputs first, then saved-for-backward, then inputs, then dims. No allocation inside.
// - Backward ops ACCUMULATE (+=) into every gradient they write, activation gradients included,
//   so that fan-out (a tensor read by two consumers) needs no extra adds. Callers zero buffers.
// - Linear layers use HF's layout: W [out, in], y = x·Wᵀ.
#pragma once

#include <cstdint>

namespace mariana {

// Tile sizes of DeepSeek-V3's fine-grained FP8 scaling (docs/numerics.md#fp8-emulation).
constexpr int kFp8TileSize = 128;

// YaRN parameters (docs/numerics.md#rope-and-yarn). factor <= 1 means plain RoPE.
struct RopeParams {
  int rope_dim = 0;                   // qk_rope_head_dim (even)
  double theta = 10000.0;             // rope_theta
  double factor = 1.0;                // rope_scaling.factor
  int original_max_position = 4096;   // rope_scaling.original_max_position_embeddings
  double beta_fast = 32.0;
  double beta_slow = 1.0;
};

// The sizes and rules of one MoE gate call (moe_gate_forward). Node-limited routing (DeepSeek-V3
// report §2.1.2): the E experts lie on n_nodes nodes in equal contiguous blocks, and each token's
// experts lie on at most max_nodes of them (0 or >= n_nodes: no limit). A node's score is the sum
// of its highest ceil(K / max_nodes) biased scores; the max_nodes best nodes are kept (ties to the
// lower node), then the model's group limit and top-K apply among their experts.
struct MoeGateDims {
  int64_t T = 0, E = 0, K = 0;
  int64_t n_group = 1, topk_group = 1;
  int64_t n_nodes = 1, max_nodes = 0;
  double route_scale = 1.0;
  bool norm_topk_prob = true;
};

// The sizes of MLA's key/value assembly (mla_kv_split_forward/backward): T tokens, H heads, dn
// no-RoPE and dr RoPE dims of a key, dv dims of a value; kpe_stride is the row stride of the shared
// RoPE key k_pe (it lives inside the latent projection's rows).
struct MlaKvDims {
  int64_t T = 0, H = 0, dn = 0, dr = 0, dv = 0, kpe_stride = 0;
};

namespace cpu {
#define MARIANA_REAL float
#include "kernels/ops_list.inc"
#undef MARIANA_REAL
#define MARIANA_REAL double
#include "kernels/ops_list.inc"
#undef MARIANA_REAL
// CPU-only helpers.
// Number of threads the CPU kernels use (OpenMP and OpenBLAS). 0 = the library default.
void set_num_threads(int n);
int num_threads();
}  // namespace cpu

namespace cuda {
#define MARIANA_REAL float
#include "kernels/ops_list.inc"
#undef MARIANA_REAL
}  // namespace cuda

}  // namespace mariana
