#!/usr/bin/env bash
# Table 7, Fig. 5 and the Lemma 3.3 condition numbers: logistic vs rooted logistic regression on
# wine, ionosphere, madelon and spectf (CPU, ~10-15 min on an idle 2-core machine).
# Writes results/table7.md, results/fig5_<dataset>.png and runs/logreg/{config,results}.json.
# Data: --data-dir (default $RLO_DATA_DIR or ../shared/data); layouts in README.
set -euo pipefail
cd "$(dirname "$0")/.."
python logreg.py --datasets wine ionosphere madelon spectf --folds 5 --inner-folds 3 --seed 0 \
    --lam 0.1 --out-dir runs/logreg --report results/table7.md --fig-prefix results/fig5_ "$@"
