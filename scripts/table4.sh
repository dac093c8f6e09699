#!/usr/bin/env bash
# Table 4 at the paper's scale (GPU; not run here): Llama-3-8B quantized with QuIP (ldlqRG + incoherence
# processing) at 4/3/2 bits, then LoRA fine-tuning in quantized space on WikiText-2 with CE, RLO-5 and RLO-10
# using LLMTools' settings (rank 8, alpha 16, dropout 0.05, lr 1e-3, batch 16, block 256, 3 epochs), perplexity on
# WikiText-2 test and C4 -> python -m scripts.table4_cpu --runs $OUT/runs --name table4.
#
#   MODEL=meta-llama/Meta-Llama-3-8B OUT=runs/table4 SEEDS="0 1 2" bash scripts/table4.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-meta-llama/Meta-Llama-3-8B}
OUT=${OUT:-runs/table4}
SEEDS=${SEEDS:-"0 1 2"}
BITS=${BITS:-"4 3 2"}
NAME=$(basename "$MODEL" | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9')
EVAL="--dataset wikitext2 --eval-test --also-eval c4 --block-size 256 --bs 16 --skip-validation"
mkdir -p "$OUT/runs"
[ -e "$OUT/runs/$NAME-w16-nolora/results.json" ] || \
  python ft_quant.py --base "$MODEL" --dense-base --eval-only $EVAL --out "$OUT/runs/$NAME-w16-nolora"
for bits in $BITS; do
  q=$OUT/q-$NAME-w$bits
  [ -e "$q/quant_codes.pt" ] || python llama.py "$MODEL" wikitext2 --wbits "$bits" --quant ldlqRG \
    --incoh_processing --save "$q" --eval ""
  [ -e "$OUT/runs/$NAME-w$bits-nolora/results.json" ] || \
    python ft_quant.py --base "$q" --eval-only $EVAL --out "$OUT/runs/$NAME-w$bits-nolora"
  for seed in $SEEDS; do
    for loss in ce root5 root10; do
      dir=$OUT/runs/$NAME-w$bits-$loss-s$seed
      [ -e "$dir/results.json" ] && continue
      case $loss in ce) flags="--loss ce";; root5) flags="--loss root --k 5 --m 5";; *) flags="--loss root --k 10 --m 10";; esac
      # shellcheck disable=SC2086
      python ft_quant.py --base "$q" $flags --seed "$seed" --epochs 3 --lr 1e-3 $EVAL --out "$dir" --overwrite
    done
  done
done
python -m scripts.table4_cpu --runs "$OUT/runs" --name table4
