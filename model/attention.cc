// MLA forward and backward (naive form) on the kernels of kernels/ops.h.
#include "model/attention.h"

#include <algorithm>

#include "kernels/ops.h"

namespace mariana {

namespace {

// k_pe is the last dr columns of the latent projection's rows of r + dr.
MlaKvDims kv_dims(const MlaDims& d) {
  return MlaKvDims{.T = d.T, .H = d.H, .dn = d.dn, .dr = d.dr, .dv = d.dv, .kpe_stride = d.r + d.dr};
}

}  // namespace

template <typename F>
void mla_forward(F* out, const MlaSaved<F>& sv, const F* x, const int32_t* pos,
                 const int32_t* doc_start, const F* inv_freq, const MlaParams<F>& p,
                 const MlaDims& d) {
  const int64_t T = d.T, C = d.C, H = d.H, dqk = d.dqk(), r = d.r, dr = d.dr, dn = d.dn, dv = d.dv;
  const F eps = static_cast<F>(d.eps);
  // Query.
  if (d.qr > 0) {
    cpu::linear_forward(sv.qa, x, p.q_a_proj, T, C, d.qr);
    cpu::rmsnorm_forward(sv.qan, sv.qa_rstd, sv.qa, p.q_a_layernorm, T, d.qr, eps);
    cpu::linear_forward(sv.q, sv.qan, p.q_b_proj, T, d.qr, H * dqk);
  } else {
    cpu::linear_forward(sv.q, x, p.q_proj, T, C, H * dqk);
  }
  cpu::rope_forward(sv.q + dn, pos, inv_freq, T, H, dr, H * dqk, dqk);
  const F mscale = static_cast<F>(d.rope_mscale);
  cpu::rope_scale(sv.q + dn, T, H, dr, H * dqk, dqk, mscale);
  // Latent KV and the shared RoPE key.
  cpu::linear_forward(sv.kva, x, p.kv_a_proj, T, C, r + dr);
  cpu::rope_forward(sv.kva + r, pos, inv_freq, T, 1, dr, r + dr, 0);
  cpu::rope_scale(sv.kva + r, T, 1, dr, r + dr, 0, mscale);
  cpu::copy_strided(sv.ckv_in, sv.kva, T, r, r, r + dr);
  cpu::rmsnorm_forward(sv.ckv, sv.ckv_rstd, sv.ckv_in, p.kv_a_layernorm, T, r, eps);
  cpu::linear_forward(sv.kv, sv.ckv, p.kv_b_proj, T, r, H * (dn + dv));
  // Assemble k = [k_nope ; k_pe] and v per head.
  cpu::mla_kv_split_forward(sv.k, sv.v, sv.kv, sv.kva + r, kv_dims(d));
  cpu::attention_forward(sv.o, sv.lse, sv.q, sv.k, sv.v, doc_start, d.B, d.S, H, dqk, dv,
                         static_cast<F>(d.softmax_scale));
  cpu::linear_forward(out, sv.o, p.o_proj, T, H * dv, C);
}

template <typename F>
void mla_backward(F* dx, const MlaGrads<F>& g, const MlaScratch<F>& s, const F* dout,
                  const MlaSaved<F>& sv, const F* x, const int32_t* pos, const int32_t* doc_start,
                  const F* inv_freq, const MlaParams<F>& p, const MlaDims& d) {
  const int64_t T = d.T, C = d.C, H = d.H, dqk = d.dqk(), r = d.r, dr = d.dr, dn = d.dn, dv = d.dv;
  std::fill_n(s.d_o, T * H * dv, F(0));
  linear_backward_or_defer(s.defer, s.d_o, g.o_proj, dout, sv.o, p.o_proj, T, H * dv, C);
  std::fill_n(s.dq, T * H * dqk, F(0));
  std::fill_n(s.dk, T * H * dqk, F(0));
  std::fill_n(s.dv, T * H * dv, F(0));
  cpu::attention_backward(s.dq, s.dk, s.dv, s.d_o, sv.o, sv.lse, sv.q, sv.k, sv.v, doc_start, d.B,
                          d.S, H, dqk, dv, static_cast<F>(d.softmax_scale));
  // Split dk / dv back into dkv = [dk_nope ; dv] per head, and sum dk_pe over heads into dkva's
  // RoPE columns (its first r columns are written from dckv_in below).
  std::fill_n(s.dkv, T * H * (dn + dv), F(0));
  std::fill_n(s.dkva, T * (r + dr), F(0));
  cpu::mla_kv_split_backward(s.dkv, s.dkva + r, s.dk, s.dv, kv_dims(d));
  // Through RoPE (a rotation, then the YaRN cos/sin multiplier).
  const F mscale = static_cast<F>(d.rope_mscale);
  cpu::rope_scale(s.dkva + r, T, 1, dr, r + dr, 0, mscale);
  cpu::rope_backward(s.dkva + r, pos, inv_freq, T, 1, dr, r + dr, 0);
  cpu::rope_scale(s.dq + dn, T, H, dr, H * dqk, dqk, mscale);
  cpu::rope_backward(s.dq + dn, pos, inv_freq, T, H, dr, H * dqk, dqk);
  // Latent path.
  std::fill_n(s.dckv, T * r, F(0));
  linear_backward_or_defer(s.defer, s.dckv, g.kv_b_proj, s.dkv, sv.ckv, p.kv_b_proj, T, r, H * (dn + dv));
  std::fill_n(s.dckv_in, T * r, F(0));
  cpu::rmsnorm_backward(s.dckv_in, g.kv_a_layernorm, s.dckv, sv.ckv_in, p.kv_a_layernorm, sv.ckv_rstd,
                        T, r);
  cpu::copy_strided(s.dkva, s.dckv_in, T, r, r + dr, r);
  linear_backward_or_defer(s.defer, dx, g.kv_a_proj, s.dkva, x, p.kv_a_proj, T, C, r + dr);
  // Query path.
  if (d.qr > 0) {
    std::fill_n(s.dqan, T * d.qr, F(0));
    linear_backward_or_defer(s.defer, s.dqan, g.q_b_proj, s.dq, sv.qan, p.q_b_proj, T, d.qr, H * dqk);
    std::fill_n(s.dqa, T * d.qr, F(0));
    cpu::rmsnorm_backward(s.dqa, g.q_a_layernorm, s.dqan, sv.qa, p.q_a_layernorm, sv.qa_rstd, T, d.qr);
    linear_backward_or_defer(s.defer, dx, g.q_a_proj, s.dqa, x, p.q_a_proj, T, C, d.qr);
  } else {
    linear_backward_or_defer(s.defer, dx, g.q_proj, s.dq, x, p.q_proj, T, C, H * dqk);
  }
}

#define MARIANA_INSTANTIATE_MLA(F)                                                             \
  template void mla_forward<F>(F*, const MlaSaved<F>&, const F*, const int32_t*,              \
                               const int32_t*, const F*, const MlaParams<F>&, const MlaDims&); \
  template void mla_backward<F>(F*, const MlaGrads<F>&, const MlaScratch<F>&, const F*,       \
                                const MlaSaved<F>&, const F*, const int32_t*, const int32_t*,  \
                                const F*, const MlaParams<F>&, const MlaDims&);
MARIANA_INSTANTIATE_MLA(float)
MARIANA_INSTANTIATE_MLA(double)

}  // namespace mariana
