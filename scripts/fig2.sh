#!/usr/bin/env bash
# Fig. 2b / Fig. 6: spiral nets (2/3/4 layers, 1000/100/50 iterations), CE vs RLO, 5 seeds, with Adam
# (default) and plain full-batch GD; RLO in the authors' code form (root) and the paper form (root_paper).
# Trains into runs/synthetic (models/*.pt: the checkpoints hessian.py reads), then builds results/fig2.md,
# results/fig2.json and results/fig2_<optimizer>_fc<depth>.png. CPU, about 7 min on one busy core.
# Extra arguments go to synthetic.py (e.g. --overwrite to replace an earlier run).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m synthetic --depths 2 3 4 --losses ce root root_paper --rlo-loss root --optimizers adam gd \
    --seeds 0 1 2 3 4 --out runs/synthetic --threads 1 "$@"
python -m scripts.fig2 runs/synthetic
