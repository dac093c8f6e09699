"""stylegan_patch/run.py on a stand-in clone written here: upstream's layout, CUDA-only habits, tiny loop.

The stand-in has what the runner patches in upstream (a training loop that hard-codes
torch.device('cuda', rank) and times itself with torch.cuda events, pins memory, builds an
InfiniteSampler that passes its dataset to Sampler.__init__, reports losses through
torch_utils.training_stats) and a click train.py; it is our own code, not upstream's. The real clone
is exercised by tests/test_stylegan_smoke.py when STYLEGAN2_ADA_CLONE is set.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from stylegan_patch import run as runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FILES = {
    "torch_utils/__init__.py": "",
    "torch_utils/misc.py": """\
import torch

class InfiniteSampler(torch.utils.data.Sampler):
    def __init__(self, dataset, seed=0):
        super().__init__(dataset)
        self.dataset = dataset
""",
    "torch_utils/training_stats.py": """\
def report(name, value):
    return value
""",
    "training/__init__.py": "",
    "training/training_loop.py": """\
import json
import os
import numpy as np
import torch
from torch_utils import misc, training_stats

def setup_snapshot_image_grid(training_set, random_seed=0):
    return (4, 3), np.zeros([12, 1, 2, 2]), np.zeros([12, 0], dtype=np.float32)

def training_loop(run_dir='.', batch_size=4, total_kimg=25, kimg_per_tick=4, rank=0):
    device = torch.device('cuda', rank)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(torch.cuda.current_stream(device))
    misc.InfiniteSampler(list(range(10)))
    grid, images, labels = setup_snapshot_image_grid(None)
    torch.from_numpy(labels).pin_memory().to(device)
    nimg, iters = 0, 0
    while nimg < total_kimg * 1000:
        logits = torch.randn([batch_size], device=device)
        training_stats.report('Loss/scores/fake', logits)
        training_stats.report('Loss/G/loss', torch.nn.functional.softplus(-logits))
        nimg, iters = nimg + batch_size, iters + 1
    end.record(torch.cuda.current_stream(device))
    end.synchronize()
    info = dict(device=str(device), iters=iters, grid=list(grid), images=len(images),
                ms=start.elapsed_time(end), peak=torch.cuda.max_memory_allocated(device),
                kimg_per_tick=kimg_per_tick)
    torch.cuda.reset_peak_memory_stats()
    with open(os.path.join(run_dir, 'info.json'), 'w') as f:
        json.dump(info, f)
""",
    "train.py": """\
import click
from training import training_loop

@click.command()
@click.option('--outdir', required=True)
@click.option('--gpus', type=int, default=1)
@click.option('--kimg', type=int, default=25)
def main(outdir, gpus, kimg):
    training_loop.training_loop(run_dir=outdir, batch_size=4, total_kimg=kimg, rank=0)

if __name__ == '__main__':
    main()
""",
}


@pytest.fixture
def clone(tmp_path):
    for rel, text in FILES.items():
        path = tmp_path / "clone" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "clone"


def run(clone, *argv):
    pytest.importorskip("click")
    cmd = [sys.executable, "-m", "stylegan_patch.run", str(clone), *[str(a) for a in argv]]
    return subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)


def test_runs_a_cuda_only_loop_on_the_cpu_for_a_few_steps(clone, tmp_path):
    trace = tmp_path / "trace.jsonl"
    proc = run(clone, "--device", "cpu", "--steps", 3, "--grid-rows", 1, "--trace", trace,
               "--", "--outdir", tmp_path, "--kimg", 1)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["device"] == "cpu" and info["iters"] == 3 and info["peak"] == 0 and info["ms"] >= 0
    assert info["grid"] == [4, 1] and info["images"] == 4
    assert info["kimg_per_tick"] == pytest.approx(0.012)  # one tick after the first step, one at the end
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [r["name"] for r in records] == ["Loss/scores/fake", "Loss/G/loss"] * 3
    fake, g_loss = torch.tensor(records[0]["values"]), torch.tensor(records[1]["values"])
    torch.testing.assert_close(g_loss, torch.nn.functional.softplus(-fake))


def test_without_the_controls_the_script_keeps_its_own_settings(clone, tmp_path):
    proc = run(clone, "--device", "cpu", "--", "--outdir", tmp_path, "--kimg", 1)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["iters"] == 250 and info["grid"] == [4, 3] and info["kimg_per_tick"] == 4


def test_script_errors_are_one_line(clone, tmp_path):
    proc = run(clone, "--device", "cpu", "--", "--outdir", tmp_path, "--bogus", 1)
    assert proc.returncode == 2 and proc.stderr.startswith("error: train.py: ")
    assert proc.stderr.count("\n") == 1 and "--bogus" in proc.stderr


@pytest.mark.parametrize("argv,words", [
    (["{missing}"], "not found"),
    (["{clone}", "--steps", "0"], "--steps"),
    (["{clone}", "--device", "cpu", "--", "--gpus=2"], "--gpus"),
    (["{clone}", "--device", "cpu", "--", "--gpus", "4"], "--gpus"),
    (["{clone}", "--script", "style_mixing.py"], "invalid choice"),
])
def test_user_errors_exit_2_with_one_line(clone, tmp_path, capsys, argv, words):
    argv = [a.format(clone=clone, missing=tmp_path / "nowhere") for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(runner.main, runner.parse_args(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and words in err


def test_several_gpus_are_refused_with_cuda_too(clone, monkeypatch, capsys):
    """The spawned workers would import train.py from sys.path, without the clone's modules or the patches."""
    monkeypatch.setattr(runner, "resolve_device", lambda device: "cuda")
    with pytest.raises(SystemExit) as exit_info:
        runner.run_cli(runner.main, runner.parse_args([str(clone), "--", "--gpus=2"]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "--gpus=1" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_requested_without_cuda(clone, capsys):
    with pytest.raises(SystemExit):
        runner.run_cli(runner.main, runner.parse_args([str(clone), "--device", "cuda"]))
    assert "no CUDA" in capsys.readouterr().err


def test_parse_args_splits_at_the_double_dash():
    args = runner.parse_args(["C", "--steps", "2", "--", "--outdir", "o", "--steps", "x"])
    assert args.clone == "C" and args.steps == 2 and args.script_args == ["--outdir", "o", "--steps", "x"]
    assert runner.parse_args(["C"]).script_args == []
    assert runner.gpus_requested(["--gpus=8"]) == 8 and runner.gpus_requested(["--gpus", "2"]) == 2
    assert runner.gpus_requested(["--outdir", "x"]) == 1


def test_sampler_base_gets_a_data_source_argument():
    class Sampler(torch.utils.data.Sampler):
        def __init__(self, dataset):
            super().__init__(dataset)

    try:
        Sampler([1])
        pytest.skip("this torch's Sampler still takes data_source")
    except TypeError:
        pass
    assert runner.allow_sampler_data_source(Sampler) is True
    assert isinstance(Sampler([1]), torch.utils.data.Sampler)
    assert runner.allow_sampler_data_source(Sampler) is False  # already done: left alone


def test_torch_on_cpu_maps_cuda_devices_and_times_with_the_clock():
    on_cpu = runner.TorchOnCpu(torch)
    assert on_cpu.device("cuda", 1) == torch.device("cpu") and on_cpu.device("cuda").type == "cpu"
    assert on_cpu.device("meta").type == "meta"
    assert on_cpu.zeros(2, device=on_cpu.device("cuda", 0)).device.type == "cpu"
    start, end = on_cpu.cuda.Event(enable_timing=True), on_cpu.cuda.Event(enable_timing=True)
    start.record(on_cpu.cuda.current_stream(None))
    sum(range(10000))
    end.record()
    assert end.elapsed_time(start) <= 0 <= start.elapsed_time(end)
    assert on_cpu.cuda.max_memory_allocated(0) == 0 and on_cpu.cuda.is_available() == torch.cuda.is_available()


def test_a_missing_upstream_dependency_is_one_line(clone):
    (clone / "generate.py").write_text("import rlo_no_such_module\n")
    proc = run(clone, "--device", "cpu", "--script", "generate.py")
    assert proc.returncode == 2 and "'rlo_no_such_module'" in proc.stderr and proc.stderr.count("\n") == 1


def test_processes_the_script_spawns_import_the_clone_too(clone, tmp_path):
    """Upstream's DataLoader workers are spawned and unpickle training.dataset classes: the runner re-runs
    itself with the clone on PYTHONPATH, so they find the clone's packages as the script does."""
    (clone / "training" / "spawned.py").write_text("def where(_):\n    import torch_utils\n    return torch_utils.__file__\n")
    (clone / "train.py").write_text("""\
import json
import multiprocessing
import sys
import click
from training import spawned

@click.command()
@click.option('--outdir', required=True)
def main(outdir):
    with multiprocessing.get_context('spawn').Pool(1) as pool:
        found = pool.map(spawned.where, [0])[0]
    with open(outdir + '/spawned.json', 'w') as f:
        json.dump({'worker': found, 'main': spawned.__file__, 'path': sys.path}, f)
""")
    proc = run(clone, "--device", "cpu", "--", "--outdir", tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = json.loads((tmp_path / "spawned.json").read_text())
    assert found["worker"] == str(clone / "torch_utils" / "__init__.py")
    assert found["main"] == str(clone / "training" / "spawned.py") and str(clone) in found["path"]
