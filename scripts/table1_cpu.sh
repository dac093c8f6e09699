#!/usr/bin/env bash
# CPU-scale Table 1 / Table 2 baselines / Fig. 2c-d / Fig. 7c (issue 16): the paired, resumable grid
# (python -m scripts.vision_grid, about 6 CPU-hours in all, most important runs first), then both reports.
# Run it again to continue an interrupted grid; extra arguments go to the grid (e.g. --seeds 0 1 --max-runs 2).
# In the background: nohup scripts/table1_cpu.sh >> runs/vision_grid.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
OMP_NUM_THREADS=1 python -m scripts.vision_grid --threads 1 "$@"
python -m scripts.table1_cpu
python -m scripts.fig2cd
