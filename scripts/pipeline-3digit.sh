#!/usr/bin/env bash
# The same four phases as scripts/pipeline.sh on a harder mix -- 1-3 digit + and -, a perfect SFT
# teacher -- where GRPO has to improve what SFT learned rather than undo a planted slip. GRPO runs in
# three stages of 200 iterations (32 prompts x 8 samples, lr 1e-4); each stage starts from the
# previous one's policy, which is also its KL reference. Ends with held-out accuracy of the SFT
# model and of each GRPO stage on two fresh samples of 2,000 held-out problems (seeds 777, 4242)
# that no run evaluates on while training. About an hour on one core. Expects a built tree.
set -euo pipefail
cd "$(dirname "$0")/.."
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}  # the same kernels on every CPU (see pipeline.sh)
BIN=build/cli/mariana
T=${MARIANA_THREADS:-1}
R=runs/pipeline3
MIX=(--set data.arithmetic_max_digits=3)
rm -rf $R
$BIN train configs/pipeline/1-pretrain.toml --run-dir $R/pretrain --quiet --set train.threads=$T "${MIX[@]}"
$BIN train configs/pipeline/2-extend.toml --run-dir $R/extend --quiet --set train.threads=$T "${MIX[@]}" \
  --set model.init_from=$R/pretrain
$BIN train configs/pipeline/3-sft.toml --run-dir $R/sft --quiet --set train.threads=$T "${MIX[@]}" \
  --set model.init_from=$R/extend --set data.arithmetic_teacher_slip=0
prev=$R/sft
grpo_seed=(- 0 2 3)  # per stage: the sampling seeds the recorded runs used
for stage in 1 2 3; do
  $BIN train configs/pipeline/4-rl.toml --run-dir $R/rl$stage --set train.threads=$T \
    --set model.init_from=$prev --set task.arithmetic_max_digits=3 --set task.seed=$((4 + 10 * stage)) \
    --set grpo.seed=${grpo_seed[$stage]} --set rollout.prompts=32 --set grpo.lr=1e-4 --set grpo.iterations=200 \
    --set eval.problems=500 --set eval.every=20 --set train.checkpoint_every=100
  prev=$R/rl$stage
done
{
  echo "model  held-out accuracy, 2,000 problems: seed 777   seed 4242"
  for m in sft rl1 rl2 rl3; do
    line=$(printf "%-6s" $m)
    for seed in 777 4242; do
      acc=$($BIN eval --task arithmetic --digits 1,3 --checkpoint $R/$m --format chat --problems 2000 --seed $seed \
              --threads "$T" --json |
            /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print("%5.1f%% (%d/%d)" % (100*j["accuracy"], j["correct"], j["problems"]))')
      line="$line  $acc"
    done
    echo "$line"
  done
} | tee $R/accuracy.txt
