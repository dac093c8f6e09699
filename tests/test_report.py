"""utils/report.py: statistics, THE verdict rule on hand-made numbers, and the report writers."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from utils import report


def test_std_is_sample_std_and_nan_for_one_value():
    assert report.std([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert math.isnan(report.std([5.0]))
    assert report.sem([1.0, 2.0, 3.0]) == pytest.approx(1.0 / math.sqrt(3))


def test_paired_interval_matches_scipy():
    a, b = np.array([71.2, 70.1, 72.5, 69.9, 70.8]), np.array([70.0, 69.5, 71.0, 70.1, 69.7])
    cmp = report.paired(a, b)
    d = a - b
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert cmp.n == 5 and cmp.diff == pytest.approx(d.mean())
    assert (cmp.ci_low, cmp.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_paired_rejects_unequal_lengths():
    with pytest.raises(ValueError):
        report.paired([1, 2, 3], [1, 2])


@pytest.mark.parametrize("diffs, direction, claimed, expected", [
    ([1.0, 1.2, 0.9, 1.1], "greater", None, "supported"),           # interval above 0
    ([-1.0, -1.2, -0.9, -1.1], "greater", None, "not supported"),   # interval below 0
    ([-1.0, -1.2, -0.9, -1.1], "less", None, "supported"),          # lower is the claim (perplexity)
    ([1.0, 1.2, 0.9, 1.1], "less", None, "not supported"),
    ([1.0, -1.0, 0.5, -0.5], "greater", None, "inconclusive"),      # interval holds 0
    ([0.1, -0.1, 0.05, -0.05], "greater", 1.5, "not supported"),    # holds 0 but rules out the paper's +1.5
    ([0.1, -0.1, 0.05, -0.05], "less", -1.5, "not supported"),      # same for a 'lower' claim
    ([2.0, -1.0, 3.0, -0.5], "greater", 1.5, "inconclusive"),       # wide: holds 0 and the claimed effect
    ([0.0, 0.0, 0.0], "greater", None, "inconclusive"),             # exact ties, no claimed effect
    ([0.0, 0.0, 0.0], "greater", 1.0, "not supported"),             # exact ties rule out a +1 effect
    ([0.7, 0.7, 0.7], "greater", None, "supported"),                # zero spread, positive
    ([2.0], "greater", None, "inconclusive"),                       # n = 1: no interval
    ([], "greater", None, "inconclusive"),
    ([1.0, float("nan"), 1.2], "greater", None, "inconclusive"),    # NaN among the differences
])
def test_verdict_rule(diffs, direction, claimed, expected):
    assert report.verdict(report.paired_diffs(diffs), direction, claimed) == expected


def test_verdict_rejects_bad_direction():
    with pytest.raises(ValueError):
        report.verdict(report.paired_diffs([1, 2]), "up")


def test_combine():
    assert report.combine(["supported", "supported"]) == "supported"
    assert report.combine(["supported", "inconclusive"]) == "inconclusive"
    assert report.combine(["supported", "not supported"]) == "not supported"
    assert report.combine([]) == "inconclusive"


def test_formatting_never_prints_nan():
    assert report.fmt_pm([3.0]) == "3.00"
    assert report.fmt_pm([]) == "-"
    assert report.fmt_pm([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert "no interval" in report.fmt_paired(report.paired_diffs([1.0]))
    assert "nan" not in report.fmt_paired(report.paired_diffs([1.0])).lower()
    assert report.md_table(["a", "b"], [[1, "x|y"]])[2] == "| 1 | x\\|y |"


def test_write_report_schema(tmp_path):
    cmp = report.paired([2.1, 2.2, 2.0], [1, 1, 1])
    v = report.verdict_record("RLO beats CE", cmp, "greater", claimed=1.0, setting="fc2")
    path = report.write_report("demo", ["# demo"] + report.verdict_lines([v]), [{"loss": "ce", "acc": 1.0}],
                               [{"table": "T1", "row": "x", "acc": 2.0}], [v], out_dir=str(tmp_path))
    data = json.loads((tmp_path / "demo.json").read_text())
    assert set(data) == {"rows", "paper", "verdicts"}
    assert set(data["verdicts"][0]) >= {"claim", "verdict", "n", "diff", "ci_low", "ci_high"}
    assert data["verdicts"][0]["verdict"] == "supported" and data["verdicts"][0]["n"] == 3
    assert "supported" in open(path).read()
    with pytest.raises(ValueError):
        report.write_report("bad", [], [], [], [dict(v, verdict="supported at this scale")], out_dir=str(tmp_path))


def test_write_report_to_an_md_path_writes_its_json_sibling(tmp_path):
    md = tmp_path / "sub" / "bench_x.md"
    path = report.write_report(str(md), ["# bench", "| a |"], [{"shape": "2x3", "seconds": 0.5}])
    assert path == str(md) and md.read_text() == "# bench\n| a |\n"
    data = json.loads((tmp_path / "sub" / "bench_x.json").read_text())
    assert data == {"rows": [{"shape": "2x3", "seconds": 0.5}], "paper": [], "verdicts": []}
    assert not (tmp_path / "bench_x.md").exists()


def test_save_figure_atomic(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = report.save_figure(fig, str(tmp_path / "f.png"))
    assert open(path, "rb").read(4) == b"\x89PNG" and len(list(tmp_path.iterdir())) == 1


def test_combined_record_names_its_settings():
    a = report.verdict_record("x, fc2", report.paired_diffs([1.0, 1.1, 0.9]))
    b = report.verdict_record("x, fc3", report.paired_diffs([1.0, -1.0, 0.2]))
    rec = report.combined_record("x", [a, b])
    assert rec["verdict"] == "inconclusive" and rec["settings"] == ["x, fc2", "x, fc3"] and rec["n"] == 3


def test_notes_section_reads_the_file_and_refuses_a_missing_one(tmp_path):
    from utils.cli import UsageError
    notes = tmp_path / "notes.md"
    notes.write_text("\nMade by a command.\n\n")
    assert report.notes_section(str(notes)) == ["## Notes", "", "Made by a command.", ""]
    assert report.notes_section(None) == [] and report.notes_section("") == []
    (tmp_path / "empty.md").write_text("  \n")
    assert report.notes_section(str(tmp_path / "empty.md")) == []
    with pytest.raises(UsageError, match="cannot read --notes"):
        report.notes_section(str(tmp_path / "missing.md"))
