#!/usr/bin/env bash
# The paper's image-classification tables at the paper's settings, for a GPU machine (untested at full scale):
#   TABLES=table1: CIFAR-10/100 x res50 / vit / swin x CE, Focal, RLO-5, RLO-8, RLO-10      (paper Table 1)
#   TABLES=table2: CIFAR-10/100 x res50 / vit x Square, Sparsemax (CE and RLO come from table1) (paper Table 2)
#   TABLES=table5: CIFAR-10 x res34 / res50 / res101 / vit_small / vit / vit-l x CE, Focal, RLO-10 (Table 5)
# x SEEDS; batch 512, lr 1e-4, AdamW, cosine, RandAugment(2, 14), AMP; epochs as in the paper's appendix (ViT 200,
# ResNet and Swin 100). RLO-k is the authors' code form m (1 - p^(1/k)) with m = k.
# Resumable: finished runs are skipped, interrupted ones resume. After each (dataset, net) the report builder
# writes results/<table>_<dataset>_<net>.md from the run directories (python -m scripts.table1_cpu --train-runs).
# Environment: DATA (dir with cifar-10-batches-py/ and cifar-100-python/; DOWNLOAD=1 lets torchvision fetch
# them), NPROC (GPUs per run, torchrun), SEEDS, TABLES.
# The reports' paper columns are Table 1/2's ResNet CIFAR-10 rows; Table 5's numbers are in results/paper/table5.json.
# The CPU-scale counterpart is scripts/table1_cpu.sh (python -m scripts.vision_grid).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data}
NPROC=${NPROC:-1}
SEEDS=${SEEDS:-"0 1 2"}
TABLES=${TABLES:-"table1 table2 table5"}
EXTRA=()
[[ "${DOWNLOAD:-0}" == 1 ]] && EXTRA+=(--download)

epochs_for() { [[ "$1" == vit* ]] && echo 200 || echo 100; }
loss_flags() {
  case "$1" in
    rlo-*) k=${1#rlo-}; echo "--loss root --k $k --m $k" ;;
    *) echo "--loss $1" ;;
  esac
}

train_one() {  # dataset net column seed
  local out="runs/paper_$1/$2/$3_s$4"
  if [[ -f "$out/results.json" ]] && grep -q '"status": "finished"' "$out/results.json"; then return; fi
  local resume=(); [[ -f "$out/checkpoint.pt" ]] && resume=(--resume)
  # shellcheck disable=SC2046
  python -m utils.launch --standalone --nproc_per_node "$NPROC" train.py --dataset "$1" --data-dir "$DATA" --net "$2" \
    $(loss_flags "$3") --n_epochs "$(epochs_for "$2")" --bs 512 --lr 1e-4 --opt adamw --seed "$4" \
    --out "$out" "${resume[@]}" "${EXTRA[@]}"
}

grid() {  # table "datasets" "nets" "columns"
  for dataset in $2; do
    for net in $3; do
      for seed in $SEEDS; do
        for column in $4; do train_one "$dataset" "$net" "$column" "$seed"; done
      done
      python -m scripts.table1_cpu --train-runs runs/paper_"$dataset"/"$net"/* --name "$1_${dataset}_${net}" \
        --title "Paper $1 at the paper's settings: $net on official ${dataset^^}" --command "TABLES=$1 scripts/table1.sh"
    done
  done
}

for table in $TABLES; do
  case "$table" in
    table1) grid table1 "cifar10 cifar100" "res50 vit swin" "ce focal rlo-5 rlo-8 rlo-10" ;;
    table2) grid table2 "cifar10 cifar100" "res50 vit" "ce square sparsemax rlo-10" ;;
    table5) grid table5 "cifar10" "res34 res50 res101 vit_small vit vit-l" "ce focal rlo-10" ;;
    *) echo "error: unknown table $table (choose table1 table2 table5)" >&2; exit 2 ;;
  esac
done
