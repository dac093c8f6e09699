"""Report builder for Fig. 2c (validation loss over epochs, CE vs RLO) and Fig. 2d / Fig. 7c (k schedules) at CPU
scale: results/table1_cpu_runs.json (scripts/vision_grid.py) -> results/fig2cd.md, .json and three figures.

Run as `python -m scripts.fig2cd`. The claims are turned into paired per-seed numbers (same initial weights,
batches and augmentation for every loss of a seed) and judged by utils.report's one verdict rule.
"""
import os

import numpy as np

from scripts.table1_cpu import LABELS, SCHEDULES, by_seed, compare, load_summary
from utils import report
from utils.cli import ArgumentParser, run_cli

CURVE_CELLS = ("ce", "focal", "root_k5", "root_k8", "root_k10", "root_paper_k5", "square", "sparsemax")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--summary", default=os.path.join(report.RESULTS, "table1_cpu_runs.json"),
                   help="the grid's per-run numbers (scripts/vision_grid.py --summary)")
    p.add_argument("--out-dir", default=report.RESULTS, help="where fig2cd.md / .json / .png go")
    p.add_argument("--name", default="fig2cd", help="report name (also the figures' prefix)")
    return p.parse_args(argv)


def second_half_change(curve):
    """How much a per-epoch curve moved over the second half of training: last value - value at the middle."""
    return curve[-1] - curve[len(curve) // 2 - 1]


def with_change(rows, key):
    """Rows with an added '<key>_change' (second-half change of '<key>_curve')."""
    return [dict(r, **{f"{key}_change": second_half_change(r[f"{key}_curve"])}) for r in rows]


def early_acc(rows, fraction=0.25):
    """Rows with 'early_acc': test accuracy after the first `fraction` of the epochs."""
    return [dict(r, early_acc=r["acc_curve"][max(0, int(round(fraction * len(r["acc_curve"]))) - 1)])
            for r in rows]


def one_sample(rows, cell, key):
    """The paired interval of a within-run change (each seed's change against 0)."""
    return report.paired_diffs(list(by_seed(rows, cell, key).values()))


def fig2c_verdicts(rows):
    rows = with_change(with_change(rows, "val_ce"), "val_loss")
    out = [report.verdict_record("CE's validation loss increases over the second half of training (Fig. 2c)",
                                 one_sample(rows, "ce", "val_ce_change"), "greater", setting="ce")]
    for cell in ("root_k8", "root_k5", "root_k10"):
        out.append(report.verdict_record(f"{LABELS[cell]}'s validation loss (its own loss) decreases over the second "
                                         "half (Fig. 2c)", one_sample(rows, cell, "val_loss_change"), "less",
                                         setting=cell))
        out.append(report.verdict_record(f"{LABELS[cell]}'s validation CE rises less than CE's over the second half "
                                         "(more stable validation loss, Fig. 2b caption)",
                                         compare(rows, cell, "ce", "val_ce_change"), "less", setting=cell))
    early = early_acc(rows)
    out.append(report.verdict_record("RLO-8 is ahead of CE after the first quarter of the epochs (Fig. 2c: "
                                     "'train much faster')", compare(early, "root_k8", "ce", "early_acc"),
                                     "greater", setting="root_k8"))
    return out


def fig2d_verdicts(rows):
    out = []
    for cell in ("sched_linear", "sched_exp", "root_k5"):
        out.append(report.verdict_record(f"exp_max beats the {SCHEDULES[cell]} k schedule in final accuracy "
                                         "(Fig. 2d, 7c)", compare(rows, "sched_exp_max", cell), "greater",
                                         setting=cell))
    early = early_acc(rows)
    out.append(report.verdict_record("constant k beats exp_max in the first quarter of the epochs (Fig. 2d)",
                                     compare(early, "root_k5", "sched_exp_max", "early_acc"), "greater",
                                     setting="early"))
    for cell in SCHEDULES:
        out.append(report.verdict_record(f"RLO with the {SCHEDULES[cell]} k schedule beats CE (Fig. 7c: 'all "
                                         "setups of k achieve better performance')", compare(rows, cell, "ce"),
                                         "greater", setting=cell))
    return out


def mean_curve(rows, cell, key):
    curves = [r[f"{key}_curve"] for r in rows if r["cell"] == cell]
    return np.mean(np.asarray(curves, dtype=float), axis=0) if curves else None


def plot(rows, cells, keys, titles, path, labels):
    """One panel per key: the seed-mean curve of every cell that has runs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8))
    for ax, key, title in zip(np.atleast_1d(axes), keys, titles):
        for cell in cells:
            curve = mean_curve(rows, cell, key)
            if curve is not None:
                n = sum(r["cell"] == cell for r in rows)
                ax.plot(np.arange(1, len(curve) + 1), curve, label=f"{labels[cell]} (n={n})")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=7)
    return report.save_figure(fig, path)


def figures(rows, out_dir, name):
    paths = [os.path.join(out_dir, f"{name}_{suffix}.png") for suffix in ("val_loss", "k_schedules", "acc")]
    plot(rows, ("ce", "root_k5", "root_k8", "root_k10"), ("val_loss", "val_ce"),
         ("validation loss (each run's own loss)", "validation CE"), paths[0], LABELS)
    plot(rows, ("ce", *SCHEDULES), ("acc", "k"), ("test accuracy %", "k"), paths[1],
         {"ce": "CE", **{c: f"k {s}" for c, s in SCHEDULES.items()}})
    plot(rows, CURVE_CELLS, ("acc", "train_acc"), ("test accuracy %", "train accuracy % (augmented batches)"),
         paths[2], LABELS)
    return paths


def overfit_lines(rows):
    """Train vs test accuracy at the end: Fig. 2c's rising CE validation loss needs a net that overfits."""
    out = []
    for cell in ("ce", "root_k8"):
        runs = [r for r in rows if r["cell"] == cell]
        if runs:
            out.append(f"- {LABELS[cell]}: final train accuracy (augmented batches) "
                       f"{report.fmt_pm([r['train_acc'] for r in runs], 1)} %, test "
                       f"{report.fmt_pm([r['acc'] for r in runs], 1)} % (n = {len(runs)}).")
    return out


def main(args):
    summary = load_summary(args.summary)
    rows = [r for r in summary["rows"] if r.get("status") == "finished"]
    verdicts = fig2c_verdicts(rows) + fig2d_verdicts(rows)
    paths = figures(rows, args.out_dir, args.name)
    flat = [{k: v for k, v in r.items() if not k.endswith("_curve")} for r in rows]
    lines = [f"# Fig. 2c-d and Fig. 7c at CPU scale (JPEG re-encoded CIFAR-10, small conv net)", "",
             "Same runs and protocol as results/table1_cpu.md (its Protocol section): NOT the paper's scale "
             "(ResNet-50 on full CIFAR-10 on GPUs). Curves are means over the finished seeds; per-epoch numbers "
             "of every run are in results/table1_cpu_runs.json.", "",
             f"Progress: **{summary['done']} of {summary['planned']} planned runs finished**; verdicts below use "
             "the finished ones only.", "",
             "k schedules (Sec. 4.3.1) start at k0 = 5 with m fixed at 5 (train.py's --k-schedule keeps --m): "
             "constant (the RLO-5 runs), linear k = 5 + epoch, exp k = 5 * 1.1^epoch, exp_max min(5 * 1.1^epoch, "
             "10).", "",
             "'Second half' changes are last epoch minus the middle epoch, per seed; 'first quarter' is the "
             "accuracy after 25% of the epochs.", "",
             "Overfitting at this scale (the paper's rising CE validation loss needs a net that fits its training "
             "set well beyond its test accuracy):", "", *overfit_lines(rows), "",
             f"![validation loss]({os.path.basename(paths[0])})", "",
             f"![k schedules]({os.path.basename(paths[1])})", "",
             f"![accuracy]({os.path.basename(paths[2])})", "",
             "## Verdicts", "", *report.verdict_lines(verdicts), "", report.RULE_TEXT, ""]
    path = report.write_report(args.name, lines, flat, [], verdicts, out_dir=args.out_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_cli(main, parse_args())
