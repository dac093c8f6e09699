"""synthetic.py: the spiral generator, the nets, end to end on tiny data, and user errors."""
import json

import pytest
import torch

import synthetic
from utils.cli import run_cli


def test_spiral_is_seeded_balanced_and_bounded():
    X1, y1 = synthetic.make_spiral(101, seed=3)
    X2, y2 = synthetic.make_spiral(101, seed=3)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert not torch.equal(X1, synthetic.make_spiral(101, seed=4)[0])
    assert X1.shape == (101, 2) and abs(int(y1.sum()) - 50) <= 1
    assert X1.abs().max() < 1.5


def test_split_is_70_30_and_disjoint():
    tr, te = synthetic.split(1500, 0.7, seed=0)
    assert len(tr) == 1050 and len(te) == 450
    assert len(set(tr.tolist()) | set(te.tolist())) == 1500


@pytest.mark.parametrize("depth,linears", [(2, 2), (3, 3), (4, 4)])
def test_fcn_depth_counts_linear_layers(depth, linears):
    net = synthetic.build_fcn(depth, hidden=7)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == linears
    assert net(torch.zeros(5, 2)).shape == (5, 2)


def test_end_to_end_tiny(tmp_path):
    out = tmp_path / "run"
    args = synthetic.parse_args(["--depths", "2", "3", "--iters", "5", "--seeds", "0", "1", "--n", "60",
                                 "--hidden", "8", "--optimizers", "adam", "gd", "--losses", "ce", "root",
                                 "--out-dir", str(out), "--report", str(tmp_path / "syn.md"),
                                 "--fig-prefix", str(tmp_path / "fig2_")])
    records = synthetic.main(args)
    assert len(records) == 2 * 2 * 2 * 2
    report = (tmp_path / "syn.md").read_text()
    assert "## Verdicts" in report and "| adam | 3 | 5 | root |" in report
    for name in ("adam_fc2", "adam_fc3", "gd_fc2", "gd_fc3"):
        assert (tmp_path / f"fig2_{name}.png").exists()
    ckpt = torch.load(out / "models" / "adam_fc3_root_s1.pt", weights_only=False)
    assert ckpt["config"]["depth"] == 3 and ckpt["config"]["loss"] == "root" and ckpt["kind"] == "synthetic"
    net = synthetic.build_fcn(3, 8)
    net.load_state_dict(ckpt["model"])
    assert len(json.loads((out / "results.json").read_text())) == 16


def test_bad_depth_exits_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        run_cli(synthetic.main, synthetic.parse_args(["--depths", "1", "--out-dir", str(tmp_path)]))
    assert exc.value.code == 2
