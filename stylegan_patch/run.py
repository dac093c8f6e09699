"""Run an upstream StyleGAN2-ADA script (train.py, generate.py, projector.py) on a current torch or a CPU.

    python -m stylegan_patch.run CLONE [--device auto|cpu|cuda] [--steps N] [--grid-rows R] [--trace FILE] \
        [--script train.py] -- <the script's own arguments>

Upstream (NVlabs/stylegan2-ada-pytorch, d72cc7d) targets PyTorch 1.7-1.9 on CUDA. Two things stop its
real scripts elsewhere, and this runner works around them in memory, without editing a file of the clone:
- torch_utils/misc.py's InfiniteSampler calls Sampler.__init__(dataset), which current torch no longer
  accepts: its Sampler base gets one that takes (and ignores) the argument.
- training/training_loop.py, generate.py and projector.py hard-code torch.device('cuda'): on a machine
  without CUDA (or with --device cpu) those modules see a `torch` whose 'cuda' devices are the CPU and
  whose torch.cuda timing and memory calls are wall-clock / zero stand-ins; Tensor.pin_memory, which
  fails without an accelerator, returns the tensor itself.
Upstream's custom CUDA ops need no change: bias_act, upfirdn2d and conv2d_gradfix fall back to their own
reference implementations on CPU tensors (grid_sample_gradfix warns and uses torch's).

For short checks of the real training loop: --steps N trains N iterations instead of --kimg (logging two
ticks), --grid-rows R keeps R rows of the snapshot image grids (whose default 32 x 32 images at 16 px take
minutes on a CPU), and --trace FILE writes every loss and logit report (Loss/G/loss, Loss/D/loss,
Loss/scores/fake, Loss/scores/real) of the loss module as JSON lines, element by element.
"""
import importlib
import importlib.util
import json
import os
import re
import sys
import time

import torch

from utils.cli import ArgumentParser, UsageError, run_cli

SCRIPTS = ("train.py", "generate.py", "projector.py")
DEVICES = ("auto", "cpu", "cuda")
TRACED = ("Loss/scores/fake", "Loss/scores/real", "Loss/G/loss", "Loss/D/loss")


# ------------------------------------------------------------------------------- stand-ins on CPU
class WallClockEvent:
    """torch.cuda.Event's timing interface measured with the wall clock (milliseconds)."""

    def __init__(self, enable_timing=False, **_):
        self.time = None

    def record(self, stream=None):
        self.time = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.time - self.time) * 1000.0


class CudaOnCpu:
    """torch.cuda as upstream's training loop uses it, on a machine that runs everything on the CPU."""

    Event = WallClockEvent

    def __init__(self, cuda):
        self._cuda = cuda

    def __getattr__(self, name):
        return getattr(self._cuda, name)

    def current_stream(self, device=None):
        return None

    def max_memory_allocated(self, device=None):
        return 0

    def reset_peak_memory_stats(self, device=None):
        pass


class TorchOnCpu:
    """The torch module as one upstream module sees it: torch.device('cuda', ...) is the CPU."""

    def __init__(self, real_torch):
        self._torch = real_torch
        self.cuda = CudaOnCpu(real_torch.cuda)

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def device(self, *args, **kwargs):
        device = self._torch.device(*args, **kwargs)
        return self._torch.device("cpu") if device.type == "cuda" else device


def _unpinned(tensor, *args, **kwargs):
    return tensor  # nothing can be pinned without an accelerator; the copy to the CPU is a no-op


def allow_sampler_data_source(sampler_class):
    """Let `sampler_class` call Sampler.__init__(dataset) on a torch whose Sampler takes no argument."""
    base = sampler_class.__bases__[0]
    try:
        base.__init__(object.__new__(base), None)
        return False  # this torch still accepts it (PyTorch < 2.x)
    except TypeError:
        pass

    class SamplerTakingDataSource(base):
        def __init__(self, data_source=None):
            super().__init__()

    sampler_class.__bases__ = (SamplerTakingDataSource,) + sampler_class.__bases__[1:]
    return True


# ------------------------------------------------------------------------------ short-run controls
def limit_steps(loop_module, steps):
    """Make training_loop() stop after `steps` iterations: tick 0 after the first, the last at the end."""
    original = loop_module.training_loop

    def training_loop(**kwargs):
        kimg = steps * kwargs.get("batch_size", 4) / 1000
        kwargs.update(total_kimg=kimg, kimg_per_tick=kimg)
        return original(**kwargs)

    loop_module.training_loop = training_loop


def limit_grid(loop_module, rows):
    """Keep the first `rows` rows of the snapshot image grid (reals, fakes_init and fakes*.png)."""
    original = loop_module.setup_snapshot_image_grid

    def setup_snapshot_image_grid(training_set, random_seed=0):
        (gw, gh), images, labels = original(training_set=training_set, random_seed=random_seed)
        n = gw * min(rows, gh)
        return (gw, min(rows, gh)), images[:n], labels[:n]

    loop_module.setup_snapshot_image_grid = setup_snapshot_image_grid


def trace_reports(stats_module, stream):
    """Also write each traced training_stats.report() call to `stream` as one JSON line."""
    original = stats_module.report

    def report(name, value):
        if name in TRACED and isinstance(value, torch.Tensor):
            values = value.detach().double().flatten().cpu().tolist()
            stream.write(json.dumps({"name": name, "values": values}) + "\n")
            stream.flush()
        return original(name, value)

    stats_module.report = report


# -------------------------------------------------------------------------------------- the script
def check_clone(clone, script):
    for rel in (script, os.path.join("torch_utils", "misc.py"), os.path.join("training", "training_loop.py")):
        if not os.path.isfile(os.path.join(clone, rel)):
            raise UsageError(f"{os.path.join(clone, rel)} not found; expected a clone of "
                             "NVlabs/stylegan2-ada-pytorch")


def gpus_requested(script_args):
    """train.py's --gpus value (1 when absent); the processes it spawns for more would not get these patches
    (and would import this project's train.py, first on their path, for upstream's)."""
    for i, arg in enumerate(script_args):
        m = re.match(r"^--gpus(?:=(.*))?$", arg)
        if m:
            value = m.group(1) if m.group(1) is not None else (script_args[i + 1] if i + 1 < len(script_args) else "")
            return int(value) if value.isdigit() else 1
    return 1


def resolve_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but this torch sees no CUDA device; use --device cpu")
    return device


def run_click_command(module, script, script_args):
    """Call the script's one click command as its `__main__` guard would; click errors are one line."""
    import click  # upstream's dependency, present wherever its scripts run

    commands = [v for v in vars(module).values() if isinstance(v, click.Command)]
    if len(commands) != 1:
        raise UsageError(f"{script} has {len(commands)} click commands; expected upstream's one")
    try:
        return commands[0].main(args=script_args, prog_name=script, standalone_mode=False)
    except click.ClickException as err:
        raise UsageError(f"{script}: {err.format_message()}")


def load_script(path):
    """Import an upstream script by path (this project has a train.py of its own on sys.path too)."""
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as err:  # upstream's own dependencies (click, imageio, psutil, ...)
        raise UsageError(f"{os.path.basename(path)} needs the module {err.name!r}, which this python "
                         "lacks; install upstream's requirements")
    return module


def on_path(clone):
    """Whether the clone's top-level packages (dnnlib, torch_utils, training, ...) import by name here."""
    return any(os.path.realpath(entry or os.curdir) == os.path.realpath(clone) for entry in sys.path)


def reexec_with_clone_on_path(clone, argv):
    """Run this command again in a new interpreter with the clone on PYTHONPATH, as `python train.py` inside
    the clone finds its packages; the DataLoader workers upstream spawns inherit it. Does not return."""
    current = os.environ.get("PYTHONPATH", "")
    if current.split(os.pathsep)[0] == clone:  # already re-run once: do not loop
        raise UsageError(f"{clone} is first on PYTHONPATH and still not on sys.path; cannot import its packages")
    paths = [clone] + ([current] if current else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "stylegan_patch.run", *argv], env)


def prepare(clone, script, device, args, trace_stream):
    """Import the clone's modules (the clone on sys.path) and install the patches; returns the script's module."""
    misc = importlib.import_module("torch_utils.misc")
    allow_sampler_data_source(misc.InfiniteSampler)
    loop = importlib.import_module("training.training_loop")
    stats = importlib.import_module("torch_utils.training_stats")
    module = load_script(os.path.join(clone, script))
    if device == "cpu":
        torch.Tensor.pin_memory = _unpinned
        for patched in (loop, module):
            patched.torch = TorchOnCpu(torch)
    if args.steps is not None:
        limit_steps(loop, args.steps)
    if args.grid_rows is not None:
        limit_grid(loop, args.grid_rows)
    if trace_stream is not None:
        trace_reports(stats, trace_stream)
    return module


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, script_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("clone", type=str, help="a clone of NVlabs/stylegan2-ada-pytorch (patched or not)")
    p.add_argument("--script", type=str, default="train.py", choices=SCRIPTS, help="the upstream script to run")
    p.add_argument("--device", type=str, default="auto", choices=DEVICES,
                   help="auto: CUDA when torch sees it, else the CPU; cpu forces the CPU stand-ins")
    p.add_argument("--steps", type=int, default=None, help="train.py: stop after this many iterations")
    p.add_argument("--grid-rows", type=int, default=None, help="train.py: rows of the snapshot image grids")
    p.add_argument("--trace", type=str, default=None, help="train.py: JSON-lines file of the loss reports")
    args = p.parse_args(ours)
    args.script_args, args.argv = script_args, argv
    return args


def main(args):
    clone = os.path.abspath(os.path.expanduser(args.clone))
    check_clone(clone, args.script)
    for name in ("steps", "grid_rows"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    device = resolve_device(args.device)
    if gpus_requested(args.script_args) > 1:  # its workers would import train.py unpatched
        raise UsageError("--gpus > 1 starts processes this runner cannot patch; use --gpus=1 (several GPUs: "
                         "upstream's train.py on its own torch)")
    if not on_path(clone):
        reexec_with_clone_on_path(clone, args.argv)
    trace_stream = open(args.trace, "w", encoding="utf-8") if args.trace else None
    try:
        module = prepare(clone, args.script, device, args, trace_stream)
        return run_click_command(module, args.script, args.script_args)
    finally:
        if trace_stream is not None:
            trace_stream.close()


if __name__ == "__main__":
    run_cli(main, parse_args())
