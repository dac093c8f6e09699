"""Report builder for the spiral experiment (paper Fig. 2b and Fig. 6): results/fig2.md, results/fig2.json and
the decision-boundary figures results/fig2_<optimizer>_fc<depth>.png, from synthetic.py run directories.

    python -m scripts.fig2 runs/synthetic
"""
import argparse
import os

from utils import report
from utils.cli import ArgumentParser, UsageError, run_cli

NAME = "fig2"
CLAIMS = {  # key -> (claim, scale of the shown numbers)
    "acc": ("RLO beats CE in test accuracy in every setting (paper Fig. 2b and 6: 'RLO outperforms CE in term of "
            "accuracy in all settings')", 1),
    "margin": ("RLO's margins (mean distance of correctly classified training points to the boundary) are larger "
               "(paper Sec. 4.1, Fig. 6)", 1),
}


def load_runs(run_dirs):
    """(config, records) per run directory; UsageError when none holds a finished synthetic.py run."""
    runs = [(config, results["runs"]) for config, results in report.load_results(run_dirs) if "runs" in results]
    if not runs:
        raise UsageError(f"no finished synthetic.py run (results.json) in {', '.join(run_dirs)}")
    return runs


def make_rows(runs, run_dirs):
    """One flat row per trained net, test and train accuracy in %."""
    rows = []
    for (_, records), run_dir in zip(runs, run_dirs):
        for r in records:
            rows.append({"optimizer": r["optimizer"], "depth": r["depth"], "net": f"fc{r['depth']}",
                         "iters": r["iters"], "loss": r["loss"], "k": r["k"], "m": r["m"], "seed": r["seed"],
                         "acc": 100 * r["test_acc"], "train_acc": 100 * r["train_acc"], "margin": r["margin"],
                         "train_loss": r["final_loss"], "run": run_dir,
                         "checkpoint": os.path.join(run_dir, "models", os.path.basename(r["path"]))})
    return rows


def _by_seed(rows, **match):
    return {r["seed"]: r for r in rows if all(r[k] == v for k, v in match.items())}


def make_verdicts(rows, rlo_forms):
    """Per claim, RLO form and optimiser: a paired (by seed) verdict per depth, and their combination."""
    out = []
    for key, (claim, _) in CLAIMS.items():
        for rlo in rlo_forms:
            for opt in sorted({r["optimizer"] for r in rows}):
                settings = []
                for depth in sorted({r["depth"] for r in rows if r["optimizer"] == opt}):
                    ce, other = _by_seed(rows, optimizer=opt, depth=depth, loss="ce"), \
                        _by_seed(rows, optimizer=opt, depth=depth, loss=rlo)
                    seeds = sorted(set(ce) & set(other))
                    cmp = report.paired([other[s][key] for s in seeds], [ce[s][key] for s in seeds])
                    settings.append(report.verdict_record(f"{key}: {rlo} vs ce, {opt}, {depth} layers", cmp,
                                                          "greater", optimizer=opt, depth=depth, loss=rlo, key=key))
                if settings:
                    out += settings + [report.combined_record(f"{claim}, {opt}, RLO = {rlo}", settings)]
    return out


def combined_lines(verdicts):
    """One bullet per combined claim, naming how its settings came out."""
    by_claim = {v["claim"]: v["verdict"] for v in verdicts}
    lines = []
    for v in verdicts:
        if "settings" in v:
            parts = ", ".join(f"{name.split(', ')[-1]} {by_claim[name]}" for name in v["settings"])
            lines.append(f"- **{v['claim']}**: {v['verdict']} ({parts}; {v['n']} seeds)")
    return lines


def table_lines(rows):
    head = ["optimizer", "layers", "iterations", "loss", "seeds", "test acc %", "train acc %", "mean margin",
            "final train loss"]
    cells = []
    for opt, depth, loss in sorted({(r["optimizer"], r["depth"], r["loss"]) for r in rows}):
        group = [r for r in rows if (r["optimizer"], r["depth"], r["loss"]) == (opt, depth, loss)]
        cells.append([opt, depth, group[0]["iters"], loss, len(group), report.fmt_pm([r["acc"] for r in group]),
                      report.fmt_pm([r["train_acc"] for r in group]),
                      report.fmt_pm([r["margin"] for r in group], 4),
                      report.fmt_pm([r["train_loss"] for r in group], 4)])
    return report.md_table(head, cells)


def draw_figures(rows, out_dir):
    """Fig. 2b / 6 style panels for the first seed of every (optimizer, depth): one PNG each."""
    import utils.tv_compat  # noqa: F401  (before models/, which imports torchvision)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from models.fcn import fcn_from_config
    from utils.checkpoint import load_checkpoint
    from utils.spiral import probability_grid, spiral_data
    first = min(r["seed"] for r in rows)
    paths = []
    for opt, depth in sorted({(r["optimizer"], r["depth"]) for r in rows}):
        panels = [r for r in rows if (r["optimizer"], r["depth"], r["seed"]) == (opt, depth, first)]
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
        for ax, r in zip(axes[0], panels):
            ckpt = load_checkpoint(r["checkpoint"], kind="synthetic")
            model = fcn_from_config(ckpt["config"])
            model.load_state_dict(ckpt["model"])
            model.eval()
            X, y, _, _ = spiral_data(ckpt["config"])
            gx, gy, probs = probability_grid(model)
            image = ax.contourf(gx, gy, probs, levels=np.linspace(0, 1, 21), cmap="RdBu_r")
            ax.contour(gx, gy, probs, levels=[0.5], colors="white", linewidths=2.5)
            colours = np.where(y.numpy() == 1, "#ffd400", "#00e5ff")  # visible on both red and blue
            ax.scatter(X[:, 0], X[:, 1], c=colours, s=7, edgecolors="k", linewidths=0.3)
            ax.set(title=f"{r['loss']} ({opt}, {depth} layers, {r['iters']} it, seed {first}): "
                         f"test {r['acc']:.1f}%", xticks=[], yticks=[], aspect="equal")
            fig.colorbar(image, ax=ax, ticks=[0, 0.5, 1], fraction=0.046)
        fig.tight_layout()
        paths.append(report.save_figure(fig, os.path.join(out_dir, f"{NAME}_{opt}_fc{depth}.png")))
    return paths


def command_of(config):
    argv = config.get("argv") or ["synthetic.py"]
    return "python " + " ".join([os.path.basename(argv[0])] + list(argv[1:]))


def report_lines(runs, rows, verdicts, figures):
    config = runs[0][0]
    lines = ["# Spiral nets: CE vs RLO (paper Fig. 2b, Fig. 6)", "",
             "Produced by " + ", ".join(f"`{command_of(c)}`" for c, _ in runs) + f", then `python -m scripts.{NAME}` "
             f"(both in scripts/fig2.sh). {config['n']} points, noise {config['noise']}, 70/30 split, FC nets hidden "
             f"{config['hidden']}, lr {config['lr']}, k {config['k']}, m {config['m']}, full batch, iterations "
             "per depth as in the table (paper: 1000 / 100 / 50 for 2 / 3 / 4 layers); each seed draws its own data, "
             "split and initialisation. Loss forms: `ce` = cross-entropy, `root` = m (1 - p_y^(1/k)) (authors' code "
             "form), `root_paper` = k (p_y^(-1/k) - 1) (paper eq. 4 form). Mean ± std over seeds. The paper gives "
             "figures only, no numbers.", "", "## Verdicts", "", report.RULE_TEXT, ""]
    lines += combined_lines(verdicts)
    lines += ["", "Per setting (paired by seed, RLO - CE; accuracy in points):", ""]
    lines += report.verdict_lines([v for v in verdicts if "settings" not in v], digits=3)
    lines += ["", "## Accuracy and margins", ""] + table_lines(rows)
    if figures:
        lines += ["", f"Decision boundaries (seed {min(r['seed'] for r in rows)}): " +
                  ", ".join(f"[{os.path.basename(p)}]({os.path.basename(p)})" for p in figures)]
    return lines


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", default=["runs/synthetic"],
                   help="synthetic.py run directories (default: runs/synthetic)")
    p.add_argument("--rlo-loss", nargs="+", default=None,
                   help="the losses compared against ce (default: every other loss in the runs, "
                        "the run's --rlo-loss first)")
    p.add_argument("--out-dir", default=report.RESULTS, help="where the report and figures go (default: results/)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the decision-boundary figures")
    return p.parse_args(argv)


def main(args):
    runs = load_runs(args.runs)
    rows = make_rows(runs, [d for d in args.runs if os.path.exists(os.path.join(d, "results.json"))])
    first = runs[0][0].get("rlo_loss", "root")
    forms = args.rlo_loss or sorted({r["loss"] for r in rows} - {"ce"}, key=lambda name: (name != first, name))
    verdicts = make_verdicts(rows, forms)
    figures = draw_figures(rows, args.out_dir) if args.figures else []
    return report.write_report(NAME, report_lines(runs, rows, verdicts, figures), rows, (), verdicts, args.out_dir)


if __name__ == "__main__":
    run_cli(main, parse_args())
