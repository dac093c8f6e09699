"""utils/launch.py: torchrun whose exit status is 0 when a stop signal ended a run the workers saved cleanly."""
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from torch.distributed.elastic.multiprocessing import SignalException
from torch.distributed.elastic.multiprocessing.api import SubprocessContext

from utils import launch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["train.py", "--dataset", "digits", "--net", "res18_mini", "--size", "8", "--bs", "16", "--subset", "480",
         "--test-subset", "32", "--workers", "0", "--device", "cpu", "--threads", "1", "--n_epochs", "500"]


def test_sigterm_to_the_process_group_exits_0_and_saves(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "utils.launch", "--standalone", "--nproc-per-node", "2", *TRAIN,
                             "--out", str(out)], cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint.pt").exists():  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended or never started"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)  # what timeout, scancel and kill -- -PGID send
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log[-2000:]
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"
    assert "workers stopped cleanly" in log


@pytest.mark.parametrize("sigval, code", [(signal.SIGTERM, 1), (signal.SIGKILL, 0), (signal.SIGHUP, 0)])
def test_other_outcomes_stay_torchruns_failure(monkeypatch, sigval, code):
    """A worker that did not exit 0, or a signal that is not a stop request, is re-raised as torchrun does."""
    monkeypatch.setattr(SubprocessContext, "_close", lambda self, death_sig, timeout=30: None)

    def fake_torchrun(argv):
        worker = SimpleNamespace(proc=SimpleNamespace(returncode=code))
        SubprocessContext._close(SimpleNamespace(subprocess_handlers={0: worker, 1: worker}), sigval)
        raise SignalException("got signal", sigval=sigval)
    monkeypatch.setattr(launch.torchrun, "main", fake_torchrun)
    with pytest.raises(SignalException):
        launch.main([])


def test_clean_stop_returns_0_and_restores_torchrun(monkeypatch):
    real = SubprocessContext._close
    monkeypatch.setattr(SubprocessContext, "_close", lambda self, death_sig, timeout=30: None)
    patched = SubprocessContext._close

    def fake_torchrun(argv):
        worker = SimpleNamespace(proc=SimpleNamespace(returncode=0))
        SubprocessContext._close(SimpleNamespace(subprocess_handlers={0: worker}), signal.SIGTERM)
        raise SignalException("got signal", sigval=signal.SIGTERM)
    monkeypatch.setattr(launch.torchrun, "main", fake_torchrun)
    assert launch.main([]) == 0 and SubprocessContext._close is patched and patched is not real
