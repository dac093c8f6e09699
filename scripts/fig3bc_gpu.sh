#!/usr/bin/env bash
# Fig. 3b-c at full scale (a GPU machine): gem-miner's reference schedule on all of CIFAR-10 at 32 px.
# Mining: 150 epochs, SGD lr 0.1 cosine, momentum 0.9, batch 128, lambda 1e-4, a pruning round every 5 epochs
# (29 rounds); fine-tuning: 150 epochs, SGD lr 0.01 (x0.1 at epochs 80 and 120), momentum 0.9, wd 1e-4.
# Densities (percent kept) 0.59 0.3 0.154 0.08 = 99.41% ... 99.92% sparse, the paper's range; 3 seeds.
# Same grid and arms as scripts/fig3bc.sh, the same resumable launcher; then python -m scripts.fig3bc --runs
# runs/fig3bc_gpu --name fig3bc_gpu. Give a --data-dir holding CIFAR-10 (the official pickles for the paper's
# exact setting; the shared JPEG copy otherwise). About 2 x 150 epochs x 4 densities x 3 seeds x 5 runs.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/fig3bc_gpu} DENSITIES=${DENSITIES:-"0.59 0.3 0.154 0.08"} SUBSET=${SUBSET:-50000} \
  TEST_SUBSET=${TEST_SUBSET:-10000} SIZE=32 BS=128 MINE_EPOCHS=150 ITER_PERIOD=5 FT_EPOCHS=150 FT_LR=0.01 \
  THREADS=0 EXTRA="--device cuda --workers 4 ${EXTRA:-}" exec bash scripts/fig3bc.sh
