import json
import os
import stat

import torch

from utils import runio


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
    assert saved["lr"] == 0.1 and "git_commit" in saved and config == saved
