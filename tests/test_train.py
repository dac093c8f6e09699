"""train.py end to end on tiny data: results files, checkpoint contract, exact resume, mid-epoch stop,
NaN stop, eval-only, one-line usage errors, a 2-process gloo DDP run and the issue's 'done when' command."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

import train
from tests import fake_data
from utils.checkpoint import load_checkpoint

KEYS = ("kind", "config", "model", "optimizer", "scheduler", "scaler", "epoch", "best_acc", "rng")
from utils.cli import UsageError
from utils.runio import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--dataset", "digits", "--net", "res18_mini", "--size", "8", "--bs", "16", "--subset", "48",
        "--test-subset", "32", "--workers", "0", "--lr", "1e-3", "--device", "cpu", "--threads", "1"]
TIMING = {"epoch_s", "train_s", "images_per_s"}


def run(tmp_path, name, *extra):
    out = str(tmp_path / name)
    return train.main(train.parse_args([*TINY, "--out", out, *extra])), out


def metrics(out):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(os.path.join(out, "metrics.jsonl"))]


def test_end_to_end_writes_run_directory(tmp_path):
    results, out = run(tmp_path, "e2e", "--n_epochs", "2", "--loss", "root", "--k", "8", "--m", "10")
    assert results["status"] == "finished" and results["epochs_done"] == 2 and results["steps"] == 6
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f) == results
    rows = read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_ce", "lr", "k", "epoch_s",
            "images_per_s"} <= set(rows[0])
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["net"] == "res18_mini"
    ckpt = load_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert set(KEYS) <= set(ckpt) and ckpt["epoch"] == 2
    assert {"net", "dataset", "size", "patch", "dimhead", "loss", "k", "m", "data_dir"} <= set(ckpt["config"])
    assert os.path.exists(os.path.join(out, "best.pt"))
    evaluated = train.main(train.parse_args([*TINY, "--out", out, "--eval-only", "--resume", "--loss", "root",
                                             "--k", "8", "--m", "10"]))
    assert evaluated["status"] == "eval" and evaluated["val_acc"] == pytest.approx(rows[-1]["val_acc"])


def test_resume_is_exact(tmp_path):
    run(tmp_path, "straight", "--n_epochs", "4")
    stopped, _ = run(tmp_path, "split", "--n_epochs", "4", "--max-steps", "4")  # 3 steps per epoch
    assert stopped["status"] == "max_steps"
    partial = load_checkpoint(str(tmp_path / "split" / "checkpoint.pt"))
    assert partial["epoch"] == 1 and partial["partial"]["batches"] == 1  # stopped inside epoch 2
    results, _ = run(tmp_path, "split", "--n_epochs", "4", "--resume")
    assert results["status"] == "finished" and results["steps"] == 12
    assert metrics(str(tmp_path / "split")) == metrics(str(tmp_path / "straight"))


def test_resume_across_epoch_boundary_is_exact(tmp_path):
    run(tmp_path, "a", "--n_epochs", "3", "--loss", "focal")
    run(tmp_path, "b", "--n_epochs", "3", "--loss", "focal", "--max-steps", "3")
    run(tmp_path, "b", "--n_epochs", "3", "--loss", "focal", "--resume")
    assert metrics(str(tmp_path / "b")) == metrics(str(tmp_path / "a"))


def test_sigterm_saves_and_resumes_exactly(tmp_path, monkeypatch):
    real_step, fired = train.train_step, []

    def step_then_signal(run_, *a):
        out = real_step(run_, *a)
        if run_.step == 2 and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # handled by train.main: save and stop
        return out
    monkeypatch.setattr(train, "train_step", step_then_signal)
    stopped, out = run(tmp_path, "sig", "--n_epochs", "2")
    assert stopped["status"] == "interrupted" and stopped["steps"] == 2
    assert load_checkpoint(os.path.join(out, "checkpoint.pt"))["partial"]["batches"] == 2
    run(tmp_path, "sig", "--n_epochs", "2", "--resume")
    run(tmp_path, "ref", "--n_epochs", "2")
    assert metrics(out) == metrics(str(tmp_path / "ref"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = train.make_loss

    def poisoned(args, k):
        fn = real(args, k)
        return lambda logits, target, **kw: fn(logits, target, **kw) * float("nan") if train_epoch_count[0] \
            else fn(logits, target, **kw)
    train_epoch_count = [0]
    original_run_epoch = train.run_epoch

    def counting(run_, logger):
        record = original_run_epoch(run_, logger)
        train_epoch_count[0] += 1
        return record
    monkeypatch.setattr(train, "make_loss", poisoned)
    monkeypatch.setattr(train, "run_epoch", counting)
    with pytest.raises(UsageError, match="loss became nan"):
        run(tmp_path, "nan", "--n_epochs", "3")
    assert load_checkpoint(str(tmp_path / "nan" / "checkpoint.pt"))["epoch"] == 1


def test_bad_net_exits_2_with_one_line_from_the_command_line():
    proc = subprocess.run([sys.executable, "train.py", "--net", "resnet9000"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and "invalid choice" in lines[0]


@pytest.mark.parametrize("argv,needle", [
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/dir", "--net", "res18_mini"], "cifar-10-batches-py"),
    (["--dataset", "digits", "--net", "res18_mini", "--k", "0"], "k must be"),
    (["--dataset", "digits", "--net", "res18_mini", "--bs", "0"], "--bs must be > 0"),
    (["--dataset", "digits", "--net", "res18_mini", "--loss", "nope"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        train.run_cli(train.main, train.parse_args([*argv, "--out", str(tmp_path / "x"), "--threads", "1"]))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]


def test_resume_without_checkpoint_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no run to resume"):
        run(tmp_path, "none", "--resume")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train.main(train.parse_args([*TINY, "--n_epochs", "1", "--out", out]))


def test_two_process_gloo_ddp(tmp_path):
    out = str(tmp_path / "ddp")
    ctx = mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=False)
    deadline = time.monotonic() + 180  # a hung process group must fail the test, not stall CI
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("2-process gloo run did not finish within 180 s")
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results["world_size"] == 2 and results["status"] == "finished"
    assert results["steps"] == 2  # 48 examples / 2 processes / batch 16 -> 2 steps each
    assert load_checkpoint(os.path.join(out, "checkpoint.pt"))["epoch"] == 1


def test_done_when_command_on_fake_cifar100(tmp_path):
    data = fake_data.make_cifar100(tmp_path / "D", n_train=80, n_test=10)
    results = train.main(train.parse_args(["--dataset", "cifar100", "--net", "Swin", "--k", "8", "--m", "10",
                                           "--data-dir", str(data), "--n_epochs", "1", "--subset", "64",
                                           "--out", str(tmp_path / "swin")]))
    assert results["status"] == "finished" and results["n_train"] == 64 and results["net"] == "swin"
