#!/usr/bin/env bash
# The main job: pretrain -> extend -> SFT -> GRPO on the tiny DeepSeek-V3 model, on the built-in
# arithmetic task (1-2 digit + and -), then a table of held-out accuracy after each phase and an
# HTML report of the runs (runs/pipeline-report.html, `mariana report`). The SFT
# data comes from an imperfect teacher that forgets carries and borrows (configs/pipeline/3-sft.toml);
# GRPO, rewarded by the true answer, undoes what SFT copied. A reference SFT run on a perfect
# teacher ("sft-clean") shows what the slips cost.
# Expects a built tree (scripts/build.sh). Each stage trains on one thread (the OpenMP build is slower
# on two busy cores; MARIANA_THREADS=2 to change); the two SFT stages run side by side. Pipeline:
# configs/pipeline/arithmetic.toml over the job files configs/pipeline/{1-pretrain,2-extend,3-sft,4-rl}.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
# OpenBLAS picks its GEMM kernels per CPU (AVX-512 SkylakeX kernels on one machine, Haswell ones on
# another), and different kernels round differently, so the table would change from CPU to CPU.
# Pinning the Haswell kernels (AVX2 + FMA, which every x86-64-v3 CPU the build targets has) makes the
# numbers a property of the commit, not of the machine. OPENBLAS_CORETYPE=... overrides it.
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
BIN=build/cli/mariana
T=${MARIANA_THREADS:-1}
PROBLEMS=${MARIANA_EVAL_PROBLEMS:-500}
# The four phases (and the clean-teacher SFT beside the SFT) as one pipeline job on an embedded
# cluster (configs/pipeline/arithmetic.toml): each stage a training job the controller starts once
# the stage it comes from has succeeded. Its state (RocksDB, worker logs, the stages' run
# directories) goes to runs/pipeline-state; runs/pipeline-<stage> link to the stages' runs.
rm -rf runs/pipeline-state runs/pipeline-pretrain runs/pipeline-extend runs/pipeline-sft runs/pipeline-sft-clean \
  runs/pipeline-rl
mkdir -p runs
if ! $BIN run configs/pipeline/arithmetic.toml --state-dir runs/pipeline-state --set train.threads=$T \
  2> runs/pipeline-run.err | tee runs/pipeline-run.txt; then
  tail -20 runs/pipeline-run.err >&2
  exit 1
fi
# "  stage NAME STATE JOB RUN_DIR" per stage: every stage must have succeeded.
while read -r word name state job dir; do
  [ "$word" = stage ] || continue
  [ "$state" = SUCCEEDED ] || { echo "pipeline.sh: stage $name ended $state" >&2; exit 1; }
  ln -s "$dir" "runs/pipeline-$name"
done < runs/pipeline-run.txt
last() { ls -d "$1"/checkpoints/*/ | sort | tail -1 | sed 's:/$::'; }
{
  echo "phase      prompts  held-out accuracy  checkpoint"
  for phase in pretrain:raw extend:raw sft-clean:chat sft:chat rl:chat; do
    name=${phase%%:*}; fmt=${phase##*:}
    ck=$(last runs/pipeline-$name)
    acc=$($BIN eval --task arithmetic --checkpoint "$ck" --format "$fmt" --problems "$PROBLEMS" --threads "$T" --json |
          /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print("%5.1f%% (%d/%d)" % (100*j["accuracy"], j["correct"], j["problems"]))')
    printf "%-10s %-8s %-18s %s\n" "$name" "$fmt" "$acc" "$ck"
  done
} | tee runs/pipeline-accuracy.txt
# One HTML page of the five runs' curves and the table (inline SVG, opens offline).
$BIN report runs/pipeline-pretrain runs/pipeline-extend runs/pipeline-sft-clean runs/pipeline-sft runs/pipeline-rl \
  --accuracy runs/pipeline-accuracy.txt --title "Mariana pipeline" --out runs/pipeline-report.html
