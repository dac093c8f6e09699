"""train.py end to end on tiny data: results files, checkpoint contract, exact resume, mid-epoch stop,
NaN stop, eval-only, one-line usage errors, a 2-process gloo DDP run and the issue's 'done when' command."""
import json
import math
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

from utils.cli import UsageError
from utils.runio import read_jsonl

KEYS = ("kind", "config", "model", "optimizer", "scheduler", "scaler", "epoch", "best_acc", "rng")
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


def _spawn(worker, *args):
    ctx = mp.spawn(worker, args=args, nprocs=2, join=False)
    deadline = time.monotonic() + 240  # a hung process group must fail the test, not stall CI
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("2-process gloo run did not finish within 240 s")


# simplevit: no batch norm and no dropout, so 2 processes x batch 8 compute what 1 process x batch 16 does
DDP_NET = ["--net", "simplevit", "--dimhead", "32", "--noaug", "--n_epochs", "2"]


def _ddp_worker(rank, world, port, argv):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train.main(train.parse_args(argv))


def test_two_process_gloo_ddp_matches_one_process(tmp_path):
    """DDP (2 x batch 8, stopped after one step and resumed) against one process (batch 16): same weights
    within 1e-5, same train metrics (the partial sums of both processes are reduced before saving)."""
    ddp, single = str(tmp_path / "ddp"), str(tmp_path / "single")
    _spawn(_ddp_worker, 2, _free_port(), [*TINY, *DDP_NET, "--bs", "8", "--max-steps", "1", "--out", ddp])
    partial = load_checkpoint(os.path.join(ddp, "checkpoint.pt"))["partial"]
    assert partial["batches"] == 1 and partial["sums"]["seen"] == 16  # both processes' 8 examples
    _spawn(_ddp_worker, 2, _free_port(), [*TINY, *DDP_NET, "--bs", "8", "--out", ddp, "--resume"])
    run(tmp_path, "single", *DDP_NET)
    with open(os.path.join(ddp, "results.json")) as f:
        results = json.load(f)
    assert results["world_size"] == 2 and results["status"] == "finished" and results["steps"] == 6
    a = load_checkpoint(os.path.join(ddp, "checkpoint.pt"))["model"]
    b = load_checkpoint(os.path.join(single, "checkpoint.pt"))["model"]
    assert max((a[key] - b[key]).abs().max().item() for key in a) < 1e-5
    for mine, ref in zip(metrics(ddp), metrics(single)):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key


def test_ddp_mid_epoch_resume_continues_every_process_rng(tmp_path):
    """With augmentation, a 2-process run stopped after one step and resumed ends with the weights of an
    uninterrupted 2-process run: each process's RNG (its augmentation draws) is saved and restored."""
    net = [a for a in DDP_NET if a != "--noaug"]
    stopped, whole = str(tmp_path / "stopped"), str(tmp_path / "whole")
    _spawn(_ddp_worker, 2, _free_port(), [*TINY, *net, "--bs", "8", "--max-steps", "1", "--out", stopped])
    assert len(load_checkpoint(os.path.join(stopped, "checkpoint.pt"))["rng_ranks"]) == 2
    _spawn(_ddp_worker, 2, _free_port(), [*TINY, *net, "--bs", "8", "--out", stopped, "--resume"])
    _spawn(_ddp_worker, 2, _free_port(), [*TINY, *net, "--bs", "8", "--out", whole])
    a = load_checkpoint(os.path.join(stopped, "checkpoint.pt"))["model"]
    b = load_checkpoint(os.path.join(whole, "checkpoint.pt"))["model"]
    assert max((a[key] - b[key]).abs().max().item() for key in a) < 1e-6


def test_done_when_command_on_fake_cifar100(tmp_path):
    data = fake_data.make_cifar100(tmp_path / "D", n_train=80, n_test=10)
    results = train.main(train.parse_args(["--dataset", "cifar100", "--net", "Swin", "--k", "8", "--m", "10",
                                           "--data-dir", str(data), "--n_epochs", "1", "--subset", "64",
                                           "--out", str(tmp_path / "swin")]))
    assert results["status"] == "finished" and results["n_train"] == 64 and results["net"] == "swin"


# ----- the run directory: refusals, resume checks, order of writes, eval-only, OS errors
def test_existing_run_is_refused_and_overwrite_moves_it_aside(tmp_path, capsys):
    first, out = run(tmp_path, "r", "--n_epochs", "1")
    with pytest.raises(SystemExit) as exit_info:
        train.run_cli(train.main, train.parse_args([*TINY, "--out", out, "--n_epochs", "1"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "--resume" in err[0] and "--overwrite" in err[0]
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f) == first  # nothing lost
    run(tmp_path, "r", "--n_epochs", "1", "--overwrite")
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("r.old-")]
    assert len(aside) == 1 and json.loads((aside[0] / "results.json").read_text()) == first


def test_default_run_names_differ_in_what_readme_examples_change():
    names = {train.default_out(train.parse_args(extra)) for extra in
             ([], ["--lr", "1e-3"], ["--opt", "sgd"], ["--bs", "128"], ["--n_epochs", "10"], ["--size", "64"],
              ["--k-schedule", "linear"], ["--k-step", "2", "--k-schedule", "linear"], ["--loss", "ce"])}
    assert len(names) == 9
    assert train.default_out(train.parse_args([])) == train.default_out(train.parse_args(["--workers", "4"]))


@pytest.mark.parametrize("change,needle", [
    (["--lr", "1e-2"], "--lr"), (["--seed", "1"], "--seed"), (["--bs", "8"], "--bs"),
    (["--loss", "ce"], "--loss"), (["--dimhead", "64"], "--dimhead"), (["--k", "4"], "--k"),
])
def test_resume_refuses_another_defining_setting(tmp_path, capsys, change, needle):
    _, out = run(tmp_path, "r", "--n_epochs", "2", "--max-steps", "2")
    with pytest.raises(SystemExit) as exit_info:
        train.run_cli(train.main, train.parse_args([*TINY, "--out", out, "--n_epochs", "2", "--resume", *change]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and needle in err[0] and "(saved)" in err[0]


def test_resume_with_more_epochs_continues_the_cosine_over_the_new_length(tmp_path):
    _, out = run(tmp_path, "r", "--n_epochs", "2")
    run(tmp_path, "r", "--n_epochs", "4", "--resume")
    lrs = [r["lr"] for r in metrics(out)]
    cosine = [1e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in (2, 3)]
    assert lrs[:2] == pytest.approx([1e-3, 5e-4]) and lrs[2:] == pytest.approx(cosine)
    config = json.loads(open(os.path.join(out, "config.json")).read())
    assert config["n_epochs"] == 4 and config["resumes"][-1]["changed"]["n_epochs"] == 4


def test_a_kill_between_checkpoint_and_metrics_line_resumes_cleanly(tmp_path, monkeypatch):
    """checkpoint.pt is written before the metrics line: a kill between them loses no row, and a torn or
    extra row after the checkpoint's epoch is trimmed on resume."""
    run(tmp_path, "ref", "--n_epochs", "3")
    real_log = train.RunDir.log

    def killed_at_epoch_2(self, record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # stands for kill -9 right after checkpoint.pt and best.pt
        real_log(self, record)
    monkeypatch.setattr(train.RunDir, "log", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "r", "--n_epochs", "3")
    monkeypatch.setattr(train.RunDir, "log", real_log)
    out = str(tmp_path / "r")
    assert [r["epoch"] for r in read_jsonl(os.path.join(out, "metrics.jsonl"))] == [1]
    assert load_checkpoint(os.path.join(out, "checkpoint.pt"))["epoch"] == 2
    run(tmp_path, "r", "--n_epochs", "3", "--resume")
    assert metrics(out) == metrics(str(tmp_path / "ref"))
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write('{"epoch": 9, "val_acc": 1}\n{"epo')  # a row from beyond the checkpoint, then a torn line
    run(tmp_path, "r", "--n_epochs", "3", "--resume")
    assert metrics(out) == metrics(str(tmp_path / "ref"))


def test_best_pt_is_the_best_epoch(tmp_path):
    results, out = run(tmp_path, "r", "--n_epochs", "3")
    best = load_checkpoint(os.path.join(out, "best.pt"))
    accs = [r["val_acc"] for r in metrics(out)]
    assert best["epoch"] == results["best_epoch"] == accs.index(max(accs)) + 1 and best["best_acc"] == max(accs)


def test_stop_request_between_epochs_is_honoured(tmp_path, monkeypatch):
    """One-batch epochs: the signal arrives during evaluation, never between batches."""
    real = train.evaluate

    def signal_during_eval(run_, loss_fn):
        if run_.epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(run_, loss_fn)
    monkeypatch.setattr(train, "evaluate", signal_during_eval)
    results, out = run(tmp_path, "r", "--n_epochs", "5", "--subset", "16")
    assert results["status"] == "interrupted" and results["epochs_done"] == 1
    assert load_checkpoint(os.path.join(out, "checkpoint.pt"))["partial"] is None


def test_eval_only_writes_its_own_file_and_leaves_the_run_alone(tmp_path):
    _, out = run(tmp_path, "r", "--n_epochs", "1")
    names = ("config.json", "results.json", "metrics.jsonl", "checkpoint.pt", "best.pt")
    before = {name: open(os.path.join(out, name), "rb").read() for name in names}
    evaluated, _ = run(tmp_path, "r", "--eval-only", "--resume", "--test-subset", "16")
    assert evaluated["status"] == "eval" and json.load(open(os.path.join(out, "eval.json"))) == evaluated
    assert {name: open(os.path.join(out, name), "rb").read() for name in names} == before
    elsewhere = tmp_path / "e" / "mine.json"
    run(tmp_path, "r", "--eval-only", "--resume", "--eval-file", str(elsewhere))
    assert json.load(open(elsewhere))["status"] == "eval"


def test_out_is_a_file_or_the_disk_is_full_exits_2_with_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        train.run_cli(train.main, train.parse_args([*TINY, "--out", str(tmp_path / "f"), "--n_epochs", "1"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "not a directory" in err[0]

    def full(*a, **k):
        raise OSError(28, "No space left on device", "checkpoint.pt")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(SystemExit) as exit_info:
        train.run_cli(train.main, train.parse_args([*TINY, "--out", str(tmp_path / "g"), "--n_epochs", "1"]))
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "No space left" in err[0]
    assert not (tmp_path / "g").exists()  # no temp file, and no half-started run to refuse next time


def test_a_second_process_on_the_same_run_is_refused(tmp_path):
    from utils.runio import RunDir
    out = str(tmp_path / "r")
    with RunDir(out, {"net": "res18_mini"}):
        with pytest.raises(UsageError, match="in use"):
            train.main(train.parse_args([*TINY, "--out", out, "--n_epochs", "1", "--resume"]))


def test_nan_in_the_first_epoch_names_no_missing_checkpoint(tmp_path, monkeypatch):
    real = train.make_loss
    monkeypatch.setattr(train, "make_loss", lambda args, k: (lambda x, t, **kw: real(args, k)(x, t, **kw) * math.nan))
    with pytest.raises(UsageError, match="step 1 .*no checkpoint had been written yet"):
        run(tmp_path, "nan", "--n_epochs", "1")
    with pytest.raises(UsageError, match="between steps 1 and 2 "):
        run(tmp_path, "nan2", "--n_epochs", "1", "--sync-every", "2")
    assert not os.path.exists(tmp_path / "nan")  # a run that wrote nothing leaves nothing to refuse


def test_each_rank_draws_its_own_augmentation_but_rank_0_keeps_the_old_seed():
    assert train.epoch_seed(3, 2, 0) == 3 * 100_003 + 2
    assert len({train.epoch_seed(3, 2, rank) for rank in range(4)}) == 4


# ----- no host sync per step
SYNCS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__")


def test_no_host_sync_or_all_reduce_per_step(tmp_path, monkeypatch):
    """Counted with mocks: tensor->host reads made by train.py, and all-reduces, over a 20-step epoch with
    --sync-every 5, as if under DDP (world 2, all_reduce mocked): one per sync point plus the epoch end."""
    import torch.distributed as dist
    args = train.parse_args([*TINY, "--subset", "160", "--bs", "8", "--sync-every", "5", "--out",
                             str(tmp_path / "r")])
    run_ = train.Run(args, {})
    run_.world = 2
    counts = {"host": 0, "all_reduce": 0}
    for name in SYNCS:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            if sys._getframe(1).f_code.co_filename == train.__file__:
                counts["host"] += 1
            return _real(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: counts.__setitem__("all_reduce",
                                                                                  counts["all_reduce"] + 1))
    result = train.train_epoch(run_, train.make_loss(args, args.k))
    assert run_.step == 20 and result["train_images"] == 160
    assert counts["all_reduce"] == 20 // 5 + 1 and counts["host"] == 20 // 5 + 1


@pytest.mark.parametrize("opt", ["adam", "adamw", "sgd"])
def test_fp16_grad_scaler_step_reads_nothing_on_the_host(opt, monkeypatch):
    """fp16 runs build a fused optimizer: GradScaler.step hands it found_inf on the device instead of reading
    it with .item() every step (the unfused optimizer does read it: the count is checked both ways)."""
    def host_reads(fused):
        model = torch.nn.Linear(4, 2)
        optimizer = train.make_optimizer(opt, model.parameters(), 1e-3, fused=fused)
        scaler = torch.amp.GradScaler("cpu")
        reads = []
        real = torch.Tensor.item
        monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(1) or real(self))
        for _ in range(3):
            optimizer.zero_grad()
            scaler.scale(model(torch.randn(8, 4)).pow(2).mean()).backward()
            scaler.step(optimizer)
            scaler.update()
        monkeypatch.setattr(torch.Tensor, "item", real)
        return len(reads)
    assert host_reads(fused=False) >= 3 and host_reads(fused=True) == 0


def test_compile_and_channels_last_on_cpu(tmp_path, monkeypatch):
    plain, _ = run(tmp_path, "plain", "--n_epochs", "1")
    fast, out = run(tmp_path, "fast", "--n_epochs", "1", "--channels-last")
    assert fast["final_acc"] == pytest.approx(plain["final_acc"])
    assert fast["final_val_loss"] == pytest.approx(plain["final_val_loss"], rel=2e-3)  # other conv kernels
    compiled = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or real_compile(model, backend="eager"))
    results, _ = run(tmp_path, "compiled", "--n_epochs", "1", "--compile")
    assert len(compiled) == 1 and results["final_val_loss"] == pytest.approx(plain["final_val_loss"], rel=1e-4)


def test_progress_lines_without_a_terminal(tmp_path, capsys):
    run(tmp_path, "r", "--n_epochs", "1", "--log-every", "1e-9")
    err = capsys.readouterr().err
    assert "epoch 1/1: 1/3" in err and "epoch 1/1: 3/3" in err and " loss " in err
