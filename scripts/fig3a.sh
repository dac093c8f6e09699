#!/usr/bin/env bash
# Fig. 3a: Hessian spectrum (power iteration, Lanczos, SLQ; exact for the 502-parameter 2-layer net) of the
# training loss at the spiral nets' solutions, CE vs RLO (root), Adam-trained, seeds 0-2.
# Uses runs/synthetic/models from scripts/fig2.sh; trains the needed models first if they are missing.
# Writes results/hessian.md, results/fig3a.png, results/fig3a_exact.png, runs/hessian/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
models=()
for depth in 2 3 4; do for loss in ce root; do for seed in 0 1 2; do
    models+=("runs/synthetic/models/adam_fc${depth}_${loss}_s${seed}.pt")
done; done; done
for m in "${models[@]}"; do
    if [ ! -f "$m" ]; then
        python synthetic.py --depths 2 3 4 --losses ce root --optimizers adam --seeds 0 1 2 \
            --out-dir runs/synthetic_fig3a --report runs/synthetic_fig3a/synthetic.md --fig-prefix ""
        models=("${models[@]/runs\/synthetic\//runs/synthetic_fig3a/}")
        break
    fi
done
python hessian.py "${models[@]}" --rlo-loss root --lanczos-steps 60 --slq-probes 3 --slq-steps 60 \
    --exact-max-params 1000 --out-dir runs/hessian --report results/hessian.md --fig results/fig3a.png "$@"
