#!/usr/bin/env bash
# Table 7, Fig. 5 and the Lemma 3.3 condition numbers: logistic vs rooted logistic regression on
# wine, ionosphere, madelon and spectf (CPU, ~10-15 min on an idle 2-core machine, over an hour on a busy one).
# Writes the run directory runs/logreg, then results/table7.md, results/table7.json and results/fig5_<dataset>.png.
# Data: --data-dir (default $RLO_DATA_DIR or ../shared/data); layouts in README. Extra arguments go to logreg.py
# (e.g. --overwrite to replace an earlier run).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m logreg --datasets wine ionosphere madelon spectf --folds 5 --inner-folds 3 --seed 0 \
    --lam 0.1 --out runs/logreg --threads 1 "$@"
python -m scripts.table7 runs/logreg
