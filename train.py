"""Train an image classifier with the Rooted Logistic Objective or a baseline loss (paper Sec. 4.1, Table 1).

The authors' command lines work unchanged, e.g. `python train.py --dataset cifar100 --net Swin --k 8 --m 10`.
One run directory per run (--out): config.json, metrics.jsonl (one line per epoch), results.json,
checkpoint.pt (every epoch, atomically) and best.pt. `--resume` continues exactly where the run stopped;
SIGINT/SIGTERM save a checkpoint and exit cleanly. Several GPUs: `torchrun --nproc_per_node N train.py ...`.
"""
import utils.tv_compat  # noqa: F401  (must come before anything imports torchvision)

import functools
import math
import os
import random
import signal
import time

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

import losses
import models
from utils import distributed as du
from utils.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from utils.cli import ArgumentParser, UsageError, default_data_dir, run_cli
from utils.datasets import DATASETS, build_datasets
from utils.runio import append_jsonl, atomic_write_json, write_config

OPTIMIZERS = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),  # the authors': no momentum
    "adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr),
}
EVAL_BATCH = 100  # the authors' test batch size



def parse_args(argv=None):
    p = ArgumentParser(description="Train a vision model with the Rooted Logistic Objective (RLO) or a baseline loss.")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    p.add_argument("--opt", type=str.lower, default="adam", choices=sorted(OPTIMIZERS), help="optimizer")
    p.add_argument("--resume", "-r", action="store_true", help="resume from <out>/checkpoint.pt")
    p.add_argument("--noaug", action="store_true", help="turn RandAugment(2, 14) off (it is on by default)")
    p.add_argument("--noamp", action="store_true", help="no mixed precision on CUDA (CPU always runs fp32)")
    p.add_argument("--dataset", type=str.lower, default="cifar10", choices=list(DATASETS), help="dataset")
    p.add_argument("--net", type=str.lower, default="vit", choices=list(models.MODELS),
                   help="network (case-insensitive)")
    p.add_argument("--bs", type=int, default=512, help="batch size (per process under torchrun)")
    p.add_argument("--size", type=int, default=32, help="image size fed to the net (vit_timm: always 384)")
    p.add_argument("--n_epochs", type=int, default=200, help="epochs (also the cosine schedule length)")
    p.add_argument("--patch", type=int, default=4, help="ViT patch size / Swin window size")
    p.add_argument("--dimhead", type=int, default=512, help="ViT embedding width")
    p.add_argument("--loss", type=str.lower, default="root", choices=list(losses.LOSSES),
                   help="root = the authors' m*(1-p^(1/k)); root_paper = k*(p^(-1/k)-1)")
    p.add_argument("--k", type=float, default=3.0, help="RLO k (the start value under --k-schedule)")
    p.add_argument("--m", type=float, default=3.0, help="RLO m (loss 'root')")
    p.add_argument("--alpha", type=float, default=0.25, help="focal alpha")
    p.add_argument("--gamma", type=float, default=3.0, help="focal gamma")
    p.add_argument("--mixup", type=float, default=0.0,
                   help="timm Mixup alpha (0: off); the loss gets the mixed soft targets")
    p.add_argument("--cutmix", type=float, default=0.0,
                   help="timm CutMix alpha (0: off); with --mixup, timm switches between the two per batch")
    p.add_argument("--k-schedule", type=str.lower, default="constant", choices=losses.K_SCHEDULES,
                   help="k per epoch: constant, linear (k + step*e), exp (k*rate^e), exp_max (capped)")
    p.add_argument("--k-step", type=float, default=1.0, help="linear schedule: k increase per epoch")
    p.add_argument("--k-rate", type=float, default=1.1, help="exp schedules: k factor per epoch")
    p.add_argument("--k-max", type=float, default=10.0, help="exp_max schedule: largest k")
    p.add_argument("--data-dir", default=default_data_dir(), help="dataset root (see README for layouts)")
    p.add_argument("--download", action="store_true", help="let torchvision download cifar/food-101")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, order and augmentation")
    p.add_argument("--device", type=str.lower, default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (0: torch's default; 1 is much faster on an oversubscribed CPU)")
    p.add_argument("--out", default=None, help="run directory (default runs/<dataset>_<net>_<loss>_s<seed>)")
    p.add_argument("--subset", type=int, default=None, help="train on a fixed random N training examples")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on a fixed random N test examples")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint (or --pretrained) only")
    p.add_argument("--pretrained", default=None, help="local weights file (vit_timm: timm vit_base_patch16_384)")
    p.add_argument("--wandb", action="store_true", help="log to Weights & Biases (imported only then)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ setup
def check_args(args):
    """Validate values argparse cannot; returns the k schedule."""
    for name in ("bs", "n_epochs", "patch", "dimhead", "size"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name} must be > 0, got {getattr(args, name)}")
    for name in ("subset", "test_subset", "max_steps"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a finite number > 0, got {args.lr}")
    if not (args.mixup >= 0 and args.cutmix >= 0):
        raise UsageError(f"--mixup and --cutmix must be >= 0, got {args.mixup} and {args.cutmix}")
    if (args.mixup or args.cutmix) and not losses.SPECS[args.loss].takes_probabilities:
        raise UsageError(f"--mixup/--cutmix need a loss that takes probability targets; {args.loss!r} does not")
    try:
        make_loss(args, args.k)
        return losses.KSchedule(args.k_schedule, args.k, args.k_step, args.k_rate, args.k_max)
    except ValueError as err:
        raise UsageError(str(err)) from None


def make_loss(args, k):
    return losses.get_loss(args.loss, k=k, m=args.m, alpha=args.alpha, gamma=args.gamma)


@functools.lru_cache(maxsize=None)
def _mixer(mixup, cutmix, num_classes):
    from timm.data import Mixup
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.0, num_classes=num_classes)


def mix_batch(args, inputs, targets, num_classes):
    """timm's Mixup/CutMix in place on an even number of images; soft (N, C) targets for the loss.

    timm mixes a batch with its flip and needs an even size: an odd batch's last image stays unmixed.
    """
    soft = torch.nn.functional.one_hot(targets, num_classes).float()
    n = len(inputs) - len(inputs) % 2
    if n:
        inputs[:n], soft[:n] = _mixer(args.mixup, args.cutmix, num_classes)(inputs[:n], targets[:n])
    return inputs, soft


def default_out(args):
    tag = f"_k{args.k:g}_m{args.m:g}" if args.loss == "root" else f"_k{args.k:g}" if args.loss == "root_paper" \
        else ""
    return os.path.join("runs", f"{args.dataset}_{args.net}_{args.loss}{tag}_s{args.seed}")


def pick_device(choice):
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        return torch.device("cuda", du.world_info()[2])
    return torch.device("cpu")


def amp_dtype(args, device):
    """bf16 where supported, else fp16 (with GradScaler); None (fp32) on CPU or with --noamp."""
    if device.type != "cuda" or args.noamp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def build_net(args, num_classes, device):
    try:
        net = models.build_model(args.net, num_classes, args.size, patch=args.patch, dimhead=args.dimhead,
                                 pretrained=args.pretrained if args.net == "vit_timm" else None)
    except (ValueError, AssertionError, RuntimeError) as err:
        raise UsageError(f"cannot build --net {args.net} at --size {args.size} --patch {args.patch}: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if args.pretrained and args.net != "vit_timm":
        models.load_pretrained(net, args.pretrained, skip_prefixes=())
    return net.to(device)


class Run:
    """Everything one training run holds: data, model, optimizer, schedule, counters."""

    def __init__(self, args):
        self.args = args
        self.device = pick_device(args.device)
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        self.rank, self.world = du.init_distributed(self.device)
        self.main = self.rank == 0
        self.k_schedule = check_args(args)
        self.out = args.out or default_out(args)
        seed_everything(args.seed)
        self.train_set, self.test_set, self.info = build_datasets(
            args.dataset, args.data_dir, models.input_size(args.net, args.size), augment=not args.noaug,
            subset=args.subset, seed=0, test_subset=args.test_subset, download=args.download)
        self.net = build_net(args, self.info["num_classes"], self.device)
        self.model = self.net if self.world == 1 else DistributedDataParallel(
            self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optimizer = OPTIMIZERS[args.opt](self.net.parameters(), args.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, args.n_epochs)
        self.dtype = amp_dtype(args, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.sampler = du.ResumableSampler(self.train_set, self.world, self.rank, seed=args.seed)
        self.epoch, self.step, self.best_acc, self.partial = 0, 0, 0.0, None
        self.stop_signal = None

    def checkpoint_path(self, name="checkpoint.pt"):
        return os.path.join(self.out, name)

    def state(self, rng=None):
        return dict(model=self.net.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), epoch=self.epoch,
                    step=self.step, best_acc=self.best_acc, rng=rng or rng_state(), partial=self.partial)

    def save(self, name="checkpoint.pt"):
        if self.main:
            save_checkpoint(self.checkpoint_path(name), "train", vars(self.args), **self.state())

    def restore(self, path):
        state = load_checkpoint(path, map_location="cpu", kind="train")  # RNG states must stay on the CPU
        saved = state["config"]
        for key in ("net", "dataset", "loss"):
            if key in saved and saved[key] != getattr(self.args, key):
                raise UsageError(f"{path} was trained with --{key} {saved[key]}, not {getattr(self.args, key)}")
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state.get("step", 0)
        self.best_acc, self.partial = state["best_acc"], state.get("partial")
        if self.partial is not None:
            set_rng_state(state["rng"])


# ------------------------------------------------------------------------------------------ loop
def train_epoch(run, loss_fn):
    """One pass over the training data (or what is left of it after a mid-epoch stop)."""
    args, model = run.args, run.model
    sums = dict(run.partial["sums"]) if run.partial else {"loss": 0.0, "correct": 0.0, "seen": 0.0}
    done = run.partial["batches"] if run.partial else 0
    if run.partial is None:
        seed_everything(args.seed * 100_003 + run.epoch)
    run.sampler.set_epoch(run.epoch)
    run.sampler.set_start(done * args.bs)
    loader = DataLoader(run.train_set, batch_size=args.bs, sampler=run.sampler, num_workers=args.workers,
                        generator=torch.Generator().manual_seed(args.seed * 100_003 + run.epoch),
                        pin_memory=run.device.type == "cuda")
    model.train()
    bar = tqdm(loader, desc=f"epoch {run.epoch + 1}/{args.n_epochs}", disable=None if run.main else True,
               leave=False)
    last = done + len(loader)
    for inputs, targets in bar:
        loss, correct = train_step(run, loss_fn, inputs, targets)
        done += 1
        sums = {"loss": sums["loss"] + loss * len(targets), "correct": sums["correct"] + correct,
                "seen": sums["seen"] + len(targets)}
        bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.3f}", acc=f"{sums['correct'] / sums['seen']:.3f}")
        if done < last and stop_requested(run):
            run.partial = {"batches": done, "sums": sums}
            return None
    run.partial = None
    total = du.all_reduce_sum([sums["loss"], sums["correct"], sums["seen"]], run.device)
    return {"train_loss": total[0] / max(total[2], 1), "train_acc": 100.0 * total[1] / max(total[2], 1),
            "train_images": total[2]}


def train_step(run, loss_fn, inputs, targets):
    """Forward, loss, NaN/inf check, backward and optimizer step; returns (loss, correct)."""
    inputs = inputs.to(run.device, non_blocking=True)
    targets = targets.to(run.device, non_blocking=True)
    loss_targets = targets
    if run.args.mixup or run.args.cutmix:
        inputs, loss_targets = mix_batch(run.args, inputs, targets, run.info["num_classes"])
    with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
        outputs = run.model(inputs)
    loss = loss_fn(outputs.float(), loss_targets)
    value = loss.item()
    if not all(math.isfinite(v) for v in du.all_reduce_sum([value], run.device)):
        raise UsageError(f"loss became {value} at epoch {run.epoch + 1}, step {run.step + 1} (lower --lr, or "
                         f"try --noamp); stopped, last good checkpoint kept in {run.checkpoint_path()}")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    return value, (outputs.argmax(1) == targets).sum().item()


def stop_requested(run):
    """True after SIGINT/SIGTERM or at --max-steps, agreed by all processes."""
    local = run.stop_signal is not None or (run.args.max_steps is not None and run.step >= run.args.max_steps)
    return du.all_reduce_sum([float(local)], run.device)[0] > 0


@torch.no_grad()
def evaluate(run, loss_fn):
    """Validation loss (the training loss), cross-entropy and top-1 accuracy; each process takes a shard."""
    run.model.eval()
    shard = Subset(run.test_set, range(run.rank, len(run.test_set), run.world))
    loader = DataLoader(shard, batch_size=EVAL_BATCH, num_workers=run.args.workers)
    sums = [0.0, 0.0, 0.0, 0.0]
    for inputs, targets in tqdm(loader, desc="eval", disable=None if run.main else True, leave=False):
        inputs, targets = inputs.to(run.device), targets.to(run.device)
        with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
            outputs = run.net(inputs).float()
        sums[0] += loss_fn(outputs, targets, reduction="sum").item()
        sums[1] += losses.cross_entropy(outputs, targets, reduction="sum").item()
        sums[2] += (outputs.argmax(1) == targets).sum().item()
        sums[3] += len(targets)
    loss, ce, correct, n = du.all_reduce_sum(sums, run.device)
    return {"val_loss": loss / max(n, 1), "val_ce": ce / max(n, 1), "val_acc": 100.0 * correct / max(n, 1)}


def run_epoch(run, logger):
    """Train and evaluate one epoch, log it, checkpoint it; returns the metrics or None if stopped."""
    k = run.k_schedule(run.epoch)
    loss_fn = make_loss(run.args, k)
    lr = run.optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    train = train_epoch(run, loss_fn)
    if train is None:
        return None
    train_s = time.perf_counter() - start
    record = {"epoch": run.epoch + 1, **train, **evaluate(run, loss_fn), "lr": lr, "k": k,
              "epoch_s": time.perf_counter() - start, "train_s": train_s,
              "images_per_s": train["train_images"] / max(train_s, 1e-9)}
    run.scheduler.step()
    run.epoch += 1
    improved = record["val_acc"] > run.best_acc or not os.path.exists(run.checkpoint_path("best.pt"))
    run.best_acc = max(run.best_acc, record["val_acc"])
    record["best_acc"] = run.best_acc
    logger(record)
    run.save()
    if improved:
        run.save("best.pt")
    return record


def make_logger(run):
    """Writes each epoch's record to metrics.jsonl (and wandb), prints one line; rank 0 only."""
    wandb = None
    if run.main and run.args.wandb:
        import wandb
        wandb.init(project="rlo-exps", name=os.path.basename(os.path.abspath(run.out)), config=vars(run.args))

    def log(record):
        if not run.main:
            return
        append_jsonl(os.path.join(run.out, "metrics.jsonl"), record)
        if wandb is not None:
            wandb.log(record)
        print(f"epoch {record['epoch']}/{run.args.n_epochs} loss {record['train_loss']:.4f} "
              f"acc {record['train_acc']:.2f} | val loss {record['val_loss']:.4f} ce {record['val_ce']:.4f} "
              f"acc {record['val_acc']:.2f} (best {record['best_acc']:.2f}) | lr {record['lr']:.2e} "
              f"k {record['k']:g} | {record['epoch_s']:.1f}s {record['images_per_s']:.0f} img/s", flush=True)
    return log


# ------------------------------------------------------------------------------------------ main
def prepare_run_dir(run):
    """Resume from the checkpoint, or start fresh (clearing an old metrics.jsonl); write config.json."""
    path = run.checkpoint_path()
    if run.args.resume:
        if not os.path.exists(path):
            raise UsageError(f"--resume: no checkpoint at {path} (give the run's --out)")
        run.restore(path)
    elif run.main and not run.args.eval_only:
        os.makedirs(run.out, exist_ok=True)
        for name in ("metrics.jsonl", "results.json"):
            if os.path.exists(os.path.join(run.out, name)):
                os.remove(os.path.join(run.out, name))
    if run.main:
        os.makedirs(run.out, exist_ok=True)
        write_config(run.out, dict(vars(run.args), out=run.out, n_train=run.info["n_train"],
                                   n_test=run.info["n_test"], world_size=run.world,
                                   params=models.count_parameters(run.net)))


def summarise(run, status):
    from utils.runio import read_jsonl
    records = read_jsonl(os.path.join(run.out, "metrics.jsonl")) if run.main else []
    last = records[-1] if records else {}
    mean = (lambda key: sum(r[key] for r in records) / len(records)) if records else (lambda key: None)
    a = run.args
    return {"status": status, "net": a.net, "dataset": a.dataset, "loss": a.loss, "k": a.k, "m": a.m,
            "seed": a.seed, "epochs_done": run.epoch, "steps": run.step, "best_acc": run.best_acc,
            "final_acc": last.get("val_acc"), "final_val_loss": last.get("val_loss"),
            "final_val_ce": last.get("val_ce"), "mean_epoch_s": mean("epoch_s"),
            "mean_images_per_s": mean("images_per_s"), "n_train": run.info["n_train"],
            "n_test": run.info["n_test"], "params": models.count_parameters(run.net), "world_size": run.world,
            "out": run.out}


def eval_only(run):
    if not (run.args.resume or run.args.pretrained):
        raise UsageError("--eval-only needs --resume (with the run's --out) or --pretrained weights")
    metrics = evaluate(run, make_loss(run.args, run.k_schedule(max(run.epoch - 1, 0))))
    results = dict(summarise(run, "eval"), **metrics)
    if run.main:
        atomic_write_json(os.path.join(run.out, "results.json"), results)
        print(f"eval: val loss {metrics['val_loss']:.4f} ce {metrics['val_ce']:.4f} acc {metrics['val_acc']:.2f}")
    return results


def train_loop(run):
    logger = make_logger(run)
    status = "finished"
    while run.epoch < run.args.n_epochs:
        if run_epoch(run, logger) is None:
            status = "interrupted" if run.stop_signal else "max_steps"
            break
        if run.args.max_steps is not None and run.step >= run.args.max_steps:
            status = "max_steps"
            break
    if status != "finished":
        run.save()
        if run.main and run.partial is not None:
            print(f"stopped ({status}) during epoch {run.epoch + 1}; continue with --resume --out {run.out}")
    results = summarise(run, status)
    if run.main:
        atomic_write_json(os.path.join(run.out, "results.json"), results)
    return results


def main(args):
    run, handlers = None, {}

    def on_signal(signum, frame):
        if run is not None:
            run.stop_signal = signum

    try:
        run = Run(args)
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not the main thread: no signal handling
                pass
        prepare_run_dir(run)
        return eval_only(run) if args.eval_only else train_loop(run)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        run = None  # free the DDP model (and its reducer) while the process group still exists
        du.cleanup()


if __name__ == "__main__":
    run_cli(main, parse_args())
