#!/usr/bin/python3
"""Check the inference engine's absorbed-MLA decode path (decode_dump) against PyTorch.

    /usr/bin/python3 check_decode.py CHECKPOINT_DIR DECODE.safetensors

The engine keeps only MLA's latent per token and layer — c_kv = kv_a_layernorm(kv_a(x))[:r] and
the rotated shared key k_pe — and absorbs kv_b_proj into the query and the output. This script
runs the same prefill + one-token decode steps through `AbsorbedDecoder`, a PyTorch decoder written
in the form of DeepSeek-V3's own inference code (model.py, attn_impl = "absorb"), and through the
oracle's naive full forward (deepseek_v3_ref.forward over the whole sequence), both in float64,
and compares every row's logits (prefill rows, then each decode step) and, with an MTP module,
the MTP module 0's logits (its own latent cache stream, fed the main model's hidden rows):

  torch absorbed vs torch naive (f64)          1e-12: the same algebra reassociated; float64
                                                rounding (~1e-16 per op) leaves ~2e-15.
  Mariana f64 engine (latent, naive) vs both   1e-12: float64 rounding in another summation order
                                                (~2e-15 measured), >100x margin; an algebra slip
                                                (a missing scale, the wrong half of kv_b, a cache
                                                row off by one) is 1e-3 or more.
  Mariana f32 engine (latent, naive) vs both   1e-5, as the other reference tests: fp32 rounding of
                                                the whole forward (~1e-6 measured), ~10x margin.

Errors are normwise relative per row (max|a-b| / max|b|; see check_reference.normwise_rel). The
fp32 comparison is only meaningful if fp32 rounding cannot flip an expert selection, so the
script also asserts that every routing decision (top-k experts, kept groups) wins by a margin
of at least 1e-5 in biased score: fp32 rounding moves a sigmoid score in (0, 1) by ~1e-7, at
most ~1e-6 through the layers before it (measured: tiny_routed 3.9e-4, tiny_variant 2.6e-5,
whose 0.006 weights leave scores close together but also move them less under rounding). It checks the cache size
too: (kv_lora_rank + qk_rope_head_dim) values per token and layer for the latent cache,
H·(qk_head_dim + v_head_dim) for the naive one.

Exit status: 0 pass; 1 a mismatch; 2 unreadable input.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import deepseek_v3_ref as ref  # noqa: E402
import st  # noqa: E402
from check_reference import normwise_rel  # noqa: E402

TOL = {"torch": 1e-12, "f64": 1e-12, "f32": 1e-5}
MIN_ROUTING_MARGIN = 1e-5


def routing_margin(biased, cfg):
    """Smallest gap, over tokens, by which a selection decision is won: the topk_group-th kept
    group score over the best dropped group, and the K-th chosen expert over the best unchosen
    one among the kept groups. biased: [T, E] sigmoid scores + correction bias."""
    T, E = biased.shape
    G, K = cfg.n_group, cfg.num_experts_per_tok
    margins = []
    if G > 1:
        grouped = biased.view(T, G, E // G)
        gs = torch.sort(torch.sort(grouped, -1, descending=True).values[..., :2].sum(-1), -1,
                        descending=True).values
        if cfg.topk_group < G:
            margins.append((gs[:, cfg.topk_group - 1] - gs[:, cfg.topk_group]).min().item())
        keep = ref.stable_topk_desc(grouped.sort(-1, descending=True).values[..., :2].sum(-1), cfg.topk_group)
        mask = torch.zeros(T, G, dtype=torch.bool).scatter_(1, keep, True)
        biased = grouped.masked_fill(~mask[:, :, None], float("-inf")).view(T, E)
    top = torch.sort(biased, -1, descending=True).values
    if K < top.shape[1] and torch.isfinite(top[:, K]).all():
        margins.append((top[:, K - 1] - top[:, K]).min().item())
    return min(margins) if margins else float("inf")


class AbsorbedDecoder:
    """One sequence's decoder over a latent cache, DeepSeek-V3 `absorb` style: per layer the
    cache holds kv_cache [t, r] (normalized c_kv) and pe_cache [t, dr] (rotated k_pe); scores are
    (q_nope · W_UK) · kv_cache + q_pe · pe_cache, times the softmax scale (incl. YaRN's
    mscale_all_dim factor squared); the output is (probs · kv_cache) · W_UVᵀ, then o_proj.
    Layer index num_hidden_layers is the MTP module 0, whose stream has its own cache."""

    def __init__(self, p, cfg):
        self.p, self.cfg = p, cfg
        self.inv_freq, self.cs_mult, self.softmax_scale = ref.rope_setup(cfg)
        self.dtype = p["model.embed_tokens.weight"].dtype
        n_blocks = cfg.num_hidden_layers + min(cfg.num_nextn_predict_layers, 1)
        self.kv_cache = [torch.zeros(0, cfg.kv_lora_rank, dtype=self.dtype) for _ in range(n_blocks)]
        self.pe_cache = [torch.zeros(0, cfg.qk_rope_head_dim, dtype=self.dtype) for _ in range(n_blocks)]
        self.len = self.mtp_len = 0
        self.min_margin = float("inf")

    def attention(self, l, x, cos, sin, start):
        cfg, p = self.cfg, self.p
        pre = f"model.layers.{l}.self_attn."
        B, S, _ = x.shape
        H, dn, dr, dv, r = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim,
                            cfg.v_head_dim, cfg.kv_lora_rank)
        eps = cfg.rms_norm_eps
        if cfg.q_lora_rank > 0:
            q = ref.linear(ref.rms_norm(ref.linear(x, p[pre + "q_a_proj.weight"]),
                                        p[pre + "q_a_layernorm.weight"], eps), p[pre + "q_b_proj.weight"])
        else:
            q = ref.linear(x, p[pre + "q_proj.weight"])
        q = q.view(B, S, H, dn + dr)
        q_nope, q_pe = q[..., :dn], ref.rope(q[..., dn:], cos, sin)
        kv = ref.linear(x, p[pre + "kv_a_proj_with_mqa.weight"])
        c = ref.rms_norm(kv[..., :r], p[pre + "kv_a_layernorm.weight"], eps)
        k_pe = ref.rope(kv[..., r:].unsqueeze(2), cos, sin).squeeze(2)
        self.kv_cache[l] = torch.cat((self.kv_cache[l], c[0]), 0)
        self.pe_cache[l] = torch.cat((self.pe_cache[l], k_pe[0]), 0)
        end = start + S
        wkv_b = p[pre + "kv_b_proj.weight"].view(H, dn + dv, r)
        q_nope = torch.einsum("bshd,hdc->bshc", q_nope, wkv_b[:, :dn])
        scores = (torch.einsum("bshc,tc->bsht", q_nope, self.kv_cache[l][:end])
                  + torch.einsum("bshr,tr->bsht", q_pe, self.pe_cache[l][:end])) * self.softmax_scale
        mask = torch.arange(end)[None, :] > torch.arange(start, end)[:, None]  # [S, end]: future keys
        scores = scores.masked_fill(mask[None, :, None, :], float("-inf"))
        o = torch.einsum("bsht,tc->bshc", scores.softmax(dim=-1), self.kv_cache[l][:end])
        o = torch.einsum("bshc,hdc->bshd", o, wkv_b[:, -dv:])
        return ref.linear(o.flatten(2), p[pre + "o_proj.weight"])

    def layer(self, l, h, start):
        cfg, p = self.cfg, self.p
        pos = torch.arange(start, start + h.shape[1], dtype=torch.float64)
        angle = pos[None, :, None] * self.inv_freq
        cos = (torch.cos(angle) * self.cs_mult).to(self.dtype)
        sin = (torch.sin(angle) * self.cs_mult).to(self.dtype)
        pre = f"model.layers.{l}."
        eps = cfg.rms_norm_eps
        x = h + self.attention(l, ref.rms_norm(h, p[pre + "input_layernorm.weight"], eps), cos, sin, start)
        hn = ref.rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
        if not cfg.is_moe_layer(l):
            return x + ref.swiglu(hn, p, pre + "mlp.")
        biased = (torch.sigmoid(ref.linear(hn.flatten(0, 1), p[pre + "mlp.gate.weight"]))
                  + p[pre + "mlp.gate.e_score_correction_bias"])
        self.min_margin = min(self.min_margin, routing_margin(biased, cfg))
        rec = {"routing": {}, "balance": [], "forced_routing": None}
        return x + ref.moe(p, pre + "mlp.", hn, cfg, l, rec)

    def head(self, h, norm_name):
        hn = ref.rms_norm(h, self.p[norm_name], self.cfg.rms_norm_eps)
        return ref.linear(hn, self.p["lm_head.weight"])[0], hn[0]

    def extend(self, tokens):
        """Appends tokens (at positions len, len+1, ...); returns their logits [n, V] and the
        normed final hidden rows [n, C]."""
        h = self.p["model.embed_tokens.weight"][torch.tensor(tokens)][None]
        for l in range(self.cfg.num_hidden_layers):
            h = self.layer(l, h, self.len)
        self.len += len(tokens)
        return self.head(h, "model.norm.weight")

    def mtp_extend(self, next_tokens, hidden):
        """MTP module 0 over positions mtp_len, ...: next_tokens[j] is the token after position
        mtp_len + j, hidden [n, C] the main model's normed final hidden rows there. Returns the
        logits [n, V] (predicting the token after next)."""
        cfg, p, eps = self.cfg, self.p, self.cfg.rms_norm_eps
        l = cfg.num_hidden_layers
        pre = f"model.layers.{l}."
        e = ref.rms_norm(p["model.embed_tokens.weight"][torch.tensor(next_tokens)], p[pre + "enorm.weight"], eps)
        x = ref.linear(torch.cat((e, ref.rms_norm(hidden, p[pre + "hnorm.weight"], eps)), -1),
                       p[pre + "eh_proj.weight"])[None]
        out = self.layer(l, x, self.mtp_len)
        self.mtp_len += len(next_tokens)
        return self.head(out, pre + "shared_head.norm.weight")[0]


def absorbed_decode(p, cfg, tokens, prefill):
    """decode_dump's schedule for one sequence: main logits [n, V] and, with an MTP module, MTP
    logits [n - 1, V] (None without one), plus the smallest routing margin met."""
    dec = AbsorbedDecoder(p, cfg)
    n = len(tokens)
    logits, mtp = [], []
    for lo, hi in [(0, prefill)] + [(i, i + 1) for i in range(prefill, n)]:
        lg, hidden = dec.extend(tokens[lo:hi])
        logits.append(lg)
        known = min(hi, n - 1) - lo  # positions lo.. whose next token exists
        if cfg.num_nextn_predict_layers > 0 and known > 0:
            mtp.append(dec.mtp_extend(tokens[lo + 1:lo + 1 + known], hidden[:known]))
    return torch.cat(logits, 0), (torch.cat(mtp, 0) if mtp else None), dec.min_margin


def main(argv):
    if len(argv) != 2:
        print(__doc__)
        return 2
    ckpt_dir, dump_path = argv
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    try:
        with open(os.path.join(ckpt_dir, "config.json")) as f:
            cfg = ref.DSConfig(json.load(f))
        ckpt, _ = st.load(os.path.join(ckpt_dir, "model.safetensors"))
        dump, meta = st.load(dump_path)
        prefill = [int(x) for x in meta["prefill"].split()]
    except (OSError, ValueError, KeyError, st.STError) as e:
        print(f"ERROR: unreadable input: {e}")
        return 2
    p = {n: torch.from_numpy(np.asarray(t, dtype=np.float64)) for n, t in ckpt.items()
         if not ref.is_shared_head_copy(n)}
    H, L = cfg.num_attention_heads, cfg.num_hidden_layers
    row_values = {"latent": cfg.kv_lora_rank + cfg.qk_rope_head_dim,
                  "naive": H * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)}
    fails, worst = [], {}

    def check(name, got, want, tol):
        if tuple(got.shape) != tuple(want.shape):
            print(f"{name:<60} FAIL (shape {tuple(got.shape)}, expected {tuple(want.shape)})")
            fails.append(name)
            return
        errs = [normwise_rel(got[i], want[i]) for i in range(want.shape[0])]
        e = max(errs)
        key = name.split(" ")[0]
        worst[key] = max(worst.get(key, 0.0), e)
        ok = e <= tol
        print(f"{name:<60} {e:10.3e}  (worst row {errs.index(e)}, tol {tol:g})  {'OK' if ok else 'FAIL'}")
        if not ok:
            fails.append(name)
            print("    per row: " + " ".join(f"{x:.1e}" for x in errs))

    min_margin = float("inf")
    for s, P in enumerate(prefill):
        if f"tokens.{s}" not in dump:
            print(f"ERROR: unreadable input: {dump_path}: missing tokens.{s}")
            return 2
        tokens = dump[f"tokens.{s}"].astype(np.int64).tolist()
        n = len(tokens)
        with torch.no_grad():
            t = torch.tensor([tokens])
            full = ref.forward(p, cfg, t, torch.full_like(t, -1), torch.zeros_like(t), 0.0, 0.0)
            absorbed_main, absorbed_mtp, margin = absorbed_decode(p, cfg, tokens, P)
            want = {"logits": (absorbed_main, full["logits"][0])}
            if absorbed_mtp is not None:  # the oracle's last MTP row has no next token: dropped
                want["mtp_logits"] = (absorbed_mtp, full["mtp_logits"][0][0, :n - 1])
        min_margin = min(min_margin, margin)
        print(f"[sequence {s}: {n} tokens, prefill {P}, then {n - P} decode steps]")
        for what, (absorbed, naive) in want.items():
            check(f"torch_absorbed {what} seq {s} vs torch naive", absorbed, naive, TOL["torch"])
        for kind in ("latent", "naive"):
            for dt in ("f64", "f32"):
                for what, (absorbed, naive) in want.items():
                    name = f"{what}.{kind}_{dt}.{s}"
                    if name not in dump:
                        print(f"{name:<60} MISSING")
                        fails.append(name)
                        continue
                    got = torch.from_numpy(np.asarray(dump[name], dtype=np.float64))
                    check(f"mariana_{kind}_{dt} {what} seq {s} vs torch absorbed", got, absorbed, TOL[dt])
                    check(f"mariana_{kind}_{dt} {what} seq {s} vs torch naive", got, naive, TOL[dt])
                want_bytes = n * L * row_values[kind] * (8 if dt == "f64" else 4)
                cb = dump.get(f"cache_bytes.{kind}_{dt}.{s}")
                got_bytes = int(cb) if cb is not None else -1
                ok = got_bytes == want_bytes
                print(f"cache_bytes.{kind}_{dt}.{s:<43} {got_bytes:10d}  (expected {n} tokens x {L} layers x "
                      f"{row_values[kind]} values = {want_bytes})  {'OK' if ok else 'FAIL'}")
                if not ok:
                    fails.append(f"cache_bytes.{kind}_{dt}.{s}")
    ok = min_margin >= MIN_ROUTING_MARGIN
    print(f"{'routing margin (min over decisions)':<60} {min_margin:10.3e}  (need >= {MIN_ROUTING_MARGIN:g} "
          f"for the fp32 comparison to be well posed)  {'OK' if ok else 'FAIL'}")
    if not ok:
        fails.append("routing margin")
    print("SUMMARY: " + ("PASS" if not fails else "FAIL") + "; worst: "
          + ", ".join(f"{k} {v:.2e}" for k, v in sorted(worst.items())))
    if fails:
        print("FAILED: " + " ".join(fails))
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
