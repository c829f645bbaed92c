#!/usr/bin/env bash
# Parallel training benchmark (bench/RESULTS.md, "Parallel training"): in one run on this machine,
#  1. throughput of the small model: one process × 2 threads against dp2 (2 processes × 1 thread)
#     and ep2, the same global batch (8 rows × 256 tokens), median tokens/s over steps 3..N;
#  2. bytes each rank sends per step, measured (/proc/self/io wchar over the step, rank 0) against
#     the count ZeRO-1's reduce-scatter + all-gather and the expert all-to-alls imply, for the
#     layouts dp2, ep2 and dp2×ep2 (tiny and small).
# Usage: bench/parallel.sh [STEPS]   (default 12; needs build/cli/mariana)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-12}
BIN=build/cli/mariana
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}

job() {  # job MODEL ROWS SEQ THREADS DP EP -> a job file
  local f="$OUT/$1-$5-$6-$4.toml"
  cat >"$f" <<EOF
[job]
name = "bench"
phase = "pretrain"
[model]
config = "$PWD/configs/models/$1.json"
[data]
builtin = "mix"
documents = 400
[train]
steps = $STEPS
seq_len = $3
threads = $4
checkpoint_every = 100000
log_every = 100000
[batch]
rows = $2
[parallel]
dp = $5
ep = $6
EOF
  echo "$f"
}

run() {  # run MODEL ROWS SEQ THREADS DP EP -> run dir
  local f dir
  f=$(job "$@")
  dir="$OUT/run-$1-$5-$6-$4"
  local n=$(( $5 * $6 ))
  if [ "$n" -gt 1 ]; then "$BIN" train "$f" --nproc "$n" --run-dir "$dir" --quiet >/dev/null
  else "$BIN" train "$f" --run-dir "$dir" --quiet >/dev/null; fi
  echo "$dir"
}

summary() {  # summary LABEL RUN_DIR BASE_TOKS(0: this is the base) TOKS_FILE
  python3 - "$@" <<'EOF'
import json, statistics, sys
label, d = sys.argv[1], sys.argv[2]
base = float(sys.argv[3]) or None
lines = [json.loads(l) for l in open(d + "/metrics.jsonl")][2:]
toks = statistics.median(l["tokens_per_s"] for l in lines)
row = f"| {label} | {toks:,.0f} |"
row += f" {toks / base:.2f} |" if base else " 1.00 |"
if "comm" in lines[0]:
    sent = statistics.median(l["comm"]["sent_bytes"] for l in lines)
    zero = statistics.median(l["comm"]["zero_bytes"] for l in lines)
    ep = statistics.median(l["comm"]["ep_bytes"] for l in lines)
    row += f" {sent:,.0f} | {zero:,.0f} | {ep:,.0f} | {sent / (zero + ep):.4f} |"
else:
    row += " — | — | — | — |"
print(row)
open(sys.argv[4], "w").write(f"{toks}")
EOF
}

echo "| layout | tokens/s (median) | × one process | sent B/step (rank 0) | ZeRO-1 B (analytic) | EP B (analytic) | measured / analytic |"
echo "|---|---|---|---|---|---|---|"
summary "small, 1 process × 2 threads" "$(run small 8 256 2 1 1)" 0 "$OUT/base"
base=$(cat "$OUT/base")
summary "small, dp2 (2 × 1 thread)" "$(run small 8 256 1 2 1)" "$base" "$OUT/t"
summary "small, ep2 (2 × 1 thread)" "$(run small 8 256 1 1 2)" "$base" "$OUT/t"
summary "small, 1 process × 1 thread" "$(run small 8 256 1 1 1)" "$base" "$OUT/t"
summary "tiny, 1 process × 1 thread" "$(run tiny 16 64 1 1 1)" 0 "$OUT/tiny"
tiny=$(cat "$OUT/tiny")
summary "tiny, dp2" "$(run tiny 16 64 1 2 1)" "$tiny" "$OUT/t"
summary "tiny, ep2" "$(run tiny 16 64 1 1 2)" "$tiny" "$OUT/t"
summary "tiny, dp2 × ep2 (4 processes on 2 cores)" "$(run tiny 16 64 1 2 2)" "$tiny" "$OUT/t"
