"""Report builder for Fig. 3b-c (paper Sec. 4.2.2): gem-miner masks of ResNet-20 fine-tuned with CE or RLO.

Reads the run directories that scripts/fig3bc.sh (or scripts/fig3bc_gpu.sh) wrote, <runs>/d<density>_s<seed>/
<arm>/results.json, and writes results/fig3bc.md, results/fig3bc.json and results/fig3bc.png. Every RLO arm is
compared with CE on the same mask, init and data order (paired by seed): final test accuracy (claimed higher)
and the fine-tuning seconds to reach the accuracy both arms reach (claimed lower). Run: python -m scripts.fig3bc --notes scripts/notes/fig3bc.md (the CPU grid's notes; the
notes are an input of this builder, not a report)
"""
import glob
import os

from utils import report
from utils.cli import ArgumentParser, run_cli

CLAIMS = (("acc", "greater", "final test accuracy (%)"),
          ("time_to_common_s", "less", "fine-tuning seconds to the accuracy both arms reach"))
DEFAULT_COMMAND = "OMP_NUM_THREADS=1 bash scripts/fig3bc.sh && python -m scripts.fig3bc --notes scripts/notes/fig3bc.md"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=os.path.join("runs", "fig3bc"), help="the grid's run directories")
    p.add_argument("--name", default="fig3bc", help="report name: results/<name>.md/.json/.png")
    p.add_argument("--out-dir", default=None, help="where the report goes (default: results/)")
    p.add_argument("--command", default=DEFAULT_COMMAND, help="the command that made the runs, for the report")
    p.add_argument("--settings", default=None, help="a line describing the settings (default: read off the runs)")
    p.add_argument("--notes", default=None, help="a markdown file appended as the report's Notes section")
    return p.parse_args(argv)


def arm_of(res):
    """The arm label of one fine-tuning run."""
    if res["method"] != "gem-miner":
        return f"random mask ({res['method'].split('-', 1)[1]}), {res['loss'].upper()}"
    return {"ce": "CE", "root": f"RLO k={res['k']:g} m={res['m']:g}",
            "root_paper": f"RLO paper form k={res['k']:g}"}.get(res["loss"], res["loss"])


def first_at(curve, threshold, key="train_s"):
    """`key` ("train_s" or "epoch") of the first epoch whose accuracy reaches `threshold`, else None."""
    for point in curve:
        if point["acc"] >= threshold - 1e-9:
            return point[key]
    return None


def collect(runs_dir):
    """Flat rows, one per fine-tuning run, with the time to the accuracy every gem-miner arm of its
    (density, seed) group reaches (the lowest best accuracy among them)."""
    dirs = sorted(glob.glob(os.path.join(runs_dir, "*", "*")))
    runs = [res for _, res in report.load_results(dirs) if res.get("status") == "finished"]
    tuned = [r for r in runs if r.get("ft_epochs", 0) > 0]
    rows = []
    for res in tuned:
        row = {key: res.get(key) for key in ("loss", "k", "m", "seed", "density", "sparsity", "method", "mined_acc",
                                             "start_acc", "acc", "best_acc", "best_epoch", "time_to_best_s",
                                             "ft_epoch_s", "mine_epoch_s", "n_kept", "n_weights", "n_train",
                                             "n_test", "size", "ft_epochs", "mine_epochs")}
        if res["method"] != "gem-miner":
            row["mined_acc"] = None  # the mask file's number belongs to the mined mask, not to this random one
        row.update(arm=arm_of(res), collapsed=len(res["collapsed"]), collapsed_layers=" ".join(res["collapsed"]),
                   curve=res["curve"], layers=res["layers"])
        rows.append(row)
    for row in rows:
        group = [r for r in rows if r["density"] == row["density"] and r["seed"] == row["seed"]
                 and r["method"] == "gem-miner"]
        row["common_acc"] = min(r["best_acc"] for r in group)
        row["time_to_common_s"] = first_at(row["curve"], row["common_acc"])
        row["epochs_to_common"] = first_at(row["curve"], row["common_acc"], "epoch")
    return rows


def pairs(rows, arm, base, density, key):
    """Values of `key` for `arm` and `base` on the seeds both have, in seed order."""
    by = {(r["arm"], r["seed"]): r[key] for r in rows if r["density"] == density}
    seeds = sorted(s for (a, s) in by if a == arm and (base, s) in by)
    nan = float("nan")
    return ([nan if by[(arm, s)] is None else by[(arm, s)] for s in seeds],
            [nan if by[(base, s)] is None else by[(base, s)] for s in seeds])


def verdicts_for(rows):
    """Per density and RLO arm: the paired RLO - CE verdicts; then each claim combined over densities."""
    densities = sorted({r["density"] for r in rows}, reverse=True)
    rlo_arms = sorted({r["arm"] for r in rows if r["arm"].startswith("RLO")})
    out = []
    for arm in rlo_arms:
        for key, direction, what in CLAIMS:
            settings = []
            for d in densities:
                cmp = report.paired(*pairs(rows, arm, "CE", d, key))
                settings.append(report.verdict_record(f"{arm} vs CE, {what}, {100 - d:g}% sparse", cmp, direction,
                                                      arm=arm, base="CE", key=key, density=d))
            out += settings
            out.append({"claim": f"{arm} vs CE, {what}, all sparsities",
                        "verdict": report.combine(v["verdict"] for v in settings), "n": len(settings), "diff": None,
                        "ci_low": None, "ci_high": None, "direction": direction, "arm": arm, "key": key,
                        "density": None})
    for d in densities:
        random = [r["arm"] for r in rows if r["density"] == d and r["method"] != "gem-miner"]
        for arm in sorted(set(random)):
            cmp = report.paired(*pairs(rows, "CE", arm, d, "acc"))
            out.append(report.verdict_record(f"gem-miner mask vs {arm} (both CE), final test accuracy (%), "
                                             f"{100 - d:g}% sparse", cmp, "greater", arm="CE", base=arm, key="acc",
                                             density=d))
    return out


# ------------------------------------------------------------------------------------------ markdown
def arm_order(rows):
    arms = sorted({r["arm"] for r in rows})
    return sorted(arms, key=lambda a: (a != "CE", not a.startswith("RLO"), a))


def results_table(rows):
    head = ["sparsity %", "arm", "seeds", "mined acc (before FT)", "FT start acc", "final acc", "best acc",
            "FT s/epoch", "s to best", "s to common acc", "epochs to common acc", "layers collapsed"]
    body = []
    for d in sorted({r["density"] for r in rows}, reverse=True):
        for arm in arm_order(rows):
            rs = [r for r in rows if r["density"] == d and r["arm"] == arm]
            if not rs:
                continue
            col = lambda key: [r[key] if r[key] is not None else float("nan") for r in rs]  # noqa: E731
            body.append([f"{100 - d:g}", arm, len(rs), report.fmt_pm(col("mined_acc")), report.fmt_pm(col("start_acc")),
                         report.fmt_pm(col("acc")), report.fmt_pm(col("best_acc")), report.fmt_pm(col("ft_epoch_s"), 1),
                         report.fmt_pm(col("time_to_best_s"), 1), report.fmt_pm(col("time_to_common_s"), 1),
                         report.fmt_pm(col("epochs_to_common"), 1), report.fmt_pm(col("collapsed"), 1)])
    return report.md_table(head, body)


def paired_table(verdicts):
    head = ["sparsity %", "comparison", "quantity", "paired difference [95% CI]", "verdict"]
    body = [[f"{100 - v['density']:g}", f"{v['arm']} - {v['base']}", v["key"],
             report.fmt_paired(report.Paired(v["n"], v["diff"] if v["diff"] is not None else float("nan"), 0.0,
                                             *(float("nan") if x is None else x for x in (v["ci_low"], v["ci_high"])))),
             v["verdict"]] for v in verdicts if v.get("density") is not None]
    return report.md_table(head, body)


def layer_table(rows):
    """Mean kept weights per layer of the mined masks, and in how many seeds the layer collapsed to zero."""
    densities = sorted({r["density"] for r in rows}, reverse=True)
    mined = {d: [r for r in rows if r["density"] == d and r["arm"] == "CE"] for d in densities}
    layers = next((r["layers"] for rs in mined.values() for r in rs), [])
    head = ["layer", "weights"] + [f"kept at {100 - d:g}% (collapsed in)" for d in densities]
    body = []
    for i, layer in enumerate(layers):
        cells = []
        for d in densities:
            kept = [r["layers"][i]["kept"] for r in mined[d]]
            zero = sum(k == 0 for k in kept)
            cells.append(f"{report.mean(kept):.1f} ({zero}/{len(kept)})" if kept else "-")
        body.append([layer["layer"], layer["total"]] + cells)
    return report.md_table(head, body)


def paper_table(paper):
    head = ["sparsity %", "density %", "CE acc", "RLO acc", "CE s", "RLO s", "claim", "precision"]
    body = [[p["sparsity"], p["density"], report.fmt(p["acc_ce"]), report.fmt(p["acc_rlo"]),
             report.fmt(p["seconds_ce"]), report.fmt(p["seconds_rlo"]),
             f"acc {p['claim_acc']}; time {p['claim_seconds']}", p["precision"]] for p in paper]
    return report.md_table(head, body)


def settings_line(rows):
    r = rows[0]
    return (f"ResNet-20 (non-affine BN, signed-constant init), {r['n_train']} training / {r['n_test']} test images "
            f"of the JPEG re-encoded CIFAR-10 at {r['size']}x{r['size']} px, {r['mine_epochs']} mining epochs, "
            f"{r['ft_epochs']} fine-tuning epochs, seeds {sorted({x['seed'] for x in rows})}; one torch thread.")


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_b, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    densities = sorted({r["density"] for r in rows}, reverse=True)
    styles = ["-", "--", ":", "-."]
    for i, arm in enumerate(arm_order(rows)):
        ds = [d for d in densities if any(r["arm"] == arm and r["density"] == d for r in rows)]
        accs = [[r["acc"] for r in rows if r["arm"] == arm and r["density"] == d] for d in ds]
        line = ax_b.errorbar([100 - d + 0.03 * (i - 1.5) for d in ds], [report.mean(a) for a in accs],
                             yerr=[report.std(a) if len(a) > 1 else 0 for a in accs], marker="o", capsize=3,
                             label=arm)  # arms shifted a little apart on x so their error bars stay visible
        for d, style in zip(densities, styles):
            curves = [r["curve"] for r in rows if r["arm"] == arm and r["density"] == d]
            if curves:
                n = min(len(c) for c in curves)
                ax_c.plot([report.mean(c[i]["train_s"] for c in curves) for i in range(n)],
                          [report.mean(c[i]["acc"] for c in curves) for i in range(n)], style,
                          color=line.lines[0].get_color(), label=f"{arm}, {100 - d:g}%")
    ax_b.set(xlabel="sparsity (%)", ylabel="final test accuracy (%)", title="(b) accuracy vs sparsity")
    ax_c.set(xlabel="fine-tuning seconds (mean over seeds)", ylabel="test accuracy (%)",
             title="(c) accuracy vs fine-tuning time")
    ax_b.legend(fontsize=7)
    ax_c.legend(fontsize=6)
    report.save_figure(fig, path)


def build(args):
    notes = report.notes_section(args.notes)  # an unreadable --notes stops the build before anything is written
    rows = collect(args.runs)
    out_dir = args.out_dir or report.RESULTS
    paper = report.paper_numbers("fig3bc")
    if not rows:
        lines = [f"# Fig. 3b-c: no finished fine-tuning runs under {args.runs} yet", "", f"Command: `{args.command}`"]
        return report.write_report(args.name, lines, [], paper, [], out_dir=out_dir)
    verdicts = verdicts_for(rows)
    png = os.path.join(out_dir, f"{args.name}.png")
    plot(rows, png)
    lines = [f"# Fig. 3b-c: gem-miner pruning of ResNet-20, fine-tuned with RLO vs CE", "",
             "Data: the JPEG re-encoded CIFAR-10 (../shared/data/cifar10-jpeg; not byte-identical to the official "
             "pickles, so not the paper's exact experiment).", "",
             f"Settings: {args.settings or settings_line(rows)}", "", f"Command: `{args.command}`", "",
             "## The paper (Sec. 4.2.2, Fig. 3b-c)", "", *paper_table(paper), "",
             "## Ours, per arm (mean ± sample std over seeds)", "",
             "*mined acc*: the mined sub-network w * 1[p > 0.5] * flag at the end of mining, before fine-tuning; "
             "*FT start acc*: the fine-tuned mask (flags only) at the init, batch norm re-estimated; *s to common "
             "acc*: fine-tuning seconds until the run first reaches the lowest best accuracy of the gem-miner arms "
             "of its (sparsity, seed) group (CE and RLO cost the same per step, so the paper's 'less runtime' can "
             "only mean reaching an accuracy sooner).", "", *results_table(rows), "",
             "## Paired differences (same mask, init and data order; by seed)", "", *paired_table(verdicts), "",
             "## Verdicts", "", *report.verdict_lines(verdicts), "", report.RULE_TEXT, "",
             "## Per-layer density of the mined masks", "", *layer_table(rows), "",
             f"![accuracy vs sparsity and vs time]({os.path.basename(png)})", ""]
    lines += notes
    flat = [{k: v for k, v in r.items() if k not in ("curve", "layers")} for r in rows]
    return report.write_report(args.name, lines, flat, paper, verdicts, out_dir=out_dir)


def main(args):
    path = build(args)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    run_cli(main, parse_args())
