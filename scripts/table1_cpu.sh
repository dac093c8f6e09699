#!/usr/bin/env bash
# CPU-scale Table 1 on the JPEG re-encoded CIFAR-10 (about an hour on an idle 2-core machine); resumable.
# Extra arguments go to scripts/table1_cpu.py (e.g. --epochs 2 --seeds 0, or --report-only).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python scripts/table1_cpu.py "$@"
