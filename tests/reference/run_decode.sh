#!/usr/bin/env bash
# The inference engine's absorbed-MLA decode path against PyTorch: make_checkpoint.py writes a
# random checkpoint for CONFIG, decode_dump runs prefill + one-token decode steps of three
# sequences through the engine (latent and naive cache, float and double), and check_decode.py
# compares every row's logits with a PyTorch absorbed decoder and the oracle's full forward.
#   run_decode.sh DECODE_TOOL CONFIG OUTDIR
# Exit status: check_decode.py's (0 pass, 1 mismatch, 2 unreadable dump), or 1 when a step
# before it fails or /usr/bin/python3 cannot import torch (this test never skips).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
reference_setup DECODE_TOOL "$@"
"$PY" "$HERE/make_checkpoint.py" "$CONFIG" 3 "$OUT/ckpt" || { echo "FAIL: make_checkpoint.py" >&2; exit 1; }
# Prompts of 7, 3 and 1 tokens prefilled in one call, then 9, 8 and 4 decode steps (sequences
# finish at different calls, so later calls batch fewer sequences).
set -x
"$TOOL" --checkpoint "$OUT/ckpt" --out "$OUT/decode.safetensors" --prefill 7,3,1 \
  --seq "3 17 42 5 99 7 11 200 513 64 1000 8 77 310 2 901" \
  --seq "640 12 333 45 870 9 123 56 777 21 400" \
  --seq "5 250 6 1023 7" || { echo "FAIL: decode_dump" >&2; exit 1; }
exec "$PY" "$HERE/check_decode.py" "$OUT/ckpt" "$OUT/decode.safetensors"
