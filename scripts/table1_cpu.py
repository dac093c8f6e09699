"""A CPU-scale Table 1 (paper Sec. 4.1.2): small ResNet / ViT / Swin x CE, Focal, RLO-5, RLO-8, RLO-10 x seeds
on a fixed subset of the JPEG re-encoded CIFAR-10 (../shared/data/cifar10-jpeg), then results/table1_cpu.md.

Resumable: a run whose results.json says 'finished' is skipped, an interrupted one continues with --resume.
`--report-only` rewrites the table from the runs that finished. Seeds are the outer loop, so a cut-short
grid still holds every configuration for the first seed(s).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import utils.tv_compat  # noqa: F401,E402  (must come before anything imports torchvision)

import json  # noqa: E402
import statistics  # noqa: E402
import tarfile  # noqa: E402
import time  # noqa: E402

import train  # noqa: E402
from utils.cli import ArgumentParser, UsageError, default_data_dir, run_cli  # noqa: E402
from utils.runio import atomic_write_text  # noqa: E402

NETS = {  # CLI name -> (paper row, extra train.py flags)
    "res18_mini": ("ResNet", []),
    "vit_tiny": ("ViT", ["--dimhead", "128"]),
    "swin_mini": ("Swin", []),
    "res50": ("ResNet", []),  # the paper-scale nets, for scripts/table1.sh's report
    "vit": ("ViT", []),
    "swin": ("Swin", []),
}
CPU_NETS = ["res18_mini", "vit_tiny", "swin_mini"]
LOSSES = {  # column -> train.py flags; RLO-k is the authors' code form with m = k
    "CE": ["--loss", "ce"],
    "Focal": ["--loss", "focal"],
    "RLO-5": ["--loss", "root", "--k", "5", "--m", "5"],
    "RLO-8": ["--loss", "root", "--k", "8", "--m", "8"],
    "RLO-10": ["--loss", "root", "--k", "10", "--m", "10"],
}
# Paper Table 1: (epoch seconds, top-1 accuracy) per column.
PAPER_CIFAR10 = {
    "ViT": {"CE": (18.87, 93.68), "Focal": (78.76, 92.62), "RLO-5": (16.21, 93.79), "RLO-8": (15.97, 93.92),
            "RLO-10": (16.77, 94.10)},
    "ResNet": {"CE": (24.45, 96.25), "Focal": (92.46, 94.58), "RLO-5": (20.81, 96.84), "RLO-8": (19.81, 96.32),
               "RLO-10": (21.27, 97.16)},
    "Swin": {"CE": (26.74, 92.80), "Focal": (38.76, 91.81), "RLO-5": (22.23, 92.77), "RLO-8": (22.99, 93.24),
             "RLO-10": (22.95, 93.10)},
}
PAPER_CIFAR100 = {
    "ViT": {"CE": (47.32, 78.30), "Focal": (65.29, 76.43), "RLO-5": (32.46, 79.31), "RLO-8": (35.73, 79.70),
            "RLO-10": (31.88, 79.05)},
    "ResNet": {"CE": (26.34, 82.98), "Focal": (19.98, 80.52), "RLO-5": (26.27, 83.88), "RLO-8": (25.79, 83.26),
               "RLO-10": (24.81, 84.10)},
    "Swin": {"CE": (35.16, 76.53), "Focal": (68.65, 75.49), "RLO-5": (31.46, 78.26), "RLO-8": (30.92, 78.80),
             "RLO-10": (31.28, 78.61)},
}
PAPER = {"cifar10": PAPER_CIFAR10, "cifar100": PAPER_CIFAR100}
DATA_NOTE = "JPEG re-encoded CIFAR-10"
CPU_SETTINGS = ("Adam lr 1e-3, cosine schedule, batch 64, no RandAugment (--noaug), fp32, 1 torch thread; RLO-k = "
                "the authors' code form m (1 - p_y^(1/k)) with m = k; Focal alpha 0.25, gamma 3. Nets: res18_mini "
                "(ResNet-18 layout, widths 16-128), vit_tiny (--dimhead 128), swin_mini (embed 32, depths 2-2-2-2).")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tar", default=os.path.join(default_data_dir(), "cifar10-jpeg", "cifar10-jpeg.tar.gz"),
                   help="the packed JPEG CIFAR-10 (unpacked once into --cache)")
    p.add_argument("--cache", default=os.path.join(REPO, "runs", "cache"), help="where to unpack (outside git)")
    p.add_argument("--runs", default=os.path.join(REPO, "runs", "table1_cpu"), help="run directories")
    p.add_argument("--report", default=os.path.join(REPO, "results", "table1_cpu.md"))
    p.add_argument("--nets", nargs="+", default=CPU_NETS, choices=list(NETS))
    p.add_argument("--dataset", default="cifar10", choices=list(PAPER), help="which paper rows to compare with")
    p.add_argument("--data-note", default=DATA_NOTE, help="what the data is, printed next to every number")
    p.add_argument("--settings", default=CPU_SETTINGS, help="the training settings, for the report")
    p.add_argument("--command", default=None, help="the command that ran the grid, for the report")
    p.add_argument("--title", default=f"Table 1 at CPU scale ({DATA_NOTE})")
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--subset", type=int, default=800, help="training images (fixed random subset)")
    p.add_argument("--test-subset", type=int, default=500, help="test images (fixed random subset)")
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--report-only", action="store_true", help="only rewrite the table from finished runs")
    return p.parse_args(argv)


def unpack(tar_path, cache):
    """Unpack the tar.gz once into cache/cifar10-jpeg (written under a temporary name, then renamed)."""
    target = os.path.join(cache, "cifar10-jpeg")
    if os.path.isdir(os.path.join(target, "test")):
        return target
    if not os.path.exists(tar_path):
        raise UsageError(f"{tar_path} not found; expected the packed JPEG CIFAR-10 (cifar10-jpeg.tar.gz)")
    tmp = target + ".partial"
    os.makedirs(tmp, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp, filter="data")
    inner = os.path.join(tmp, "cifar10-jpeg")
    os.replace(inner if os.path.isdir(inner) else tmp, target)
    return target


def run_name(net, column, seed):
    return f"{net}_{column.lower()}_s{seed}"


def train_argv(args, data_dir, net, column, seed, out):
    return (["--dataset", "cifar10", "--data-dir", data_dir, "--net", net, *NETS[net][1], *LOSSES[column],
             "--n_epochs", str(args.epochs), "--subset", str(args.subset), "--test-subset", str(args.test_subset),
             "--bs", str(args.bs), "--lr", str(args.lr), "--opt", "adam", "--noaug", "--seed", str(seed),
             "--workers", "0", "--threads", "1", "--device", "cpu", "--out", out])


def read_results(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_grid(args, data_dir):
    for seed in args.seeds:
        for net in args.nets:
            for column in args.losses:
                out = os.path.join(args.runs, run_name(net, column, seed))
                done = read_results(os.path.join(out, "results.json"))
                if done and done.get("status") == "finished":
                    continue
                argv = train_argv(args, data_dir, net, column, seed, out)
                if os.path.exists(os.path.join(out, "checkpoint.pt")):
                    argv.append("--resume")
                print(f"[{time.strftime('%H:%M:%S')}] train.py {' '.join(argv)}", flush=True)
                results = train.main(train.parse_args(argv))
                write_report(args)
                if results["status"] != "finished":  # SIGINT/SIGTERM: stop the grid, resumable later
                    raise SystemExit(f"stopped during {out}; run the same command again to continue")


def collect(args):
    """{(net, column): [(final accuracy, mean train seconds per epoch), ...]} over finished runs."""
    from utils.runio import read_jsonl
    table = {}
    for net in args.nets:
        for column in LOSSES:
            for seed in args.seeds:
                out = os.path.join(args.runs, run_name(net, column, seed))
                res = read_results(os.path.join(out, "results.json"))
                if not res or res.get("status") != "finished":
                    continue
                epochs = read_jsonl(os.path.join(out, "metrics.jsonl"))
                train_s = statistics.mean(r["train_s"] for r in epochs)
                table.setdefault((net, column), []).append((res["final_acc"], train_s))
    return table


def mean_std(values):
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values, digits=2):
    mean, std = mean_std(values)
    return "-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f} (n={len(values)})"


def verdict(net, table):
    """One plain sentence: is an RLO column best or second best for this net, and is the gap above noise?"""
    means = {c: mean_std([a for a, _ in table.get((net, c), [])]) for c in LOSSES}
    ranked = sorted((c for c in LOSSES if means[c][0] is not None), key=lambda c: -means[c][0])
    if len(ranked) < len(LOSSES):
        return f"{net}: incomplete ({len(ranked)} of {len(LOSSES)} columns finished)."
    top2 = ranked[:2]
    holds = any(c.startswith("RLO") for c in top2)
    best_rlo = max((c for c in LOSSES if c.startswith("RLO")), key=lambda c: means[c][0])
    gap = means[best_rlo][0] - means["CE"][0]
    noise = max(means[best_rlo][1], means["CE"][1])
    seeds = min(len(table[(net, c)]) for c in (best_rlo, "CE"))
    best = "an RLO column is best" if ranked[0].startswith("RLO") else f"{ranked[0]} is best, not an RLO column"
    noise_text = (f"{'larger' if abs(gap) > noise else 'not larger'} than the seed std ({noise:.2f})."
                  if seeds > 1 else "one seed only, so no noise estimate.")
    return (f"{net}: ranking {' > '.join(ranked)}; paper's ordering (an RLO column best or second best) "
            f"{'HOLDS' if holds else 'DOES NOT HOLD'} ({best}); best RLO ({best_rlo}) - CE = {gap:+.2f} points, "
            + noise_text)


def overall(nets, table):
    """How many nets show a best-RLO gain over CE larger than the seed std."""
    wins, done = 0, 0
    for net in nets:
        stats = {c: mean_std([a for a, _ in table.get((net, c), [])]) for c in LOSSES}
        if any(stats[c][0] is None for c in LOSSES):
            continue
        done += 1
        best = max((c for c in LOSSES if c.startswith("RLO")), key=lambda c: stats[c][0])
        wins += stats[best][0] - stats["CE"][0] > max(stats[best][1], stats["CE"][1])
    return (f"the best RLO column beats CE by more than the seed std for {wins} of {done} nets. The paper reports "
            "gains of 1.44-2.32 points over CE; a difference smaller than the seed std neither confirms nor "
            "refutes that.")


def grid_command(args):
    return (f"python scripts/table1_cpu.py --epochs {args.epochs} --subset {args.subset} --test-subset "
            f"{args.test_subset} --bs {args.bs} --lr {args.lr:g} --seeds {' '.join(map(str, args.seeds))}")


def write_report(args):
    table, note = collect(args), args.data_note
    train_part = f"a fixed random {args.subset}-image subset of its training set" if args.subset else "its full " \
        "training set"
    test_part = f"a fixed random {args.test_subset}-image subset of the" if args.test_subset else "the full"
    lines = [f"# {args.title}", "",
             f"Every accuracy below is top-1 (final epoch) on {test_part} **{note} test set**, after {args.epochs} "
             f"epochs on {train_part}; mean ± std over seeds {args.seeds} (n = finished runs). Time: mean "
             "training seconds per epoch (on the shared 2-core CPU for the CPU table: load varied, compare times "
             "only loosely). Paper: official CIFAR, 350 epochs (appendix: 200 ViT, 100 ResNet/Swin), full data, "
             "ViT-B / ResNet-50 / Swin-B on GPUs.", "", f"Settings: {args.settings}", "",
             f"Command: `{args.command or grid_command(args)}` (resumable; add `--report-only` to rewrite this file "
             "from the finished runs).",
             "", f"| Model (ours / paper) | Loss | Ours: acc % ({note}) | Ours: s/epoch | Paper: acc % "
             "| Paper: s/epoch |", "|---|---|---|---|---|---|"]
    for net in args.nets:
        row = NETS[net][0]
        for column in LOSSES:
            runs = table.get((net, column), [])
            t_paper, a_paper = PAPER[args.dataset][row][column]
            lines.append(f"| {net} / {row} | {column} | {fmt([a for a, _ in runs])} | "
                         f"{fmt([t for _, t in runs], 1)} | {a_paper:.2f} | {t_paper:.2f} |")
    lines += ["", f"## Verdict ({note})", ""]
    lines += [f"- {verdict(net, table)}" for net in args.nets]
    lines += ["", f"Overall: {overall(args.nets, table)}"]
    lines += ["", "With three RLO columns out of five, an RLO column lands in the top two by chance alone in 9 of "
              "10 random orderings; the gap to CE against the seed std is the more telling number.", ""]
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    atomic_write_text(args.report, "\n".join(lines))


def main(args):
    if not args.report_only:
        run_grid(args, unpack(args.tar, args.cache))
    write_report(args)
    print(f"wrote {args.report}")


if __name__ == "__main__":
    run_cli(main, parse_args())
