#!/usr/bin/env bash
# The paper's Table 3 at full scale (OPT-125m / OPT-1.3b; GPU machine with the HF hub reachable):
# fine-tune on WikiText-2 with CE, RLO-5 and RLO-10 (block 256, batch 16, lr 1e-5 linear, AdamW,
# 3 epochs; paper A.4.3), then QuIP (ldlqRG + incoherence processing) at 16/4/3/2 bits, perplexity on
# WikiText-2, PTB and C4 (calibration: 128 windows of 2048 tokens of WikiText-2 train).
#
#   bash scripts/table3.sh                       # both models
#   MODELS="facebook/opt-125m" bash scripts/table3.sh
# Resumable like scripts/table3_cpu.sh (DONE files, results.json). Results: $OUT/<model>/quant/*/results.json
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/table3}
MODELS=${MODELS:-"facebook/opt-125m facebook/opt-1.3b"}
FT_FLAGS=${FT_FLAGS:-"--epochs 3 --bs 16 --block-size 256 --lr 1e-5 --eval-test"}
BITS=${BITS:-"16 4 3 2"}

for hub_id in $MODELS; do
  tag=${hub_id##*/}
  for spec in "CE:ce:5" "RLO-5:root:5" "RLO-10:root:10"; do
    IFS=: read -r name loss k <<< "$spec"
    ft="$OUT/$tag/ft-$name"
    if [ ! -e "$ft/DONE" ]; then
      # shellcheck disable=SC2086
      python ft_opt.py --model "$hub_id" --dataset wikitext2 --loss "$loss" --k "$k" --m "$k" \
        --output-dir "$ft" $FT_FLAGS
      touch "$ft/DONE"
    fi
    for bits in $BITS; do
      run="$OUT/$tag/quant/$name-w$bits"
      [ -e "$run/results.json" ] && continue
      flags="--wbits $bits"
      [ "$bits" != 16 ] && flags="$flags --quant ldlqRG --incoh_processing --save $run/model"
      # shellcheck disable=SC2086
      python opt.py "$ft" wikitext2 $flags --seed 0 --output-dir "$run"
    done
  done
done
