"""The one report module: summary statistics, the paired comparison, THE verdict rule, and report writers.

Every report builder under scripts/ reads run directories' results.json files and calls `write_report`, which
writes results/<name>.md and its machine-readable sibling results/<name>.json:

    {"rows": [flat dict per run or table cell], "paper": [the paper's numbers, same form],
     "verdicts": [{"claim", "verdict", "n", "diff", "ci_low", "ci_high", ...}]}

Conventions (stated once, used everywhere):
- std is the sample standard deviation (ddof = 1); with one value it is undefined (NaN) and printed as nothing.
- se = std / sqrt(n). The 95% interval of a paired difference is mean +- t_{0.975, n-1} * se (Student t).

THE verdict rule (`verdict`). A claim says a difference d = treatment - baseline, paired by seed (or fold, or
setting), lies in a direction ("greater": treatment higher, e.g. accuracy; "less": treatment lower, e.g.
perplexity), optionally by at least the effect the paper claims. With n paired differences and their 95% interval:
- "supported":     n >= 2 and the whole interval lies on the claimed side of 0;
- "not supported": n >= 2 and the whole interval lies on the other side of 0, OR the paper's claimed effect is
                   given and lies outside the interval on the claimed side (the data rule out an effect that large);
- "inconclusive":  anything else: n < 2, a NaN among the differences, or an interval that holds 0 and the
                   claimed effect.
A claim over several settings (every dataset, every depth) is combined by `combine`: supported only if every
setting supports it, not supported if any setting does not support it, inconclusive otherwise.
"""
import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from utils.cli import UsageError
from utils.runio import atomic_write_json, atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results")
PAPER_DIR = os.path.join(RESULTS, "paper")
VERDICTS = ("supported", "not supported", "inconclusive")


def _array(values):
    return np.asarray(list(values), dtype=float)


def mean(values):
    v = _array(values)
    return float(v.mean()) if v.size else float("nan")


def std(values):
    """Sample standard deviation (ddof = 1); NaN for fewer than two values."""
    v = _array(values)
    return float(v.std(ddof=1)) if v.size > 1 else float("nan")


def sem(values):
    """Standard error of the mean, std / sqrt(n); NaN for fewer than two values."""
    v = _array(values)
    return std(v) / math.sqrt(v.size) if v.size > 1 else float("nan")


def t_quantile(n, level=0.95):
    """Two-sided Student-t quantile for n values (n - 1 degrees of freedom)."""
    from scipy.stats import t
    return float(t.ppf(0.5 + level / 2, n - 1))


@dataclass
class Paired:
    """Mean paired difference (treatment - baseline), its 95% t-interval and n."""
    n: int
    diff: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def half_width(self):
        return (self.ci_high - self.ci_low) / 2


def paired(treatment, baseline, level=0.95):
    """Paired comparison of two equally long sequences (one value per seed, in the same seed order)."""
    a, b = _array(treatment), _array(baseline)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs equal lengths, got {a.size} and {b.size}")
    return paired_diffs(a - b, level)


def paired_diffs(diffs, level=0.95):
    d = _array(diffs)
    n = int(d.size)
    if n < 2 or np.isnan(d).any():
        m = float(d.mean()) if n else float("nan")
        return Paired(n, m, float("nan"), float("nan"), float("nan"))
    m, s = float(d.mean()), float(d.std(ddof=1))
    half = t_quantile(n, level) * s / math.sqrt(n)
    return Paired(n, m, s, m - half, m + half)


def verdict(cmp, direction="greater", claimed=None):
    """THE verdict rule (module docstring): 'supported', 'not supported' or 'inconclusive'."""
    if direction not in ("greater", "less"):
        raise ValueError(f"direction must be 'greater' or 'less', got {direction!r}")
    if cmp.n < 2 or any(math.isnan(x) for x in (cmp.diff, cmp.ci_low, cmp.ci_high)):
        return "inconclusive"
    sign = 1.0 if direction == "greater" else -1.0
    low, high = sorted((sign * cmp.ci_low, sign * cmp.ci_high))  # the claimed direction is now "positive"
    if low > 0:
        return "supported"
    if high < 0:
        return "not supported"
    if claimed is not None and high < abs(claimed):
        return "not supported"
    return "inconclusive"


def combine(verdicts):
    """Several settings of one claim: supported if all are, not supported if any is not, else inconclusive."""
    verdicts = list(verdicts)
    if not verdicts:
        return "inconclusive"
    if all(v == "supported" for v in verdicts):
        return "supported"
    if any(v == "not supported" for v in verdicts):
        return "not supported"
    return "inconclusive"


def verdict_record(claim, cmp, direction="greater", claimed=None, **extra):
    """One entry of a report's "verdicts" list."""
    record = {"claim": claim, "verdict": verdict(cmp, direction, claimed), "n": cmp.n, "diff": _num(cmp.diff),
              "ci_low": _num(cmp.ci_low), "ci_high": _num(cmp.ci_high), "direction": direction}
    if claimed is not None:
        record["claimed"] = claimed
    record.update(extra)
    return record


def combined_record(claim, records):
    """A claim over several settings: `combine` of the settings' verdict records, naming them (no interval)."""
    records = list(records)
    return {"claim": claim, "verdict": combine(r["verdict"] for r in records),
            "n": min((r["n"] for r in records), default=0), "diff": None, "ci_low": None, "ci_high": None,
            "settings": [r["claim"] for r in records]}


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ----- formatting ---------------------------------------------------------------------------------------------

def fmt(x, digits=2):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def fmt_pm(values, digits=2, scale=1.0):
    """'mean ± std' over values (sample std); just 'mean' for one value, '-' for none."""
    v = scale * _array(values)
    v = v[~np.isnan(v)]
    if not v.size:
        return "-"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


def fmt_paired(cmp, digits=2):
    """'+1.23 [0.45, 2.01] (n=5)'; without an interval for n < 2."""
    if cmp.n < 2 or math.isnan(cmp.ci_low):
        return f"{fmt(cmp.diff, digits)} (n={cmp.n}, no interval)"
    return f"{cmp.diff:+.{digits}f} [{cmp.ci_low:+.{digits}f}, {cmp.ci_high:+.{digits}f}] (n={cmp.n})"


def notes_section(path):
    """A report's "## Notes" lines from a builder's --notes markdown file; [] without a file or text.

    An unreadable file is a one-line UsageError (exit 2), before anything is written.
    """
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as err:
        raise UsageError(f"cannot read --notes {path}: {err}") from None
    return ["## Notes", "", text, ""] if text else []


def md_table(headers, rows):
    """Markdown table lines from a header list and rows of cells (any values, str() applied)."""
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [str(c).replace("|", "\\|").replace("\n", " ") for c in row]
        lines.append("| " + " | ".join(cells + [""] * (len(headers) - len(cells))) + " |")
    return lines


def verdict_lines(verdicts, digits=2):
    """One markdown bullet per verdict record."""
    lines = []
    for v in verdicts:
        interval = ("no interval" if v["ci_low"] is None else
                    f"{v['diff']:+.{digits}f} [{v['ci_low']:+.{digits}f}, {v['ci_high']:+.{digits}f}]")
        claimed = f", paper's effect {v['claimed']:+g}" if v.get("claimed") is not None else ""
        lines.append(f"- **{v['claim']}**: {v['verdict']} (paired difference {interval}, n = {v['n']}{claimed})")
    return lines


RULE_TEXT = ("Verdicts follow the project's one rule (utils/report.py): *supported* when the 95% t-interval of "
             "the paired difference (n >= 2) lies wholly on the claimed side of 0; *not supported* when it lies "
             "wholly on the other side, or excludes the paper's claimed effect; *inconclusive* otherwise. A claim "
             "over several settings is supported only if every setting supports it. std is the sample std "
             "(ddof 1).")


# ----- files --------------------------------------------------------------------------------------------------

def save_figure(fig, path):
    """Save a matplotlib figure atomically (temp file + rename) and close it."""
    import matplotlib.pyplot as plt
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_note():
    """A sentence with this machine's load average, for benchmarks measured on a shared CPU."""
    one, five, _ = os.getloadavg()
    return (f"Load average when the report was written: {one:.1f} (1 min), {five:.1f} (5 min) on "
            f"{os.cpu_count()} cores; times measured under load are inflated and only their ratios compare.")


def paper_numbers(table):
    """The paper's published numbers for one table/figure: rows from results/paper/<table>.json."""
    path = os.path.join(PAPER_DIR, f"{table}.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["rows"]


def report_paths(name, out_dir=None):
    """(markdown path, JSON path) of a report: results/<name>.md, or NAME itself when it is a .md path."""
    if name.endswith(".md"):
        return name, name[:-len(".md")] + ".json"
    out_dir = out_dir or RESULTS
    return os.path.join(out_dir, f"{name}.md"), os.path.join(out_dir, f"{name}.json")


def write_report(name, lines, rows, paper=(), verdicts=(), out_dir=None):
    """results/<name>.md (the markdown lines) and results/<name>.json ({"rows", "paper", "verdicts"}).

    NAME may also be a path ending in .md (a benchmark's --out): the JSON sibling then takes its stem."""
    for v in verdicts:
        if v["verdict"] not in VERDICTS:
            raise ValueError(f"verdict {v['verdict']!r} is not one of {VERDICTS}")
    md_path, json_path = report_paths(name, out_dir)
    atomic_write_json(json_path, {"rows": list(rows), "paper": list(paper), "verdicts": list(verdicts)})
    atomic_write_text(md_path, "\n".join(lines).rstrip() + "\n")
    return md_path


def load_results(paths):
    """(config, results) pairs from run directories that hold a results.json (others are skipped)."""
    out = []
    for run in paths:
        res_path = os.path.join(run, "results.json")
        if not os.path.exists(res_path):
            continue
        with open(res_path, encoding="utf-8") as f:
            results = json.load(f)
        config = {}
        if os.path.exists(os.path.join(run, "config.json")):
            with open(os.path.join(run, "config.json"), encoding="utf-8") as f:
                config = json.load(f)
        out.append((config, results))
    return out


def as_dict(cmp):
    return asdict(cmp)
