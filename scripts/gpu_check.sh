#!/usr/bin/env bash
# The one prepared device check: everything the project can only learn on a GPU, in at most ~8 minutes, written
# under one folder (OUT, else $OUT, else results/gpu). Each part has its own time limit; a part that fails or
# times out is recorded and the next one runs. OUT/summary.md says what ran.
#
#   bash scripts/gpu_check.sh [--dry-run] [OUT]
#
# --dry-run: print the plan, then run each part's CPU fallback for a few seconds (tiny sizes), as CI does.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
DEST="${1:-${OUT:-results/gpu}}"
mkdir -p "$DEST"
SUMMARY="$DEST/summary.md"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
NGPU=0
if command -v nvidia-smi >/dev/null 2>&1; then NGPU=$(nvidia-smi -L 2>/dev/null | grep -c GPU || true); fi
if [[ $DRY == 1 ]]; then export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1; NGPU=0; fi

# name | seconds allowed | command on a GPU | CPU fallback (dry run)
PLAN=(
  "env|30|nvidia-smi; python -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__, torch.cuda.get_device_name(0))'|python -c 'import torch, transformers; print(torch.__version__, transformers.__version__, \"cuda:\", torch.cuda.is_available())'"
  "gpu_tests|150|python -m pytest -q -m gpu tests/test_gpu.py|python -m pytest -q -m gpu tests/test_gpu.py"
  "bench_losses|120|python -m scripts.gpu_bench losses --out $DEST|python -m scripts.gpu_bench losses --out $DEST --quick --no-compile --repeats 2"
  "bench_train|90|python -m scripts.gpu_bench train --out $DEST --nets res50,vit --bs 512 --steps 20 --repeats 3|python -m scripts.gpu_bench train --out $DEST --quick"
  "cifar_grid|240|python -m scripts.vision_grid --device cuda --size 32 --train-per-class 5000 --test-per-class 1000 --width 64 --bs 512 --cells ce root_k5 root_k8 root_k10 --seeds 0 1 2 3 4 --runs $DEST/cifar_grid --summary $DEST/cifar_grid.json && python -m scripts.table1_cpu --summary $DEST/cifar_grid.json --out-dir $DEST --name cifar_grid_report --title 'CIFAR-10 (JPEG copy), full data at 32 px, paired seeds, on the GPU'|python -m scripts.vision_grid -h > /dev/null"
  "ddp|60|torchrun --standalone --nproc_per_node=2 train.py --dataset digits --net res18_mini --n_epochs 1 --bs 64 --lr 1e-3 --out $DEST/ddp_run --overwrite|true"
)

: > "$SUMMARY"
{
  echo "# Device check ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo
  echo "Mode: $([[ $DRY == 1 ]] && echo 'dry run (CPU fallbacks, tiny sizes)' || echo "GPU ($NGPU visible)")."
  echo
  echo "| part | limit (s) | status | seconds | log |"
  echo "|---|---|---|---|---|"
} >> "$SUMMARY"

echo "plan ($([[ $DRY == 1 ]] && echo dry run || echo gpu)), output under $DEST:"
for entry in "${PLAN[@]}"; do
  IFS='|' read -r name limit gpu_cmd cpu_cmd <<< "$entry"
  echo "  $name (<= ${limit}s): $([[ $DRY == 1 ]] && echo "$cpu_cmd" || echo "$gpu_cmd")"
done

for entry in "${PLAN[@]}"; do
  IFS='|' read -r name limit gpu_cmd cpu_cmd <<< "$entry"
  cmd="$gpu_cmd"; [[ $DRY == 1 ]] && cmd="$cpu_cmd"
  if [[ $name == ddp && $NGPU -lt 2 ]]; then
    echo "| $name | $limit | skipped ($NGPU GPU(s); needs 2) | 0 | - |" >> "$SUMMARY"
    continue
  fi
  log="$DEST/$name.log"
  start=$(date +%s)
  timeout --kill-after=10 "$limit" bash -c "$cmd" > "$log" 2>&1
  rc=$?
  took=$(( $(date +%s) - start ))
  case $rc in
    0) status=ok ;;
    124|137) status="timed out" ;;
    *) status="failed (exit $rc)" ;;
  esac
  echo "  $name: $status in ${took}s"
  echo "| $name | $limit | $status | $took | $(basename "$log") |" >> "$SUMMARY"
done

for md in "$DEST"/losses.md "$DEST"/train.md "$DEST"/cifar_grid_report.md; do
  [[ -f $md ]] && { echo; cat "$md"; } >> "$SUMMARY"
done
echo "summary: $SUMMARY"
grep -q "failed\|timed out" "$SUMMARY" && exit 1
exit 0
