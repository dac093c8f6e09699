#!/usr/bin/env bash
# Paper Table 1 (CIFAR-10 and CIFAR-100 rows) at the paper's settings, for a GPU machine:
# nets res50 / vit / swin (the authors' CIFAR ResNet-50, ViT and Swin-T) x CE, Focal, RLO-5, RLO-8, RLO-10
# x seeds 0 1 2; batch 512, lr 1e-4, AdamW, cosine, RandAugment(2, 14), AMP; epochs as in the paper's
# appendix (ViT 200, ResNet and Swin 100). RLO-k is the authors' code form with m = k.
# Resumable: finished runs are skipped, interrupted ones resume. Writes results/table1_<dataset>.md.
# Environment: DATA (dir with cifar-10-batches-py/ and cifar-100-python/; DOWNLOAD=1 lets torchvision fetch
# them), NPROC (GPUs per run, torchrun), SEEDS, DATASETS, NETS.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data}
NPROC=${NPROC:-1}
SEEDS=${SEEDS:-"0 1 2"}
DATASETS=${DATASETS:-"cifar10 cifar100"}
NETS=${NETS:-"res50 vit swin"}
EXTRA=()
[[ "${DOWNLOAD:-0}" == 1 ]] && EXTRA+=(--download)

epochs_for() { [[ "$1" == vit ]] && echo 200 || echo 100; }
loss_flags() {
  case "$1" in
    ce) echo "--loss ce" ;;
    focal) echo "--loss focal" ;;
    rlo-*) k=${1#rlo-}; echo "--loss root --k $k --m $k" ;;
  esac
}

for dataset in $DATASETS; do
  for seed in $SEEDS; do
    for net in $NETS; do
      for column in ce focal rlo-5 rlo-8 rlo-10; do
        out="runs/table1_${dataset}/${net}_${column}_s${seed}"
        if [[ -f "$out/results.json" ]] && grep -q '"status": "finished"' "$out/results.json"; then continue; fi
        resume=(); [[ -f "$out/checkpoint.pt" ]] && resume=(--resume)
        # shellcheck disable=SC2046
        torchrun --standalone --nproc_per_node "$NPROC" train.py --dataset "$dataset" --data-dir "$DATA" \
          --net "$net" $(loss_flags "$column") --n_epochs "$(epochs_for "$net")" --bs 512 --lr 1e-4 --opt adamw \
          --seed "$seed" --out "$out" "${resume[@]}" "${EXTRA[@]}"
      done
    done
  done
  # shellcheck disable=SC2086
  python scripts/table1_cpu.py --report-only --runs "runs/table1_${dataset}" --dataset "$dataset" \
    --nets $NETS --seeds $SEEDS --epochs 100 --subset 0 --test-subset 0 \
    --data-note "official ${dataset^^}" --title "Table 1 at the paper's settings (official ${dataset^^})" \
    --settings "ViT 200 epochs, ResNet and Swin 100; batch 512 per GPU x $NPROC, AdamW lr 1e-4, cosine, RandAugment(2, 14), AMP; RLO-k = m (1 - p_y^(1/k)) with m = k; Focal alpha 0.25, gamma 3" \
    --command "scripts/table1.sh" --report "results/table1_${dataset}.md"
done
