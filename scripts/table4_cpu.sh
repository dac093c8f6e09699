#!/usr/bin/env bash
# CPU-scale Table 4 (fine-tuning in quantized space): a tiny OPT and a tiny Llama built from configs and
# pretrained briefly on WikiText-2, quantized with QuIP (ldlqRG + incoherence processing) at 4/3/2 bits,
# then LoRA adapters trained on the frozen codes with CE, RLO-5 and RLO-10 (same adapter init per seed);
# rows "16-bit" and "quantized, no LoRA" beside them; WikiText-2 test and C4 perplexity
# -> results/table4_cpu.md (+ .json) beside the paper's Table 4.
#
#   nohup bash scripts/table4_cpu.sh > runs/table4_cpu.log 2>&1 &
#
# scripts/table4_runs.py: one process per family for the bases, then one per family and seed; resumable (finished steps are
# skipped). Environment overrides [defaults]: OUT [runs/table4_cpu]  DATA_DIR [utils.cli.default_data_dir()]
# FAMILIES ["opt llama"]  SEEDS ["0 1 2"]  THREADS [1]  TRAIN_LINES [2000]  RUN_FLAGS (extra scripts/table4_runs.py flags).
# Scale: fine-tuning reads the first TRAIN_LINES lines of WikiText-2 train; each evaluation is the first 32
# blocks of 128 tokens of WikiText-2 test and of the C4 validation sample (see results/table4_cpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} OMP_NUM_THREADS=${THREADS:-1}
OUT=${OUT:-runs/table4_cpu}
DATA_DIR=${DATA_DIR:-$(python -c 'from utils.cli import default_data_dir; print(default_data_dir())')}
FAMILIES=${FAMILIES:-"opt llama"}
MINI=$OUT/data
mkdir -p "$OUT" "$MINI/wikitext-2" "$MINI/c4"
# the fine-tuning and evaluation text: the head of each file (tokenized in a second by every run)
head -n "${TRAIN_LINES:-2000}" "$DATA_DIR/wikitext-2/train.txt" > "$MINI/wikitext-2/train.txt"
for split in valid test; do head -n 800 "$DATA_DIR/wikitext-2/$split.txt" > "$MINI/wikitext-2/$split.txt"; done
head -n 300 "$DATA_DIR/c4/c4_validation_2k.jsonl" > "$MINI/c4/c4_validation_2k.jsonl"

run() {  # run FAMILY LOG [flags]: one table4_runs process in the background
  local fam=$1 log=$2; shift 2
  # shellcheck disable=SC2086
  python -m scripts.table4_runs --family "$fam" --out "$OUT" --data-dir "$DATA_DIR" --eval-data "$MINI" \
    --threads "${THREADS:-1}" ${RUN_FLAGS:-} "$@" > "$OUT/$log.log" 2>&1
}
for fam in $FAMILIES; do  # bases and quantized models first, then one process per seed
  run "$fam" "$fam-base" --seeds &
done
wait
for fam in $FAMILIES; do
  for seed in ${SEEDS:-0 1 2}; do run "$fam" "$fam-s$seed" --seeds "$seed" & done
done
wait
python -m scripts.table4_cpu --runs "$OUT/runs"
