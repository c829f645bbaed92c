#!/usr/bin/env bash
# The main job on the embedded default: set up, build, initialise the tiny DeepSeek-V3 model as an
# HF checkpoint, describe it, and benchmark a training step (forward + backward) on it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
BIN=build/cli/mariana
OUT=.mariana/models/tiny
$BIN model init --config configs/models/tiny.json --seed 0 --out "$OUT"
$BIN model info "$OUT"
$BIN bench model --config "$OUT" --batch 8 --seq 256
