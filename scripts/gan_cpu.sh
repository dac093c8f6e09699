#!/usr/bin/env bash
# CE vs RLO (k=2) on a small DCGAN, 5,000 MNIST digits, 2 seeds each, on a CPU (paper appendix A.5,
# Fig. 8a at small scale). Writes results/gan_cpu.md and results/gan_score_vs_time.png.
# Resumable: finished runs (results.json) are skipped and unfinished ones continue from their checkpoint.
# For each seed the CE and RLO runs go concurrently (one thread each) so that both see the same load.
#   bash scripts/gan_cpu.sh                 # about 15-20 min on a 2-core machine
#   STEPS=200 SEEDS="0" bash scripts/gan_cpu.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

ROOT=${ROOT:-runs/gan_cpu}
STEPS=${STEPS:-2000}
SEEDS=${SEEDS:-"0 1"}
K=${K:-2}
COMMON="--steps $STEPS --batch-size 64 --lr 2e-4 --width 32 --eval-every 100 --n-eval 2000 --threads 1 --resume"

# train the feature classifier once (cached outside git) and score an untrained generator
python gan.py --steps 0 --out "${ROOT}_init" >/dev/null

run() {  # loss seed
  local out="$ROOT/$1_s$2"
  if [ -f "$out/results.json" ]; then echo "skip $out (done)"; return; fi
  python gan.py --loss "$1" --k "$K" --seed "$2" $COMMON --out "$out" > "$out.log" 2>&1
}

mkdir -p "$ROOT"
for seed in $SEEDS; do
  run ce "$seed" & ce_pid=$!
  run rlo "$seed" & rlo_pid=$!
  wait "$ce_pid"; wait "$rlo_pid"
done

python gan.py --report "$ROOT" --report-md results/gan_cpu.md --report-fig results/gan_score_vs_time.png
mkdir -p results
for loss in ce rlo; do
  cp "$ROOT/${loss}_s0/samples_final.png" "results/gan_samples_${loss}.png"
done
echo "wrote results/gan_cpu.md, results/gan_score_vs_time.png, results/gan_samples_{ce,rlo}.png"
