"""stylegan_patch/smoke.py: its checks on traces made here, and (with a clone) the real training loop.

Set STYLEGAN2_ADA_CLONE to a clone of NVlabs/stylegan2-ada-pytorch to run the real check (a few
minutes per loss on a CPU); the clone is copied, never modified.
"""
import os

import pytest
import torch
import torch.nn.functional as F

import losses
from stylegan_patch import smoke

CLONE = os.environ.get("STYLEGAN2_ADA_CLONE")


def fake_trace(loss, k, steps=3, batch=4, seed=0, error=0.0):
    """Reports in the order upstream's loss makes them (Gmain, then Dmain, then a Dreg-only real)."""
    f = smoke.reference(loss, k)
    g = torch.Generator().manual_seed(seed)
    records = []
    for _ in range(steps):
        fake, real = torch.randn(batch, generator=g, dtype=torch.float64) * 3, torch.randn(batch, generator=g,
                                                                                       dtype=torch.float64)
        records += [{"name": "Loss/scores/fake", "values": fake.tolist()},
                    {"name": "Loss/G/loss", "values": (f(fake) * (1 + error)).tolist()},
                    {"name": "Loss/scores/fake", "values": (-fake).tolist()},
                    {"name": "Loss/scores/real", "values": real.tolist()},
                    {"name": "Loss/D/loss", "values": (f(fake) + f(real)).tolist()},
                    {"name": "Loss/scores/real", "values": (real * 7).tolist()}]
    return records


@pytest.mark.parametrize("loss", ["ce", "rlo"])
def test_check_trace_accepts_the_formula_and_flags_an_error(loss):
    worst, counts = smoke.check_trace(fake_trace(loss, 2.0), loss, 2.0)
    assert worst["G"] < 1e-12 and worst["D"] < 1e-12 and counts == {"G": 12, "D": 12}
    worst, _ = smoke.check_trace(fake_trace(loss, 2.0, error=1e-4), loss, 2.0)
    assert worst["G"] == pytest.approx(1e-4, rel=1e-6) and worst["D"] < 1e-12
    other = "ce" if loss == "rlo" else "rlo"
    assert min(smoke.check_trace(fake_trace(loss, 2.0), other, 2.0)[0].values()) > 0.01


def test_references_are_the_project_losses():
    x = torch.linspace(-30, 30, 61, dtype=torch.float64)
    assert torch.equal(smoke.reference("ce", 2.0)(x), F.softplus(-x))
    torch.testing.assert_close(smoke.reference("rlo", 5.0)(x), losses.rooted_logit(x, 5.0))
    exact = x[11:]  # logits >= -19: below the overflow guard (softplus(-x) / k <= LOG_WEIGHT_CAP)
    torch.testing.assert_close(smoke.reference("rlo", 2.0)(exact), 2 * (1 + torch.exp(-exact)) ** 0.5)


def test_check_stats_compares_counts_and_means():
    records = [{"name": "Loss/G/loss", "values": [1.0, 2.0]}, {"name": "Loss/G/loss", "values": [3.0]},
               {"name": "Loss/D/loss", "values": [4.0]}]
    stats = [{"Loss/G/loss": {"num": 2, "mean": 1.5}, "Loss/D/loss": {"num": 1, "mean": 4.0}},
             {"Loss/G/loss": {"num": 1, "mean": 3.0}}]
    assert max(smoke.check_stats(stats, records).values()) < 1e-12
    stats[1]["Loss/G/loss"]["mean"] = 3.3
    assert smoke.check_stats(stats, records)["Loss/G/loss"] == pytest.approx(0.05)
    assert smoke.check_stats(stats[:1], records)["Loss/G/loss"] == float("inf")  # a tick missing


@pytest.mark.skipif(not CLONE, reason="set STYLEGAN2_ADA_CLONE to a clone of NVlabs/stylegan2-ada-pytorch")
def test_real_training_loop_logs_the_patched_losses(tmp_path):
    pytest.importorskip("click")
    rows = smoke.main(smoke.parse_args([CLONE, "--steps", "1", "--out", str(tmp_path)]))
    assert [r["loss"] for r in rows] == ["ce", "rlo"] and all(r["ok"] for r in rows)
    assert rows[1]["mean_G_loss"] > 2.0  # RLO terms are >= k = 2; CE's are not bounded below by it
