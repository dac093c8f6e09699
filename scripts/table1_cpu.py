"""Report builder for the CPU-scale Table 1 / Table 2 baselines: results/table1_cpu_runs.json (written by
scripts/vision_grid.py as runs finish) -> results/table1_cpu.md + results/table1_cpu.json.

Run as `python -m scripts.table1_cpu`. Every comparison is paired by seed (same initial weights, batch order and
augmentation draws for every loss of a seed) with a 95% t-interval, and every verdict comes from utils.report.
"""
import json
import math
import os

from utils import report
from utils.cli import ArgumentParser, UsageError, run_cli

LABELS = {"ce": "CE", "focal": "Focal", "root_k5": "RLO-5", "root_k8": "RLO-8", "root_k10": "RLO-10",
          "root_paper_k5": "RLO-5 (paper form)", "square": "Square", "sparsemax": "Sparsemax"}
SCHEDULES = {"root_k5": "constant", "sched_linear": "linear", "sched_exp": "exp", "sched_exp_max": "exp_max"}
PAPER_NET, PAPER_DATASET = "ResNet", "CIFAR-10"  # the paper row closest to our small conv net
HALF_WIDTH_TARGET = 1.0
GRID_COMMAND = "OMP_NUM_THREADS=1 nohup python -m scripts.vision_grid --threads 1 >> runs/vision_grid.log 2>&1 &"
SCALE_NOTE = ("This is NOT the paper's scale: the paper trains ResNet-50 / ViT-B / Swin-B on full 32x32 CIFAR for "
              "100-350 epochs on GPUs; here a 0.17M-parameter conv net trains on a subset at reduced resolution on "
              "one CPU thread, to a plateau, with paired seeds meant to resolve a 1-point difference.")  # issue 16 (c): the interval of RLO-k - CE must be at most +-1 point


REPLACED_NOTE = (" It replaces the earlier 4-epoch table (800 training images, 20-28% accuracy, every verdict "
                 "inconclusive), which is in git history (results/table1_cpu.md at commit 8498091).")
PROTOCOL_WHY = [
    "Why this protocol: a 0.17M-parameter net at 16x16 costs about a quarter of the 32x32 FLOPs, so 8,000 "
    "images x 16 epochs with a 5,000-image evaluation every epoch is about 200 CPU-seconds per run; the 90 planned "
    "runs then fit the ~6 CPU-hour budget. The lr was tuned once for CE (table below) and used for every loss. "
    "Seeds: 8 planned; with 8 paired seeds the 95% half-width is 2.36 x std / sqrt(8) = 0.84 x the paired std, "
    "so the +-1-point target holds for a paired std up to 1.2 points (the 4-epoch table's unpaired seed std was "
    "0.7-1.8). The 'Convergence and power' section recomputes the seeds needed from the paired std measured here.",
    "The trainer is the grid runner's own (scripts/vision_grid.py), not train.py: the data live in memory as "
    "tensors at the reduced size and are augmented as whole tensors (train.py's per-image PIL pipeline costs as much "
    "as this net at 16x16), the pairing is explicit (order and augmentation drawn from (seed, epoch) only), and "
    "train.py was being rewritten while this grid ran. It reuses losses.get_loss / KSchedule, models and RunDir."]


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--summary", default=os.path.join(report.RESULTS, "table1_cpu_runs.json"),
                   help="the grid's per-run numbers (scripts/vision_grid.py --summary)")
    p.add_argument("--out-dir", default=report.RESULTS, help="where table1_cpu.md / .json go")
    p.add_argument("--name", default="table1_cpu", help="report name")
    p.add_argument("--command", default=GRID_COMMAND,
                   help="the command that ran the grid, for the report")
    p.add_argument("--train-runs", nargs="+", default=None,
                   help="build the report from train.py run directories instead (the GPU runs of scripts/table1.sh)")
    p.add_argument("--title", default=None, help="report title (default: the CPU-scale title)")
    p.add_argument("--pilot", default=os.path.join(report.RESULTS, "table1_cpu_pilot"),
                   help="prefix of the pilot files (<prefix>_speed.json, <prefix>_lr.json), shown when present")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- input
def load_summary(path):
    """The grid summary {"protocol", "planned", "done", "rows"}; UsageError if missing or not a summary."""
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path} not found; run `python -m scripts.vision_grid` first") from None
    except ValueError:
        raise UsageError(f"{path} is not valid JSON") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("rows"), list):
        raise UsageError(f"{path} is not a vision_grid summary (no 'rows' list)")
    return summary


def train_cell(config):
    """The grid cell name of a train.py run (root k=m=K -> root_kK, root_paper k=5 -> root_paper_k5)."""
    loss = config["loss"]
    if loss in ("root", "root_paper"):
        return f"{loss}_k{float(config['k']):g}"
    return loss


def summary_from_train_runs(paths):
    """A grid-like summary from train.py run directories (results.json + metrics.jsonl), for GPU-scale reports."""
    from utils.runio import read_jsonl
    rows = []
    for path in paths:
        for config, res in report.load_results([path]):
            if res.get("status") != "finished":
                continue
            metrics = read_jsonl(os.path.join(path, "metrics.jsonl"))
            accs = [r["val_acc"] for r in metrics]
            rows.append({"status": "finished", "cell": train_cell(res), "seed": res["seed"], "net": res["net"],
                         "dataset": res["dataset"], "loss": res["loss"], "k": res.get("k"), "m": res.get("m"),
                         "acc": res["final_acc"], "best_acc": res["best_acc"], "plateau": plateau(accs),
                         "train_acc": metrics[-1].get("train_acc"),
                         "train_s": report.mean(r["train_s"] for r in metrics), "epochs": len(metrics),
                         **{f"{key}_curve": [r.get(src) for r in metrics] for key, src in
                            (("acc", "val_acc"), ("val_loss", "val_loss"), ("val_ce", "val_ce"),
                             ("train_acc", "train_acc"), ("k", "k"))}})
    return {"protocol": None, "planned": len(paths), "done": len(rows), "rows": rows}


def plateau(accs, fraction=0.2, tol=0.5):
    """Final accuracy within `tol` points of the best of the last `fraction` of epochs (as vision_grid)."""
    if not accs:
        return False
    tail = accs[-max(1, math.ceil(fraction * len(accs))):]
    return bool(accs[-1] >= max(tail) - tol)


def by_seed(rows, cell, key="acc"):
    """{seed: value} of one cell."""
    return {r["seed"]: r[key] for r in rows if r["cell"] == cell}


def compare(rows, treatment, baseline, key="acc", fn=None):
    """Paired comparison over the seeds both cells finished; fn(a, b) -> difference (default a - b)."""
    a, b = by_seed(rows, treatment, key), by_seed(rows, baseline, key)
    seeds = sorted(set(a) & set(b))
    fn = fn or (lambda x, y: x - y)
    return report.paired_diffs([fn(a[s], b[s]) for s in seeds])


def paper_acc(paper, column, table="table1"):
    for row in paper:
        if (row["table"], row.get("dataset"), row.get("net"), row.get("column")) == (table, PAPER_DATASET, PAPER_NET, column):
            return row["acc"]
    return None


def seeds_needed(cmp, half_width=HALF_WIDTH_TARGET, most=100):
    """The smallest n whose 95% half-width t_{n-1} s / sqrt(n) is <= half_width, at the observed paired std s."""
    if cmp.n < 2 or math.isnan(cmp.std):
        return None
    for n in range(2, most + 1):
        if report.t_quantile(n) * cmp.std / math.sqrt(n) <= half_width:
            return n
    return None


def headline(paper, claim):
    return next(((r["low"], r["high"]) for r in paper if r.get("claim") == claim), (None, None))


def time_ratio(a, b):
    """Per-seed % change of seconds per epoch, treatment vs baseline."""
    return 100.0 * (a - b) / b


# -------------------------------------------------------------------------------------------- verdicts
def accuracy_verdicts(rows, paper):
    gain_ce, gain_focal = headline(paper, "gain_over_ce")[0], headline(paper, "gain_over_focal")[0]
    out = []
    for cell in ("root_k5", "root_k8", "root_k10"):
        label = LABELS[cell]
        out.append(report.verdict_record(f"{label} beats CE (Table 1; paper's smallest headline gain)",
                                         compare(rows, cell, "ce"), "greater", gain_ce, setting=cell))
        out.append(report.verdict_record(f"{label} beats Focal (Table 1; paper's smallest headline gain)",
                                         compare(rows, cell, "focal"), "greater", gain_focal, setting=cell))
    for base in ("square", "sparsemax"):
        claimed = paper_acc(paper, "RLO-10", "table2") - paper_acc(paper, LABELS[base], "table2")
        out.append(report.verdict_record(f"RLO-10 beats {LABELS[base]} (Table 2, {PAPER_NET} {PAPER_DATASET} gap)",
                                         compare(rows, "root_k10", base), "greater", round(claimed, 2),
                                         setting=base))
    out.append(report.verdict_record("RLO-5 paper form k (p^(-1/k) - 1) beats CE (no paper number: the tables "
                                     "used the code form)", compare(rows, "root_paper_k5", "ce"), "greater"))
    return out


def time_verdicts(rows, paper):
    """The paper's Table 1 times: RLO epochs faster than CE (claimed % from the ResNet CIFAR-10 row)."""
    out = []
    t_ce = next(r["seconds"] for r in paper if r.get("column") == "CE" and r.get("net") == PAPER_NET
                and r.get("dataset") == PAPER_DATASET and r["table"] == "table1")
    for cell in ("root_k8",):
        t_rlo = next(r["seconds"] for r in paper if r.get("column") == LABELS[cell] and r.get("net") == PAPER_NET
                     and r.get("dataset") == PAPER_DATASET and r["table"] == "table1")
        pair = [r for r in rows if r["cell"] in (cell, "ce")]
        key = "train_cpu_s" if pair and all(r.get("train_cpu_s") for r in pair) else "train_s"
        what = "CPU seconds" if key == "train_cpu_s" else "wall seconds"
        out.append(report.verdict_record(f"{LABELS[cell]} epochs take less time than CE's (% change of {what} per "
                                         "training epoch)", compare(rows, cell, "ce", key, time_ratio), "less",
                                         round(time_ratio(t_rlo, t_ce), 1), setting=cell, key=key))
    return out


# ---------------------------------------------------------------------------------------------- tables
def loss_table(rows, paper):
    headers = ["Loss", "n", "Test acc % (final)", "best epoch acc", "plateau", "train acc %", "s/epoch",
               "CPU s/epoch",
               "paired diff vs CE [95% CI]", "half-width", "paper T1 acc", "paper T2 acc"]
    lines = []
    for cell, label in LABELS.items():
        runs = [r for r in rows if r["cell"] == cell]
        if not runs:
            lines.append([label, 0] + ["-"] * 10)
            continue
        cmp = compare(rows, cell, "ce")
        lines.append([label, len(runs), report.fmt_pm([r["acc"] for r in runs]),
                      report.fmt_pm([r["best_acc"] for r in runs]), f"{sum(r['plateau'] for r in runs)}/{len(runs)}",
                      report.fmt_pm([r["train_acc"] for r in runs], 1), report.fmt_pm([r["train_s"] for r in runs], 1),
                      report.fmt_pm([r.get("train_cpu_s") or float("nan") for r in runs], 1),
                      "-" if cell == "ce" else report.fmt_paired(cmp),
                      "-" if cell == "ce" else report.fmt(cmp.half_width),
                      report.fmt(paper_acc(paper, label)), report.fmt(paper_acc(paper, label, "table2"))])
    return report.md_table(headers, lines)


def plateau_lines(rows, protocol):
    ce = [r for r in rows if r["cell"] == "ce"]
    accs = [r["acc"] for r in ce]
    in_band = bool(accs) and 60 <= report.mean(accs) <= 97
    out = ["- Plateau criterion: the final test accuracy is within 0.5 points of the best of the last 20% of "
           "epochs (column 'plateau')."]
    if any(r["cell"] == "ce_2x" for r in rows):
        cmp = compare(rows, "ce_2x", "ce")
        out.append(f"- Plateau check: CE trained for {2 * protocol['epochs']} instead of {protocol['epochs']} "
                   f"epochs (same seeds and protocol) gains {report.fmt_paired(cmp)} points.")
        if cmp.n and cmp.diff > 0.5:
            out.append("  So the plateau above is where this budget's cosine schedule ends, not convergence: "
                       "twice the epochs still raise CE's accuracy. The comparisons below are between losses "
                       "at one fixed, budget-limited schedule; whether the RLO - CE difference changes with "
                       "a longer budget is not measured here (the GPU grid, at the paper's epochs, would).")
    out.append(f"- CE accuracy {report.fmt_pm(accs)} % is {'inside' if in_band else 'OUTSIDE'} the 60-97 % band "
               "where losses can differ.")
    return out


def power_lines(rows):
    out = []
    for cell in ("root_k5", "root_k8", "root_k10"):
        cmp = compare(rows, cell, "ce")
        need = seeds_needed(cmp)
        if cmp.n < 2:
            out.append(f"- {LABELS[cell]} - CE: n = {cmp.n} paired seeds: no spread yet, so no interval and no "
                       "estimate of the seeds needed.")
            continue
        out.append(f"- {LABELS[cell]} - CE: n = {cmp.n}, paired std {report.fmt(cmp.std)}, 95% half-width "
                   f"{report.fmt(cmp.half_width)} (target <= {HALF_WIDTH_TARGET:g}); at this std, "
                   f"{need if need else 'more than 100'} seeds reach the target"
                   + (" (a std from fewer than 5 seeds is itself rough)." if cmp.n < 5 else "."))
    return out


def protocol_lines(summary, command):
    p = summary["protocol"]
    if p is None:  # train.py runs (scripts/table1.sh)
        nets = sorted({(r["net"], r["dataset"], r["epochs"]) for r in summary["rows"]})
        return [f"- train.py runs: {', '.join(f'{n} on {d}, {e} epochs' for n, d, e in nets) or 'none finished'}; "
                f"settings in each run's config.json. Command: `{command}`.",
                f"- Progress: **{summary['done']} of {summary['planned']} run directories finished**."]
    return [f"- Data: JPEG re-encoded CIFAR-10 (../shared/data/cifar10-jpeg; not byte-identical to the official "
            f"pickles), a fixed class-balanced subset of {10 * p['train_per_class']:,} training images (subset "
            f"seed 0) and a fixed class-balanced {10 * p['test_per_class']:,}-image test set (seed 1), down-sampled "
            f"to {p['size']}x{p['size']} (bilinear, antialiased).",
            f"- Net: {p['net']} (models/airbench.py, width {p['width']}), fp32, one torch thread.",
            f"- Training: {p['epochs']} epochs, batch {p['bs']}, AdamW lr {p['lr']:g} (tuned once for CE, used "
            f"for every loss), weight decay {p['wd']:g}, 5% linear warm-up then cosine to 0; augmentation: "
            f"random flip + random crop with {p['pad']}-pixel zero padding; no RandAugment.",
            "- Paired design: for each seed, every loss starts from the same initial weights (torch.manual_seed"
            "(seed)) and sees the same batch order, flips and crops (drawn from a generator seeded by (seed, "
            "epoch) only); tested in tests/test_vision_grid.py.",
            "- Losses: RLO-k is the authors' code form m (1 - p_y^(1/k)) with m = k (as scripts/table1.sh); "
            "'paper form' is k (p_y^(-1/k) - 1); Focal alpha 0.25, gamma 3; Square and Sparsemax from losses.py.",
            f"- Seeds: {p['seeds']}. Command: `{command}` (resumable: run it again to continue; "
            "`python -m scripts.table1_cpu` rebuilds this file).",
            f"- Progress: **{summary['done']} of {summary['planned']} planned runs finished**; verdicts below "
            "use the finished ones only."]


def read_optional(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pilot_lines(prefix):
    """The pilot behind the protocol: throughput per resolution and the one CE learning-rate sweep."""
    speed, sweep = read_optional(f"{prefix}_speed.json"), read_optional(f"{prefix}_lr.json")
    lines = []
    if speed:
        lines += [f"Throughput, one thread (`{speed['command']}`; the 1-minute load average of the shared machine "
                  "beside it: other engineers' jobs ran at the same time, so these are this run's shares, not the "
                  "CPU's capacity):", ""]
        lines += report.md_table(["net", "params", "px", "batch", "train img/s", "eval img/s", "load avg"],
                                 [[r["net"], f"{r['params']:,}", r["size"], r["bs"], f"{r['train_images_per_s']:.0f}",
                                   f"{r['eval_images_per_s']:.0f}", f"{r['load_avg']:.1f}"] for r in speed["rows"]])
        lines.append("")
    if sweep:
        lines += [f"CE learning-rate sweep, once, 8 epochs, seed 100 (not a grid seed) (`{sweep['command']}`):", ""]
        lines += report.md_table(["AdamW lr", "final test acc %", "acc per epoch"],
                                 [[f"{r['lr']:g}", f"{r['acc']:.2f}", " ".join(f"{a:.1f}" for a in r["acc_curve"])]
                                  for r in sweep["rows"]])
        lines.append("")
    return lines


def bench_train_sentence(path=os.path.join(report.RESULTS, "bench_train.json")):
    """What results/bench_train.json measured: the loss's share of a training step and RLO / CE throughput."""
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)["rows"]
        ratio = next(r for r in rows if r.get("section") == "ratio")
        share = max(r["loss_us"] * 1e-6 / (r["bs"] / r["images_per_s"]) for r in rows if r.get("section") == "loss")
    except (OSError, ValueError, KeyError, StopIteration):
        return ""
    return (f" results/bench_train.md measured the loss itself at under {100 * share:.1f}% of a training step "
            f"(RLO / CE throughput {ratio['ratio']:.3f}), so a 15-20% speed-up (the paper's Table 1 times) cannot "
            "come from the loss.")


def main(args):
    summary = summary_from_train_runs(args.train_runs) if args.train_runs else load_summary(args.summary)
    rows = [r for r in summary["rows"] if r.get("status") == "finished"]
    paper = report.paper_numbers("table1") + report.paper_numbers("table2")
    verdicts = accuracy_verdicts(rows, paper) + time_verdicts(rows, paper)
    title = args.title or "Table 1 / Table 2 baselines at CPU scale (JPEG re-encoded CIFAR-10, small conv net)"
    scale = (SCALE_NOTE + REPLACED_NOTE if summary["protocol"] else "train.py runs made by scripts/table1.sh.") + \
        " The paper columns are its ResNet CIFAR-10 rows (Table 1 and Table 2)."
    lines = [f"# {title}", "", scale, "",
             "## Protocol", "", *protocol_lines(summary, args.command), "",
             *(PROTOCOL_WHY + [""] if summary["protocol"] else []), *pilot_lines(args.pilot),
             "## Accuracy and time per epoch", "", *loss_table(rows, paper), "",
             "s/epoch is the wall time of one training epoch on the shared 2-core machine (other jobs ran beside "
             "it, so wall times mostly measure the load); CPU s/epoch is the process CPU time of the same epoch (logged "
             "only by epochs run after it was added: '-' or partial for the first runs), the fairer cost measure. The time verdict uses CPU seconds once every compared "
             "run has them." + bench_train_sentence(), "",
             "## Convergence and power", "", *plateau_lines(rows, summary["protocol"]), *power_lines(rows), "",
             "## Verdicts", "", *report.verdict_lines(verdicts), "", report.RULE_TEXT, ""]
    flat = [{k: v for k, v in r.items() if not k.endswith("_curve")} for r in rows]
    path = report.write_report(args.name, lines, flat, paper, verdicts, out_dir=args.out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main, parse_args())
