"""Smoke check of the patch in upstream's real training loop: a few iterations with CE and with RLO.

    OMP_NUM_THREADS=1 python -m stylegan_patch.smoke CLONE [--steps 2] [--k 2] [--out DIR] [--loss both|ce|rlo]
    python -m stylegan_patch.smoke CLONE --out DIR --loss ce --check-only     # re-check finished runs

CLONE (NVlabs/stylegan2-ada-pytorch) is copied to OUT/clone (the clone itself is not touched), the copy
is patched with stylegan_patch/apply.py, and a tiny random 16x16 image folder is made. Then the real
train.py runs through stylegan_patch.run (current torch, CPU when there is no CUDA) for --steps
iterations, once with RLO_LOSS=ce and once with RLO_LOSS=rlo RLO_K=k. Every logged loss element is
checked against the formula of the logits logged with it (Loss/scores/fake and Loss/scores/real):

    Loss/G/loss = f(fake),  Loss/D/loss = f(-fake) + f(real),  f = softplus(-x) (ce) or rooted_logit(x, k)

and upstream's own stats.jsonl must hold the same values (count and mean per statistic). Writes
OUT/smoke_<loss>.json and prints a table; exits 1 when a check fails. On a 2-core CPU one run of 2 steps takes
several minutes (mostly network construction and the first iteration).
"""
import os
import glob
import shutil
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

import losses
from stylegan_patch import apply as patcher
from utils.cli import ArgumentParser, UsageError, run_cli
from utils.runio import atomic_write_json, read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-5  # logged values are float32; the references are float64 of the same logged logits


def reference(loss, k):
    """f(x): the loss of logits x for label +1, in float64."""
    if loss == "ce":
        return lambda x: F.softplus(-x)
    return lambda x: losses.rooted_logit(x, k)


def pair_reports(records):
    """[(kind, logged loss, expected-from-logits inputs)] from a --trace file, in report order."""
    pairs, last = [], {}
    for record in records:
        values = torch.tensor(record["values"], dtype=torch.float64)
        if record["name"] in ("Loss/scores/fake", "Loss/scores/real"):
            last[record["name"]] = values
        elif record["name"] == "Loss/G/loss":
            pairs.append(("G", values, (last["Loss/scores/fake"],)))
        elif record["name"] == "Loss/D/loss":
            pairs.append(("D", values, (last["Loss/scores/fake"], last["Loss/scores/real"])))
    return pairs


def check_trace(records, loss, k):
    """Largest relative error per kind ('G', 'D') of the logged losses against the formula."""
    f = reference(loss, k)
    worst = {"G": 0.0, "D": 0.0}
    counts = {"G": 0, "D": 0}
    for kind, logged, logits in pair_reports(records):
        expected = f(logits[0]) if kind == "G" else f(-logits[0]) + f(logits[1])
        error = ((logged - expected).abs() / expected.abs().clamp(min=1e-12)).max().item()
        worst[kind] = max(worst[kind], error)
        counts[kind] += logged.numel()
    return worst, counts


def check_stats(stats_lines, records):
    """Largest relative gap between upstream's stats.jsonl means and the traced values, per statistic."""
    gaps = {}
    for name in ("Loss/G/loss", "Loss/D/loss"):
        traced = np.concatenate([r["values"] for r in records if r["name"] == name] or [[]])
        num = sum(line[name]["num"] for line in stats_lines if name in line)
        total = sum(line[name]["num"] * line[name]["mean"] for line in stats_lines if name in line)
        if num != len(traced) or num == 0:
            gaps[name] = float("inf")
        else:
            gaps[name] = abs(total / num - traced.mean()) / max(abs(traced.mean()), 1e-12)
    return gaps


def make_dataset(folder, n=8, resolution=16, seed=0):
    import PIL.Image  # upstream's dependency

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, size=(resolution, resolution, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(os.path.join(folder, f"img{i:02d}.png"))


def copy_and_patch(clone, dest, k):
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.copytree(clone, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.rlo-orig"))
    return patcher.apply(patcher.loss_file(dest), k, "rlo")


def train_command(clone, run_dir, data, steps, trace):
    return [sys.executable, "-m", "stylegan_patch.run", clone, "--steps", str(steps), "--grid-rows", "1",
            "--trace", trace, "--", "--outdir", run_dir, "--data", data, "--gpus", "1", "--batch", "4",
            "--metrics", "none", "--workers", "1", "--snap", "1", "--seed", "0"]


def train_one(clone, out, data, loss, k, steps, threads):
    """Train `steps` iterations with one loss into OUT/<loss> (trace.jsonl, runs/, train.log)."""
    folder = os.path.join(out, loss)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    trace = os.path.join(folder, "trace.jsonl")
    env = dict(os.environ, RLO_LOSS=loss, RLO_K=str(k), OMP_NUM_THREADS=str(threads))
    with open(os.path.join(folder, "train.log"), "w") as log:
        proc = subprocess.run(train_command(clone, os.path.join(folder, "runs"), data, steps, trace),
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise UsageError(f"train.py with RLO_LOSS={loss} exited {proc.returncode}; see {folder}/train.log")


def check_one(out, loss, k):
    """The report row of the finished run in OUT/<loss>."""
    folder = os.path.join(out, loss)
    runs = os.path.join(folder, "runs")
    stats_files = glob.glob(os.path.join(runs, "*", "stats.jsonl"))
    if len(stats_files) != 1:
        raise UsageError(f"expected one finished run under {runs}, found {len(stats_files)}")
    records = read_jsonl(os.path.join(folder, "trace.jsonl"))
    stats = read_jsonl(stats_files[0])
    worst, counts = check_trace(records, loss, k)
    gaps = check_stats(stats, records)
    mean = {name: float(np.mean([v for r in records if r["name"] == name for v in r["values"]]))
            for name in ("Loss/G/loss", "Loss/D/loss")}
    ok = max(worst.values()) <= RTOL and max(gaps.values()) <= RTOL and min(counts.values()) > 0
    seconds = stats[-1]["Timing/total_sec"]["mean"] if stats else float("nan")  # upstream's own clock
    return dict(loss=loss, k=k if loss == "rlo" else None, ticks=len(stats), n_G=counts["G"],
                n_D=counts["D"], max_rel_err_G=worst["G"], max_rel_err_D=worst["D"],
                stats_gap=max(gaps.values()), mean_G_loss=mean["Loss/G/loss"], mean_D_loss=mean["Loss/D/loss"],
                seconds=round(seconds, 1), ok=ok)


def table(rows):
    head = "| loss | k | ticks | G values | D values | max rel err G | max rel err D | stats.jsonl gap | mean Loss/G/loss | mean Loss/D/loss | s | ok |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['loss']} | {r['k'] if r['k'] is not None else '-'} | {r['ticks']} | "
                     f"{r['n_G']} | {r['n_D']} | {r['max_rel_err_G']:.1e} | {r['max_rel_err_D']:.1e} | "
                     f"{r['stats_gap']:.1e} | {r['mean_G_loss']:.4f} | {r['mean_D_loss']:.4f} | "
                     f"{r['seconds']:.0f} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clone", type=str, help="a clone of NVlabs/stylegan2-ada-pytorch (not modified)")
    p.add_argument("--steps", type=int, default=2, help="training iterations per loss")
    p.add_argument("--k", type=float, default=2.0, help="k of the rooted loss (RLO_K)")
    p.add_argument("--out", type=str, default=os.path.join("runs", "stylegan_smoke"), help="work folder")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the training runs")
    p.add_argument("--loss", type=str, default="both", choices=("both", "ce", "rlo"),
                   help="which runs to make (both: ce then rlo; one of them to run the two in parallel)")
    p.add_argument("--check-only", action="store_true", help="check the finished runs in --out, train nothing")
    return p.parse_args(argv)


def main(args):
    clone = os.path.abspath(os.path.expanduser(args.clone))
    if args.steps < 1 or args.threads < 1 or not args.k > 0:
        raise UsageError("--steps and --threads must be >= 1 and --k > 0")
    out = os.path.abspath(args.out)
    chosen = ("ce", "rlo") if args.loss == "both" else (args.loss,)
    if not args.check_only:
        os.makedirs(out, exist_ok=True)
        print(copy_and_patch(clone, os.path.join(out, "clone"), args.k))
        make_dataset(os.path.join(out, "data"))
        for loss in chosen:
            train_one(os.path.join(out, "clone"), out, os.path.join(out, "data"), loss, args.k, args.steps,
                      args.threads)
    rows = [check_one(out, loss, args.k) for loss in chosen]
    atomic_write_json(os.path.join(out, f"smoke_{args.loss}.json"), {"rows": rows, "argv": sys.argv})
    print(table(rows))
    if not all(r["ok"] for r in rows):
        print("smoke check FAILED: a logged loss differs from its formula", file=sys.stderr)
        raise SystemExit(1)
    return rows


if __name__ == "__main__":
    run_cli(main, parse_args())
