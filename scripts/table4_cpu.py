"""Report builder for the CPU-scale Table 4: results/table4_cpu.md and results/table4_cpu.json.

Reads the ft_quant.py run directories that scripts/table4_runs.py writes (NAME = FAMILY-wBITS-LOSS[-sSEED]):
the 16-bit and quantized bases without LoRA, and LoRA fine-tunes with CE, RLO-5 and RLO-10 per seed. RLO - CE
perplexity differences are paired by seed (same adapter init and data order) with 95% t-intervals; verdicts
come from utils.report's one rule. The paper's Llama-3 numbers (results/paper/table4.json) stand beside ours.

    python -m scripts.table4_cpu --runs runs/table4_cpu/runs
"""
import glob
import os
import re

from utils import report
from utils.cli import ArgumentParser, UsageError, run_cli

NAME = re.compile(r"^(?P<net>[a-z0-9]+)-w(?P<bits>\d+)-(?P<col>nolora|ce|root5|root10)(?:-s(?P<seed>\d+))?$")
COLUMNS = {"nolora": "no LoRA", "ce": "CE", "root5": "RLO-5", "root10": "RLO-10"}
DATASETS = {"wikitext2": "test_perplexity", "c4": "c4_validation_perplexity"}
PAPER_NET = "Llama3-8b"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=str, default="runs/table4_cpu/runs", help="folder of ft_quant.py runs")
    p.add_argument("--name", type=str, default="table4_cpu", help="report name under results/")
    p.add_argument("--out-dir", type=str, default=None, help="where the report goes (default results/)")
    return p.parse_args(argv)


def collect(runs_dir):
    """Flat rows, one per run and dataset."""
    rows = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "*", "results.json"))):
        match = NAME.match(os.path.basename(os.path.dirname(path)))
        if match is None:
            continue
        (_, res), = report.load_results([os.path.dirname(path)])
        col = match["col"]
        column = "16-bit" if col == "nolora" and int(match["bits"]) == 16 else COLUMNS[col]
        for dataset, key in DATASETS.items():
            if key in res:
                rows.append({"net": match["net"], "bits": int(match["bits"]), "column": column,
                             "loss": res.get("loss") if res.get("lora") else "none",
                             "k": res.get("k") if col.startswith("root") else None,
                             "seed": None if match["seed"] is None else int(match["seed"]), "dataset": dataset,
                             "ppl": res[key], "tokens": res.get(key.replace("perplexity", "tokens")),
                             "train_steps": res.get("train_steps"), "seconds": res.get("train_seconds")})
    if not rows:
        raise UsageError(f"no finished runs under {runs_dir}")
    return rows


def by_seed(rows, net, bits, dataset, column):
    return {r["seed"]: r["ppl"] for r in rows if (r["net"], r["bits"], r["dataset"], r["column"]) ==
            (net, bits, dataset, column)}


def compare(rows, net, bits, dataset, column):
    """Paired (RLO - CE) over the seeds both have."""
    rlo, ce = by_seed(rows, net, bits, dataset, column), by_seed(rows, net, bits, dataset, "CE")
    seeds = sorted(set(rlo) & set(ce))
    return report.paired([rlo[s] for s in seeds], [ce[s] for s in seeds])


def paper_cell(paper, bits, dataset, column):
    for p in paper:
        if (p["net"], p["bits"], p["dataset"], p["column"]) == (PAPER_NET, bits, dataset, column):
            return p["ppl"]
    return None


def settings(rows):
    return sorted({(r["net"], r["bits"], r["dataset"]) for r in rows if r["bits"] < 16},
                  key=lambda s: (s[0], -s[1], s[2]))


def table(rows, paper):
    headers = ["net", "bits", "data", "16-bit", "no LoRA", "CE", "RLO-5", "RLO-10", "RLO-5 - CE", "RLO-10 - CE",
               f"paper {PAPER_NET} CE / RLO-5 / RLO-10"]
    body = []
    for net, bits, dataset in settings(rows):
        cells = [report.fmt_pm(by_seed(rows, net, 16, dataset, "16-bit").values()),
                 report.fmt_pm(by_seed(rows, net, bits, dataset, "no LoRA").values())]
        cells += [report.fmt_pm(by_seed(rows, net, bits, dataset, c).values()) for c in ("CE", "RLO-5", "RLO-10")]
        cells += [report.fmt_paired(compare(rows, net, bits, dataset, c)) for c in ("RLO-5", "RLO-10")]
        cells.append(" / ".join(report.fmt(paper_cell(paper, bits, dataset, c), 1)
                                for c in ("CE", "RLO-5", "RLO-10")))
        body.append([net, bits, dataset, *cells])
    return report.md_table(headers, body)


def verdicts(rows):
    """Per setting: RLO-k has lower perplexity than CE; then each k over every setting, then overall."""
    out = []
    for column in ("RLO-5", "RLO-10"):
        per = [report.verdict_record(f"{column} < CE ({net} w{bits} {dataset})",
                                     compare(rows, net, bits, dataset, column), "less",
                                     net=net, bits=bits, dataset=dataset, column=column)
               for net, bits, dataset in settings(rows)]
        out += per
        out.append({"claim": f"{column} gives lower perplexity than CE in every setting",
                    "verdict": report.combine(v["verdict"] for v in per), "n": len(per), "diff": None,
                    "ci_low": None, "ci_high": None, "direction": "less", "column": column})
    overall = [v["verdict"] for v in out if "every setting" in v["claim"]]
    out.append({"claim": "Table 4: RLO (k = 5 and 10) beats CE after LoRA fine-tuning in quantized space",
                "verdict": report.combine(overall), "n": len(overall), "diff": None, "ci_low": None,
                "ci_high": None, "direction": "less"})
    return out


SCALE = """Scale (CPU, one thread per process): the bases are 2-layer, 128-wide OPT and Llama models built from
configs with a 2048-token byte-level BPE, pretrained 200 steps x 16 blocks of 128 tokens on WikiText-2 train
(scripts/table4_base.py); quantized with opt.py ldlqRG --incoh_processing (butterfly), 32 calibration windows of
128 tokens; LoRA r 8, alpha 16, dropout 0.05, lr 1e-3 (LLMTools' defaults) on every quantized decoder linear, 15
AdamW steps x 8 blocks of 128 tokens from the first 2000 lines of WikiText-2 train; perplexity = exp(mean token
CE) on the first 32 blocks of 128 tokens (4,064 predicted tokens) of WikiText-2 test and of the C4 validation
sample. The paper fine-tunes Llama-3 8b/70b for 3 epochs on all of WikiText-2: these numbers test the
mechanism at toy scale, not the paper's magnitudes."""


def main(args):
    rows = collect(args.runs)
    paper = report.paper_numbers("table4")
    found = verdicts(rows)
    seeds = sorted({r["seed"] for r in rows if r["seed"] is not None})
    lines = ["# Table 4 at CPU scale: LoRA fine-tuning in quantized space, CE vs RLO", "",
             "Perplexity (lower is better), mean ± std over seeds "
             f"{', '.join(map(str, seeds))}; RLO - CE paired by seed with its 95% t-interval. ",
             "16-bit: the pretrained base; no LoRA: the quantized base as loaded from its codes.", "",
             *table(rows, paper), "", "## Verdicts", "", *report.verdict_lines(found), "", report.RULE_TEXT, "",
             "## Settings", "", SCALE, "",
             "Commands: `nohup bash scripts/table4_cpu.sh > runs/table4_cpu.log 2>&1 &` (runs "
             "`python -m scripts.table4_runs --family opt|llama`), then `python -m scripts.table4_cpu`."]
    path = report.write_report(args.name, lines, rows, paper, found, args.out_dir)
    print(f"wrote {path}")
    return found


if __name__ == "__main__":
    run_cli(main, parse_args())
