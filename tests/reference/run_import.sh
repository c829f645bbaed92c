#!/usr/bin/env bash
# A checkpoint written by the Python side (make_checkpoint.py) imports into Mariana: `mariana model
# logits` on it must equal the PyTorch oracle's logits (computed in float64) within 1e-5 normwise
# relative — the fp32 rounding of Mariana's own computation, with ~10x margin.
#   run_import.sh MARIANA CONFIG OUTDIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
reference_setup MARIANA "$@"
MARIANA=$TOOL
"$PY" "$HERE/make_checkpoint.py" "$CONFIG" 3 "$OUT/ckpt"
"$MARIANA" model logits --checkpoint "$OUT/ckpt" --tokens "3 17 42 5 99 7 11 200" --out "$OUT/mariana.npy"
"$PY" - "$OUT/ckpt/expected_logits.npy" "$OUT/mariana.npy" <<'PYEOF'
import sys
import numpy as np
ref = np.load(sys.argv[1]).astype(np.float64)
got = np.load(sys.argv[2]).astype(np.float64)
if ref.shape != got.shape:
    print(f"FAIL: shape {got.shape} != expected {ref.shape}")
    sys.exit(1)
err = np.abs(ref - got).max() / max(np.abs(ref).max(), 1e-30)
print(f"import logits: normwise relative error {err:.3e} (tolerance 1e-5)")
sys.exit(0 if err <= 1e-5 else 1)
PYEOF
