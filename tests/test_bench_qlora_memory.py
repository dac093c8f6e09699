"""scripts/bench_qlora_memory.py with the per-case subprocess faked: the table and its JSON rows agree."""
import json

from scripts import bench_qlora_memory as B


def test_main_writes_markdown_and_matching_json(tmp_path, monkeypatch):
    fake = {case: {"case": case, "tensor_mb": 10.0 + i, "step_peak_mb": 20.5 + i, "seconds": 0.25}
            for i, case in enumerate(B.CASES)}
    monkeypatch.setattr(B, "in_subprocess", lambda case, args: fake[case])
    out = tmp_path / "bench_qlora_memory.md"
    B.main(B.parse_args(["--layers", "1", "--vocab", "64", "--out", str(out)]))
    text = out.read_text()
    rows = json.loads((tmp_path / "bench_qlora_memory.json").read_text())["rows"]
    assert [(r["method"], r["bits"]) for r in rows] == [("dense fp32", 0), ("codes-only 2-bit", 2),
                                                        ("codes-only 4-bit", 4)]
    assert "| codes-only 4-bit | 12.0 | 22.5 | 34.5 | 0.25 |" in text and rows[2]["sum_mib"] == 34.5
    assert "--layers 1 --vocab 64" in text
