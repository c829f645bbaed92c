#!/usr/bin/env bash
# GRPO as one process against RL campaigns (configs/jobs/rl-tiny-campaign.toml's [campaign] roles) on
# the main job's phase 4 (configs/pipeline/4-rl.toml, from runs/pipeline-sft: run scripts/pipeline.sh
# first): 1 vs 2 generators, on-policy vs rl.max_staleness = 1, and with dynamic sampling; weights
# broadcast over a comm/ group (the default) or pushed by actor calls. Every run is `mariana run`
# (an embedded controller and agent; each actor its own worker process), one thread per process
# (the one-process runs also with two), OpenBLAS's Haswell kernels, one after the other. Then `mariana bench comm --weights`
# times a Gloo broadcast of the same weights, the yardstick for each update's weight push.
# Prints per run: median iteration seconds (the learner's clock: waiting for its batch, learning,
# publishing; evaluations excluded), rollout samples/s, median push seconds, and the held-out
# accuracy at every eval.every iterations against the cumulative iteration seconds.
# Usage: bench/rl_campaign.sh [ITERATIONS] (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
BIN=$PWD/build/cli/mariana
IT=${1:-30}
OUT=runs/bench-rl-campaign
[ -d runs/pipeline-sft ] || { echo "bench/rl_campaign.sh: runs/pipeline-sft is missing; run scripts/pipeline.sh first" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
run() {  # name, then --set flags
  local name=$1; shift
  local t0=$(date +%s%N)
  $BIN run configs/pipeline/4-rl.toml --state-dir "$OUT/$name" --set train.threads=1 --set grpo.iterations=$IT \
    --set train.checkpoint_every=$IT "$@" > "$OUT/$name.log" 2>&1
  echo "$name $(( ($(date +%s%N) - t0) / 1000000 ))" >> "$OUT/wall.txt"  # milliseconds
}
run one-process
run one-process-threads2 --set train.threads=2
run campaign-g1 --set campaign.generators=1 --set campaign.scorers=1
run campaign-g2 --set campaign.generators=2 --set campaign.scorers=1
run campaign-g1-stale1 --set campaign.generators=1 --set campaign.scorers=1 --set rl.max_staleness=1
run campaign-g2-stale1 --set campaign.generators=2 --set campaign.scorers=1 --set rl.max_staleness=1
run one-process-dynamic --set rl.dynamic_sampling=true
run one-process-dynamic-threads2 --set rl.dynamic_sampling=true --set train.threads=2
run campaign-g2-calls --set campaign.generators=2 --set campaign.scorers=1 --set campaign.weight_sync=calls
run campaign-g2-stale1-dynamic --set campaign.generators=2 --set campaign.scorers=1 --set rl.max_staleness=1 \
  --set rl.dynamic_sampling=true
$BIN bench comm --ranks 3 --weights runs/pipeline-sft/checkpoints/$(ls runs/pipeline-sft/checkpoints | tail -1)/config.json \
  --json > "$OUT/comm.json"
/usr/bin/python3 - "$OUT" <<'PY'
import json, statistics, sys, os, glob
out = sys.argv[1]
walls = {k: int(v) / 1000 for k, v in (l.split() for l in open(f"{out}/wall.txt"))}
comm = json.load(open(f"{out}/comm.json"))
print("weight sync yardstick (bench comm --weights, 3 ranks):", json.dumps(comm)[:400])
for name in walls:
    path = glob.glob(f"{out}/{name}/runs/job-*/metrics.jsonl")[0]
    ms = [json.loads(l) for l in open(path)]
    iters = [m["iteration_s"] for m in ms[1:]]  # the first carries the warm-up
    samples = sum(m["prompts_sampled"] for m in ms) * 8
    roll = sum(m["rollout_s"] for m in ms)
    sync = [m["sync_s"] for m in ms if m["sync_s"] > 0]
    stale = max(m["staleness"] for m in ms)
    print(f"{name}: wall {walls[name]:.1f} s, median iteration {statistics.median(iters):.3f} s, "
          f"rollout {samples / roll:.1f} samples/s, median push {statistics.median(sync) * 1e3:.2f} ms, "
          f"max staleness {stale}")
    cum = 0.0
    for m in ms:
        cum += m["iteration_s"]
        if "eval_accuracy" in m:
            print(f"  iteration {m['iteration']:3d}: cumulative {cum:6.1f} s, held-out {100 * m['eval_accuracy']:.1f} %")
PY
