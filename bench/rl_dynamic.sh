#!/usr/bin/env bash
# GRPO with and without dynamic sampling (DAPO) on the main job's phase 4 (configs/pipeline/4-rl.toml,
# from runs/pipeline-sft: run scripts/pipeline.sh first). Both runs in one invocation, one after the
# other, one thread each, OpenBLAS's Haswell kernels (as scripts/pipeline.sh). Prints, per run, the
# held-out accuracy at every eval.every iterations against the cumulative rollout + learn seconds,
# the prompts sampled and the groups dropped.
# Usage: bench/rl_dynamic.sh [ITERATIONS] (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
BIN=build/cli/mariana
IT=${1:-60}
[ -d runs/pipeline-sft ] || { echo "bench/rl_dynamic.sh: runs/pipeline-sft is missing; run scripts/pipeline.sh first" >&2; exit 1; }
for mode in off on; do
  flag=false; [ $mode = on ] && flag=true
  $BIN train configs/pipeline/4-rl.toml --run-dir runs/bench-rl-dynamic-$mode --overwrite --quiet \
    --set train.threads=1 --set grpo.iterations=$IT --set rl.dynamic_sampling=$flag > /dev/null
done
/usr/bin/python3 - "$IT" <<'PY'
import json, sys
for mode in ("off", "on"):
    wall = 0.0
    sampled = dropped = zero = 0
    print(f"dynamic sampling {mode}:")
    print("  iteration  cumulative s  held-out acc  prompts sampled  dropped groups  zero-var groups trained")
    for line in open(f"runs/bench-rl-dynamic-{mode}/metrics.jsonl"):
        m = json.loads(line)
        wall += m["rollout_s"] + m["learn_s"]
        sampled += m.get("prompts_sampled", 0); dropped += m.get("dropped_groups", 0); zero += m["zero_variance_groups"]
        if "eval_accuracy" in m:
            print(f"  {m['iteration']:9d}  {wall:12.1f}  {100*m['eval_accuracy']:11.1f}%  {sampled:15d}  {dropped:14d}  {zero:23d}")
PY
