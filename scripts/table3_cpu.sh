#!/usr/bin/env bash
# CPU-scale Table 3 (thin launcher; the report is built by `python -m scripts.table3_cpu`):
#   pretrain   a small OPT on WikiText-2 in its raw evaluation form (scripts/pretrain_tiny_opt.py)
#   curve      each pretraining snapshot at 16 bits and 2 bits (nearest; ldlqRG + incoherence): sensitivity
#   grid       fine-tune with CE, RLO-5, RLO-10 (root, m = k) x SEEDS, then each at 16/4/3/2 bits with ldlqRG +
#              incoherence and at 2 bits with nearest rounding; per-layer Hessian statistics of each fine-tune
#   report     results/table3_cpu.{md,json} and results/hessian_stats.{md,json}
#
#   bash scripts/table3_cpu.sh              # all stages, in order
#   bash scripts/table3_cpu.sh grid report  # some stages
#
# Resumable: a finished pretraining (results.json) is kept, an interrupted one resumed; a fine-tune with a DONE
# file, a quantization cell or statistics run with a results.json is not run again. Rerun the same command to
# continue. Environment overrides (defaults in brackets):
#   OUT [runs/table3_cpu]  DATA_DIR [utils.cli.default_data_dir()]  BASE [$OUT/base]  BASE_MODEL [$BASE/model]
#   SEEDS ["0 1 2"]  BITS (besides 16 and 2) ["3 4"]  THREADS [1]  PRETRAIN_FLAGS, FT_FLAGS, QUANT_FLAGS (see below)
#   REPORT_FLAGS: passed to the report builder (e.g. "--candidates runs/other --notes scripts/notes/table3_cpu.md")
#   JOBS [1]: grid seeds run at once (each THREADS threads; with JOBS > 1 each seed logs to $OUT/grid-sSEED.log)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} OMP_NUM_THREADS=${THREADS:-1}

OUT=${OUT:-runs/table3_cpu}
DATA_DIR=${DATA_DIR:-$(python -c 'from utils.cli import default_data_dir; print(default_data_dir())')}
BASE=${BASE:-$OUT/base}
BASE_MODEL=${BASE_MODEL:-$BASE/model}
SEEDS=${SEEDS:-"0 1 2"}
BITS=${BITS:-"3 4"}
THREADS=${THREADS:-1}
JOBS=${JOBS:-1}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "error: JOBS must be a positive integer, not '$JOBS'" >&2; exit 2; }
# 12,000 steps x 8 x 256 = 24.6M tokens (about 7 WikiText-2 epochs, about 70 min on one idle core): long enough
# that 2-bit quantization bites (results/table3_cpu.md has the sensitivity curve against tokens)
PRETRAIN_FLAGS=${PRETRAIN_FLAGS:-"--preset tiny-opt-4x128 --vocab-size 2048 --bs 8 --lr 2e-3 --warmup-steps 100
  --max-steps 12000 --snapshot-steps 2000"}
FT_FLAGS=${FT_FLAGS:-"--max-steps 150 --bs 8 --block-size 256 --lr 2e-4 --warmup-steps 15 --max-eval-blocks 32"}
FT_TRAIN_CHARS=${FT_TRAIN_CHARS:-1500000}  # about 1,900 blocks of 256 tokens (the default base's BPE), > 150 x 8
FT_VALID_CHARS=${FT_VALID_CHARS:-200000}
# 128 calibration windows (the reference); 48 evenly spaced evaluation windows per set (the CPU budget)
QUANT_FLAGS=${QUANT_FLAGS:-"--nsamples 128 --max-eval-windows 48"}
STAGES=${*:-"pretrain curve grid report"}
mkdir -p "$OUT/ft_data"

pretrain() {
  [ -e "$BASE/results.json" ] && return
  local resume=""
  [ -e "$BASE/config.json" ] && resume=--resume
  # shellcheck disable=SC2086
  python -m scripts.pretrain_tiny_opt --out "$BASE" --data-dir "$DATA_DIR" --threads "$THREADS" $resume \
    $PRETRAIN_FLAGS
}

quant_cell() {  # run model bits method [opt.py flags...]: one opt.py run unless it has a results.json
  local run=$1 model=$2 bits=$3 method=$4
  shift 4
  [ -e "$run/results.json" ] && return
  local flags="--wbits $bits"
  [ "$bits" != 16 ] && flags="$flags --quant $method"
  [ "$bits" != 16 ] && [ "$method" != nearest ] && flags="$flags --incoh_processing"
  echo "== $run"
  # shellcheck disable=SC2086
  python opt.py "$model" wikitext2 $flags --seed 0 --data-dir "$DATA_DIR" --output-dir "$run" \
    --cache-dir "$OUT/token_cache" --threads "$THREADS" $QUANT_FLAGS "$@"
}

curve() {  # 16-bit and 2-bit WikiText-2 perplexity of every pretraining snapshot and of the final model
  local snap step
  for snap in "$BASE"/snapshots/step-* "$BASE_MODEL"; do
    [ -e "$snap/config.json" ] || continue
    step=$(basename "$snap")
    [ "$snap" = "$BASE_MODEL" ] && step=final
    quant_cell "$OUT/curve/$step-w16" "$snap" 16 none --eval wikitext2
    quant_cell "$OUT/curve/$step-w2-nearest" "$snap" 2 nearest --eval wikitext2
    quant_cell "$OUT/curve/$step-w2-ldlqRG" "$snap" 2 ldlqRG --eval wikitext2
  done
}

head_text() {  # in out chars: the first rows (cut at a blank line) of a one-record .jsonl text, up to chars
  [ -e "$2" ] || python -c 'import json, sys; t = json.load(open(sys.argv[1]))["text"]
cut = t.rfind("\n\n", 0, int(sys.argv[3])); open(sys.argv[2], "w").write(json.dumps({"text": t[:cut]}) + "\n")' "$@"
}

finetune() {  # dir loss k seed: fine-tune the base on (the start of) its own training text unless DONE
  local dir=$1 loss=$2 k=$3 seed=$4
  [ -e "$dir/DONE" ] && return
  echo "== fine-tune $dir"
  rm -rf "$dir"  # a fine-tune without DONE was interrupted: start it afresh
  # shellcheck disable=SC2086
  python ft_opt.py --model "$BASE_MODEL" --dataset wikitext2 --data-dir "$DATA_DIR" --output-dir "$dir" \
    --train-file "$OUT/ft_data/train.jsonl" --validation-file "$OUT/ft_data/validation.jsonl" \
    --loss "$loss" --k "$k" --m "$k" --seed "$seed" $FT_FLAGS
  touch "$dir/DONE"
}

grid_seed() {  # seed: its three fine-tunes and their cells, the cheap, decisive cells first
  local seed=$1 spec name loss k dir bits
  for spec in "CE:ce:5" "RLO-5:root:5" "RLO-10:root:10"; do
    IFS=: read -r name loss k <<< "$spec"
    dir="$OUT/ft/$name-s$seed"
    finetune "$dir" "$loss" "$k" "$seed"
    quant_cell "$OUT/quant/$name-s$seed-w16" "$dir" 16 none
    quant_cell "$OUT/quant/$name-s$seed-w2" "$dir" 2 ldlqRG
    quant_cell "$OUT/quant/$name-s$seed-w2-nearest" "$dir" 2 nearest
    [ -e "$OUT/hstats/$name-s$seed/results.json" ] || \
      python -m scripts.hessian_stats "$dir" --out "$OUT/hstats/$name-s$seed" --overwrite \
        --data-dir "$DATA_DIR" --nsamples 128 --threads "$THREADS" --cache-dir "$OUT/token_cache"
  done
  for spec in CE RLO-5 RLO-10; do
    for bits in $BITS; do
      quant_cell "$OUT/quant/$spec-s$seed-w$bits" "$OUT/ft/$spec-s$seed" "$bits" ldlqRG
    done
  done
}

grid() {  # seed by seed (JOBS seeds at once), so that an interrupted grid holds complete pairs
  local seed failed=0
  # ft_opt.py tokenizes its whole files: give it what FT_FLAGS' steps can use, not all 11M characters
  head_text "$BASE/data/train.jsonl" "$OUT/ft_data/train.jsonl" "$FT_TRAIN_CHARS"
  head_text "$BASE/data/validation.jsonl" "$OUT/ft_data/validation.jsonl" "$FT_VALID_CHARS"
  if [ "$JOBS" -le 1 ]; then
    for seed in $SEEDS; do grid_seed "$seed"; done
    return
  fi
  local pids=() pid
  for seed in $SEEDS; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done  # statuses are read below
    echo "== grid seed $seed -> $OUT/grid-s$seed.log"
    grid_seed "$seed" > "$OUT/grid-s$seed.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if [ "$failed" != 0 ]; then echo "error: a grid seed failed (see $OUT/grid-s*.log)" >&2; exit 1; fi
}

report() {
  # shellcheck disable=SC2086
  python -m scripts.table3_cpu --runs "$OUT" ${REPORT_FLAGS:-}
}

for stage in $STAGES; do
  case $stage in
    pretrain|curve|grid|report) "$stage" ;;
    *) echo "error: unknown stage $stage (pretrain, curve, grid, report)" >&2; exit 2 ;;
  esac
done
