#!/usr/bin/env bash
# The main job: pretrain -> extend -> SFT -> GRPO on the tiny DeepSeek-V3 model, on the built-in
# arithmetic task (1-2 digit + and -), then a table of held-out accuracy after each phase and an
# HTML report of the runs (runs/pipeline-report.html, `mariana report`). The SFT
# data comes from an imperfect teacher that forgets carries and borrows (configs/pipeline/3-sft.toml);
# GRPO, rewarded by the true answer, undoes what SFT copied. A reference SFT run on a perfect
# teacher ("sft-clean") shows what the slips cost.
# Expects a built tree (scripts/build.sh). Runs on one core (the OpenMP build is slower on two
# busy cores); MARIANA_THREADS=2 to change. Job files: configs/pipeline/{1-pretrain,2-extend,3-sft,4-rl}.toml.
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
rm -rf runs/pipeline-pretrain runs/pipeline-extend runs/pipeline-sft runs/pipeline-sft-clean runs/pipeline-rl
$BIN train configs/pipeline/1-pretrain.toml --run-dir runs/pipeline-pretrain --quiet --set train.threads=$T
$BIN train configs/pipeline/2-extend.toml --run-dir runs/pipeline-extend --quiet --set train.threads=$T
$BIN train configs/pipeline/3-sft.toml --run-dir runs/pipeline-sft --quiet --set train.threads=$T
$BIN train configs/pipeline/3-sft.toml --run-dir runs/pipeline-sft-clean --quiet --set train.threads=$T \
  --set data.arithmetic_teacher_slip=0
$BIN train configs/pipeline/4-rl.toml --run-dir runs/pipeline-rl --set train.threads=$T
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
