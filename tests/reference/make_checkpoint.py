#!/usr/bin/python3
"""Write a random-weight DeepSeek-V3 checkpoint in HuggingFace layout, plus expected logits.

    /usr/bin/python3 make_checkpoint.py CONFIG.json SEED OUTDIR

OUTDIR/config.json          copy of CONFIG.json (byte for byte)
OUTDIR/model.safetensors    fp32, HF names; matrices ~ N(0, initializer_range), norm weights
                            1 + N(0, 0.05), e_score_correction_bias ~ N(0, 0.01),
                            MTP shared_head.head.weight = copy of lm_head.weight
OUTDIR/expected_logits.npy  float32 [S, V]: main-model logits for tokens EXPECTED_TOKENS
                            (B = 1, one document starting at 0, positions 0..S-1), computed in
                            float64 from the fp32 weights and rounded once to float32.
Exit status 0 on success, 2 on a bad config or argument.
"""

import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import deepseek_v3_ref as ref  # noqa: E402
import st  # noqa: E402

EXPECTED_TOKENS = [3, 17, 42, 5, 99, 7, 11, 200]


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    config_path, seed, outdir = argv
    try:
        seed = int(seed)
        with open(config_path) as f:
            cfg = ref.DSConfig(json.load(f))
    except (OSError, ValueError) as e:
        print(f"ERROR: {e}")
        return 2
    if max(EXPECTED_TOKENS) >= cfg.vocab_size:
        print(f"ERROR: vocab_size {cfg.vocab_size} too small for the expected-logits tokens")
        return 2
    os.makedirs(outdir, exist_ok=True)
    shutil.copyfile(config_path, os.path.join(outdir, "config.json"))

    params32 = ref.random_params(cfg, seed, dtype=torch.float32)
    st.save(os.path.join(outdir, "model.safetensors"), params32, {"format": "pt"})

    # Expected logits from exactly the fp32 values written, evaluated in float64.
    p64 = {n: t.to(torch.float64) for n, t in params32.items() if not ref.is_shared_head_copy(n)}
    tokens = torch.tensor([EXPECTED_TOKENS], dtype=torch.int64)
    with torch.no_grad():
        out = ref.forward(p64, cfg, tokens, torch.full_like(tokens, -1), torch.zeros_like(tokens), 0.0, 0.0)
    logits = out["logits"][0].numpy().astype(np.float32)
    np.save(os.path.join(outdir, "expected_logits.npy"), logits)
    print(f"wrote {outdir}: {len(params32)} tensors, expected_logits {logits.shape} "
          f"(max |logit| {np.abs(logits).max():.3e})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
