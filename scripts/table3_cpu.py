"""Report builder for Table 3 at CPU scale: results/table3_cpu.{md,json} and results/hessian_stats.{md,json}.

Reads the run directories scripts/table3_cpu.sh writes under --runs (default runs/table3_cpu):

    base/                          the pretraining run (config.json, results.json)
    curve/step-N-w16, -w2-nearest, -w2-ldlqRG     opt.py runs on each pretraining snapshot (and 'final')
    quant/NAME-sSEED-wBITS[-nearest]              opt.py runs on each fine-tune (NAME: CE, RLO-5, RLO-10)
    ft/NAME-sSEED/                 the fine-tunes (ft_opt.py; run/config.json)
    hstats/NAME-sSEED/             scripts/hessian_stats.py runs

Every comparison is paired by fine-tuning seed (same seed: same data order) and judged by utils.report's rule.
--candidates names other such folders (bases pretrained with other settings, curve stage run): their
sensitivity curves are shown beside the base's, so the choice of base is documented by its evidence.

    python -m scripts.table3_cpu --runs runs/table3_cpu [--candidates runs/other ...] [--notes FILE]

--notes appends a markdown file (the commands that made the runs, scale limits) as the report's Notes section;
scripts/notes/table3_cpu.md holds the committed report's.
"""
import glob
import json
import math
import os
import re

from utils import report
from utils.cli import ArgumentParser, run_cli

MODELS = {"CE": ("ce", None), "RLO-5": ("root", 5.0), "RLO-10": ("root", 10.0)}
SETS = ("wikitext2", "ptb", "c4")
BITS = (16, 4, 3, 2)
CELL = re.compile(r"^(?P<model>CE|RLO-5|RLO-10)-s(?P<seed>\d+)-w(?P<bits>\d+)(?P<nearest>-nearest)?$")
CURVE = re.compile(r"^(?P<step>step-\d+|final)-w(?P<bits>\d+)(?:-(?P<method>nearest|ldlqRG))?$")
TARGET = 1.5  # the bar for a base on which quantization bites: 2-bit nearest ppl >= 1.5x the 16-bit ppl


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="runs/table3_cpu", help="the folder scripts/table3_cpu.sh wrote")
    p.add_argument("--candidates", nargs="*", default=[],
                   help="other table3_cpu.sh folders whose base and sensitivity curve are shown beside --runs'")
    p.add_argument("--notes", default=None, help="a markdown file appended as the report's Notes section")
    p.add_argument("--out-dir", default=None, help="where the reports go (default: results/)")
    return p.parse_args(argv)


def read_json(path):
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def quant_rows(runs):
    """One flat row per (fine-tune, bits, method, evaluation set), with ratio = ppl / ppl at 16 bits."""
    rows = []
    for path in sorted(glob.glob(os.path.join(runs, "quant", "*", "results.json"))):
        match = CELL.match(os.path.basename(os.path.dirname(path)))
        if not match:
            continue
        res, name = read_json(path), match["model"]
        bits = int(match["bits"])
        method = "fp" if bits == 16 else ("nearest" if match["nearest"] else "ldlqRG+incoh")
        loss, k = MODELS[name]
        for ds in SETS:
            if f"ppl_{ds}" in res:
                rows.append({"model": name, "loss": loss, "k": k, "m": k, "seed": int(match["seed"]),
                             "bits": bits, "method": method, "dataset": ds, "ppl": res[f"ppl_{ds}"],
                             "seconds": res.get("quant_seconds")})
    fp = {(r["model"], r["seed"], r["dataset"]): r["ppl"] for r in rows if r["bits"] == 16}
    for r in rows:
        base = fp.get((r["model"], r["seed"], r["dataset"]))
        r["ratio"] = None if base is None else r["ppl"] / base
    return rows


def read_base(runs):
    """(config, results) of the pretraining run in runs/base; either None when missing."""
    return (read_json(os.path.join(runs, "base", "config.json")),
            read_json(os.path.join(runs, "base", "results.json")))


def base_label(cfg):
    if not cfg:
        return "base"
    return f"{cfg.get('preset')}, BPE {cfg.get('vocab_size')}, {cfg.get('max_steps')} steps"


def curve_rows(runs, tokens_per_step, label="base", final_tokens=None):
    """ppl(2-bit)/ppl(16) of each pretraining snapshot on WikiText-2, by pretraining tokens."""
    found = {}
    for path in glob.glob(os.path.join(runs, "curve", "*", "results.json")):
        match = CURVE.match(os.path.basename(os.path.dirname(path)))
        res = read_json(path)
        if match and "ppl_wikitext2" in res:
            key = "fp" if match["bits"] == "16" else match["method"]
            found.setdefault(match["step"], {})[key] = res["ppl_wikitext2"]
    rows = []
    for step, ppl in found.items():
        if "fp" not in ppl:
            continue
        n = None if step == "final" else int(step.split("-")[1])
        if n is None:
            tokens = final_tokens
        else:
            tokens = None if tokens_per_step is None else n * tokens_per_step
        row = {"part": "curve", "base": label, "step": n if n is not None else "final", "dataset": "wikitext2",
               "ppl": ppl["fp"], "tokens": tokens}
        for method in ("nearest", "ldlqRG"):
            row[f"ppl_w2_{method}"] = ppl.get(method)
            row[f"ratio_w2_{method}"] = ppl[method] / ppl["fp"] if method in ppl else None
        rows.append(row)
    return sorted(rows, key=lambda r: (r["step"] == "final", r["step"] if r["step"] != "final" else 0))


def by_seed(rows, model, bits, method, dataset, key):
    return {r["seed"]: r[key] for r in rows if (r["model"], r["bits"], r["method"], r["dataset"])
            == (model, bits, method, dataset) and r[key] is not None}


def comparisons(rows):
    """Verdict records: RLO-k vs CE at 16 bits (ppl) and under quantization (ratio), paired by seed."""
    verdicts = []
    for name in ("RLO-5", "RLO-10"):
        for claim, key, cells in (
                (f"{name} lowers perplexity at 16 bits", "ppl", [(16, "fp")]),
                (f"{name} models lose less under quantization (ppl(b)/ppl(16), ldlqRG + incoherence)", "ratio",
                 [(b, "ldlqRG+incoh") for b in (4, 3, 2)]),
                (f"{name} models lose less under 2-bit nearest rounding", "ratio", [(2, "nearest")])):
            settings = []
            for bits, method in cells:
                for ds in SETS:
                    rlo, ce = (by_seed(rows, m, bits, method, ds, key) for m in (name, "CE"))
                    seeds = sorted(set(rlo) & set(ce))
                    if seeds:
                        cmp = report.paired([rlo[s] for s in seeds], [ce[s] for s in seeds])
                        settings.append(report.verdict_record(f"{claim}: {bits}-bit {ds}", cmp, "less",
                                                              bits=bits, dataset=ds, method=method))
            if settings:
                verdicts.append({"claim": claim, "verdict": report.combine([v["verdict"] for v in settings]),
                                 "n": min(v["n"] for v in settings), "diff": None, "ci_low": None,
                                 "ci_high": None, "settings": settings})
    return verdicts


def cell_table(rows, key, digits):
    """Markdown lines: one row per (bits, method, set), one column per model (mean ± std over seeds)."""
    out = []
    for bits, method in [(16, "fp")] + [(b, "ldlqRG+incoh") for b in (4, 3, 2)] + [(2, "nearest")]:
        for ds in SETS:
            cells = [report.fmt_pm(list(by_seed(rows, m, bits, method, ds, key).values()), digits) for m in MODELS]
            seeds = max(len(by_seed(rows, m, bits, method, ds, key)) for m in MODELS)
            if seeds:
                out.append([bits, method, ds] + cells + [seeds])
    return report.md_table(["bits", "method", "set"] + list(MODELS) + ["seeds"], out)


def paper_table(paper):
    sel = [p for p in paper if p["table"] == "table3" and p["net"] == "opt-125m"]
    out = []
    for bits in BITS:
        for ds in SETS:
            vals = {p["model"]: p["ppl"] for p in sel if p["bits"] == bits and p["dataset"] == ds}
            base = {p["model"]: p["ppl"] for p in sel if p["bits"] == 16 and p["dataset"] == ds}
            out.append([bits, ds] + [f"{vals[m]:g} ({vals[m] / base[m]:.2f}x)" for m in MODELS])
    anchors = [[p["method"], p["bits"], p["dataset"], p["ppl"]] for p in paper if p["table"] == "gptq_table3"]
    return (report.md_table(["bits", "set"] + [f"paper {m} (ratio)" for m in MODELS], out) + [""]
            + ["Public OPT-125m (GPTQ paper), for scale:", ""]
            + report.md_table(["method", "bits", "set", "ppl"], anchors))


def curve_figure(curve, path):
    """ppl(2 bits)/ppl(16) against pretraining tokens: one colour per base, one line style per method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bases = list(dict.fromkeys(r["base"] for r in curve if r["tokens"]))
    if not bases:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, base in enumerate(bases):
        pts, seen = [], set()
        for r in sorted((r for r in curve if r["base"] == base and r["tokens"]), key=lambda r: r["tokens"]):
            if r["tokens"] not in seen:  # the last snapshot and the final model are one model
                pts.append(r)
                seen.add(r["tokens"])
        for method, style, label in (("nearest", "o-", "2-bit nearest (grid a)"),
                                     ("ldlqRG", "s--", "2-bit ldlqRG + incoherence")):
            xy = [(r["tokens"] / 1e6, r[f"ratio_w2_{method}"]) for r in pts if r[f"ratio_w2_{method}"]]
            if xy:
                ax.plot(*zip(*xy), style, color=f"C{i}", ms=4, label=f"{base}: {label}")
    ax.axhline(TARGET, color="grey", ls=":", lw=1)
    ax.axhline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("pretraining tokens (M)")
    ax.set_ylabel("ppl(2 bits) / ppl(16 bits), WikiText-2")
    ax.legend(fontsize=6)
    fig.tight_layout()
    report.save_figure(fig, path)
    return path


def target_line(curve, base):
    """Whether the base (its final model) meets the sensitivity bar, in one sentence."""
    final = [r for r in curve if r["base"] == base and r["step"] == "final" and r["ratio_w2_nearest"]]
    if not final:
        return []
    ratio = final[0]["ratio_w2_nearest"]
    met = "met" if ratio >= TARGET else "NOT met"
    before, after = report.fmt(final[0]["ppl"]), report.fmt(final[0]["ppl_w2_nearest"])
    return [f"Sensitivity of the base: 2-bit nearest rounding raises its WikiText-2 perplexity by "
            f"{100 * (ratio - 1):+.1f}% ({before} -> {after}); the bar for a base on which quantization bites is "
            f"+{100 * (TARGET - 1):.0f}%: {met}.", ""]


def curve_lines(curve, base_cfg):
    label = base_label(base_cfg)
    out = ["## Quantization sensitivity against pretraining", ""]
    if base_cfg:
        out += [f"Base: preset {base_cfg.get('preset')}, BPE {base_cfg.get('vocab_size')}, block "
                f"{base_cfg.get('block_size')}, batch {base_cfg.get('bs')}, peak lr {base_cfg.get('lr')}, "
                f"{base_cfg.get('max_steps')} steps, text form {base_cfg.get('text_form')}.", ""]
    out += target_line(curve, label)
    several = len({r["base"] for r in curve}) > 1
    rows = [([r["base"]] if several else []) +
            [r["step"], report.fmt(r["tokens"] / 1e6 if r["tokens"] else None, 2), report.fmt(r["ppl"]),
             report.fmt(r["ppl_w2_nearest"]), report.fmt(r["ratio_w2_nearest"], 3),
             report.fmt(r["ppl_w2_ldlqRG"]), report.fmt(r["ratio_w2_ldlqRG"], 3)] for r in curve]
    if several:
        out += [f"The fine-tuned grid below uses the base `{label}`; the other rows are candidate bases "
                "(`--candidates`), pretrained and measured the same way, shown to document the choice.", ""]
    return out + report.md_table((["base"] if several else []) +
                                 ["step", "tokens (M)", "ppl 16-bit", "ppl 2-bit nearest", "ratio",
                                  "ppl 2-bit ldlqRG+incoh", "ratio"], rows) + [""]


def hessian_rows(runs):
    rows = []
    for path in sorted(glob.glob(os.path.join(runs, "hstats", "*", "results.json"))):
        match = re.match(r"^(CE|RLO-5|RLO-10)-s(\d+)$", os.path.basename(os.path.dirname(path)))
        if match:
            loss, k = MODELS[match[1]]
            for r in read_json(path)["rows"]:
                rows.append({"model": match[1], "loss": loss, "k": k, "m": k, "seed": int(match[2]), **r,
                             "log10_cond": math.log10(r["cond"]) if 0 < r["cond"] < math.inf else None})
    return rows


def model_means(hrows, key):
    """(model, seed) -> mean over linears of `key`."""
    groups = {}
    for r in hrows:
        if r[key] is not None:
            groups.setdefault((r["model"], r["seed"]), []).append(r[key])
    return {g: report.mean(v) for g, v in groups.items()}


def hessian_report(hrows, qrows, out_dir):
    stats = ("log10_cond", "trD_trH", "mu")
    means = {key: model_means(hrows, key) for key in stats}
    table = [[m] + [report.fmt_pm([v for (mm, _), v in means[key].items() if mm == m], 3) for key in stats]
             for m in MODELS]
    verdicts = []
    for key, label in (("log10_cond", "mean log10 cond"),
                       ("trD_trH", "mean tr(D)/tr(H): lower, less LDLQ proxy loss per unit of tr(H)"),
                       ("mu", "mean eigenvector incoherence mu: lower, more incoherent")):
        for name in ("RLO-5", "RLO-10"):
            seeds = sorted({s for (m, s) in means[key] if m == name} & {s for (m, s) in means[key] if m == "CE"})
            if seeds:
                cmp = report.paired([means[key][name, s] for s in seeds], [means[key]["CE", s] for s in seeds])
                verdicts.append(report.verdict_record(f"{name} models have better-conditioned H ({label})",
                                                      cmp, "less", statistic=key))
    ratio = {(r["model"], r["seed"]): r["ratio"] for r in qrows
             if r["bits"] == 2 and r["method"] == "ldlqRG+incoh" and r["dataset"] == "wikitext2"}
    pred = []
    for key in stats:
        pairs = [(means[key][g], ratio[g]) for g in means[key] if ratio.get(g) is not None]
        pred.append([key, len(pairs), report.fmt(_spearman(pairs), 2)])
    lines = ["# Quantization Hessians of the CPU-scale Table 3 fine-tunes: conditioning, CE vs RLO", "",
             "Per linear of every decoder layer, H = E[x x^T] over opt.py's calibration windows (layers "
             "unquantized), `python -m scripts.hessian_stats FT_DIR --nsamples 128` (run by "
             "`bash scripts/table3_cpu.sh grid`). cond: lambda_max/lambda_min on the non-dead inputs; "
             "tr(D)/tr(H): LDL factor after 1% damping; mu: sqrt(n) max|Q_ij| of H's eigenvectors. Mean over "
             "linears per model, then mean ± std over fine-tuning seeds.", ""]
    lines += report.md_table(["model", "mean log10 cond(H)", "mean tr(D)/tr(H)", "mean mu"], table) + [""]
    lines += report.verdict_lines(verdicts, 4) + ["", report.RULE_TEXT, "",
                                               "Does the statistic predict the loss under quantization? Spearman "
                                               "rank correlation over models (every loss and seed) between the "
                                               "per-model mean statistic and ppl(2-bit ldlqRG)/ppl(16) on "
                                               "WikiText-2:", ""]
    lines += report.md_table(["statistic", "models", "Spearman rho"], pred)
    fig = _hessian_figure(hrows, os.path.join(out_dir, "hessian_stats.png"))
    if fig:
        lines += ["", f"![per-layer cond(H)]({os.path.basename(fig)})"]
    report.write_report("hessian_stats", lines, hrows, (), verdicts, out_dir=out_dir)


def _spearman(pairs):
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return None  # undefined for fewer than 3 models or a constant statistic
    from scipy.stats import spearmanr
    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)


def _hessian_figure(hrows, path):
    if not hrows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = sorted({(r["layer"], r["linear"]) for r in hrows})
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for model in MODELS:
        ys = [report.mean([r["log10_cond"] for r in hrows if r["model"] == model and (r["layer"], r["linear"]) == n
                           and r["log10_cond"] is not None]) for n in names]
        ax.plot(range(len(names)), ys, "o-", label=model, ms=3)
    ax.set_xticks(range(len(names)), [f"{l}.{n.split('.')[-1]}" for l, n in names], rotation=90, fontsize=6)
    ax.set_ylabel("log10 cond(H), mean over seeds")
    ax.legend()
    fig.tight_layout()
    report.save_figure(fig, path)
    return path


def settings_lines(runs):
    out = []
    for path in sorted(glob.glob(os.path.join(runs, "ft", "*", "run", "config.json"))):
        cfg = read_json(path)
        keep = {k: cfg.get(k) for k in ("loss", "k", "m", "max_steps", "bs", "block_size", "lr", "warmup_steps",
                                        "seed") if k in cfg}
        out.append(f"- `{os.path.basename(os.path.dirname(os.path.dirname(path)))}`: "
                   + ", ".join(f"{k}={v}" for k, v in keep.items()))
    return out


def table_lines(runs, qrows, curve, base, verdicts, paper, figure):
    cfg, res = base
    lines = ["# Table 3 at CPU scale: a small OPT pretrained on raw-form WikiText-2, fine-tuned with CE / RLO, "
             "quantized with QuIP", "",
             "Commands: `bash scripts/table3_cpu.sh` (stages pretrain, curve, grid, report; resumable) and "
             "`python -m scripts.table3_cpu`. Each cell: `python opt.py FT_DIR wikitext2 --wbits B --quant ldlqRG "
             "--incoh_processing --seed 0 --nsamples 128 --max-eval-windows 48` (2-bit nearest: `--quant nearest`, "
             "grid a, no incoherence; 16 bits: no quantization). Perplexity on WikiText-2 raw test, PTB test and the "
             "local C4 sample, 48 evenly spaced windows of 256 tokens per set (not all windows: CPU budget).", ""]
    if res:
        lines += [f"Base model: {res.get('parameters')} parameters, {res.get('step')} steps, "
                  f"{res.get('tokens')} tokens seen, {res.get('train_seconds')} s of training on one shared CPU "
                  f"thread; validation perplexity {report.fmt(res.get('validation_perplexity'))} (its own BPE).", ""]
    lines += curve_lines(curve, cfg)
    if figure:
        lines += [f"![sensitivity curve]({os.path.basename(figure)})", ""]
    lines += ["## Perplexity, mean ± std over fine-tuning seeds", ""] + cell_table(qrows, "ppl", 2) + [""]
    lines += ["## Loss under quantization, ppl(b) / ppl(16) of the same fine-tune", ""]
    lines += cell_table([r for r in qrows if r["bits"] != 16], "ratio", 3) + [""]
    lines += ["## Verdicts (paired RLO - CE by seed; a claim holds only if it holds at every bit width and set)", ""]
    for v in verdicts:
        lines.append(f"- **{v['claim']}**: {v['verdict']}")
        lines += ["  " + s for s in report.verdict_lines(v["settings"], 3)]
    lines += ["", report.RULE_TEXT, "", "## The paper (OPT-125M, Table 3) and the public OPT-125m", ""]
    lines += paper_table(paper) + ["", "## Fine-tunes", ""] + settings_lines(runs)
    return lines


def main(args):
    notes = report.notes_section(args.notes)  # an unreadable --notes stops the build before anything is written
    runs = args.runs
    out_dir = args.out_dir or report.RESULTS
    base = read_base(runs)
    curve = []
    for folder, (cfg, res) in [(runs, base)] + [(c, read_base(c)) for c in args.candidates]:
        tokens_per_step = cfg["bs"] * cfg["block_size"] if cfg else None
        curve += curve_rows(folder, tokens_per_step, base_label(cfg), res.get("tokens") if res else None)
    qrows = quant_rows(runs)
    verdicts = comparisons(qrows)
    paper = report.paper_numbers("table3")
    figure = curve_figure(curve, os.path.join(out_dir, "table3_cpu_sensitivity.png"))
    lines = table_lines(runs, qrows, curve, base, verdicts, paper, figure) + ([""] + notes if notes else [])
    rows = [dict(r, part="grid") for r in qrows] + curve
    path = report.write_report("table3_cpu", lines, rows, paper, verdicts, out_dir=out_dir)
    hessian_report(hessian_rows(runs), qrows, out_dir)
    print(path)
    return {"rows": rows, "verdicts": verdicts}


if __name__ == "__main__":
    run_cli(main, parse_args())
