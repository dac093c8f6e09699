"""scripts/bench_ft_memory.py with the per-case subprocess faked: table, JSON rows and the target section."""
import json

from scripts import bench_ft_memory as B

PEAKS = {("plain logits", False): 1000, ("plain logits", True): 800,
         ("chunked, losses.py default chunk", False): 700, ("chunked, losses.py default chunk", True): 600,
         ("chunked, 256-token chunks (ft_opt default)", False): 650,
         ("chunked, 256-token chunks (ft_opt default)", True): 560}


def fake_subprocess(case, loss, layers, bs, block, checkpointing):
    return {"peak_bytes": PEAKS[(case, checkpointing)] * 2**20, "loss": 4.5, "grad_abs_sum": 12.0, "seconds": 1.5}


def test_main_writes_markdown_and_matching_json(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "in_subprocess", fake_subprocess)
    monkeypatch.setattr(B, "grad_mib", lambda layers: 400.0)
    out = tmp_path / "bench_ft_memory.md"
    B.main(B.parse_args(["--layers", "1", "--losses", "root", "--out", str(out)]))
    text = out.read_text()
    rows = json.loads((tmp_path / "bench_ft_memory.json").read_text())["rows"]
    assert len(rows) == 6 and {r["checkpointing"] for r in rows} == {"off", "on"}
    for r in rows:
        assert (f"| 1 | root | {r['checkpointing']} | {r['method']} | {r['peak_mib']:,.0f} | {r['ratio']:.2f} "
                f"({(1 - r['ratio']) * 100:.0f}% saved) |") in text
    on = [r for r in rows if r["checkpointing"] == "on"]
    assert on[0]["ratio"] == 1.0 and abs(on[2]["ratio"] - 0.70) < 1e-12
    assert "Not met as stated" in text and "**0.70x**" in text  # 560 / 800
    assert "**0.40x**" in text and "**0.56x**" in text  # (560 - 400) / (800 - 400); 560 / 1000
    assert "Load average" in text
