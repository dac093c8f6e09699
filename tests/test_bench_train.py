"""scripts/bench_train.py on a tiny net: the report's table and its JSON rows agree."""
import json

from scripts import bench_train as B


def test_main_writes_markdown_and_matching_json(tmp_path):
    out = tmp_path / "bench_train.md"
    B.main(B.parse_args(["--net", "airbench_mini", "--size", "8", "--bs", "4", "--classes", "3", "--steps", "1",
                         "--repeats", "3", "--out", str(out)]))
    text = out.read_text()
    rows = json.loads((tmp_path / "bench_train.json").read_text())["rows"]
    ce, rlo, ratio = rows[:3]
    assert (ce["loss"], rlo["loss"], ratio["loss"]) == ("ce", "rlo", "rlo/ce")
    blocks = [r for r in rows if r["section"] == "block"]
    assert len(blocks) == 6 and {r["loss"] for r in blocks} == {"ce", "rlo"}
    ce_blocks = ", ".join(f"{r['images_per_s']:.1f}" for r in blocks if r["loss"] == "ce")
    assert f"| CE | {ce['images_per_s']:.1f} | {ce_blocks} |" in text
    assert f"**RLO / CE = {ratio['ratio']:.3f}**" in text
    assert abs(ratio["ratio_of_medians"] - rlo["images_per_s"] / ce["images_per_s"]) < 1e-12
    assert "Command: `python -m scripts.bench_train --net airbench_mini" in text
