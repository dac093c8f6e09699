#!/usr/bin/env bash
# Fig. 3a: Hessian spectrum (power iteration, Lanczos, SLQ; exact for the 502-parameter 2-layer net) of the
# training loss at the spiral nets' solutions, CE vs RLO (root), Adam-trained, seeds 0-2.
# Uses runs/synthetic/models from scripts/fig2.sh; trains the needed models first if they are missing.
# Writes runs/hessian (the run directory), then results/fig3a.md, results/fig3a.json, results/fig3a.png and
# results/fig3a_exact.png. Extra arguments go to hessian.py (e.g. --overwrite to replace an earlier run).
set -euo pipefail
cd "$(dirname "$0")/.."
models=()
for depth in 2 3 4; do for loss in ce root; do for seed in 0 1 2; do
    models+=("runs/synthetic/models/adam_fc${depth}_${loss}_s${seed}.pt")
done; done; done
for m in "${models[@]}"; do
    if [ ! -f "$m" ]; then
        python -m synthetic --depths 2 3 4 --losses ce root --optimizers adam --seeds 0 1 2 \
            --out runs/synthetic_fig3a --threads 1 --overwrite
        models=("${models[@]/runs\/synthetic\//runs/synthetic_fig3a/}")
        break
    fi
done
python -m hessian "${models[@]}" --rlo-loss root --lanczos-steps 60 --slq-probes 3 --slq-steps 60 \
    --exact-max-params 1000 --out runs/hessian --threads 1 "$@"
python -m scripts.fig3a runs/hessian
