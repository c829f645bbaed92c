#!/usr/bin/env bash
# The main job on the embedded default, end to end on the CPU: set up, build, then
# scripts/pipeline.sh — pretrain -> extend (YaRN) -> SFT -> GRPO on the tiny DeepSeek-V3 model and
# the built-in arithmetic task — ending with a table of held-out accuracy after each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/cli/mariana model info configs/models/tiny.json
scripts/pipeline.sh
echo "runs/pipeline-*: metrics.jsonl and checkpoints per phase; the table is in runs/pipeline-accuracy.txt"
