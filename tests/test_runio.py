import json
import os
import re
import stat

import pytest
import torch

from utils import runio
from utils.cli import UsageError
from utils.runio import RunDir, read_jsonl


def test_atomic_writes_keep_mode_and_content(tmp_path):
    path = tmp_path / "a.json"
    runio.atomic_write_json(path, {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    os.chmod(path, 0o751)
    runio.atomic_write_text(path, "{}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o751
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_atomic_torch_save_and_jsonl(tmp_path):
    runio.atomic_torch_save({"w": torch.ones(2)}, tmp_path / "c.pt")
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.ones(2))
    log = tmp_path / "m.jsonl"
    runio.append_jsonl(log, {"epoch": 0})
    runio.append_jsonl(log, {"epoch": 1})
    assert [r["epoch"] for r in runio.read_jsonl(log)] == [0, 1]
    assert runio.read_jsonl(tmp_path / "missing.jsonl") == []


def test_write_config_records_args_and_commit(tmp_path):
    config = runio.write_config(tmp_path, {"lr": 0.1})
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["lr"] == 0.1 and config == saved
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", saved["git_commit"] or "")  # None (no commit found) fails


def test_atomic_writers_never_expose_a_partial_file(tmp_path, monkeypatch):
    """A writer that fails half-way leaves the old file intact and no temp file; and the data is fsynced
    before the rename. A plain open(path, 'w') writer fails both checks."""
    path = tmp_path / "c.pt"
    runio.atomic_torch_save({"w": torch.ones(2)}, path)
    old = path.read_bytes()

    def half_then_crash(obj, f):
        with open(f, "wb") as out:
            out.write(b"PK half a zip")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(OSError):
        runio.atomic_torch_save({"w": torch.zeros(2)}, path)
    assert path.read_bytes() == old and not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
    monkeypatch.undo()
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", os.path.getsize(a))) or
                        real_replace(a, b))
    for write in (lambda: runio.atomic_torch_save({"w": torch.zeros(2)}, path),
                  lambda: runio.atomic_write_json(tmp_path / "a.json", {"x": 1})):
        events.clear()
        write()
        first_replace = next(i for i, e in enumerate(events) if isinstance(e, tuple))
        assert "fsync" in events[:first_replace] and events[first_replace][1] > 0


def test_killed_writer_temp_files_are_cleaned_when_the_run_reopens(tmp_path):
    run = RunDir(str(tmp_path / "r"), {"loss": "ce"})
    run.release()
    (tmp_path / "r" / ".tmp-checkpoint.ptabc").write_bytes(b"torn")
    RunDir(str(tmp_path / "r"), {"loss": "ce"}, resume=True)
    assert not (tmp_path / "r" / ".tmp-checkpoint.ptabc").exists()


def test_a_run_that_fails_before_writing_anything_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with RunDir(str(tmp_path / "r"), {"loss": "ce"}):
            raise RuntimeError("model did not load")
    assert not (tmp_path / "r").exists()
    with pytest.raises(RuntimeError):
        with RunDir(str(tmp_path / "s"), {"loss": "ce"}) as run:
            run.log({"epoch": 1})
            raise RuntimeError("crash after a result")
    assert (tmp_path / "s" / "metrics.jsonl").exists()


def test_resume_records_what_changed(tmp_path):
    RunDir(str(tmp_path / "r"), {"loss": "ce", "n_epochs": 2}).release()
    run = RunDir(str(tmp_path / "r"), {"loss": "ce", "n_epochs": 4}, resume=True, defining=("loss",))
    assert run.config["n_epochs"] == 4 and run.config["resumes"][-1]["changed"] == {"n_epochs": 4}


# ----- RunDir: the one run-directory helper


def test_rundir_writes_config_with_provenance(tmp_path):
    run = RunDir(str(tmp_path / "r"), {"loss": "root", "k": 8})
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["loss"] == "root" and "argv" in config and "versions" in config and "torch" in config["versions"]
    run.log({"epoch": 1})
    run.finish({"acc": 1.0})
    assert run.metrics() == [{"epoch": 1}] and run.read_json("results.json") == {"acc": 1.0}


def test_rundir_refuses_existing_run_without_resume(tmp_path):
    RunDir(str(tmp_path / "r"), {"loss": "ce"}).finish({"acc": 97.5})
    with pytest.raises(UsageError, match="--resume.*--overwrite"):
        RunDir(str(tmp_path / "r"), {"loss": "ce"})
    assert json.loads((tmp_path / "r" / "results.json").read_text()) == {"acc": 97.5}  # nothing lost


def test_rundir_overwrite_moves_old_run_aside(tmp_path):
    first = RunDir(str(tmp_path / "r"), {"loss": "ce"})
    first.finish({"acc": 97.5})
    first.release()
    RunDir(str(tmp_path / "r"), {"loss": "ce"}, overwrite=True)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("r.old-")]
    assert len(aside) == 1 and json.loads((aside[0] / "results.json").read_text()) == {"acc": 97.5}
    assert not (tmp_path / "r" / "results.json").exists()


def test_rundir_resume_checks_defining_settings(tmp_path):
    RunDir(str(tmp_path / "r"), {"loss": "root", "k": 8, "lr": 0.1}).release()
    with pytest.raises(UsageError, match="--k 8 .*saved.* 5 .*now"):
        RunDir(str(tmp_path / "r"), {"loss": "root", "k": 5}, resume=True, defining=("loss", "k"))
    run = RunDir(str(tmp_path / "r"), {"loss": "root", "k": 8}, resume=True, defining=("loss", "k"))
    assert run.config["lr"] == 0.1 and len(run.config["resumes"]) == 1  # the saved config stays in effect


def test_rundir_resume_needs_a_run(tmp_path):
    with pytest.raises(UsageError, match="no run"):
        RunDir(str(tmp_path / "none"), {}, resume=True)


def test_rundir_lock_keeps_a_second_process_out(tmp_path):
    held = RunDir(str(tmp_path / "r"), {"loss": "ce"})  # noqa: F841 (kept alive: holds the lock)
    with pytest.raises(UsageError, match="in use"):
        RunDir(str(tmp_path / "r"), {"loss": "ce"}, resume=True)


def test_rundir_file_in_the_way_is_a_usage_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        RunDir(str(tmp_path / "f"), {})


def test_read_jsonl_tolerates_a_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_jsonl(str(path)) == [{"epoch": 1}, {"epoch": 2}]
    path.write_text('{"epo\n{"epoch": 2}\n')
    with pytest.raises(json.JSONDecodeError):
        read_jsonl(str(path))


def test_trim_metrics(tmp_path):
    run = RunDir(str(tmp_path / "r"), {})
    for e in (1, 2, 3, 3):
        run.log({"epoch": e})
    assert [r["epoch"] for r in run.trim_metrics(lambda r: r["epoch"] <= 2)] == [1, 2]
    assert len(read_jsonl(os.path.join(run.path, "metrics.jsonl"))) == 2
