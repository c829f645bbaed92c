"""Independent PyTorch reference ("oracle") of the DeepSeek-V3 training forward pass.

Written from the model spec (HuggingFace DeepSeek-V3 semantics, HF parameter names); no code from
transformers or DeepSeek.  Everything is functional over a dict {hf_name: tensor}, so autograd gives
the gradient of every parameter by name.  Runs in whatever floating dtype the parameters have.

Batch convention: tokens/targets/doc_start are [B, S] integer tensors; targets < 0 are ignored;
doc_start[b, i] is the index in row b where token i's document starts; the position of (b, i) is
i - doc_start[b, i], and (b, i) attends to (b, j) iff doc_start[b, i] <= j <= i.
"""

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F


class ConfigError(ValueError):
    pass


class DSConfig:
    """The HF config.json fields this oracle uses, validated."""

    def __init__(self, d):
        self.raw = dict(d)

        def req(k):
            if d.get(k) is None:
                raise ConfigError(f"config: missing field {k!r}")
            return d[k]

        self.vocab_size = int(req("vocab_size"))
        self.hidden_size = int(req("hidden_size"))
        self.intermediate_size = int(req("intermediate_size"))
        self.moe_intermediate_size = int(req("moe_intermediate_size"))
        self.num_hidden_layers = int(req("num_hidden_layers"))
        self.first_k_dense_replace = int(d.get("first_k_dense_replace") or 0)
        self.num_attention_heads = int(req("num_attention_heads"))
        self.q_lora_rank = int(d.get("q_lora_rank") or 0)  # null / 0 -> plain q_proj
        self.kv_lora_rank = int(req("kv_lora_rank"))
        self.qk_nope_head_dim = int(req("qk_nope_head_dim"))
        self.qk_rope_head_dim = int(req("qk_rope_head_dim"))
        self.v_head_dim = int(req("v_head_dim"))
        self.n_routed_experts = int(req("n_routed_experts"))
        self.n_shared_experts = int(d.get("n_shared_experts") or 0)
        self.num_experts_per_tok = int(req("num_experts_per_tok"))
        self.n_group = int(d.get("n_group") or 1)
        self.topk_group = int(d.get("topk_group") or 1)
        self.norm_topk_prob = bool(d.get("norm_topk_prob", True))
        self.routed_scaling_factor = float(d.get("routed_scaling_factor", 1.0))
        self.rms_norm_eps = float(d.get("rms_norm_eps", 1e-6))
        self.initializer_range = float(d.get("initializer_range", 0.02))
        self.num_nextn_predict_layers = int(d.get("num_nextn_predict_layers") or 0)
        self.max_position_embeddings = int(d.get("max_position_embeddings", 4096))
        # RoPE as transformers 5 reads it (DeepseekV3Config.convert_rope_params_to_dict): the older
        # rope_scaling if set, else rope_parameters; rope_theta inside it, else the top-level one.
        rope = dict(d.get("rope_scaling") or d.get("rope_parameters") or {})
        self.rope_theta = float(rope.pop("rope_theta", d.get("rope_theta", 10000.0)))
        self.rope_scaling = rope if rope.get("type", rope.get("rope_type", "default")) != "default" else None

        if d.get("model_type", "deepseek_v3") != "deepseek_v3":
            raise ConfigError(f"config: model_type {d.get('model_type')!r} is not deepseek_v3")
        if d.get("scoring_func", "sigmoid") != "sigmoid":
            raise ConfigError("config: only scoring_func 'sigmoid' is supported")
        if d.get("topk_method", "noaux_tc") != "noaux_tc":
            raise ConfigError("config: only topk_method 'noaux_tc' is supported")
        if d.get("hidden_act", "silu") != "silu":
            raise ConfigError("config: only hidden_act 'silu' is supported")
        if d.get("tie_word_embeddings", False):
            raise ConfigError("config: tie_word_embeddings=true is not supported")
        if int(d.get("moe_layer_freq") or 1) != 1:
            raise ConfigError("config: moe_layer_freq != 1 is not supported")
        kvh = d.get("num_key_value_heads")
        if kvh is not None and int(kvh) != self.num_attention_heads:
            raise ConfigError("config: MLA needs num_key_value_heads == num_attention_heads")
        if d.get("attention_bias", False):
            raise ConfigError("config: attention_bias=true is not supported")
        if self.qk_rope_head_dim % 2:
            raise ConfigError("config: qk_rope_head_dim must be even")
        E, G = self.n_routed_experts, self.n_group
        if E % G or not (1 <= self.topk_group <= G):
            raise ConfigError("config: n_routed_experts % n_group != 0 or bad topk_group")
        if G > 1 and E // G < 2:
            raise ConfigError("config: group score needs >= 2 experts per group")
        if self.num_experts_per_tok > self.topk_group * (E // G):
            raise ConfigError("config: num_experts_per_tok > experts in the kept groups")
        if self.rope_scaling is not None:
            rs = self.rope_scaling
            kind = rs.get("type", rs.get("rope_type"))
            if kind not in ("yarn", "default", None):
                raise ConfigError(f"config: rope_scaling type {kind!r} is not supported")
            if kind == "yarn":
                # HF versions disagree in these corners; refuse them rather than pick one silently.
                if rs.get("factor") is None or rs.get("original_max_position_embeddings") is None:
                    raise ConfigError("config: yarn needs factor and original_max_position_embeddings")
                implied = self.max_position_embeddings / float(rs["original_max_position_embeddings"])
                if abs(implied - float(rs["factor"])) > 1e-9 * float(rs["factor"]):
                    raise ConfigError("config: yarn factor != max_position_embeddings / "
                                      "original_max_position_embeddings (some HF versions use the ratio)")
                if not rs.get("mscale_all_dim") and float(rs.get("mscale", 1.0)) != 1.0:
                    raise ConfigError("config: yarn mscale != 1 without mscale_all_dim is ambiguous across HF versions")
                if rs.get("attention_factor") is not None or rs.get("truncate", True) is not True:
                    raise ConfigError("config: yarn attention_factor / truncate are not supported")

    def is_moe_layer(self, layer):
        return self.n_routed_experts > 0 and layer >= self.first_k_dense_replace

    def yarn(self):
        rs = self.rope_scaling
        if rs is None:
            return None
        if rs.get("type", rs.get("rope_type")) != "yarn":
            return None
        return rs

    def moe_layers(self):
        """HF indices of all MoE layers, main then MTP."""
        n = self.num_hidden_layers + self.num_nextn_predict_layers
        return [l for l in range(n) if self.is_moe_layer(l)]


def param_shapes(cfg):
    """OrderedDict {hf_name: shape} of every tensor in a checkpoint (incl. shared_head.head)."""
    C, V = cfg.hidden_size, cfg.vocab_size
    H, dn, dr, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    r, E = cfg.kv_lora_rank, cfg.n_routed_experts
    p = OrderedDict()
    p["model.embed_tokens.weight"] = (V, C)

    def layer(l):
        pre = f"model.layers.{l}."
        p[pre + "input_layernorm.weight"] = (C,)
        if cfg.q_lora_rank > 0:
            p[pre + "self_attn.q_a_proj.weight"] = (cfg.q_lora_rank, C)
            p[pre + "self_attn.q_a_layernorm.weight"] = (cfg.q_lora_rank,)
            p[pre + "self_attn.q_b_proj.weight"] = (H * (dn + dr), cfg.q_lora_rank)
        else:
            p[pre + "self_attn.q_proj.weight"] = (H * (dn + dr), C)
        p[pre + "self_attn.kv_a_proj_with_mqa.weight"] = (r + dr, C)
        p[pre + "self_attn.kv_a_layernorm.weight"] = (r,)
        p[pre + "self_attn.kv_b_proj.weight"] = (H * (dn + dv), r)
        p[pre + "self_attn.o_proj.weight"] = (C, H * dv)
        p[pre + "post_attention_layernorm.weight"] = (C,)
        if cfg.is_moe_layer(l):
            I = cfg.moe_intermediate_size
            p[pre + "mlp.gate.weight"] = (E, C)
            p[pre + "mlp.gate.e_score_correction_bias"] = (E,)
            for e in range(E):
                p[pre + f"mlp.experts.{e}.gate_proj.weight"] = (I, C)
                p[pre + f"mlp.experts.{e}.up_proj.weight"] = (I, C)
                p[pre + f"mlp.experts.{e}.down_proj.weight"] = (C, I)
            if cfg.n_shared_experts > 0:
                Is = I * cfg.n_shared_experts
                p[pre + "mlp.shared_experts.gate_proj.weight"] = (Is, C)
                p[pre + "mlp.shared_experts.up_proj.weight"] = (Is, C)
                p[pre + "mlp.shared_experts.down_proj.weight"] = (C, Is)
        else:
            I = cfg.intermediate_size
            p[pre + "mlp.gate_proj.weight"] = (I, C)
            p[pre + "mlp.up_proj.weight"] = (I, C)
            p[pre + "mlp.down_proj.weight"] = (C, I)

    for l in range(cfg.num_hidden_layers):
        layer(l)
    for k in range(1, cfg.num_nextn_predict_layers + 1):
        l = cfg.num_hidden_layers + k - 1
        pre = f"model.layers.{l}."
        p[pre + "enorm.weight"] = (C,)
        p[pre + "hnorm.weight"] = (C,)
        p[pre + "eh_proj.weight"] = (C, 2 * C)
        layer(l)
        p[pre + "shared_head.norm.weight"] = (C,)
        p[pre + "shared_head.head.weight"] = (V, C)
    p["model.norm.weight"] = (C,)
    p["lm_head.weight"] = (V, C)
    return p


def is_shared_head_copy(name):
    return name.endswith(".shared_head.head.weight")


def is_norm_weight(name):
    return name.endswith("norm.weight")  # *_layernorm, enorm, hnorm, shared_head.norm, model.norm


def is_gate_bias(name):
    return name.endswith(".mlp.gate.e_score_correction_bias")


def trainable_names(cfg):
    """Parameters whose gradient the oracle produces (shared_head.head is lm_head; bias is routing only)."""
    return [n for n in param_shapes(cfg) if not is_shared_head_copy(n)]


# ----------------------------------------------------------------------------- building blocks


def yarn_get_mscale(scale, mscale):
    return 1.0 if scale <= 1.0 else 0.1 * mscale * math.log(scale) + 1.0


def rope_setup(cfg):
    """Returns (inv_freq float64 [dr/2], cos/sin multiplier, softmax_scale)."""
    dr, theta = cfg.qk_rope_head_dim, cfg.rope_theta
    j = torch.arange(dr // 2, dtype=torch.float64)
    inv_freq = 1.0 / theta ** (2.0 * j / dr)
    cs_mult = 1.0
    softmax_scale = (cfg.qk_nope_head_dim + dr) ** -0.5
    rs = cfg.yarn()
    if rs is not None:
        s = float(rs["factor"])
        L0 = float(rs["original_max_position_embeddings"])
        beta_fast = float(rs.get("beta_fast", 32))
        beta_slow = float(rs.get("beta_slow", 1))
        mscale = float(rs.get("mscale", 1.0))
        mscale_all_dim = float(rs.get("mscale_all_dim", 0.0))

        def corr(rot):
            return dr * math.log(L0 / (rot * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(corr(beta_fast)), 0)
        high = min(math.ceil(corr(beta_slow)), dr - 1)
        if low == high:
            high += 0.001
        ramp = ((j - low) / (high - low)).clamp(0.0, 1.0)
        inv_freq = inv_freq / s * ramp + inv_freq * (1.0 - ramp)
        cs_mult = yarn_get_mscale(s, mscale) / yarn_get_mscale(s, mscale_all_dim)
        if mscale_all_dim:
            softmax_scale *= yarn_get_mscale(s, mscale_all_dim) ** 2
    return inv_freq, cs_mult, softmax_scale


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def linear(x, w):
    return x.matmul(w.t())


def rope(x, cos, sin):
    """x [B,S,h,dr], pairs (x[2j], x[2j+1]) rotated; cos/sin [B,S,dr/2]."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)


def swiglu(x, p, pre):
    return linear(F.silu(linear(x, p[pre + "gate_proj.weight"])) * linear(x, p[pre + "up_proj.weight"]),
                  p[pre + "down_proj.weight"])


def attention(p, pre, x, ctx, cfg):
    B, S, _ = x.shape
    H, dn, dr, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
    r, eps = cfg.kv_lora_rank, cfg.rms_norm_eps
    if cfg.q_lora_rank > 0:
        q = linear(rms_norm(linear(x, p[pre + "q_a_proj.weight"]), p[pre + "q_a_layernorm.weight"], eps),
                   p[pre + "q_b_proj.weight"])
    else:
        q = linear(x, p[pre + "q_proj.weight"])
    q = q.view(B, S, H, dn + dr)
    q = torch.cat((q[..., :dn], rope(q[..., dn:], ctx["cos"], ctx["sin"])), dim=-1)
    kv_a = linear(x, p[pre + "kv_a_proj_with_mqa.weight"])
    c = rms_norm(kv_a[..., :r], p[pre + "kv_a_layernorm.weight"], eps)
    k_pe = rope(kv_a[..., r:].unsqueeze(2), ctx["cos"], ctx["sin"])  # [B,S,1,dr]
    kv = linear(c, p[pre + "kv_b_proj.weight"]).view(B, S, H, dn + dv)
    k = torch.cat((kv[..., :dn], k_pe.expand(B, S, H, dr)), dim=-1)
    v = kv[..., dn:]
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * ctx["softmax_scale"]
    scores = scores.masked_fill(~ctx["mask"][:, None, :, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # parameters are fp32 or fp64: softmax in that precision
    o = torch.einsum("bhij,bjhd->bihd", probs, v).reshape(B, S, H * dv)
    return linear(o, p[pre + "o_proj.weight"])


def stable_topk_desc(x, k):
    """Indices of the k largest along the last dim, descending; ties -> lower index first."""
    return torch.sort(x, dim=-1, descending=True, stable=True).indices[..., :k]


def gate_select(scores, bias, cfg):
    """Non-differentiable routing. scores: sigmoid scores [T,E]. Returns indices [T,K] (int64) in
    descending biased-score order."""
    T, E = scores.shape
    G = cfg.n_group
    with torch.no_grad():
        biased = scores.detach() + bias.detach()
        if G > 1:
            grouped = biased.view(T, G, E // G)
            group_score = torch.sort(grouped, dim=-1, descending=True).values[..., :2].sum(-1)  # [T,G]
            keep = stable_topk_desc(group_score, cfg.topk_group)
            keep_mask = torch.zeros(T, G, dtype=torch.bool).scatter_(1, keep, True)
            biased = grouped.masked_fill(~keep_mask[:, :, None], float("-inf")).view(T, E)
        return stable_topk_desc(biased, cfg.num_experts_per_tok)


def moe(p, pre, x, cfg, layer, rec):
    B, S, C = x.shape
    T, E, K = B * S, cfg.n_routed_experts, cfg.num_experts_per_tok
    xt = x.reshape(T, C)
    logits = linear(xt, p[pre + "gate.weight"])
    s = torch.sigmoid(logits)
    idx = gate_select(s, p[pre + "gate.e_score_correction_bias"], cfg)
    rec["routing"][layer] = idx  # always the oracle's own selection
    forced = rec["forced_routing"].get(layer) if rec["forced_routing"] else None
    if forced is not None:  # compute with an externally given selection instead
        idx = forced.to(torch.int64).view(T, K)
    w = s.gather(1, idx)
    if cfg.norm_topk_prob:
        w = w / w.sum(-1, keepdim=True)
    w = w * cfg.routed_scaling_factor
    y = torch.zeros_like(xt)
    for e in range(E):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        ye = swiglu(xt[tok], p, pre + f"experts.{e}.")
        y = y.index_add(0, tok, ye * w[tok, slot][:, None])
    if cfg.n_shared_experts > 0:
        y = y + swiglu(xt, p, pre + "shared_experts.")
    # Sequence-wise balance loss for this layer, averaged over rows.
    with torch.no_grad():
        counts = torch.zeros(T, E, dtype=x.dtype).scatter_(1, idx, 1.0).view(B, S, E).sum(1)  # [B,E]
        f = counts * (E / (K * S))
    P = (s / s.sum(-1, keepdim=True)).view(B, S, E).mean(1)  # [B,E]
    rec["balance"].append((f * P).sum(-1).mean())
    return y.view(B, S, C)


def decoder_layer(p, layer, h, ctx, cfg, rec):
    pre = f"model.layers.{layer}."
    eps = cfg.rms_norm_eps
    x = h + attention(p, pre + "self_attn.", rms_norm(h, p[pre + "input_layernorm.weight"], eps), ctx, cfg)
    hn = rms_norm(x, p[pre + "post_attention_layernorm.weight"], eps)
    if cfg.is_moe_layer(layer):
        return x + moe(p, pre + "mlp.", hn, cfg, layer, rec)
    return x + swiglu(hn, p, pre + "mlp.")


def masked_ce(logits, targets):
    """Mean cross-entropy over targets >= 0 (0 when none is valid)."""
    V = logits.shape[-1]
    lg, tg = logits.reshape(-1, V), targets.reshape(-1).to(torch.int64)
    valid = tg >= 0
    if int(valid.sum()) == 0:
        return lg.sum() * 0.0
    lp = torch.log_softmax(lg[valid], dim=-1)
    return -lp.gather(1, tg[valid][:, None]).mean()


def check_batch(cfg, tokens, targets, doc_start):
    B, S = tokens.shape
    if targets.shape != (B, S) or doc_start.shape != (B, S):
        raise ValueError(f"batch: shapes differ: tokens {tuple(tokens.shape)} targets "
                         f"{tuple(targets.shape)} doc_start {tuple(doc_start.shape)}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size:
        raise ValueError("batch: token id out of range")
    if int(targets.max()) >= cfg.vocab_size:
        raise ValueError("batch: target id out of range")
    i = torch.arange(S)[None, :]
    if bool((doc_start < 0).any()) or bool((doc_start > i).any()):
        raise ValueError("batch: doc_start must satisfy 0 <= doc_start[b,i] <= i")
    if int((i - doc_start).max()) >= cfg.max_position_embeddings:
        raise ValueError("batch: position >= max_position_embeddings")


def forward(params, cfg, tokens, targets, doc_start, mtp_weight, balance_alpha, forced_routing=None):
    """params: {hf_name: tensor} (float32 or float64; any may require grad).
    Returns dict: logits [B,S,V], mtp_logits [list of [B,S,V]], loss, loss_main, loss_mtp,
    loss_balance (0-dim tensors), routing {hf_layer: int64 [B*S,K]} (the oracle's own selection,
    descending biased score, even where forced_routing {hf_layer: [B*S,K]} overrides what is used)."""
    tokens, targets, doc_start = (t.to(torch.int64) for t in (tokens, targets, doc_start))
    check_batch(cfg, tokens, targets, doc_start)
    B, S = tokens.shape
    dtype = params["model.embed_tokens.weight"].dtype
    eps = cfg.rms_norm_eps

    ar = torch.arange(S)
    pos = ar[None, :] - doc_start  # [B,S]
    mask = (ar[None, None, :] >= doc_start[:, :, None]) & (ar[None, None, :] <= ar[None, :, None])
    inv_freq, cs_mult, softmax_scale = rope_setup(cfg)
    angle = pos.to(torch.float64)[..., None] * inv_freq  # float64, then rounded once to dtype
    ctx = {"cos": (torch.cos(angle) * cs_mult).to(dtype), "sin": (torch.sin(angle) * cs_mult).to(dtype),
           "mask": mask, "softmax_scale": softmax_scale}
    rec = {"routing": {}, "balance": [], "forced_routing": forced_routing}

    embed = params["model.embed_tokens.weight"]
    head = params["lm_head.weight"]
    h = embed[tokens]
    for l in range(cfg.num_hidden_layers):
        h = decoder_layer(params, l, h, ctx, cfg, rec)
    h_main = rms_norm(h, params["model.norm.weight"], eps)
    logits = linear(h_main, head)
    loss_main = masked_ce(logits, targets)

    mtp_logits, mtp_losses = [], []
    h_prev = h_main
    for k in range(1, cfg.num_nextn_predict_layers + 1):
        l = cfg.num_hidden_layers + k - 1
        pre = f"model.layers.{l}."
        tok_k = torch.zeros_like(tokens)
        tgt_k = torch.full_like(targets, -1)
        if k < S:
            tok_k[:, : S - k] = tokens[:, k:]
            same_doc = doc_start[:, k:] == doc_start[:, : S - k]
            tgt_k[:, : S - k] = torch.where(same_doc, targets[:, k:], torch.full_like(targets[:, k:], -1))
        e = rms_norm(embed[tok_k], params[pre + "enorm.weight"], eps)
        hh = rms_norm(h_prev, params[pre + "hnorm.weight"], eps)
        x = linear(torch.cat((e, hh), dim=-1), params[pre + "eh_proj.weight"])
        out = decoder_layer(params, l, x, ctx, cfg, rec)
        lg = linear(rms_norm(out, params[pre + "shared_head.norm.weight"], eps), head)
        mtp_logits.append(lg)
        mtp_losses.append(masked_ce(lg, tgt_k))
        h_prev = out

    zero = logits.new_zeros(())
    loss_mtp = torch.stack(mtp_losses).mean() if mtp_losses else zero
    loss_balance = torch.stack(rec["balance"]).sum() if rec["balance"] else zero
    loss = loss_main + mtp_weight * loss_mtp + balance_alpha * loss_balance
    return {"logits": logits, "mtp_logits": mtp_logits, "loss": loss, "loss_main": loss_main,
            "loss_mtp": loss_mtp, "loss_balance": loss_balance, "routing": rec["routing"]}


def random_params(cfg, seed, dtype=torch.float32, std=None, norm_noise=0.05, bias_noise=0.01):
    """Random weights in HF layout: matrices ~ N(0, std or initializer_range), norm weights
    1 + N(0, norm_noise), gate bias N(0, bias_noise), shared_head.head = copy of lm_head."""
    g = torch.Generator().manual_seed(int(seed))
    std = cfg.initializer_range if std is None else std
    out = OrderedDict()
    for name, shape in param_shapes(cfg).items():
        if is_shared_head_copy(name):
            continue
        if is_norm_weight(name):
            t = 1.0 + norm_noise * torch.randn(shape, generator=g, dtype=torch.float64)
        elif is_gate_bias(name):
            t = bias_noise * torch.randn(shape, generator=g, dtype=torch.float64)
        else:
            t = std * torch.randn(shape, generator=g, dtype=torch.float64)
        out[name] = t.to(dtype)
    for name in param_shapes(cfg):
        if is_shared_head_copy(name):
            out[name] = out["lm_head.weight"].clone()
    return out
