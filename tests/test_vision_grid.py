"""scripts/vision_grid.py: the paired design, skip and resume, and the data helpers, on tiny fake data."""
import json
import shutil
import os

import numpy as np
import pytest
import torch

from scripts import vision_grid as vg
from tests import fake_data

TINY = ["--net", "airbench_mini", "--width", "4", "--size", "8", "--train-per-class", "4", "--test-per-class", "2",
        "--epochs", "2", "--bs", "8", "--lr", "1e-2", "--pad", "1", "--threads", "1"]


def fake_cache(tmp_path):
    """A decoded-array cache as load_cifar writes it: 6 train and 3 test 32x32 images per class."""
    rng = np.random.default_rng(0)
    cache = tmp_path / "cache"
    cache.mkdir()
    arrays = {}
    for split, per in (("train", 6), ("test", 3)):
        labels = np.repeat(np.arange(10), per)
        base = rng.integers(0, 255, (10, 1, 1, 3))[labels]  # one colour per class: learnable
        noise = rng.integers(-20, 20, (len(labels), 32, 32, 3))
        arrays[f"{split}_x"] = np.clip(base + noise, 0, 255).astype(np.uint8)
        arrays[f"{split}_y"] = labels.astype(np.int64)
    np.savez(cache / "cifar10_jpeg_u8.npz", **arrays)
    return cache


def grid_args(tmp_path, *extra):
    cache = tmp_path / "cache" if (tmp_path / "cache").exists() else fake_cache(tmp_path)
    return vg.parse_args([*TINY, "--cache", str(cache), "--runs", str(tmp_path / "runs"),
                          "--summary", str(tmp_path / "summary.json"), *extra])


def tiny_data(args):
    return vg.prepare_data(vg.load_cifar(args.tar, args.cache), args)


def test_paired_losses_share_initial_weights_and_batches(tmp_path):
    args = grid_args(tmp_path, "--cells", "ce", "root_k8", "--seeds", "0")
    a, b = vg.initial_model(args, 0).state_dict(), vg.initial_model(args, 0).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = vg.initial_model(args, 1).state_dict()
    assert not all(torch.equal(a[k], other[k]) for k in a)
    data, seen = tiny_data(args), {}
    for cell in ("ce", "root_k8"):
        seen[cell] = []
        vg.run_one(args, cell, 0, data, on_batch=lambda idx, cell=cell: seen[cell].append(idx.clone()))
    assert len(seen["ce"]) == 2 * (40 // 8)
    assert all(torch.equal(x, y) for x, y in zip(seen["ce"], seen["root_k8"]))
    assert not torch.equal(seen["ce"][0], seen["ce"][5])  # a new order each epoch


def test_epoch_plan_depends_on_seed_and_epoch_only():
    p, q = vg.epoch_plan(3, 1, 50, 2), vg.epoch_plan(3, 1, 50, 2)
    assert all(torch.equal(p[k], q[k]) for k in p)
    assert not torch.equal(p["order"], vg.epoch_plan(4, 1, 50, 2)["order"])
    assert not torch.equal(p["order"], vg.epoch_plan(3, 2, 50, 2)["order"])


def test_augment_flips_and_crops():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float).view(2, 1, 3, 3)
    out = vg.augment(x, torch.tensor([True, False]), torch.tensor([[1, 1], [0, 0]]), pad=1)
    assert torch.equal(out[0], x[0].flip(2))  # offset (1, 1) is the uncropped centre
    assert out[1, 0, 0, 0] == 0 and out[1, 0, 1, 1] == x[1, 0, 0, 0]  # shifted by one, zero border


def test_grid_skips_finished_runs(tmp_path, monkeypatch):
    args = grid_args(tmp_path, "--cells", "ce", "--seeds", "0", "1")
    vg.main(args)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["done"] == summary["planned"] == 2
    assert [r["seed"] for r in summary["rows"]] == [0, 1] and len(summary["rows"][0]["acc_curve"]) == 2

    def fail(*a, **k):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(vg, "run_one", fail)
    vg.main(args)


def test_committed_summary_stands_in_for_lost_run_directories(tmp_path, monkeypatch):
    """A new machine has the committed summary but no runs/: nothing is retrained and no row is dropped."""
    args = grid_args(tmp_path, "--cells", "ce", "--seeds", "0", "1")
    vg.main(args)
    before = json.loads((tmp_path / "summary.json").read_text())
    shutil.rmtree(tmp_path / "runs")

    def fail(*a, **k):
        raise AssertionError("a run recorded in the summary was trained again")
    monkeypatch.setattr(vg, "run_one", fail)
    vg.main(args)
    after = json.loads((tmp_path / "summary.json").read_text())
    assert after["done"] == 2 and after["rows"] == before["rows"]
    # a row recorded under another protocol does not count
    other = grid_args(tmp_path, "--cells", "ce", "--seeds", "0", "--lr", "3e-2")
    assert vg.recorded(other, "ce", 0, vg.committed_rows(other)) is None


def test_interrupted_run_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    args = grid_args(tmp_path, "--cells", "root_k5", "--seeds", "0", "--epochs", "3")
    data = tiny_data(args)
    reference = vg.run_one(args, "root_k5", 0, data)
    args.runs = str(tmp_path / "runs2")
    real_evaluate, calls = vg.evaluate, []

    def interrupt_at_second_epoch(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)
    monkeypatch.setattr(vg, "evaluate", interrupt_at_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        vg.main(args)
    monkeypatch.setattr(vg, "evaluate", real_evaluate)
    vg.main(args)
    lines = (tmp_path / "runs2" / "root_k5_s0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    resumed = json.loads((tmp_path / "runs2" / "root_k5_s0" / "results.json").read_text())
    assert resumed["acc"] == reference["acc"] and resumed["val_loss"] == pytest.approx(reference["val_loss"])


def test_k_schedule_cells_change_k_per_epoch():
    _, k0 = vg.loss_at(vg.CELLS["sched_exp_max"], 0)
    _, k30 = vg.loss_at(vg.CELLS["sched_exp_max"], 30)
    assert (k0, k30) == (5.0, 10.0)
    assert vg.loss_at(vg.CELLS["root_k8"], 9)[1] == 8.0 and vg.loss_at(vg.CELLS["ce"], 3)[1] is None


def test_plateau_criterion():
    rising = [10, 30, 40, 50, 55, 58, 60, 61]
    assert vg.plateau(rising + [61.2, 60.8])
    assert not vg.plateau(rising + [62, 61])  # fell 1 point below the best of the last 2 epochs


def test_load_cifar_decodes_the_tar_once_into_its_npz_cache(tmp_path):
    tar = fake_data.make_jpeg_tar(tmp_path / "c.tar.gz", classes=("truck", "airplane"), per_class=1)
    out = vg.load_cifar(tar, str(tmp_path / "cache"))
    assert out["train"][0].shape == (2, 32, 32, 3) and list(out["train"][1]) == [0, 9]
    with np.load(tmp_path / "cache" / "cifar10_jpeg_u8.npz") as z:  # the name and keys a running grid reads
        assert sorted(z.files) == ["test_x", "test_y", "train_x", "train_y"] and z["train_x"].dtype == np.uint8
        assert np.array_equal(z["test_y"], out["test"][1])
    os.remove(tar)
    assert np.array_equal(vg.load_cifar(tar, str(tmp_path / "cache"))["train"][0], out["train"][0])


def test_missing_tar_is_a_usage_error(tmp_path):
    with pytest.raises(vg.UsageError):
        vg.load_cifar(str(tmp_path / "none.tar.gz"), str(tmp_path / "cache"))


def test_summary_only_without_runs(tmp_path):
    args = grid_args(tmp_path, "--summary-only")
    vg.main(args)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["done"] == 0 and summary["planned"] == (len(vg.CELLS) - 1) * 8 + 2
    assert not os.path.exists(tmp_path / "runs")


def test_shards_split_the_plan(tmp_path):
    plan = vg.plan_runs(grid_args(tmp_path))
    shards = [vg.my_runs(grid_args(tmp_path, "--shard", f"{i}/3")) for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(plan) and len(set(sum(shards, []))) == len(plan)
    with pytest.raises(vg.UsageError):
        vg.my_runs(grid_args(tmp_path, "--shard", "3/3"))
