#!/usr/bin/python3
"""Compare a Mariana reference dump against the PyTorch oracle (deepseek_v3_ref.py).

    /usr/bin/python3 check_reference.py DIR [--dtype float32|float64] [--rtol 1e-5] [--use-dump-routing]
                                            [--routing-diversity MIN_SETS]
    /usr/bin/python3 check_reference.py --self-test

DIR (written by `reference_dump`) holds
    checkpoint/config.json, checkpoint/model.safetensors   fp32 weights, HF names
    batch.safetensors      tokens, targets, doc_start         I32 [B,S]
    mariana.safetensors    logits F32 [B,S,V], mtp_logits.k F32 [B,S,V] (k = 1..D),
                           loss, loss_main, loss_mtp, loss_balance (F32 scalars),
                           routing.L I32 [B*S,K] for every MoE layer L (HF index, main and MTP),
                           grad.<hf_name> for every parameter (not shared_head.head; the
                           e_score_correction_bias grad is optional and must be zero if present);
                           metadata {"mtp_weight": "λ", "balance_alpha": "α"}.

Exit status: 0 all OK; 1 any tensor FAILs or is missing; 2 unreadable / invalid input.
--use-dump-routing runs the oracle with Mariana's expert selection (routing mismatches are still
reported and still fail); use it to see whether the remaining tensors agree given the routing.
--routing-diversity MIN_SETS also fails unless every MoE layer routes the batch's tokens to at least
MIN_SETS distinct top-k expert sets and (when B*S*K >= n_routed_experts) selects every routed
expert at least once: a dump whose router sends (nearly) every token to the same experts checks
only those experts' arithmetic, whatever the other comparisons say.
"""

import argparse
import json
import math
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import deepseek_v3_ref as ref  # noqa: E402
import st  # noqa: E402

SCALARS = ("loss", "loss_main", "loss_mtp", "loss_balance")


class InputError(Exception):
    """Unreadable or malformed input (exit 2)."""


def normwise_rel(a, b):
    """max|a-b| / max(max|b|, 1e-30).

    Normwise, not elementwise: Mariana and the oracle sum in different orders, so every element
    carries an absolute rounding error of about eps * (magnitude of the terms it sums), which is
    set by the tensor's overall scale, not by that element.  Elements that are small because of
    cancellation (logits near 0, gradients of rarely used rows, bias-like terms) would fail any
    elementwise relative test although the tensor is right to working precision.  Scaling by the
    tensor's largest magnitude measures the error in units of that scale, one number per tensor."""
    a = a.double()
    b = b.double()
    if a.numel() == 0:
        return 0.0
    diff = (a - b).abs().max().item()
    if not math.isfinite(diff):
        return float("inf")
    return diff / max(b.abs().max().item(), 1e-30)


def load_dir(d):
    try:
        with open(os.path.join(d, "checkpoint", "config.json")) as f:
            cfg_dict = json.load(f)
        cfg = ref.DSConfig(cfg_dict)
        ckpt, _ = st.load(os.path.join(d, "checkpoint", "model.safetensors"))
        batch, _ = st.load(os.path.join(d, "batch.safetensors"))
        dump, meta = st.load(os.path.join(d, "mariana.safetensors"))
    except (OSError, ValueError, st.STError) as e:  # ValueError covers JSON and ConfigError
        raise InputError(str(e))
    for k in ("tokens", "targets", "doc_start"):
        if k not in batch:
            raise InputError(f"batch.safetensors: missing {k!r}")
        if batch[k].ndim != 2 or batch[k].dtype.kind not in "iu":
            raise InputError(f"batch.safetensors: {k} must be an integer [B,S] tensor")
    try:
        mtp_weight = float(meta["mtp_weight"])
        balance_alpha = float(meta["balance_alpha"])
    except (KeyError, ValueError) as e:
        raise InputError(f"mariana.safetensors: metadata needs numeric mtp_weight and balance_alpha ({e})")
    return cfg, ckpt, batch, dump, mtp_weight, balance_alpha


def routing_diversity(routing, n_experts):
    """(distinct top-k sets, sorted list of experts never selected) of one layer's routing [T,K]."""
    sets = {tuple(sorted(row)) for row in routing.tolist()}
    used = set(routing.flatten().tolist())
    return len(sets), sorted(set(range(n_experts)) - used)


def check_dump(d, dtype, rtol, use_dump_routing=False, min_routing_sets=0):
    """Returns the exit status."""
    try:
        cfg, ckpt, batch, dump, mtp_weight, balance_alpha = load_dir(d)
    except InputError as e:
        print(f"ERROR: unreadable input: {e}")
        return 2
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    fails, missing, lines = [], [], 0
    worst = (0.0, "")

    def report(name, metric, ok, extra="", shown=None):
        nonlocal worst, lines
        lines += 1
        if shown is None and (metric > worst[0] or not math.isfinite(metric)):
            worst = (metric, name)
        shown = f"{metric:11.3e}" if shown is None else f"{shown:>11}"
        print(f"{name:<64} {shown}  {'OK' if ok else 'FAIL'}{extra}")
        if not ok:
            fails.append(name)

    # ---- checkpoint contract
    shapes = ref.param_shapes(cfg)
    for name, shape in shapes.items():
        if name not in ckpt:
            print(f"{name:<64} {'':11}  MISSING (checkpoint)")
            missing.append("checkpoint:" + name)
        elif tuple(ckpt[name].shape) != tuple(shape):
            print(f"{name:<64} {'':11}  FAIL (checkpoint shape {ckpt[name].shape}, expected {shape})")
            fails.append("checkpoint:" + name)
    for name in ckpt:
        if name not in shapes:
            print(f"{name:<64} {'':11}  FAIL (unexpected checkpoint tensor)")
            fails.append("checkpoint:" + name)
    if missing or fails:
        print(f"SUMMARY: checkpoint does not match the config: {len(missing)} missing, {len(fails)} bad")
        return 1
    for name in shapes:
        if ref.is_shared_head_copy(name):
            metric = normwise_rel(torch.from_numpy(ckpt[name]), torch.from_numpy(ckpt["lm_head.weight"]))
            report("checkpoint:" + name + " == lm_head", metric, metric == 0.0)

    # ---- run the oracle
    params = {}
    for name in shapes:
        if ref.is_shared_head_copy(name):
            continue
        t = torch.from_numpy(np.asarray(ckpt[name], dtype=np.float64)).to(tdtype)
        if not ref.is_gate_bias(name):
            t.requires_grad_(True)
        params[name] = t
    tokens, targets, doc_start = (torch.from_numpy(batch[k].astype(np.int64)) for k in
                                  ("tokens", "targets", "doc_start"))
    B, S = tokens.shape
    K = cfg.num_experts_per_tok
    forced = None
    if use_dump_routing:
        forced = {}
        for l in cfg.moe_layers():
            r = dump.get(f"routing.{l}")
            if (r is not None and tuple(r.shape) == (B * S, K) and r.dtype.kind in "iu"
                    and r.min() >= 0 and r.max() < cfg.n_routed_experts):
                forced[l] = torch.from_numpy(r.astype(np.int64))
            else:
                print(f"note: routing.{l} unusable for --use-dump-routing; the oracle routes layer {l} itself")
    try:
        out = ref.forward(params, cfg, tokens, targets, doc_start, mtp_weight, balance_alpha, forced)
    except (ValueError, IndexError) as e:
        print(f"ERROR: invalid input: {e}")
        return 2
    out["loss"].backward()

    def compare(name, ours):
        if name not in dump:
            print(f"{name:<64} {'':11}  MISSING")
            missing.append(name)
            return
        theirs = torch.from_numpy(np.asarray(dump[name], dtype=np.float64))
        if tuple(theirs.shape) != tuple(ours.shape):
            print(f"{name:<64} {'':11}  FAIL (shape {tuple(theirs.shape)}, expected {tuple(ours.shape)})")
            fails.append(name)
            return
        metric = normwise_rel(ours.detach(), theirs)
        report(name, metric, metric <= rtol)

    # ---- routing (exact)
    for l in cfg.moe_layers():
        name = f"routing.{l}"
        ours = out["routing"][l]
        if name not in dump:
            print(f"{name:<64} {'':11}  MISSING")
            missing.append(name)
            continue
        theirs = torch.from_numpy(dump[name].astype(np.int64))
        if tuple(theirs.shape) != (B * S, K):
            print(f"{name:<64} {'':11}  FAIL (shape {tuple(theirs.shape)}, expected {(B * S, K)})")
            fails.append(name)
            continue
        bad = (ours != theirs).any(-1).nonzero().flatten().tolist()
        report(name, 0.0, not bad, f"  ({len(bad)} of {B * S} tokens differ)" if bad else "",
               shown="exact" if not bad else f"{len(bad)} differ")
        for t in bad[:8]:
            same_set = sorted(ours[t].tolist()) == sorted(theirs[t].tolist())
            print(f"    layer {l} token {t} (b={t // S}, i={t % S}): oracle {ours[t].tolist()} "
                  f"mariana {theirs[t].tolist()}{'  (same set, order differs)' if same_set else ''}")
        if len(bad) > 8:
            print(f"    ... {len(bad) - 8} more")

    # ---- routing diversity (on the oracle's selection; equal to Mariana's when the above passed)
    if min_routing_sets > 0:
        E = cfg.n_routed_experts
        for l in cfg.moe_layers():
            n_sets, unused = routing_diversity(out["routing"][l], E)
            need_all = B * S * K >= E
            ok = n_sets >= min_routing_sets and not (need_all and unused)
            report(f"routing_diversity.{l}", 0.0, ok,
                   f"  ({E - len(unused)}/{E} experts selected; need >= {min_routing_sets} sets"
                   + (" and every expert" if need_all else "") + ")",
                   shown=f"{n_sets} sets")

    # ---- outputs and losses
    compare("logits", out["logits"])
    for k, lg in enumerate(out["mtp_logits"], start=1):
        compare(f"mtp_logits.{k}", lg)
    for s in SCALARS:
        compare(s, out[s])

    # ---- gradients
    for name, t in params.items():
        g = t.grad if t.grad is not None else torch.zeros_like(t)
        gname = "grad." + name
        if ref.is_gate_bias(name):
            if gname in dump:
                compare(gname, g)  # must be zero: the bias only steers selection
            continue
        compare(gname, g)

    known = set(["logits"] + [f"mtp_logits.{k}" for k in range(1, len(out["mtp_logits"]) + 1)]
                + list(SCALARS) + [f"routing.{l}" for l in cfg.moe_layers()]
                + ["grad." + n for n in params])
    for name in sorted(dump):
        if name not in known:
            print(f"{name:<64} {'':11}  (not checked: unknown to the oracle)")

    status = "PASS" if not fails and not missing else "FAIL"
    print(f"SUMMARY: {status}: {lines} compared, {len(fails)} failed, {len(missing)} missing; "
          f"dtype {dtype}, rtol {rtol:g}; worst {worst[0]:.3e} ({worst[1]})")
    if fails:
        print("FAILED: " + " ".join(fails[:20]) + (" ..." if len(fails) > 20 else ""))
    if missing:
        print("MISSING: " + " ".join(missing[:20]) + (" ..." if len(missing) > 20 else ""))
    return 0 if status == "PASS" else 1


# ----------------------------------------------------------------------------------- self-test

BUILTIN_TINY = {
    "model_type": "deepseek_v3", "hidden_act": "silu", "scoring_func": "sigmoid",
    "topk_method": "noaux_tc", "norm_topk_prob": True, "routed_scaling_factor": 2.5,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "initializer_range": 0.006,
    "tie_word_embeddings": False, "num_nextn_predict_layers": 1, "vocab_size": 1024,
    "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
    "num_hidden_layers": 3, "first_k_dense_replace": 1, "num_attention_heads": 4, "q_lora_rank": 32,
    "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
    "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 4,
    "topk_group": 2, "max_position_embeddings": 256,
}


def _self_test_configs():
    out = []
    for fname in ("tiny.json", "tiny_variant.json", "tiny_routed.json"):
        path = os.path.join(HERE, "configs", fname)
        if os.path.exists(path):
            with open(path) as f:
                out.append((fname, json.load(f)))
    if not out:
        out.append(("builtin tiny", BUILTIN_TINY))
    return out


def self_test_batch(cfg, B=2, S=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, cfg.vocab_size, (B, S), generator=g)
    doc_start = torch.zeros(B, S, dtype=torch.int64)
    doc_start[1, 4:] = 4  # row 1 packs two documents: [0..3], [4..S-1]
    targets = torch.full((B, S), -1, dtype=torch.int64)
    targets[:, :-1] = tokens[:, 1:]
    targets[1, 3] = -1  # last token of the first document has no in-document target
    targets[0, 2] = -1  # an ignored position
    return tokens, targets, doc_start


class SelfTestFailure(Exception):
    pass


def _expect(cond, what):
    if not cond:
        raise SelfTestFailure(what)
    print(f"  ok: {what}")


def _self_test_st(tmp):
    path = os.path.join(tmp, "t.safetensors")
    src = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], dtype=np.int32),
           "c": np.array(3.5, dtype=np.float64), "z": np.zeros((0, 4), dtype=np.float32)}
    st.save(path, src, {"mtp_weight": "0.3"})
    got, meta = st.load(path)
    _expect(meta == {"mtp_weight": "0.3"} and set(got) == set(src)
            and all(got[k].dtype == src[k].dtype and got[k].shape == src[k].shape
                    and np.array_equal(got[k], src[k]) for k in src),
            "st.py round trip (F32, I32, F64 scalar, empty, metadata)")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
    _expect((8 + n) % 8 == 0, "st.py header padded to 8 bytes")


def _self_test_gate():
    # The gate test vector of tests/kernels/cpu_known_values_test.cc (DeepSeek's Gate.forward).
    cfg = ref.DSConfig(dict(BUILTIN_TINY, n_routed_experts=8, n_group=4, topk_group=2,
                            num_experts_per_tok=2, routed_scaling_factor=2.5))
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.1, -0.3, 1.2, 0.0, 0.8],
                           [-0.2, 0.4, -1.5, 1.1, 0.9, -0.7, 0.3, 0.6]], dtype=torch.float64)
    bias = torch.tensor([0, 0.3, -0.5, 0, 0.2, 0, 0.1, -0.1], dtype=torch.float64)
    s = torch.sigmoid(logits)
    idx = ref.gate_select(s, bias, cfg)
    w = s.gather(1, idx)
    w = w / w.sum(-1, keepdim=True) * 2.5
    _expect(idx.tolist() == [[5, 4], [4, 1]], f"gate test vector indices {idx.tolist()}")
    _expect(torch.allclose(w, torch.tensor([[1.609028, 0.890972], [1.357150, 1.142850]],
                                           dtype=torch.float64), atol=2e-6), "gate test vector weights")
    # Ties go to the lower index.
    tie = ref.DSConfig(dict(BUILTIN_TINY, n_group=1, topk_group=1))
    idx = ref.gate_select(torch.full((1, 8), 0.5, dtype=torch.float64), torch.zeros(8, dtype=torch.float64), tie)
    _expect(idx.tolist() == [[0, 1]], "routing ties -> lower index first")


def _self_test_yarn():
    cfg = ref.DSConfig(dict(BUILTIN_TINY, qk_rope_head_dim=64, qk_nope_head_dim=128,
                            max_position_embeddings=163840, rope_scaling={
        "type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
        "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}))
    inv, mult, scale = ref.rope_setup(cfg)
    base = 1.0 / 10000.0 ** (torch.arange(32, dtype=torch.float64) * 2 / 64)
    # V3: low = 10, high = 23: j <= 10 unchanged, j >= 23 divided by 40.
    _expect(torch.allclose(inv[:11], base[:11]) and torch.allclose(inv[23:], base[23:] / 40)
            and bool((inv[11:23] < base[11:23]).all()) and bool((inv[11:23] > base[11:23] / 40).all()),
            "YaRN V3 ramp (low 10, high 23)")
    _expect(abs(scale - 0.1352338) < 1e-6 and mult == 1.0, f"YaRN V3 softmax scale {scale:.7f}, cos/sin x{mult}")
    # tiny_variant by hand: dr 8, theta 1e4, factor 4, L0 64 -> corr(32) = -0.497, corr(1) = 1.008,
    # low 0, high 2, ramp [0, .5, 1, 1]; base [1, .1, .01, .001] -> [1, .0625, .0025, .00025];
    # cos/sin x (1 + .1 ln 4)/(1 + .08 ln 4); softmax scale 24^-.5 (1 + .08 ln 4)^2.
    cfg = ref.DSConfig(dict(BUILTIN_TINY, rope_scaling={
        "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32,
        "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.8}))
    inv, mult, scale = ref.rope_setup(cfg)
    l4 = math.log(4.0)
    _expect(torch.allclose(inv, torch.tensor([1, 0.0625, 0.0025, 0.00025], dtype=torch.float64), rtol=1e-12)
            and abs(mult - (1 + 0.1 * l4) / (1 + 0.08 * l4)) < 1e-14
            and abs(scale - 24 ** -0.5 * (1 + 0.08 * l4) ** 2) < 1e-14,
            f"YaRN tiny_variant: inv_freq {inv.tolist()}, cos/sin x{mult:.6f}, softmax scale {scale:.6f}")


def _self_test_model(name, cfg_dict):
    cfg = ref.DSConfig(cfg_dict)
    print(f"[{name}]")
    # Larger weights than initializer_range so routing, attention and the balance loss are far from
    # uniform and every term contributes visibly to the gradient.
    base = ref.random_params(cfg, seed=3, dtype=torch.float64, std=0.08, norm_noise=0.1, bias_noise=0.02)
    del_names = [n for n in base if ref.is_shared_head_copy(n)]
    for n in del_names:
        del base[n]
    tokens, targets, doc_start = self_test_batch(cfg)
    B, S = tokens.shape
    lam, alpha = 0.3, 0.1

    def run(p, forced=None):
        return ref.forward(p, cfg, tokens, targets, doc_start, lam, alpha, forced)

    # 1. Packing: a packed row equals its documents run separately (positions restart, no leaks).
    out = run(base)
    sep = []
    for lo, hi in ((0, 4), (4, S)):
        t = tokens[1:2, lo:hi]
        o = ref.forward(base, cfg, t, torch.full_like(t, -1), torch.zeros_like(t), lam, alpha)
        sep.append(o)
    packed = out["logits"][1]
    alone = torch.cat([o["logits"][0] for o in sep], 0)
    _expect((packed - alone).abs().max().item() < 1e-12, "packed row == documents run alone (main logits)")
    for k, lg in enumerate(out["mtp_logits"], start=1):
        # MTP logits at i depend on tokens[i+k]: compare positions whose i+k stays in the document.
        pk = torch.cat([lg[1, 0:4 - k], lg[1, 4:S - k]], 0)
        ak = torch.cat([sep[0]["mtp_logits"][k - 1][0, 0:4 - k], sep[1]["mtp_logits"][k - 1][0, 0:S - 4 - k]], 0)
        _expect((pk - ak).abs().max().item() < 1e-12, f"packed row == documents alone (mtp_logits.{k})")
    _expect(all(math.isfinite(out[s].item()) for s in SCALARS) and out["loss_balance"].item() > 0
            and (cfg.num_nextn_predict_layers == 0 or out["loss_mtp"].item() > 0), "losses finite and non-zero")

    # 2. Forcing the oracle's own routing changes nothing.
    out2 = run(base, {l: r.clone() for l, r in out["routing"].items()})
    _expect(out2["loss"].item() == out["loss"].item(), "forced routing == computed routing")
    l0 = cfg.moe_layers()[0]
    other = {l: r.clone() for l, r in out["routing"].items()}
    other[l0][0] = torch.tensor([e for e in range(cfg.n_routed_experts) if e not in other[l0][0]][:cfg.num_experts_per_tok])
    out3 = run(base, other)
    _expect(out3["loss"].item() != out["loss"].item() and torch.equal(out3["routing"][l0], out["routing"][l0]),
            "a forced different routing is used, and routing still reports the oracle's own")

    # 3. Directional derivative over ALL parameters vs central differences.
    p = {n: t.clone().requires_grad_(not ref.is_gate_bias(n)) for n, t in base.items()}
    loss = run(p)["loss"]
    loss.backward()
    _expect(all(t.grad is None for n, t in p.items() if ref.is_gate_bias(n)), "gate bias gets no gradient")
    g = torch.Generator().manual_seed(11)
    v = {n: torch.randn(t.shape, generator=g, dtype=torch.float64) for n, t in base.items()
         if not ref.is_gate_bias(n)}
    for n in v:
        if p[n].grad is None:  # e.g. an expert no token was routed to
            p[n].grad = torch.zeros_like(p[n])
    analytic = sum((p[n].grad * v[n]).sum().item() for n in v)
    eps = 1e-7
    with torch.no_grad():
        lp = run({n: t + eps * v[n] if n in v else t for n, t in base.items()})
        lm = run({n: t - eps * v[n] if n in v else t for n, t in base.items()})
    same = all(torch.equal(lp["routing"][l], lm["routing"][l]) for l in lp["routing"])
    numeric = (lp["loss"].item() - lm["loss"].item()) / (2 * eps)
    rel = abs(analytic - numeric) / max(abs(numeric), 1e-30)
    _expect(same and rel < 1e-6, f"directional derivative: autograd {analytic:.10e} vs finite diff "
                                 f"{numeric:.10e} (rel {rel:.1e})")
    used_experts = {l: sorted(set(r.flatten().tolist())) for l, r in out["routing"].items()}
    unused = set()
    for l, used in used_experts.items():
        for e in set(range(cfg.n_routed_experts)) - set(used):
            unused |= {f"model.layers.{l}.mlp.experts.{e}.{m}_proj.weight" for m in ("gate", "up", "down")}
    nz = [n for n in v if p[n].grad.abs().max().item() == 0.0]
    _expect(set(nz) == unused, f"every parameter gets a non-zero gradient except the gate bias and "
            f"the {len(unused) // 3} unused experts"
            + (f" (zero: {nz[:5]})" if nz else ""))

    # 4. torch.autograd.gradcheck on a few entries of representative parameters.
    used_rows = sorted(set(tokens.flatten().tolist()))
    L = cfg.num_hidden_layers
    first_moe = cfg.moe_layers()[0]
    picks = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
             "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.kv_a_proj_with_mqa.weight",
             "model.layers.0.self_attn.kv_a_layernorm.weight", "model.layers.0.self_attn.kv_b_proj.weight",
             "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.down_proj.weight",
             f"model.layers.{first_moe}.mlp.gate.weight",
             f"model.layers.{first_moe}.mlp.experts.{used_experts[first_moe][0]}.gate_proj.weight",
             f"model.layers.{first_moe}.mlp.experts.{used_experts[first_moe][-1]}.down_proj.weight",
             f"model.layers.{first_moe}.mlp.shared_experts.up_proj.weight"]
    picks += (["model.layers.0.self_attn.q_a_proj.weight", "model.layers.0.self_attn.q_b_proj.weight",
               "model.layers.0.self_attn.q_a_layernorm.weight"] if cfg.q_lora_rank > 0
              else ["model.layers.0.self_attn.q_proj.weight"])
    for k in range(1, cfg.num_nextn_predict_layers + 1):
        pre = f"model.layers.{L + k - 1}."
        picks += [pre + "enorm.weight", pre + "hnorm.weight", pre + "eh_proj.weight",
                  pre + "shared_head.norm.weight", pre + "mlp.gate.weight",
                  pre + "self_attn.kv_b_proj.weight"]
    gsel = torch.Generator().manual_seed(5)
    sel = []
    for n in picks:
        numel = base[n].numel()
        if n == "model.embed_tokens.weight":
            C = base[n].shape[1]
            rows = torch.tensor(used_rows)[torch.randint(0, len(used_rows), (3,), generator=gsel)]
            flat = rows * C + torch.randint(0, C, (3,), generator=gsel)
        else:
            flat = torch.randint(0, numel, (3,), generator=gsel)
        sel.append((n, flat))
    total = sum(len(f) for _, f in sel)

    def f(delta):
        q = dict(base)
        off = 0
        for n, flat in sel:
            d = torch.zeros(base[n].numel(), dtype=torch.float64).index_put((flat,), delta[off:off + len(flat)],
                                                                           accumulate=True)
            q[n] = base[n] + d.view(base[n].shape)
            off += len(flat)
        return run(q)["loss"]

    delta = torch.zeros(total, dtype=torch.float64, requires_grad=True)
    try:
        ok = torch.autograd.gradcheck(f, (delta,), eps=1e-6, atol=1e-8, rtol=1e-5, raise_exception=True)
    except RuntimeError as e:
        print(str(e)[:2000])
        ok = False
    _expect(ok, f"torch.autograd.gradcheck on {total} entries of {len(sel)} parameters (float64)")


def self_test():
    import tempfile
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    try:
        print("[st.py / gate / YaRN]")
        with tempfile.TemporaryDirectory() as tmp:
            _self_test_st(tmp)
        _self_test_gate()
        _self_test_yarn()
        for name, d in _self_test_configs():
            _self_test_model(name, d)
    except SelfTestFailure as e:
        print(f"SELF-TEST FAIL: {e}")
        return 1
    except Exception:  # a crash is a failure too
        traceback.print_exc()
        print("SELF-TEST FAIL: exception")
        return 1
    print("SELF-TEST PASS")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", help="reference_dump output directory")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                    help="precision of the oracle (default float32)")
    ap.add_argument("--rtol", type=float, default=1e-5,
                    help="max allowed normwise relative error per tensor (default 1e-5)")
    ap.add_argument("--use-dump-routing", action="store_true",
                    help="route with Mariana's routing.L instead of the oracle's own selection")
    ap.add_argument("--routing-diversity", type=int, default=0, metavar="MIN_SETS",
                    help="fail unless every MoE layer has >= MIN_SETS distinct top-k expert sets "
                         "and selects every expert (when the token count allows)")
    ap.add_argument("--self-test", action="store_true", help="check the oracle itself and exit")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.dir:
        ap.print_usage()
        print("ERROR: DIR is required (or --self-test)")
        return 2
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    return check_dump(args.dir, args.dtype, args.rtol, args.use_dump_routing, args.routing_diversity)


if __name__ == "__main__":
    sys.exit(main())
