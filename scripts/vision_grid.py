"""Resumable, paired CPU-scale grid for Table 1 / Table 2 baselines / Fig. 2c-d / Fig. 7c (issue 16).

Run as `python -m scripts.vision_grid --threads 1` (nohup it: the whole plan is hours of CPU). Every (cell, seed)
run has its own run directory under --runs (config.json, metrics.jsonl, results.json, checkpoint.pt each epoch);
a finished run (in its run directory, or as a row of the committed summary when the directory is gone) is
skipped, an interrupted one continues from its last epoch, and after every run the per-run
numbers (final and per-epoch accuracy, validation loss, validation CE, seconds) are gathered into --summary
(results/table1_cpu_runs.json, committed), so nothing measured is lost with the run directories.

Why a lean trainer here instead of train.py: the data are decoded once into memory at the reduced resolution and
augmented as whole tensors (no per-image PIL pipeline, which costs as much as this small net at 16x16), and the
pairing is explicit: the initial weights come from torch.manual_seed(seed) alone, and each epoch's order, flips
and crop offsets from a generator seeded by (seed, epoch) alone, so for one seed every loss starts from the same
weights and sees the same batches. It reuses losses.get_loss / KSchedule, the model registry and RunDir.
"""
import utils.tv_compat  # noqa: F401  (must come before anything imports torchvision)

import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import losses
from models import build_model
from scripts.table1_cpu import plateau
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.cli import ArgumentParser, UsageError, default_data_dir, run_cli
from utils.datasets import CIFAR10_JPEG_TAR, CIFAR_MEAN, CIFAR_STD, decode_jpeg_tar
from utils.report import REPO, RESULTS
from utils.runio import RunDir, atomic_write_json, read_jsonl, set_threads

# cell -> loss and hyperparameters; RLO-k is the authors' code form m (1 - p^(1/k)) with m = k.
CELLS = {
    "ce": {"loss": "ce"},
    "root_k8": {"loss": "root", "k": 8.0, "m": 8.0},
    "focal": {"loss": "focal", "alpha": 0.25, "gamma": 3.0},
    "root_k5": {"loss": "root", "k": 5.0, "m": 5.0},
    "root_k10": {"loss": "root", "k": 10.0, "m": 10.0},
    "root_paper_k5": {"loss": "root_paper", "k": 5.0},
    "square": {"loss": "square"},
    "sparsemax": {"loss": "sparsemax"},
    # Fig. 2d / 7c: k schedules from k0 = 5 (m fixed at 5, as train.py's --k-schedule keeps --m);
    # 'constant' is root_k5 itself. Steps are train.py's defaults: +1 per epoch, x1.1 per epoch, cap 10.
    "sched_linear": {"loss": "root", "k": 5.0, "m": 5.0, "schedule": "linear"},
    "sched_exp": {"loss": "root", "k": 5.0, "m": 5.0, "schedule": "exp"},
    "sched_exp_max": {"loss": "root", "k": 5.0, "m": 5.0, "schedule": "exp_max"},
    # the plateau check: CE trained twice as long must not gain much
    "ce_2x": {"loss": "ce", "epochs_factor": 2},
}
# The plan, most important first: CE vs RLO-8 across seeds, the plateau check on the first two seeds, the
# other losses, then the schedules. Each phase: (cells, how many of --seeds; None = all).
PHASES = ((("ce", "root_k8"), None), (("ce_2x",), 2),
          (("focal", "root_k5", "root_k10", "root_paper_k5", "square", "sparsemax"), None),
          (("sched_linear", "sched_exp", "sched_exp_max"), None))
DEFINING = ("cell", "seed", "epochs", "train_per_class", "test_per_class", "size", "width", "bs", "lr", "wd",
            "pad", "net")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tar", default=os.path.join(default_data_dir(), CIFAR10_JPEG_TAR),
                   help="the packed JPEG CIFAR-10 (decoded once into --cache)")
    p.add_argument("--cache", default=os.path.join(REPO, "runs", "cache"), help="decoded-array cache (outside git)")
    p.add_argument("--runs", default=os.path.join(REPO, "runs", "vision_grid"), help="run directories")
    p.add_argument("--summary", default=os.path.join(RESULTS, "table1_cpu_runs.json"),
                   help="aggregated per-run numbers, rewritten after every run")
    p.add_argument("--cells", nargs="+", default=[c for cells, _ in PHASES for c in cells], choices=list(CELLS))
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    p.add_argument("--net", default="airbench_mini", help="registry net (models/)")
    p.add_argument("--width", type=int, default=24, help="airbench_mini base width")
    p.add_argument("--size", type=int, default=16, help="image side after down-sampling (32 = native)")
    p.add_argument("--train-per-class", type=int, default=800, help="fixed stratified training subset")
    p.add_argument("--test-per-class", type=int, default=500, help="fixed stratified test subset (>= 500: 5,000)")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="AdamW peak lr (tuned once for CE, used for all)")
    p.add_argument("--wd", type=float, default=5e-2, help="AdamW weight decay")
    p.add_argument("--pad", type=int, default=2, help="random-crop padding in pixels (with random flips)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where to train (init, order and augmentation are drawn on the CPU either way, so the "
                        "pairing is the same; cuda: the GPU check's full-data run)")
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (for pilots)")
    p.add_argument("--shard", default="0/1", metavar="I/N",
                   help="run only every N-th planned run starting at I (I/N), so N processes can share the grid")
    p.add_argument("--summary-only", action="store_true", help="only rewrite --summary from the run directories")
    p.add_argument("--measure", default=None, metavar="JSON",
                   help="pilot: measure train/eval images/s of --net at 16, 24 and 32 px into JSON, then stop")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------- data
def load_cifar(tar_path, cache):
    """utils.datasets.decode_jpeg_tar, cached as one .npz under `cache` (written atomically)."""
    path = os.path.join(cache, "cifar10_jpeg_u8.npz")
    if not os.path.exists(path):
        data = decode_jpeg_tar(tar_path)
        os.makedirs(cache, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez(tmp, train_x=data["train"][0], train_y=data["train"][1], test_x=data["test"][0],
                 test_y=data["test"][1])
        os.replace(tmp, path)
    with np.load(path) as z:
        return {"train": (z["train_x"], z["train_y"]), "test": (z["test_x"], z["test_y"])}


def stratified(labels, per_class, seed):
    """Indices of a fixed class-balanced subset: `per_class` random examples of each class (sorted)."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def to_tensor(images, size):
    """uint8 (N, H, W, 3) -> normalised float (N, 3, size, size), down-sampled with antialiasing."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def prepare_data(raw, args):
    """The fixed train subset (subset seed 0) and fixed test subset (seed 1) as tensors at --size."""
    train_x, train_y = raw["train"]
    test_x, test_y = raw["test"]
    tr = stratified(train_y, args.train_per_class, seed=0)
    te = stratified(test_y, args.test_per_class, seed=1)
    return {"train": (to_tensor(train_x[tr], args.size), torch.from_numpy(train_y[tr])),
            "test": (to_tensor(test_x[te], args.size), torch.from_numpy(test_y[te]))}


# ------------------------------------------------------------------------------------ the paired design
def epoch_plan(seed, epoch, n, pad):
    """Order, flips and crop offsets of one epoch: a function of (seed, epoch) only, never of the loss."""
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)
    return {"order": torch.randperm(n, generator=g), "flip": torch.rand(n, generator=g) < 0.5,
            "offsets": torch.randint(0, 2 * pad + 1, (n, 2), generator=g)}


def augment(x, flip, offsets, pad):
    """Random horizontal flips and random crops of zero-padded images, applied to a whole tensor at once."""
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    out = torch.empty_like(x)
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            idx = torch.nonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).flatten()
            if idx.numel():
                out[idx] = padded[idx, :, dy:dy + h, dx:dx + w]
    return out


def initial_model(args, seed):
    """The net every loss of this seed starts from: weights drawn from torch.manual_seed(seed) alone."""
    torch.manual_seed(seed)
    return build_model(args.net, 10, args.size, width=args.width)


def loss_at(spec, epoch):
    """The loss of cell `spec` at `epoch` (k follows the cell's schedule; constant for the fixed-k cells)."""
    hyper = {key: spec[key] for key in ("k", "m", "alpha", "gamma") if key in spec}
    k = None
    if "k" in spec:
        k = losses.KSchedule(spec.get("schedule", "constant"), spec["k"])(epoch)
        hyper["k"] = k
    return losses.get_loss(spec["loss"], **hyper), k


# ------------------------------------------------------------------------------------------ training
def lr_at(step, total, peak, warmup):
    """Linear warm-up over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def train_epoch(model, optimizer, loss_fn, data, plan, args, step, total, on_batch=None):
    """One epoch over the plan's order with its augmentation; returns (mean loss, accuracy %, next step)."""
    x, y = data
    n = len(y) // args.bs * args.bs  # full batches only: BN never sees a batch of one
    xa = augment(x, plan["flip"], plan["offsets"], args.pad)
    model.train()
    loss_sum, correct = 0.0, 0
    for start in range(0, n, args.bs):
        idx = plan["order"][start:start + args.bs]
        if on_batch is not None:
            on_batch(idx)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total, args.lr, warmup=total // 20)
        logits = model(xa[idx])
        loss = loss_fn(logits, y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        loss_sum += loss.item() * len(idx)
        correct += (logits.argmax(1) == y[idx]).sum().item()
    return loss_sum / n, 100.0 * correct / n, step


@torch.no_grad()
def evaluate(model, data, loss_fn, batch=1000):
    """Test accuracy %, the run's own loss and CE on the fixed test subset."""
    x, y = data
    model.eval()
    loss_sum = ce_sum = correct = 0.0
    for start in range(0, len(y), batch):
        logits, target = model(x[start:start + batch]), y[start:start + batch]
        loss_sum += loss_fn(logits, target, reduction="sum").item()
        ce_sum += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    return {"acc": 100.0 * correct / len(y), "val_loss": loss_sum / len(y), "val_ce": ce_sum / len(y)}


def run_config(args, cell, seed):
    keys = ("train_per_class", "test_per_class", "size", "width", "bs", "lr", "wd", "pad", "net")
    spec = {key: value for key, value in CELLS[cell].items() if key != "epochs_factor"}
    return {"cell": cell, "seed": seed, **spec, "epochs": args.epochs * CELLS[cell].get("epochs_factor", 1),
            **{key: getattr(args, key) for key in keys}}


def run_one(args, cell, seed, data, on_batch=None):
    """Train (or continue) one run; returns its results.json dict."""
    out = os.path.join(args.runs, f"{cell}_s{seed}")
    config = run_config(args, cell, seed)
    ckpt_path = os.path.join(out, "checkpoint.pt")
    resume = os.path.exists(ckpt_path)
    run = RunDir(out, config, resume=resume, overwrite=not resume, defining=DEFINING)
    try:
        model = initial_model(args, seed).to(args.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
        epoch = 0
        if resume:
            state = load_checkpoint(ckpt_path, kind="vision_grid")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            epoch = state["epoch"]
            run.trim_metrics(lambda r: r["epoch"] <= epoch)
        steps = len(data["train"][1]) // args.bs
        for epoch in range(epoch, config["epochs"]):
            loss_fn, k = loss_at(CELLS[cell], epoch)
            plan = {key: v.to(args.device) for key, v in epoch_plan(seed, epoch, len(data["train"][1]),
                                                                    args.pad).items()}
            start, cpu_start = time.perf_counter(), time.process_time()
            train_loss, train_acc, _ = train_epoch(model, optimizer, loss_fn, data["train"], plan, args,
                                                   epoch * steps, config["epochs"] * steps, on_batch)
            train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
            record = {"epoch": epoch + 1, "k": k, "train_loss": train_loss, "train_acc": train_acc,
                      "train_s": train_s, "train_cpu_s": train_cpu_s, **evaluate(model, data["test"], loss_fn),
                      "eval_s": time.perf_counter() - start - train_s}
            run.log(record)
            save_checkpoint(ckpt_path, "vision_grid", config, model=model.state_dict(),
                            optimizer=optimizer.state_dict(), epoch=epoch + 1)
        return run.finish(run_results(config, run.metrics()))
    finally:
        run.release()


def mean_of(metrics, key):
    """Mean of `key` over the epochs that logged it (runs started before it was logged lack it)."""
    values = [r[key] for r in metrics if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def run_results(config, metrics):
    accs = [r["acc"] for r in metrics]
    return {"status": "finished", **config, "acc": accs[-1], "best_acc": max(accs), "plateau": plateau(accs),
            "train_acc": metrics[-1]["train_acc"], "val_loss": metrics[-1]["val_loss"],
            "val_ce": metrics[-1]["val_ce"], "train_s": float(np.mean([r["train_s"] for r in metrics])),
            "train_cpu_s": mean_of(metrics, "train_cpu_s"),
            "epochs_done": len(metrics)}


# ------------------------------------------------------------------------------------------ the grid
def plan_runs(args):
    """(cell, seed) in priority order: each phase's cells for every seed before the next phase."""
    order = []
    for phase, n_seeds in PHASES:
        cells = [c for c in phase if c in args.cells]
        order += [(cell, seed) for seed in args.seeds[:n_seeds] for cell in cells]
    return order


def my_runs(args):
    """This process's share of the plan (--shard I/N)."""
    try:
        i, n = (int(x) for x in args.shard.split("/"))
    except ValueError:
        raise UsageError(f"--shard must be I/N with integers, got {args.shard!r}") from None
    if not 0 <= i < n:
        raise UsageError(f"--shard I/N needs 0 <= I < N, got {args.shard!r}")
    return plan_runs(args)[i::n]


def _matches(args, cell, seed, res):
    same = all(res.get(key) == value for key, value in run_config(args, cell, seed).items())
    return res if res.get("status") == "finished" and same else None


def finished(args, cell, seed):
    """The run's results.json when it finished under this protocol, else None."""
    path = os.path.join(args.runs, f"{cell}_s{seed}", "results.json")
    try:
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
    except (OSError, ValueError):
        return None
    return _matches(args, cell, seed, res)


def committed_rows(args):
    """(cell, seed) -> row of --summary (committed to git): finished runs whose run directories may be gone."""
    try:
        with open(args.summary, encoding="utf-8") as f:
            rows = json.load(f).get("rows", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {(r.get("cell"), r.get("seed")): r for r in rows if isinstance(r, dict)}


def recorded(args, cell, seed, committed):
    """Finished either in its run directory or in the committed summary (same protocol)."""
    return finished(args, cell, seed) or _matches(args, cell, seed, committed.get((cell, seed), {}))


CURVES = ("acc", "val_loss", "val_ce", "train_loss", "train_acc", "train_s", "train_cpu_s", "k")


def summarize(args):
    """Write --summary: the protocol, the plan's size, and one flat row (with per-epoch curves) per finished run."""
    rows, committed = [], committed_rows(args)
    for cell, seed in plan_runs(args):
        res = finished(args, cell, seed)
        if res is None:  # its run directory is gone (a new machine) or unfinished: keep the committed row
            row = _matches(args, cell, seed, committed.get((cell, seed), {}))
            if row is not None:
                rows.append(row)
            continue
        metrics = read_jsonl(os.path.join(args.runs, f"{cell}_s{seed}", "metrics.jsonl"))
        rows.append({**res, **{f"{key}_curve": [r.get(key) for r in metrics] for key in CURVES}})
    protocol = {key: getattr(args, key) for key in ("net", "width", "size", "train_per_class", "test_per_class",
                                                    "epochs", "bs", "lr", "wd", "pad", "seeds", "cells")}
    atomic_write_json(args.summary, {"protocol": protocol, "planned": len(plan_runs(args)), "done": len(rows),
                                     "rows": rows})
    return rows


def images_per_s(model, size, bs, seconds, train):
    """Synthetic-batch throughput of one forward (and backward + AdamW step when `train`)."""
    x, y = torch.randn(bs, 3, size, size), torch.randint(0, 10, (bs,))
    optimizer = torch.optim.AdamW(model.parameters())
    model.train(train)

    def step():
        with torch.set_grad_enabled(train):
            loss = F.cross_entropy(model(x), y)
        if train:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    step()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += bs
    return done / (time.perf_counter() - start)


def measure(args):
    """The pilot's throughput table (one thread), with the machine's load average beside it."""
    rows = []
    for size in (16, 24, 32):
        torch.manual_seed(0)
        model = build_model(args.net, 10, size, width=args.width)
        rows.append({"net": args.net, "width": args.width, "size": size, "bs": args.bs,
                     "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
                     "train_images_per_s": images_per_s(model, size, args.bs, 10, True),
                     "eval_images_per_s": images_per_s(model, size, 500, 5, False), "load_avg": os.getloadavg()[0]})
        print(rows[-1], flush=True)
    atomic_write_json(args.measure, {"command": "python -m scripts.vision_grid --threads 1 --measure " + args.measure,
                                     "rows": rows})


def main(args):
    set_threads(args.threads)
    if args.measure:
        return measure(args)
    if args.summary_only:
        rows = summarize(args)
        print(f"{len(rows)} of {len(plan_runs(args))} planned runs finished; wrote {args.summary}")
        return
    runs = my_runs(args)
    data = {split: tuple(t.to(args.device) for t in xy)
            for split, xy in prepare_data(load_cifar(args.tar, args.cache), args).items()}
    ran, committed = 0, committed_rows(args)
    for cell, seed in runs:
        if recorded(args, cell, seed, committed) is not None:
            continue
        if args.max_runs is not None and ran >= args.max_runs:
            break
        t0 = time.time()
        res = run_one(args, cell, seed, data)
        ran += 1
        rows = summarize(args)
        print(f"[{time.strftime('%H:%M:%S')}] {cell} seed {seed}: acc {res['acc']:.2f} "
              f"({time.time() - t0:.0f} s); {len(rows)} of {len(plan_runs(args))} done", flush=True)
    summarize(args)


if __name__ == "__main__":
    run_cli(main, parse_args())
