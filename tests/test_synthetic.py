"""synthetic.py end to end on tiny data (run directory, checkpoints, the Fig. 2 report), fast -h, user errors;
and scripts/fig2.py on fake results.json files."""
import json
import os
import subprocess
import sys
import time

import pytest

import synthetic
from scripts import fig2
from utils.checkpoint import load_checkpoint
from utils.cli import run_cli


def test_end_to_end_tiny_and_report(tmp_path):
    out = tmp_path / "run"
    args = synthetic.parse_args(["--depths", "2", "3", "--iters", "5", "--seeds", "0", "1", "--n", "60",
                                 "--hidden", "8", "--optimizers", "adam", "gd", "--losses", "ce", "root",
                                 "--out", str(out)])
    results = synthetic.main(args)
    assert len(results["runs"]) == 2 * 2 * 2 * 2
    ckpt = load_checkpoint(out / "models" / "adam_fc3_root_s1.pt", kind="synthetic")
    assert ckpt["config"]["depth"] == 3 and ckpt["config"]["loss"] == "root"
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 16
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 16
    assert json.loads((out / "config.json").read_text())["threads"] == 1
    fig2.main(fig2.parse_args([str(out), "--out-dir", str(tmp_path)]))
    report = (tmp_path / "fig2.md").read_text()
    assert "## Verdicts" in report and "| adam | 3 | 5 | root | 2 |" in report
    for name in ("adam_fc2", "adam_fc3", "gd_fc2", "gd_fc3"):
        assert (tmp_path / f"fig2_{name}.png").exists()
    with pytest.raises(SystemExit) as exc:  # a second run into the same directory is refused
        run_cli(synthetic.main, args)
    assert exc.value.code == 2


def _fake_run(folder, gain):
    """Three seeds, two depths, ce and root: root's accuracy = ce's + gain[depth] (+ a little seed noise)."""
    runs = []
    for depth in (2, 3):
        for seed in range(3):
            for loss in ("ce", "root"):
                acc = 0.8 + 0.01 * seed + (gain[depth] + 0.001 * seed ** 2 if loss == "root" else 0.0)
                runs.append({"optimizer": "adam", "depth": depth, "hidden": 8, "loss": loss, "k": 3.0, "m": 3.0,
                             "lr": 0.01, "iters": 5, "seed": seed, "data_seed": seed, "n": 60, "noise": 0.05,
                             "train_frac": 0.7, "train_acc": acc, "test_acc": acc, "final_loss": 0.1,
                             "margin": 0.1 + (0.01 if loss == "root" else 0.0) + 0.001 * seed ** 2,
                             "path": str(folder / "models" / f"adam_fc{depth}_{loss}_s{seed}.pt")})
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"runs": runs}))
    (folder / "config.json").write_text(json.dumps({"argv": ["synthetic.py"], "n": 60, "noise": 0.05, "hidden": 8,
                                                    "lr": 0.01, "k": 3.0, "m": 3.0, "rlo_loss": "root"}))


@pytest.mark.parametrize("gain,expected", [({2: 0.05, 3: 0.04}, "supported"),
                                           ({2: 0.05, 3: 0.0}, "inconclusive"),
                                           ({2: 0.05, 3: -0.05}, "not supported")])
def test_fig2_report_from_fake_results(tmp_path, gain, expected):
    _fake_run(tmp_path / "run", gain)
    fig2.main(fig2.parse_args([str(tmp_path / "run"), "--out-dir", str(tmp_path), "--no-figures"]))
    doc = json.loads((tmp_path / "fig2.json").read_text())
    assert set(doc) == {"rows", "paper", "verdicts"} and len(doc["rows"]) == 12
    accuracy = [v for v in doc["verdicts"] if "settings" in v and v["claim"].startswith("RLO beats CE")]
    assert [v["verdict"] for v in accuracy] == [expected]
    margins = [v for v in doc["verdicts"] if "settings" in v and v["claim"].startswith("RLO's margins")]
    assert margins[0]["verdict"] == "supported"


def test_help_answers_without_torch():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "synthetic.py", "-h"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0 and "--depths" in out.stdout and "Swiss-roll" in out.stdout
    assert "torch" not in out.stderr.replace("|", " ").split() and time.perf_counter() - start < 60


def test_bad_depth_and_unknown_loss_exit_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        run_cli(synthetic.main, synthetic.parse_args(["--depths", "1", "--out", str(tmp_path)]))
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        synthetic.parse_args(["--losses", "nope"])
    assert exc.value.code == 2
