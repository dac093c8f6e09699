#!/usr/bin/env bash
# Fig. 2b / Fig. 6: spiral nets (2/3/4 layers, 1000/100/50 iterations), CE vs RLO, 5 seeds, with Adam
# (default) and plain full-batch GD; RLO in the authors' code form (root) and the paper form (root_paper).
# Writes results/synthetic.md, results/fig2_<optimizer>_fc<depth>.png and runs/synthetic/models/*.pt
# (the models hessian.py reads). CPU, a few minutes on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
python synthetic.py --depths 2 3 4 --losses ce root root_paper --rlo-loss root --optimizers adam gd \
    --seeds 0 1 2 3 4 --out-dir runs/synthetic --report results/synthetic.md --fig-prefix results/fig2_ "$@"
