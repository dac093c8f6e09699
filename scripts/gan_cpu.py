"""Report builder for the CPU GAN experiment (paper App. A.5 / Fig. 8a at small scale): results/gan_cpu.md,
results/gan_cpu.json, the score-vs-time figure results/gan_score_vs_time.png and every run's final sample grid
as results/gan_samples_n<images>_<loss>_s<seed>.png, from gan.py run directories (one root per setting, each
holding one run directory per loss and seed). The paper's numbers come from results/paper/fig8a.json.

    python -m scripts.gan_cpu runs/gan_cpu runs/gan_cpu_n200
"""
import argparse
import os
import shutil

import numpy as np

from utils import report
from utils.cli import ArgumentParser, UsageError, run_cli
from utils.runio import read_jsonl

NAME = "gan_cpu"
FIGURE = "gan_score_vs_time.png"
CLAIM = "RLO (k=2) reaches a lower FID than CE (paper App. A.5: FID 81.2 vs 89.7 on 200 FFHQ images)"


def load_root(root):
    """Every finished run under root: dicts with config, metrics, results and its folder, by loss then seed."""
    runs = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, name)
        for config, results in report.load_results([folder]):
            runs.append({"config": config, "results": results, "dir": folder,
                         "metrics": read_jsonl(os.path.join(folder, "metrics.jsonl"))})
    if not runs:
        raise UsageError(f"no finished gan.py runs (results.json) under {root}")
    return sorted(runs, key=lambda r: (r["config"]["loss"], r["config"]["seed"]))


def tail_fid(metrics, n=3):
    """Mean FID of the last n evaluations: less noisy than the last one alone."""
    return float(np.mean([r["fid"] for r in metrics[-n:]]))


def fid_at_time(metrics, seconds):
    """FID at the last evaluation whose cumulative training time is <= seconds."""
    return [r for r in metrics if r["train_time_s"] <= seconds][-1]["fid"]


def sample_name(run):
    c = run["config"]
    return f"gan_samples_n{c['n_train']}_{c['loss']}_s{c['seed']}.png"


def make_rows(settings):
    """One flat row per run."""
    rows = []
    for root, runs in settings:
        common = min(r["metrics"][-1]["train_time_s"] for r in runs)
        for run in runs:
            c, res, m = run["config"], run["results"], run["metrics"]
            late = [r for r in m if r["step"] > res["steps"] // 2] or m[-1:]
            rows.append({"setting": root, "dataset": c["dataset"], "n_train": c["n_train"], "loss": c["loss"],
                         "k": c["k"], "seed": c["seed"], "steps": res["steps"], "n_eval": c["n_eval"],
                         "eval_every": c["eval_every"], "fid": tail_fid(m), "final_fid": res["final_fid"],
                         "final_kid": res["final_kid"], "best_fid": res["best_fid"],
                         "best_fid_step": res["best_fid_step"], "fid_at_common_time": fid_at_time(m, common),
                         "common_time_s": common, "worst_late_fid": max(r["fid"] for r in late),
                         "peak_g_loss": max((r["g_loss"] for r in m if "g_loss" in r), default=None),
                         "seconds": res["train_time_s"], "s_per_step": res["train_time_s"] / max(res["steps"], 1),
                         "feature_net_accuracy": res["feature_net_accuracy"], "samples": sample_name(run),
                         "run": run["dir"]})
    return rows


def make_verdicts(rows):
    """Per setting: FID (mean of the last 3 evaluations) of RLO minus CE, paired by seed ('less'); combined."""
    settings = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        ce = {r["seed"]: r["fid"] for r in rows if r["setting"] == setting and r["loss"] == "ce"}
        rlo = {r["seed"]: r["fid"] for r in rows if r["setting"] == setting and r["loss"] == "rlo"}
        seeds = sorted(set(ce) & set(rlo))
        cmp = report.paired([rlo[s] for s in seeds], [ce[s] for s in seeds])
        settings.append(report.verdict_record(f"FID rlo - ce, {setting}", cmp, "less", setting=setting))
    return settings + [report.combined_record(CLAIM, settings)] if settings else []


def matched_steps(runs, n=9):
    steps = sorted(set.intersection(*[{r["step"] for r in run["metrics"]} for run in runs]))
    return [steps[i] for i in sorted(set(np.linspace(0, len(steps) - 1, n).round().astype(int)))]


def interval(v):
    """'RLO - CE = +1.2 FID [-3.4, +5.6], n = 2 seeds', or without an interval when it has none."""
    if v["ci_low"] is None:
        return f"RLO - CE = {report.fmt(v['diff'])} FID, n = {v['n']} seed(s), no interval"
    return f"RLO - CE = {v['diff']:+.2f} FID [{v['ci_low']:+.2f}, {v['ci_high']:+.2f}], n = {v['n']} seeds"


def command_of(config):
    """The command that finished the run: the last --resume's if it was resumed."""
    resumes = config.get("resumes") or []
    argv = (resumes[-1].get("argv") if resumes else None) or config.get("argv") or ["gan.py"]
    return "python " + " ".join([os.path.basename(argv[0])] + list(argv[1:])) + (" (resumed)" if resumes else "")


def section_lines(root, runs, rows, verdict):
    rows = [r for r in rows if r["setting"] == root]
    c = runs[0]["config"]
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"## {c['n_train']} training images, {rows[0]['steps']} iterations, seeds {', '.join(map(str, seeds))} "
             f"(runs under `{root}`)", "",
             f"Score: FID on {c['n_eval']} generated vs {c['n_eval']} real images (fixed noise), every "
             f"{c['eval_every']} iterations. Mean ± std over seeds (a single seed shows its value alone).", ""]
    head = ["loss", "seeds", "FID, mean of last 3 evals", f"FID at matched train time {rows[0]['common_time_s']:.0f} s",
            "best FID", "train time (s)", "s/step"]
    cells = []
    for loss in sorted({r["loss"] for r in rows}):
        g = [r for r in rows if r["loss"] == loss]
        name = f"rlo (k={g[0]['k']:g})" if loss == "rlo" else loss
        cells.append([name, len(g)] + [report.fmt_pm([r[key] for r in g]) for key in
                                       ("fid", "fid_at_common_time", "best_fid", "seconds", "s_per_step")])
    lines += report.md_table(head, cells)
    losses = sorted({r["loss"] for r in rows})
    lines += ["", "FID at matched iterations (mean ± std over seeds):", ""]
    steps = []
    for step in matched_steps(runs):
        steps.append([step] + [report.fmt_pm([next(m["fid"] for m in run["metrics"] if m["step"] == step)
                                              for run in runs if run["config"]["loss"] == loss]) for loss in losses])
    lines += report.md_table(["iteration"] + losses, steps)
    lines += ["", f"Verdict for this setting: **{verdict['verdict']}** ({interval(verdict)}).", "",
              "Per run (peak G loss: the largest mean generator loss over one evaluation interval; the two losses have "
              "different scales, RLO >= k and about 2.8 at logit 0 for k = 2, CE about 0.7):", ""]
    head = ["loss", "seed", "final FID", "final KID", "best FID (iteration)", "worst FID, 2nd half", "peak G loss",
            "feature-net acc.", "samples (final)", "command"]
    lines += report.md_table(head, [[r["loss"], r["seed"], f"{r['final_fid']:.2f}", f"{r['final_kid']:.4g}",
                                     f"{r['best_fid']:.2f} ({r['best_fid_step']})", f"{r['worst_late_fid']:.2f}",
                                     report.fmt(r["peak_g_loss"]), f"{r['feature_net_accuracy']:.3f}",
                                     f"[{r['samples']}]({r['samples']})", f"`{command_of(run['config'])}`"]
                                    for r, run in zip(rows, runs)])
    return lines + [""]


def plot_score_vs_time(settings, path):
    """Per setting: FID vs training time, one line per run (left), and vs iteration, seeds' mean and range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(settings), 2, figsize=(11, 4 * len(settings)), squeeze=False)
    colors = {"ce": "tab:blue", "rlo": "tab:red"}
    for (ax_t, ax_s), (root, runs) in zip(axes, settings):
        for loss in sorted({r["config"]["loss"] for r in runs}):
            group = [r for r in runs if r["config"]["loss"] == loss]
            label = "CE (softplus)" if loss == "ce" else f"RLO (k={group[0]['config']['k']:g})"
            for i, run in enumerate(group):
                ax_t.plot([m["train_time_s"] for m in run["metrics"]], [m["fid"] for m in run["metrics"]],
                          color=colors.get(loss), alpha=0.8, label=label if i == 0 else None)
            steps = sorted(set.intersection(*[{m["step"] for m in run["metrics"]} for run in group]))
            fids = np.array([[next(m["fid"] for m in run["metrics"] if m["step"] == s) for s in steps]
                             for run in group])
            ax_s.plot(steps, fids.mean(0), color=colors.get(loss), label=f"{label}, mean of {len(group)} seed(s)")
            ax_s.fill_between(steps, fids.min(0), fids.max(0), color=colors.get(loss), alpha=0.2)
        for ax, xlabel in ((ax_t, "training time (s, shared CPU)"), (ax_s, "iteration")):
            ax.set_yscale("log")
            ax.set(xlabel=xlabel, ylabel="FID (classifier features)",
                   title=f"{runs[0]['config']['n_train']} training digits ({root})")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle("Small DCGAN on MNIST: score vs time, CE vs RLO")
    fig.tight_layout()
    return report.save_figure(fig, path)


def copy_samples(settings, out_dir):
    """Each run's final sample grid into out_dir, named by its setting (training images), loss and seed."""
    for _, runs in settings:
        for run in runs:
            src = os.path.join(run["dir"], run["results"].get("samples", "samples_final.png"))
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(out_dir, sample_name(run)))


def report_lines(settings, rows, verdicts, paper, figure, note=None):
    kid_units = settings[0][1][0]["results"].get("kid_units", "unbiased MMD^2, raw units")
    by_setting = {v["setting"]: v for v in verdicts if "setting" in v}
    paper_text = ", ".join(f"{p['loss'].upper()}{' (k=%g)' % p['k'] if p['k'] else ''} FID {p['fid']:g}"
                           for p in paper)
    lines = ["# Small DCGAN on MNIST digits: CE vs RLO (paper appendix A.5, Fig. 8a at CPU scale)", "",
             f"Produced by `bash scripts/gan_cpu.sh` (gan.py runs, then `python -m scripts.{NAME}`); every run's "
             "command is in its table. Score: the FID formula on the 128-d penultimate features of a small CNN digit "
             "classifier trained once on the 5,000 digits (not Inception features: comparable only between these "
             f"runs; lower is better). KID: {kid_units}. Train time excludes scoring; the machine was shared with "
             "other jobs, so times are noisy.", "",
             f"Paper (StyleGAN2-ADA, 200 FFHQ images at 64x64, Inception FID): {paper_text}. Its scale is not ours, "
             "so the verdicts test only the direction of the effect.", ""]
    if note:
        lines += [f"**Note:** {note}", ""]
    lines += ["## Verdict", "", report.RULE_TEXT, ""]
    lines += [f"- **{v['claim']}**: {v['verdict']} (" + "; ".join(
        f"{by_setting[s]['setting']}: {by_setting[s]['verdict']}" for s in (name.split(', ', 1)[1] for name in
                                                                            v["settings"])) + ")"
        for v in verdicts if "settings" in v]
    lines += ["", "What this can say: whether swapping only the loss (same architecture, learning rate and seeds) "
                  "changes sample quality in a small DCGAN, and how large seed-to-seed noise is. What it cannot say: "
                  "anything about StyleGAN2-ADA on FFHQ (different networks, no ADA or R1, different data and "
                  "resolution, classifier-feature FID rather than Inception, minutes of CPU rather than 500 kimg on "
                  "GPUs, few seeds).", ""]
    for root, runs in settings:
        lines += section_lines(root, runs, rows, by_setting[root])
    if figure:
        lines += [f"Figure: [{os.path.basename(figure)}]({os.path.basename(figure)}).", ""]
    return lines


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="*", default=["runs/gan_cpu", "runs/gan_cpu_n200"],
                   help="one folder per setting, holding gan.py run directories (default: runs/gan_cpu "
                        "runs/gan_cpu_n200)")
    p.add_argument("--out-dir", default=report.RESULTS, help="where the report and figures go (default: results/)")
    p.add_argument("--no-figures", dest="figures", action="store_false",
                   help="skip the score-vs-time figure and the sample grids")
    p.add_argument("--note", default=None, help="a sentence printed under the header (e.g. why a setting is smaller)")
    return p.parse_args(argv)


def main(args):
    settings = [(root, load_root(root)) for root in args.roots]
    rows = make_rows(settings)
    verdicts = make_verdicts(rows)
    figure = None
    if args.figures:
        figure = plot_score_vs_time(settings, os.path.join(args.out_dir, FIGURE))
        copy_samples(settings, args.out_dir)
    lines = report_lines(settings, rows, verdicts, report.paper_numbers("fig8a"), figure, args.note)
    return report.write_report(NAME, lines, rows, report.paper_numbers("fig8a"), verdicts, args.out_dir)


if __name__ == "__main__":
    run_cli(main, parse_args())
