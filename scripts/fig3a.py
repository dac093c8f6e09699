"""Report builder for the Hessian spectra at the spiral nets' solutions (paper Fig. 3a, Lemma 3.3):
results/fig3a.md, results/fig3a.json and the figures results/fig3a.png (SLQ densities) and
results/fig3a_exact.png (exact eigenvalues), from hessian.py run directories.

    python -m scripts.fig3a runs/hessian
"""
import argparse
import math
import os

from utils import report
from utils.cli import ArgumentParser, UsageError, run_cli

NAME = "fig3a"
# (row key, how it is named): condition numbers compared between CE and RLO, as log10 (they span decades)
MEASURES = (("kappa_q50", "κ_q50 (SLQ)"), ("kappa_q10", "κ_q10 (SLQ)"), ("exact_kappa_pos", "exact κ_pos"),
            ("exact_kappa_q50", "exact κ_q50"), ("exact_kappa_q10", "exact κ_q10"))
CLAIM = "Fig. 3a / Lemma 3.3: the RLO solution's Hessian is better conditioned than CE's"


def load_runs(run_dirs):
    runs = [(c, r["checkpoints"]) for c, r in report.load_results(run_dirs) if "checkpoints" in r]
    if not runs:
        raise UsageError(f"no finished hessian.py run (results.json) in {', '.join(run_dirs)}")
    return runs


def _num(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def make_rows(runs):
    """One flat row per checkpoint (the spectra stay in the run directory's results.json)."""
    rows = []
    for _, records in runs:
        for r in records:
            ex = r.get("exact", {})
            rows.append({"model": r["label"], "setting": r["setting"], "loss": r["loss"], "seed": r["seed"],
                         "params": r["params"], "train_loss": r["train_loss"], "lambda_power": r["lambda_power"],
                         "lambda_max": r["lanczos_top"][0], "lambda_min": r["lanczos_min"],
                         "trace_slq": r["trace_slq"], "kappa_q10": _num(r["kappa_q10"]),
                         "kappa_q50": _num(r["kappa_q50"]), "exact_kappa_pos": _num(ex.get("kappa_pos")),
                         "exact_kappa_q10": _num(ex.get("kappa_q10")), "exact_kappa_q50": _num(ex.get("kappa_q50")),
                         "exact_negative_fraction": _num(ex.get("negative_fraction")), "checkpoint": r["path"]})
    return rows


def _log10_by_seed(rows, setting, loss, key):
    return {r["seed"]: math.log10(r[key]) for r in rows
            if r["setting"] == setting and r["loss"] == loss and r[key] is not None and r[key] > 0}


def make_verdicts(rows, base, rlo):
    """Per measure: log10 kappa(RLO) - log10 kappa(CE) paired by seed in each setting ('less'), then combined."""
    out = []
    for key, name in MEASURES:
        settings = []
        for setting in sorted({r["setting"] for r in rows}):
            a, b = _log10_by_seed(rows, setting, rlo, key), _log10_by_seed(rows, setting, base, key)
            seeds = sorted(set(a) & set(b))
            if seeds:
                cmp = report.paired([a[s] for s in seeds], [b[s] for s in seeds])
                settings.append(report.verdict_record(f"log10 {name}: {rlo} vs {base}, {setting}", cmp, "less",
                                                      setting=setting, measure=key, loss=rlo))
        if settings:
            out += settings + [report.combined_record(f"{CLAIM}, by {name}", settings)]
    return out


def verdict_text(verdicts):
    by_claim = {v["claim"]: v["verdict"] for v in verdicts}
    lines = [f"- **{v['claim']}**: {v['verdict']} (" + ", ".join(
        f"{name.rsplit(', ', 1)[-1]} {by_claim[name]}" for name in v["settings"]) + f"; {v['n']} seeds)"
        for v in verdicts if "settings" in v]
    lines += ["", "Per setting (paired by seed: log10 κ(RLO) - log10 κ(CE), below 0 means RLO better conditioned):",
              ""] + report.verdict_lines([v for v in verdicts if "settings" not in v])
    return lines


def _g(x):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4g}"


def table_lines(rows):
    head = ["model", "params", "train loss", "λmax power", "λmax Lanczos", "λmin Lanczos", "trace (SLQ)", "κ_q10 SLQ",
            "κ_q50 SLQ", "exact κ_pos", "exact κ_q10", "exact κ_q50", "exact neg. frac"]
    keys = ["train_loss", "lambda_power", "lambda_max", "lambda_min", "trace_slq", "kappa_q10", "kappa_q50",
            "exact_kappa_pos", "exact_kappa_q10", "exact_kappa_q50", "exact_negative_fraction"]
    return report.md_table(head, [[r["model"], r["params"]] + [_g(r[k]) for k in keys] for r in rows])


def plot_spectra(path, records, exact=False):
    """Fig. 3a style: per setting, the eigenvalue distribution of each loss (log count)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from utils import hvp
    settings = sorted({r["setting"] for r in records})
    palette = {"ce": "tab:blue", "root": "tab:red", "root_paper": "tab:green"}
    seeds = sorted({r["seed"] for r in records}, key=str)
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        runs = [r for r in records if r["setting"] == setting]
        if exact:  # shared bins so the histograms compare
            every = np.concatenate([r["exact"]["eigenvalues"] for r in runs])
            bins = np.linspace(every.min(), every.max(), 81)
        for r in runs:
            style = {"color": palette.get(r["loss"], "tab:purple"), "lw": 1.3,
                     "linestyle": ["-", "--", ":", "-."][seeds.index(r["seed"]) % 4]}
            if exact:
                ax.hist(np.asarray(r["exact"]["eigenvalues"]), bins=bins, histtype="step",
                        label=f"{r['loss']} (s{r['seed']})", **style)
            else:
                nodes, weights = torch.tensor(r["slq_nodes"]), torch.tensor(r["slq_weights"])
                span = (nodes.max() - nodes.min()).item() or 1.0
                grid = torch.linspace(nodes.min().item() - 0.05 * span, nodes.max().item() + 0.05 * span, 600,
                                      dtype=nodes.dtype)
                dens = hvp.density(nodes, weights, grid, sigma=0.01 * span)
                ax.plot(grid.numpy(), dens.clamp_min(1e-8).numpy(), label=f"{r['loss']} (s{r['seed']})", **style)
        ax.set(yscale="log", title=f"{setting}: {'exact eigenvalues' if exact else 'SLQ density'}",
               xlabel="eigenvalue", ylabel="count" if exact else "density")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return report.save_figure(fig, path)


def draw_figures(runs, out_dir):
    records = [r for _, recs in runs for r in recs]
    paths = [plot_spectra(os.path.join(out_dir, f"{NAME}.png"), records)]
    exact = [r for r in records if "exact" in r]
    if exact:
        paths.append(plot_spectra(os.path.join(out_dir, f"{NAME}_exact.png"), exact, exact=True))
    return paths


def command_of(config):
    argv = config.get("argv") or ["hessian.py"]
    return "python " + " ".join([os.path.basename(argv[0])] + list(argv[1:]))


def report_lines(runs, rows, verdicts, figures, rlo):
    c = runs[0][0]
    lines = ["# Hessian spectrum at the trained solution: CE vs RLO (paper Fig. 3a, Lemma 3.3)", "",
             "Produced by " + ", ".join(f"`{command_of(cfg)}`" for cfg, _ in runs) + f", then `python -m scripts.{NAME}`"
             f" (both in scripts/fig3a.sh). Training-loss Hessian of each checkpoint, by HVPs "
             f"({'float64' if c.get('double', True) else 'float32'}): power iteration ({c.get('power_iters')} max), "
             f"Lanczos ({c.get('lanczos_steps')} steps, full reorthogonalisation), SLQ ({c.get('slq_probes')} "
             f"Rademacher probes x {c.get('slq_steps')} steps); explicit Hessian for models with <= "
             f"{c.get('exact_max_params')} parameters. κ_q = λmax / q-quantile of the eigenvalues above 1e-6 λmax; "
             "exact κ_pos = λmax / smallest eigenvalue above 1e-6 λmax. The Hessian is of the loss each model was "
             f"trained with (RLO = `{rlo}`), on its training set. The paper shows a histogram only, no numbers.", "",
             "## Verdicts", "", report.RULE_TEXT + " Condition numbers are compared as log10 (they span decades).",
             ""] + verdict_text(verdicts)
    lines += ["", "## Every checkpoint", ""] + table_lines(rows)
    if figures:
        lines += ["", "Figures: " + ", ".join(f"[{os.path.basename(p)}]({os.path.basename(p)})" for p in figures)
                  + " (SLQ densities; exact eigenvalues of the models small enough)"]
    return lines


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", default=["runs/hessian"], help="hessian.py run directories (default: runs/hessian)")
    p.add_argument("--rlo-loss", default=None, help="the loss compared against ce (default: the run's --rlo-loss)")
    p.add_argument("--out-dir", default=report.RESULTS, help="where the report and figures go (default: results/)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the spectrum figures")
    return p.parse_args(argv)


def main(args):
    runs = load_runs(args.runs)
    rows = make_rows(runs)
    rlo = args.rlo_loss or runs[0][0].get("rlo_loss", "root")
    verdicts = make_verdicts(rows, "ce", rlo)
    figures = draw_figures(runs, args.out_dir) if args.figures else []
    return report.write_report(NAME, report_lines(runs, rows, verdicts, figures, rlo), rows, (), verdicts, args.out_dir)


if __name__ == "__main__":
    run_cli(main, parse_args())
