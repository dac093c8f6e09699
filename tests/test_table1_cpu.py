"""scripts/table1_cpu.py and scripts/fig2cd.py: the reports built from a small fake grid summary."""
import json

import pytest

from scripts import fig2cd, table1_cpu
from scripts.vision_grid import CELLS

OFFSET = {"ce": 0.0, "root_k8": 2.0, "root_k5": -3.0, "sched_exp_max": 0.5}  # accuracy points over CE


def fake_row(cell, seed, epochs=8):
    acc = 70.0 + OFFSET.get(cell, 0.0) + 0.3 * seed + (0.2 if seed % 2 else -0.2) * (cell != "ce")
    curve = [acc - 3.0 * (epochs - 1 - e) for e in range(epochs)]
    val_ce = [1.0 - 0.05 * e + (0.02 * e if cell == "ce" else 0.0) for e in range(epochs)]
    return {"status": "finished", "cell": cell, "seed": seed, **CELLS[cell], "acc": acc, "best_acc": acc,
            "plateau": True, "train_acc": 90.0, "val_loss": val_ce[-1], "val_ce": val_ce[-1],
            "train_s": 10.0 * (0.8 if cell == "root_k8" else 1.0) + 0.1 * seed, "epochs": epochs,
            "acc_curve": curve, "val_ce_curve": val_ce, "val_loss_curve": val_ce, "train_loss_curve": val_ce,
            "train_acc_curve": curve, "train_s_curve": [10.0] * epochs, "k_curve": [CELLS[cell].get("k")] * epochs}


def write_summary(tmp_path, cells=("ce", "root_k8", "root_k5", "sched_exp_max", "focal"), seeds=range(4)):
    rows = [fake_row(c, s) for s in seeds for c in cells]
    protocol = {"net": "airbench_mini", "width": 24, "size": 16, "train_per_class": 800, "test_per_class": 500,
                "epochs": 8, "bs": 64, "lr": 3e-3, "wd": 0.05, "pad": 2, "seeds": list(seeds), "cells": list(cells)}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"protocol": protocol, "planned": 90, "done": len(rows), "rows": rows}))
    return path


def verdicts(tmp_path, name):
    return {v["claim"]: v for v in json.loads((tmp_path / f"{name}.json").read_text())["verdicts"]}


def test_table1_report_from_fake_summary(tmp_path):
    summary = write_summary(tmp_path)
    table1_cpu.main(table1_cpu.parse_args(["--summary", str(summary), "--out-dir", str(tmp_path)]))
    md = (tmp_path / "table1_cpu.md").read_text()
    assert "20 of 90 planned runs finished" in md and "| RLO-8 | 4 |" in md
    out = json.loads((tmp_path / "table1_cpu.json").read_text())
    assert set(out) == {"rows", "paper", "verdicts"} and not any(k.endswith("_curve") for k in out["rows"][0])
    v = verdicts(tmp_path, "table1_cpu")
    rlo8 = v["RLO-8 beats CE (Table 1; paper's smallest headline gain)"]
    assert rlo8["verdict"] == "supported" and rlo8["diff"] == pytest.approx(2.0) and rlo8["n"] == 4
    assert v["RLO-5 beats CE (Table 1; paper's smallest headline gain)"]["verdict"] == "not supported"
    assert v["RLO-10 beats CE (Table 1; paper's smallest headline gain)"]["verdict"] == "inconclusive"  # no runs
    timing = next(r for claim, r in v.items() if claim.startswith("RLO-8 epochs take less time"))
    assert timing["verdict"] == "supported" and timing["key"] == "train_s"  # fake rows have no CPU seconds


def test_seeds_needed_matches_the_t_interval():
    cmp = table1_cpu.report.paired_diffs([0.0, 1.0, 2.0, 1.0])  # std 0.816
    n = table1_cpu.seeds_needed(cmp)
    assert n == 6  # t_5 * 0.816 / sqrt(6) = 0.86; at n = 5 it is 1.01
    assert table1_cpu.report.t_quantile(n - 1) * cmp.std / (n - 1) ** 0.5 > 1.0


def test_fig2cd_report_from_fake_summary(tmp_path):
    summary = write_summary(tmp_path)
    fig2cd.main(fig2cd.parse_args(["--summary", str(summary), "--out-dir", str(tmp_path)]))
    for suffix in ("val_loss", "k_schedules", "acc"):
        assert (tmp_path / f"fig2cd_{suffix}.png").stat().st_size > 0
    v = verdicts(tmp_path, "fig2cd")
    # fake CE validation CE: 1 - 0.03 e, so it falls (claim "increases" is refuted); RLO's falls faster
    assert v["CE's validation loss increases over the second half of training (Fig. 2c)"]["verdict"] == \
        "not supported"
    assert v["RLO-8's validation CE rises less than CE's over the second half (more stable validation loss, "
             "Fig. 2b caption)"]["verdict"] == "supported"
    assert v["exp_max beats the constant k schedule in final accuracy (Fig. 2d, 7c)"]["verdict"] == "supported"


def test_missing_summary_is_a_usage_error(tmp_path):
    with pytest.raises(table1_cpu.UsageError):
        table1_cpu.main(table1_cpu.parse_args(["--summary", str(tmp_path / "none.json"), "--out-dir",
                                               str(tmp_path)]))


def test_report_from_train_py_run_directories(tmp_path):
    """The GPU path (scripts/table1.sh): train.py's results.json + metrics.jsonl per run."""
    dirs = []
    for seed in range(3):
        for loss, k, gain in (("ce", 3.0, 0.0), ("root", 10.0, 1.0 + 0.1 * seed)):
            run = tmp_path / f"res50_{loss}_s{seed}"
            run.mkdir()
            accs = [50.0, 80.0, 90.0 + seed + gain]
            metrics = [{"epoch": e + 1, "val_acc": a, "val_loss": 1.0, "val_ce": 1.0, "train_acc": 95.0,
                        "train_s": 20.0, "k": k} for e, a in enumerate(accs)]
            (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
            (run / "results.json").write_text(json.dumps({
                "status": "finished", "net": "res50", "dataset": "cifar10", "loss": loss, "k": k, "m": k,
                "seed": seed, "best_acc": accs[-1], "final_acc": accs[-1]}))
            dirs.append(str(run))
    table1_cpu.main(table1_cpu.parse_args(["--train-runs", *dirs, "--out-dir", str(tmp_path), "--name", "t1",
                                           "--title", "GPU"]))
    md = (tmp_path / "t1.md").read_text()
    assert md.startswith("# GPU") and "res50 on cifar10, 3 epochs" in md and "| RLO-10 | 3 |" in md
    v = verdicts(tmp_path, "t1")["RLO-10 beats CE (Table 1; paper's smallest headline gain)"]
    assert v["n"] == 3 and v["diff"] == pytest.approx(1.1)
