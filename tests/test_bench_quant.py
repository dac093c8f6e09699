"""scripts/bench_quant.py on one tiny layer: the report's table and its JSON rows agree."""
import json

from scripts import bench_quant as B


def test_main_writes_markdown_and_matching_json(tmp_path):
    out = tmp_path / "bench_quant.md"
    B.main(B.parse_args(["--shapes", "16x32", "--bits", "2", "--repeats", "1", "--out", str(out)]))
    text = out.read_text()
    rows = json.loads((tmp_path / "bench_quant.json").read_text())["rows"]
    assert [r["method"] for r in rows] == list(B.METHODS) + ["unblocked / blocked"]
    assert all(r["shape"] == "16x32" and r["bits"] == 2 for r in rows)
    check = rows[-1]
    line = ("| 16 x 32 | 2 | " + " | ".join(f"{r['seconds']:.3f}" for r in rows[:-1])
            + f" | {check['ratio']:.1f}x | {check['codes_differing']} of 512 ")
    assert line in text and check["identical_float64"] is True
    assert "`python -m scripts.bench_quant --shapes 16x32 --bits 2" in text
