"""scripts/bench_losses.py on a tiny size: interleaved timing, the case list and the report."""
import json

from scripts import bench_losses as B


def test_interleaved_times_rotate_and_ratio_to_the_first_step():
    order = []
    steps = {name: (lambda name=name: order.append(name)) for name in ("ref", "a", "b")}
    timed = B.interleaved_times(steps, repeats=3)
    assert order[:3] == ["ref", "a", "b"]  # warm-up
    assert order[3:6] == ["ref", "a", "b"] and order[6:9] == ["a", "b", "ref"] and order[9:] == ["b", "ref", "a"]
    assert timed["ref"][1] == 1.0 and set(timed) == {"ref", "a", "b"}


def test_cases_for_sizes():
    assert B.cases_for(256, 10)[0] == "F.cross_entropy" and "sparsemax" in B.cases_for(256, 10)
    big = B.cases_for(4096, 50272)
    assert "sparsemax" not in big and all(case in big for case in B.COMPILED)
    assert B.cases_for(256, 10, ["root", "ce"]) == ["F.cross_entropy", "root", "ce"]


def test_main_writes_a_report(tmp_path):
    out = tmp_path / "bench.md"
    B.main(B.parse_args(["--sizes", "16x3", "--cases", "root", "--repeats", "1", "--no-linear",
                         "--out", str(out)]))
    text = out.read_text()
    assert "| 16 x 3 | F.cross_entropy |" in text and "| 16 x 3 | root |" in text
    assert "--sizes 16x3" in text
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [(r["shape"], r["loss"]) for r in rows] == [("16x3", "F.cross_entropy"), ("16x3", "root")]
    for r in rows:  # each row is its table line
        assert (f"| 16 x 3 | {r['loss']} | {r['seconds'] * 1e3:,.1f} | {r['ratio']:.2f} | {r['peak_mib']:,.0f} "
                f"| {r['mem_ratio']:.2f} | {r['grad_finite']} |") in text
    assert rows[0]["ratio"] == 1.0 and rows[0]["mem_ratio"] == 1.0
