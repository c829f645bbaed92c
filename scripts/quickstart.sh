#!/usr/bin/env bash
# The main job on the embedded default, end to end on the CPU: set up, build, pretrain the tiny
# DeepSeek-V3 model on the built-in mix (arithmetic, passkey retrieval, prose) at 64 tokens, extend
# its context 4x with YaRN to 256 tokens, and measure passkey retrieval before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
BIN=build/cli/mariana
$BIN model info configs/models/tiny.json
rm -rf runs/pretrain-tiny runs/extend-tiny
$BIN train configs/jobs/pretrain-tiny.toml --run-dir runs/pretrain-tiny
$BIN train configs/jobs/extend-tiny.toml --run-dir runs/extend-tiny
PRE=$(ls -d runs/pretrain-tiny/checkpoints/step-* | tail -1)
EXT=$(ls -d runs/extend-tiny/checkpoints/step-* | tail -1)
$BIN eval --task passkey --checkpoint "$PRE" --lengths 64,128,256 --depths 0,0.25,0.5,0.75,1 --samples 8 \
  --svg runs/pretrain-tiny/passkey.svg
$BIN eval --task passkey --checkpoint "$EXT" --lengths 64,128,256 --depths 0,0.25,0.5,0.75,1 --samples 8 \
  --svg runs/extend-tiny/passkey.svg
echo "runs/: metrics.jsonl, checkpoints (HF layout + trainer state) and passkey.svg heatmaps"
