"""Report builder for logistic vs rooted logistic regression (paper Table 7, Fig. 5, Lemma 3.3):
results/table7.md, results/table7.json and the Fig. 5 curves results/fig5_<dataset>.png, from a logreg.py
run directory. The paper's numbers come from results/paper/table7.json.

    python -m scripts.table7 runs/logreg
"""
import argparse
import math
import os

import numpy as np

from utils import report
from utils.cli import ArgumentParser, UsageError, run_cli

NAME = "table7"
PAIRS = (("LR", "RLO"), ("LR-L2", "RLO-L2"))  # (baseline family, RLO family)


def load_run(run_dir):
    runs = [(c, r) for c, r in report.load_results([run_dir]) if "datasets" in r]
    if not runs:
        raise UsageError(f"no finished logreg.py run (results.json) in {run_dir}")
    config, results = runs[0]
    order = [d for d in config.get("datasets", []) if d in results["datasets"]]
    datasets = {name: results["datasets"][name] for name in order or sorted(results["datasets"])}
    return config, datasets


def col(res, name):
    """Per-fold test accuracy (%) of one configuration."""
    return 100 * np.asarray(res["outer"])[:, res["configs"].index(name)]


def family_of(name):
    """'RLO-L2-7' -> 'RLO-L2'; 'LR-L2' -> 'LR-L2' (logreg.Config names)."""
    return name.rsplit("-", 1)[0] if name.startswith("RLO") else name


def k_of(name):
    return float(name.rsplit("-", 1)[1]) if name.startswith("RLO") else None


# ------------------------------------------------------------------------------------------------ rows
def make_rows(datasets):
    """Every fold accuracy, every convergence summary and every condition number, one flat dict each."""
    rows = []
    for ds, res in datasets.items():
        for name in res["configs"]:
            for fold, acc in enumerate(col(res, name)):
                rows.append({"what": "fold_acc", "dataset": ds, "config": name, "method": family_of(name),
                             "k": k_of(name), "fold": fold, "acc": float(acc)})
        for name, conv in res["convergence"].items():
            rows.append({"what": "convergence", "dataset": ds, "config": name, "method": family_of(name),
                         "k": k_of(name), "iters": res["iters"], **conv})
        for task, (label, cond) in enumerate(task_conds({ds: res})):
            for name, c in cond.items():
                if isinstance(c, dict):
                    rows.append({"what": "conditioning", "dataset": ds, "task": label, "config": name,
                                 "method": family_of(name), "k": k_of(name), **c})
    return rows


def task_conds(datasets):
    """(label, cond dict) for every binary task that has conditioning results."""
    for name, res in datasets.items():
        conds = res.get("conditioning") or []
        for t, cond in enumerate(conds):
            yield (f"{name}/class{t}" if len(conds) > 1 else name), cond


# -------------------------------------------------------------------------------------------- verdicts
def paper_best(paper, ds, family, base):
    """The paper's best RLO-family accuracy and its baseline's, for one dataset (None if not in the paper)."""
    fam = [r["acc"] for r in paper if r["dataset"] == ds and r["method"] == family]
    lr = [r["acc"] for r in paper if r["dataset"] == ds and r["method"] == base]
    return (max(fam), lr[0]) if fam and lr else None


def accuracy_verdicts(datasets, paper):
    """Best-k (the paper's protocol) and nested-CV RLO vs LR, paired by fold, per dataset and combined."""
    out = []
    for base, family in PAIRS:
        best, nested = [], []
        for ds, res in datasets.items():
            p = paper_best(paper, ds, family, base)
            cmp = report.paired(col(res, res["top3"][family][0]), col(res, base))
            best.append(report.verdict_record(f"best-k {family} vs {base}, {ds}", cmp, "greater",
                                              claimed=round(p[0] - p[1], 2) if p else None, dataset=ds))
            if res["nested"]:
                cmp = report.paired(100 * np.asarray(res["nested"][family]["acc"]), col(res, base))
                nested.append(report.verdict_record(f"nested-CV {family} vs {base}, {ds}", cmp, "greater", dataset=ds))
        out += best + [report.combined_record(f"Table 7: {family} (best k picked on the test folds) beats {base} on every "
                                "dataset", best)]
        if nested:
            out += nested + [report.combined_record(f"{family} beats {base} when k is chosen on inner folds (nested CV; "
                                      "not tested in the paper)", nested)]
    return out


def convergence_verdicts(datasets):
    """Fig. 5: log10 of the relative suboptimality after T iterations, best of the top-3 k vs LR, paired over
    datasets (one number per dataset: no folds here)."""
    out = []
    for base, family in PAIRS:
        rlo, lr = [], []
        for res in datasets.values():
            conv = res["convergence"]
            rlo.append(min(conv[n]["subopt_final"] for n in res["top3"][family]))
            lr.append(conv[base]["subopt_final"])
        if all(v is not None and v > 0 for v in rlo + lr):
            cmp = report.paired(np.log10(rlo), np.log10(lr))
            out.append(report.verdict_record(f"Fig. 5: {family} (top-3 k) converges faster than {base} (log10 "
                                             f"(L(T)-L*)/(L(0)-L*), paired over datasets)", cmp, "less"))
    return out


def kappa_ratio(cond, tag, k, where):
    """kappa(RLO-k)/kappa(LR), at each objective's own optimum ('own') or both at LR's optimum ('lr')."""
    lr, rlo = cond.get("LR" + tag, {}), cond.get(f"RLO{tag}-{k:g}", {})
    if where == "own":
        return rlo["kappa"] / lr["kappa"] if lr.get("kappa") and rlo.get("kappa") else None
    if rlo.get("kappa_at_lr_opt") is None:
        return None
    return rlo["kappa_at_lr_opt"] / rlo["kappa_lr_at_lr_opt"]


def kappa_verdicts(datasets, ks):
    """Lemma 3.3: log10 kappa(RLO-k) - log10 kappa(LR) over every comparable (task, L2 or not, k)."""
    out = []
    for where, what in (("own", "at each objective's own optimum"), ("lr", "at LR's optimum (same w)")):
        ratios = [kappa_ratio(c, tag, k, where) for _, c in task_conds(datasets) for tag in ("", "-L2") for k in ks]
        ratios = [r for r in ratios if r is not None and r > 0 and math.isfinite(r)]
        if ratios:
            cmp = report.paired_diffs(np.log10(ratios))
            out.append(report.verdict_record(f"Lemma 3.3: kappa(RLO) <= kappa(LR) {what} (log10 ratio over "
                                             f"every task and k)", cmp, "less",
                                             held=sum(r <= 1 for r in ratios), comparable=len(ratios)))
    return out


# ----------------------------------------------------------------------------------------------- tables
def table7_lines(datasets, paper):
    head = ["Dataset", "LR", "LR-L2", "k", "RLO", "k", "RLO-L2", "paper: LR", "LR-L2", "k: RLO / RLO-L2"]
    cells = []
    for ds, res in datasets.items():
        prow = {(r["method"], r["rank"]): r for r in paper if r["dataset"] == ds}
        for rank in range(3):
            row = [ds, report.fmt_pm(col(res, "LR")), report.fmt_pm(col(res, "LR-L2"))] if rank == 0 else ["", "", ""]
            for family in ("RLO", "RLO-L2"):
                top = res["top3"][family]
                row += [f"{k_of(top[rank]):g}", report.fmt_pm(col(res, top[rank]))] if rank < len(top) else ["", ""]
            if prow:
                lr, lr2 = prow[("LR", None)], prow[("LR-L2", None)]
                row += ([f"{lr['acc']:g} ± {lr['acc_std']:g}", f"{lr2['acc']:g} ± {lr2['acc_std']:g}"] if rank == 0
                        else ["", ""])
                a, b = prow[("RLO", rank + 1)], prow[("RLO-L2", rank + 1)]
                row.append(f"{a['k']}: {a['acc']:g} ± {a['acc_std']:g} / {b['acc']:g} ± {b['acc_std']:g}")
            cells.append(row)
    return report.md_table(head, cells)


def nested_lines(datasets):
    head = ["Dataset", "LR", "RLO nested", "k picked per fold", "RLO - LR [95% CI]", "LR-L2", "RLO-L2 nested",
            "k picked", "RLO-L2 - LR-L2 [95% CI]"]
    cells = []
    for ds, res in datasets.items():
        if not res["nested"]:
            continue
        row = [ds]
        for base, family in PAIRS:
            nest = res["nested"][family]
            acc = 100 * np.asarray(nest["acc"])
            row += [report.fmt_pm(col(res, base)), report.fmt_pm(acc), ",".join(f"{k:g}" for k in nest["k"]),
                    report.fmt_paired(report.paired(acc, col(res, base)))]
        cells.append(row)
    return report.md_table(head, cells)


def convergence_lines(datasets):
    head = ["Dataset", "objective", "iters to 1e-3 of final L", "L(T)/L(0)", "(L(T)-L*)/(L(0)-L*)"]
    return report.md_table(head, [[ds, obj, c["iters_to_1e-3"], f"{c['norm_final']:.4f}",
                                   "-" if c["subopt_final"] is None else f"{c['subopt_final']:.3g}"]
                                  for ds, res in datasets.items() for obj, c in res["convergence"].items()])


def _fmt(x, ratio=False):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.3f}" if ratio else f"{x:.4g}"


def conditioning_lines(datasets, ks):
    tasks = list(task_conds(datasets))
    lines = []
    for where, what in (("own", "each objective's Hessian at its own optimum"),
                        ("lr", "both Hessians at LR's optimum w* (Lemma 3.3's same-w statement)")):
        lines += ["", f"kappa(RLO-k) / kappa(LR), {what}; '-' = no finite optimum (linearly separable, "
                      "unregularised) or not converged:", ""]
        head = ["k"] + [f"{lab} λ=0" for lab, _ in tasks] + [f"{lab} L2" for lab, _ in tasks]
        cells = [["kappa(LR)"] + [_fmt(c.get("LR", {}).get("kappa")) for _, c in tasks] +
                 [_fmt(c.get("LR-L2", {}).get("kappa")) for _, c in tasks]]
        cells += [[f"{k:g}"] + [_fmt(kappa_ratio(c, tag, k, where), ratio=True) for tag in ("", "-L2")
                                for _, c in tasks] for k in ks]
        lines += report.md_table(head, cells)
    return lines


def hypothesis_lines(datasets, ks):
    """How often Lemma 3.2's per-row hypothesis k <= 1 + exp(-y w*.x) held at LR's optimum."""
    parts = []
    for lab, cond in task_conds(datasets):
        for tag in ("", "-L2"):
            fracs = [cond.get(f"RLO{tag}-{k:g}", {}).get("lemma_hypothesis_frac") for k in (ks[0], ks[-1])]
            if fracs[0] is not None:
                parts.append(f"{lab}{' L2' if tag else ' λ=0'} {100 * fracs[0]:.1f}% (k={ks[0]:g}) / "
                             f"{100 * fracs[1]:.1f}% (k={ks[-1]:g})")
    return ["- Lemma 3.2's hypothesis k <= 1 + exp(-y_i w*.x_i) (App. A.1) held, at LR's optimum, for this share "
            "of rows: " + "; ".join(parts) + "."] if parts else []


def verdict_text(verdicts):
    by_claim = {v["claim"]: v for v in verdicts}
    lines = []
    for v in verdicts:
        if "settings" in v:
            parts = ", ".join(f"{name.rsplit(', ', 1)[-1]} {by_claim[name]['verdict']}" for name in v["settings"])
            lines.append(f"- **{v['claim']}**: {v['verdict']} ({parts})")
        elif not any(v["claim"] in c.get("settings", ()) for c in verdicts):
            held = f"; held for {v['held']} of {v['comparable']}" if "held" in v else ""
            lines += [line + held for line in report.verdict_lines([v], digits=3)]
    return lines


def per_dataset_lines(verdicts):
    return ["", "Per dataset (paired by fold, accuracy points; the paper's effect is its best RLO minus its LR):",
            ""] + report.verdict_lines([v for v in verdicts if "dataset" in v])


# ---------------------------------------------------------------------------------------------- figures
def plot_convergence(path, title, curves):
    """Fig. 5: L(t)/L(0) and the relative suboptimality of the shown configurations."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    styles, colours = ["-", ":", "--"], {"LR": "black", "LR-L2": "grey", "RLO": "tab:blue", "RLO-L2": "tab:red"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    seen = {}
    for name, norm, subopt in zip(curves["configs"], curves["norm"], curves["subopt"]):
        family = family_of(name)
        style = styles[seen.get(family, 0) % 3]
        seen[family] = seen.get(family, 0) + 1
        subopt = np.array([np.nan if v is None else max(v, 1e-16) for v in subopt])
        for ax, curve in zip(axes, (np.asarray(norm, dtype=float), subopt)):
            ax.plot(curve, style, color=colours[family], label=name)
    axes[0].set(title=f"{title}: L(t)/L(0) (paper's Fig. 5)", xlabel="iteration", ylabel="normalised loss")
    axes[1].set(title="(L(t) - L*) / (L(0) - L*)", xlabel="iteration", yscale="log")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return report.save_figure(fig, path)


def draw_figures(datasets, out_dir):
    return [plot_convergence(os.path.join(out_dir, f"fig5_{ds}.png"), ds, res["curves"])
            for ds, res in datasets.items() if "curves" in res]


# ----------------------------------------------------------------------------------------------- report
def command_of(config):
    argv = config.get("argv") or ["logreg.py"]
    return "python " + " ".join([os.path.basename(argv[0])] + list(argv[1:]))


def report_lines(config, datasets, verdicts, figures, paper):
    ks = sorted(config.get("ks") or {k_of(n) for r in datasets.values() for n in r["configs"] if k_of(n)})
    lines = ["# Table 7, Fig. 5, Lemma 3.3: logistic vs rooted logistic regression", "",
             f"Produced by `{command_of(config)}`, then `python -m scripts.{NAME}` (both in scripts/table7.sh). "
             f"Full-batch GD from w = 0, lr {config.get('lr')}, "
             f"{config.get('iters') or 'the paper' + chr(39) + 's'} iterations (paper: 200, SPECTF 1000), {config.get('folds')}-fold stratified CV (seed {config.get('seed')}), "
             "features standardised on training folds only, an unpenalised bias term, L2 lambda = "
             f"{config.get('lam')} (lambda/2 ||w||^2, paper Fig. 4a), RLO = k mean((1+exp(-y w.x))^(1/k)) (paper "
             f"eq. 4), k in {{{', '.join(f'{k:g}' for k in ks)}}}. Accuracies in %, mean ± std (sample std, ddof 1) "
             "over folds; wine = mean of its 3 one-vs-all tasks. Madelon: the 2,600 labelled rows (train + valid); "
             "the paper's 4,400 include 1,800 unlabelled test rows. Picking the best k on the test folds (the "
             "paper's protocol) favours RLO, which gets one try per k against LR's one; nested CV does not.", "",
             "## Verdicts", "", report.RULE_TEXT, ""]
    lines += verdict_text(verdicts)
    if config.get("conditioning", True):
        lines += hypothesis_lines(datasets, ks)
    lines += per_dataset_lines(verdicts)
    lines += ["", "## Table 7 (top 3 k by mean test accuracy, the paper's protocol), ours beside the paper's", ""]
    lines += table7_lines(datasets, paper)
    if any(res["nested"] for res in datasets.values()):
        lines += ["", f"## Nested CV: k chosen per outer fold by {config.get('inner_folds')}-fold inner CV", ""]
        lines += nested_lines(datasets)
    lines += ["", "## Convergence on the whole standardised dataset (Fig. 5: " +
              ", ".join(f"[{os.path.basename(p)}]({os.path.basename(p)})" for p in figures) + ")", "",
              "L* is the optimum found by Newton's method (the infimum, 0 for LR and k for RLO, where the data are "
              "linearly separable and unregularised). The criterion `iters to 1e-3 of final L` favours RLO, whose "
              "loss values are >= k: a change is small relative to them.", ""]
    lines += convergence_lines(datasets)
    if config.get("conditioning", True):
        lines += ["", "## Conditioning: exact Hessian at the optimum (Newton to max|grad| < 1e-9)"]
        lines += conditioning_lines(datasets, ks)
    names = next(iter(datasets.values()))["configs"]
    lines += ["", "## Every configuration (mean ± std over folds)", ""]
    lines += report.md_table(["config"] + list(datasets),
                             [[n] + [report.fmt_pm(col(res, n)) for res in datasets.values()] for n in names])
    return lines


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", default="runs/logreg", help="logreg.py run directory (default: runs/logreg)")
    p.add_argument("--out-dir", default=report.RESULTS, help="where the report and figures go (default: results/)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the Fig. 5 curves")
    return p.parse_args(argv)


def main(args):
    config, datasets = load_run(args.run)
    paper = report.paper_numbers(NAME)
    verdicts = accuracy_verdicts(datasets, paper) + convergence_verdicts(datasets)
    if config.get("conditioning", True):
        verdicts += kappa_verdicts(datasets, sorted(config.get("ks") or []))
    figures = draw_figures(datasets, args.out_dir) if args.figures else []
    lines = report_lines(config, datasets, verdicts, figures, paper)
    return report.write_report(NAME, lines, make_rows(datasets), paper, verdicts, args.out_dir)


if __name__ == "__main__":
    run_cli(main, parse_args())
