"""SIGTERM / SIGINT sent to the whole process group (what `timeout`, SLURM's scancel, `kill -- -PGID` and
Ctrl-C do) reach the DataLoader workers too: the run still saves and exits 0, and resumes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.utils.data

import train
from utils.checkpoint import load_checkpoint
from utils.runio import REPO, read_jsonl

ARGV = ["--dataset", "digits", "--net", "res18_mini", "--size", "8", "--bs", "16", "--subset", "480",
        "--test-subset", "32", "--lr", "1e-3", "--device", "cpu", "--threads", "1", "--workers", "2"]


def wait_for_first_epoch(proc, out, limit=300):
    deadline = time.monotonic() + limit
    while not read_jsonl(os.path.join(out, "metrics.jsonl")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never finished an epoch: {proc.communicate()[1][-2000:]}")
        time.sleep(0.5)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_process_group_saves_and_exits_0(tmp_path, sig):
    out = str(tmp_path / "pg")
    proc = subprocess.Popen([sys.executable, "train.py", *ARGV, "--n_epochs", "500", "--out", out], cwd=REPO,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    wait_for_first_epoch(proc, out)
    time.sleep(1.0)  # into the next epoch, with its workers running
    os.killpg(proc.pid, sig)  # kill -- -PGID
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["status"] == "interrupted"
    saved = load_checkpoint(os.path.join(out, "checkpoint.pt"))
    assert saved["step"] == results["steps"] > 0
    more = train.main(train.parse_args([*ARGV, "--workers", "0", "--n_epochs", str(saved["epoch"] + 1),
                                        "--out", out, "--resume"]))
    assert more["status"] == "finished" and more["epochs_done"] == saved["epoch"] + 1


class Dispositions(torch.utils.data.Dataset):
    """Each item: whether the worker that loads it ignores SIGTERM and SIGINT."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.tensor([signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,
                             signal.getsignal(signal.SIGINT) == signal.SIG_IGN])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_loader_workers_ignore_the_group_signals(tmp_path, context, monkeypatch):
    """With fork, workers inherit the main process's handler, so the test above passes either way; with spawn
    or forkserver they start with the default action (die). worker_init_fn makes them ignore both."""
    args = train.parse_args(["--workers", "2", "--device", "cpu", "--out", str(tmp_path)])
    run_ = type("R", (), {"args": args, "device": torch.device("cpu")})()
    real = torch.utils.data.DataLoader
    monkeypatch.setattr(torch.utils.data, "DataLoader",
                        lambda *a, **k: real(*a, multiprocessing_context=context, **k))
    batches = list(train.make_loader(run_, Dispositions(), 2))
    assert torch.cat(batches).all()
