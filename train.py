"""Train an image classifier with the Rooted Logistic Objective or a baseline loss (paper Sec. 4.1, Table 1).

The authors' command lines work unchanged, e.g. `python train.py --dataset cifar100 --net Swin --k 8 --m 10`.

One run directory per run (--out; by default a name built from the settings under runs/): config.json,
metrics.jsonl (one line per epoch), results.json, checkpoint.pt (every epoch, atomically) and best.pt.
A directory that holds a run is refused unless --resume (continue it; refused if a setting that defines the
run differs) or --overwrite (move it aside to OUT.old-TIMESTAMP). --resume continues exactly where the run
stopped; with another --n_epochs the cosine schedule continues from the current epoch over the new length.
SIGINT/SIGTERM (to the process or its whole process group) save a checkpoint and exit with status 0.
--eval-only writes OUT/eval.json (or --eval-file) and leaves the training run's files alone.
Several GPUs: `torchrun --nproc_per_node N train.py ...`.
"""
import functools
import math
import os
import signal
import time

from utils.cli import ArgumentParser, UsageError, default_data_dir, registry_choice, run_cli
from utils.runio import RunDir, add_run_args, atomic_write_json, config_differences, config_hash

# torch and the registries are imported inside the functions that use them, so that -h answers at once
OPTIMIZERS = ("adam", "sgd", "adamw")  # sgd is the authors': no momentum
EVAL_BATCH = 100  # the authors' test batch size
# Settings that may differ on --resume: how the run executes, not what it computes. Every other setting
# defines the run, and --resume refuses a change to it.
MAY_CHANGE = ("n_epochs", "max_steps", "workers", "threads", "device", "data_dir", "download", "wandb", "out",
              "resume", "overwrite", "eval_only", "eval_file", "log_every", "sync_every", "compile",
              "channels_last")
# What the saved weights' shapes depend on: --eval-only refuses a checkpoint that differs here.
SHAPES = ("net", "dataset", "size", "patch", "dimhead")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    p.add_argument("--opt", type=str.lower, default="adam", choices=OPTIMIZERS, help="optimizer")
    p.add_argument("--noaug", action="store_true", help="turn RandAugment(2, 14) off (it is on by default)")
    p.add_argument("--noamp", action="store_true", help="no mixed precision on CUDA (CPU always runs fp32)")
    p.add_argument("--dataset", type=registry_choice("utils.datasets", "DATASETS"), default="cifar10",
                   metavar="NAME", help="dataset (see utils/datasets.py; a wrong name lists them all)")
    p.add_argument("--net", type=registry_choice("models", "MODELS"), default="vit", metavar="NET",
                   help="network, case-insensitive (see models/__init__.py; a wrong name lists them all)")
    p.add_argument("--bs", type=int, default=512, help="batch size (per process under torchrun)")
    p.add_argument("--size", type=int, default=32, help="image size fed to the net (vit_timm: always 384)")
    p.add_argument("--n_epochs", type=int, default=200, help="epochs (also the cosine schedule length)")
    p.add_argument("--patch", type=int, default=4, help="ViT patch size / Swin window size")
    p.add_argument("--dimhead", type=int, default=512, help="ViT embedding width")
    p.add_argument("--loss", type=registry_choice("losses", "LOSSES"), default="root", metavar="LOSS",
                   help="root = the authors' m*(1-p^(1/k)); root_paper = k*(p^(-1/k)-1); ce, focal, ... "
                        "(a wrong name lists them all)")
    p.add_argument("--k", type=float, default=3.0, help="RLO k (the start value under --k-schedule)")
    p.add_argument("--m", type=float, default=3.0, help="RLO m (loss 'root')")
    p.add_argument("--alpha", type=float, default=0.25, help="focal alpha")
    p.add_argument("--gamma", type=float, default=3.0, help="focal gamma")
    p.add_argument("--mixup", type=float, default=0.0,
                   help="timm Mixup alpha (0: off); the loss gets the mixed soft targets")
    p.add_argument("--cutmix", type=float, default=0.0,
                   help="timm CutMix alpha (0: off); with --mixup, timm switches between the two per batch")
    p.add_argument("--k-schedule", type=registry_choice("losses", "K_SCHEDULES"), default="constant",
                   metavar="KIND", help="k per epoch: constant, linear (k + step*e), exp (k*rate^e), "
                                        "exp_max (capped at --k-max)")
    p.add_argument("--k-step", type=float, default=1.0, help="linear schedule: k increase per epoch")
    p.add_argument("--k-rate", type=float, default=1.1, help="exp schedules: k factor per epoch")
    p.add_argument("--k-max", type=float, default=10.0, help="exp_max schedule: largest k")
    p.add_argument("--data-dir", default=default_data_dir(), help="dataset root (see README for layouts)")
    p.add_argument("--download", action="store_true", help="let torchvision download cifar/food-101")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation and data order (the same for every loss: paired runs); "
                        "augmentation draws also differ per DDP process")
    p.add_argument("--device", type=str.lower, default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda if available")
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    add_run_args(p, default_out="runs/<dataset>_<net>_<loss>[_k_m]_<opt>_lr_bs_e_s<seed>_<hash of the "
                                "settings>", resume_flags=("--resume", "-r"))
    p.add_argument("--subset", type=int, default=None, help="train on a fixed random N training examples")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on a fixed random N test examples")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint (or --pretrained) only")
    p.add_argument("--eval-file", default=None, help="where --eval-only writes its numbers (default OUT/eval.json)")
    p.add_argument("--pretrained", default=None, help="local weights file (vit_timm: timm vit_base_patch16_384)")
    p.add_argument("--wandb", action="store_true", help="log to Weights & Biases (imported only then)")
    p.add_argument("--log-every", type=float, default=30.0,
                   help="without a terminal (nohup, SLURM): a progress line every this many seconds (0: none)")
    p.add_argument("--sync-every", type=int, default=0,
                   help="steps between host syncs: loss finiteness check, progress numbers and (under DDP) "
                        "agreement on a stop request (0: 1 on CPU, 50 on CUDA)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster convs on GPUs)")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ setup
def check_args(args):
    """Validate values argparse cannot; returns the k schedule."""
    import losses
    for name in ("bs", "n_epochs", "patch", "dimhead", "size"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name} must be > 0, got {getattr(args, name)}")
    for name in ("subset", "test_subset", "max_steps"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.sync_every < 0 or args.log_every < 0:
        raise UsageError("--sync-every and --log-every must not be negative")
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
    import losses
    return losses.get_loss(args.loss, k=k, m=args.m, alpha=args.alpha, gamma=args.gamma)


@functools.lru_cache(maxsize=None)
def _mixer(mixup, cutmix, num_classes):
    from timm.data import Mixup
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=0.0, num_classes=num_classes)


def mix_batch(args, inputs, targets, num_classes):
    """timm's Mixup/CutMix in place on an even number of images; soft (N, C) targets for the loss.

    timm mixes a batch with its flip and needs an even size: an odd batch's last image stays unmixed.
    """
    import torch
    soft = torch.nn.functional.one_hot(targets, num_classes).float()
    n = len(inputs) - len(inputs) % 2
    if n:
        inputs[:n], soft[:n] = _mixer(args.mixup, args.cutmix, num_classes)(inputs[:n], targets[:n])
    return inputs, soft


def make_optimizer(name, params, lr, fused=False):
    """fused=True (used with fp16's GradScaler): the optimizer reads GradScaler's found_inf on the device and
    skips the update there, so GradScaler.step does not read it on the host (one sync per step otherwise)."""
    import torch
    cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name]
    return cls(params, lr=lr, **({"fused": True} if fused else {}))


def defining_keys(config):
    return [key for key in config if key not in MAY_CHANGE]


def default_out(args):
    """runs/<the settings README's examples differ in>_<hash of every defining setting>."""
    tag = f"_k{args.k:g}_m{args.m:g}" if args.loss == "root" else f"_k{args.k:g}" if args.loss == "root_paper" \
        else ""
    schedule = "" if args.k_schedule == "constant" else f"_{args.k_schedule}"
    settings = vars(args)
    name = (f"{args.dataset}_{args.net}_{args.loss}{tag}{schedule}_{args.opt}_lr{args.lr:g}_bs{args.bs}"
            f"_e{args.n_epochs}_s{args.seed}_{config_hash(settings, defining_keys(settings))}")
    return os.path.join("runs", name)


def pick_device(choice):
    import torch
    from utils import distributed as du
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        return torch.device("cuda", du.world_info()[2])
    return torch.device("cpu")


def amp_dtype(args, device):
    """bf16 where supported, else fp16 (with GradScaler); None (fp32) on CPU or with --noamp."""
    import torch
    if device.type != "cuda" or args.noamp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed):
    import random

    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def epoch_seed(seed, epoch, rank):
    """Seed of an epoch's augmentation draws: the same for every loss (paired runs), another per DDP rank."""
    return seed * 100_003 + epoch + rank * 1_000_003


def quiet_worker(_):
    """DataLoader worker_init_fn: leave SIGTERM/SIGINT sent to the whole process group (timeout, scancel,
    Ctrl-C) to the main process, which saves and stops; a worker killed by them would crash the run."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_net(args, num_classes, device):
    import torch

    import models
    try:
        net = models.build_model(args.net, num_classes, args.size, patch=args.patch, dimhead=args.dimhead,
                                 pretrained=args.pretrained if args.net == "vit_timm" else None)
    except (ValueError, AssertionError, RuntimeError) as err:
        raise UsageError(f"cannot build --net {args.net} at --size {args.size} --patch {args.patch}: "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
    if args.pretrained and args.net != "vit_timm":
        models.load_pretrained(net, args.pretrained, skip_prefixes=())
    net = net.to(device)
    return net.to(memory_format=torch.channels_last) if args.channels_last else net


class Run:
    """Everything one training run holds: data, model, optimizer, schedule, counters, its run directory."""

    def __init__(self, args, stop):
        import torch
        from torch.nn.parallel import DistributedDataParallel

        from utils import distributed as du
        from utils.datasets import build_datasets
        from utils.runio import set_threads
        import models
        self.args, self.stop = args, stop  # stop: {"signal": signum} once SIGINT/SIGTERM arrived
        self.device = pick_device(args.device)
        set_threads(args.threads)
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
        self.forward = torch.compile(self.model) if args.compile else self.model
        self.dtype = amp_dtype(args, self.device)
        self.optimizer = make_optimizer(args.opt, self.net.parameters(), args.lr, fused=self.dtype == torch.float16)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, args.n_epochs)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.sampler = du.ResumableSampler(self.train_set, self.world, self.rank, seed=args.seed)
        self.sync_every = args.sync_every or (50 if self.device.type == "cuda" else 1)
        self.epoch, self.step, self.best_acc, self.best_epoch, self.partial = 0, 0, 0.0, 0, None
        self.rng_ranks = None  # every process's RNG state at a mid-epoch stop under DDP (gather_rng)
        self.last_record = None  # the newest epoch's metrics line, kept in the checkpoint too
        self.checked_step = 0  # the last step whose loss is known to be finite
        self.dir = None

    @property
    def stop_signal(self):
        return self.stop.get("signal")

    def checkpoint_path(self, name="checkpoint.pt"):
        return os.path.join(self.out, name)

    def config(self):
        from models import count_parameters
        return dict(vars(self.args), out=self.out, n_train=self.info["n_train"], n_test=self.info["n_test"],
                    world_size=self.world, params=count_parameters(self.net))

    def state(self):
        from utils.checkpoint import rng_state
        return dict(model=self.net.state_dict(), optimizer=self.optimizer.state_dict(),
                    scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), epoch=self.epoch,
                    step=self.step, best_acc=self.best_acc, best_epoch=self.best_epoch, rng=rng_state(),
                    partial=self.partial, last_record=self.last_record,
                    **({"rng_ranks": self.rng_ranks} if self.partial is not None and self.rng_ranks else {}))

    def gather_rng(self):
        """Collect every process's RNG state (a collective: all processes call it) so that a mid-epoch resume
        continues each process's augmentation stream where it stopped, not only rank 0's."""
        from utils import distributed as du
        from utils.checkpoint import rng_state
        self.rng_ranks = du.all_gather_object(rng_state()) if self.world > 1 else None

    def save(self, name="checkpoint.pt"):
        from utils.checkpoint import save_checkpoint
        if self.main:
            save_checkpoint(self.checkpoint_path(name), "train", self.config(), **self.state())

    def restore(self, path, keys):
        """Load the checkpoint at `path`; refuse it if its config differs from ours on `keys`."""
        from utils.checkpoint import load_checkpoint, set_rng_state
        state = load_checkpoint(path, map_location="cpu", kind="train")  # RNG states must stay on the CPU
        diffs = config_differences(state["config"], self.config(), keys)
        if diffs:
            raise UsageError(f"{path} was made with other settings: " + "; ".join(diffs))
        self.net.load_state_dict(state["model"])
        if self.args.eval_only:
            self.epoch = state["epoch"]
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = state["epoch"], state.get("step", 0)
        self.best_acc, self.best_epoch = state["best_acc"], state.get("best_epoch", 0)
        self.partial, self.checked_step = state.get("partial"), self.step
        self.last_record = state.get("last_record")
        if self.partial is not None:
            ranks = state.get("rng_ranks")
            if ranks is not None and len(ranks) == self.world:
                set_rng_state(ranks[self.rank])
            elif self.main:
                set_rng_state(state["rng"])
            else:  # an older checkpoint or another world size: only rank 0's RNG can be restored
                seed_everything(epoch_seed(self.args.seed, self.epoch, self.rank) + self.partial["batches"])
            if not self.main:  # the saved sums are every process's: count them once
                self.partial = dict(self.partial, sums={key: 0.0 for key in self.partial["sums"]})
        fit_schedule(self)


def fit_schedule(run):
    """--resume with another --n_epochs: the cosine schedule continues from the current epoch over the new
    length (the learning rate the new length gives this epoch), instead of restarting or ending at lr 0."""
    scheduler = run.scheduler
    if scheduler.T_max == run.args.n_epochs:
        return
    if run.main:
        print(f"--n_epochs {scheduler.T_max} -> {run.args.n_epochs}: the cosine schedule continues from epoch "
              f"{run.epoch + 1} over {run.args.n_epochs} epochs", flush=True)
    scheduler.T_max = run.args.n_epochs
    for group, base in zip(run.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base - scheduler.eta_min) * (
            1 + math.cos(math.pi * run.epoch / scheduler.T_max)) / 2
    scheduler._last_lr = [group["lr"] for group in run.optimizer.param_groups]


# ------------------------------------------------------------------------------------------ loop
def make_loader(run, dataset, batch_size, sampler=None, seed=0):
    import torch
    from torch.utils.data import DataLoader
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=run.args.workers,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=quiet_worker,
                      pin_memory=run.device.type == "cuda")


def train_epoch(run, loss_fn):
    """One pass over the training data (or what is left of it after a mid-epoch stop); None if stopped.

    Loss and accuracy are summed on the device; the host reads them only every --sync-every steps
    (sync_point) and at the end of the epoch, so a CUDA step never waits for the GPU."""
    import torch

    from utils.progress import Progress
    args = run.args
    carried = run.partial["sums"] if run.partial else {"loss": 0.0, "correct": 0.0, "seen": 0.0}
    done = run.partial["batches"] if run.partial else 0
    seed = epoch_seed(args.seed, run.epoch, run.rank)
    if run.partial is None:
        seed_everything(seed)
    run.sampler.set_epoch(run.epoch)
    run.sampler.set_start(done * args.bs)
    loader = make_loader(run, run.train_set, args.bs, run.sampler, seed)
    sums = torch.tensor([carried["loss"], carried["correct"], carried["seen"]], dtype=torch.float64,
                        device=run.device)
    run.model.train()
    last = done + len(loader)
    progress = Progress(last, f"epoch {run.epoch + 1}/{args.n_epochs}", args.log_every, enabled=run.main)
    progress.update(done)
    try:
        for inputs, targets in loader:
            train_step(run, loss_fn, inputs, targets, sums)
            done += 1
            progress.update()
            synced = done % run.sync_every == 0 or done == last
            agreed = sync_point(run, sums, progress) if synced else False
            if done < last and should_stop(run, agreed):
                if not synced:
                    sync_point(run, sums, progress)  # never save a state whose loss is not checked
                total = reduce_sums(run, sums)
                run.partial = {"batches": done, "sums": dict(zip(("loss", "correct", "seen"), total))}
                return None
    finally:
        progress.close()
    run.partial = None
    loss, correct, seen = reduce_sums(run, sums)
    return {"train_loss": loss / max(seen, 1), "train_acc": 100.0 * correct / max(seen, 1), "train_images": seen}


def train_step(run, loss_fn, inputs, targets, sums):
    """Forward, loss, backward and optimizer step; adds the batch's loss sum, correct count and size to
    `sums` (on the device: no host sync here)."""
    import torch
    inputs = inputs.to(run.device, non_blocking=True)
    targets = targets.to(run.device, non_blocking=True)
    if run.args.channels_last and inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    loss_targets = targets
    if run.args.mixup or run.args.cutmix:
        inputs, loss_targets = mix_batch(run.args, inputs, targets, run.info["num_classes"])
    with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
        outputs = run.forward(inputs)
    loss = loss_fn(outputs.float(), loss_targets)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    with torch.no_grad():
        sums[0] += loss.detach().double() * len(targets)
        sums[1] += (outputs.argmax(1) == targets).sum()
        sums[2] += len(targets)


def sync_point(run, sums, progress=None):
    """The one host-device sync inside an epoch: raise if the loss summed so far is not finite (on any
    process) and return whether any process was asked to stop (one all-reduce under DDP, none otherwise)."""
    import torch
    import torch.distributed as dist
    flags = torch.cat([sums, sums.new_tensor([float(run.stop_signal is not None)])])
    if run.world > 1:
        dist.all_reduce(flags)
    loss, correct, seen, stop = flags.tolist()
    if not math.isfinite(loss):
        raise UsageError(nan_message(run, loss))
    run.checked_step = run.step
    if progress is not None:
        progress.stats(loss=loss / max(seen, 1), acc=correct / max(seen, 1))
    return stop > 0


def nan_message(run, value):
    first, last = run.checked_step + 1, run.step
    where = f"step {last}" if first == last else f"between steps {first} and {last} (--sync-every 1 names it)"
    path = run.checkpoint_path()
    kept = (f"last good checkpoint kept in {path}" if os.path.exists(path)
            else "no checkpoint had been written yet")
    return f"loss became {value} at epoch {run.epoch + 1}, {where} (lower --lr, or try --noamp); stopped, {kept}"


def should_stop(run, agreed):
    """--max-steps (the same step on every process) or a signal: seen at once in a single process, under DDP
    only through the all-reduce of a sync point (`agreed`), so that every process stops at the same step."""
    if run.args.max_steps is not None and run.step >= run.args.max_steps:
        return True
    return agreed if run.world > 1 else run.stop_signal is not None


def stop_agreed(run):
    """Between epochs: has any process been asked to stop?"""
    from utils import distributed as du
    if run.world == 1:
        return run.stop_signal is not None
    return du.all_reduce_sum([float(run.stop_signal is not None)], run.device)[0] > 0


def reduce_sums(run, sums):
    """The sums of every process, on the host."""
    import torch.distributed as dist
    total = sums.clone()
    if run.world > 1:
        dist.all_reduce(total)
    return total.tolist()


def evaluate(run, loss_fn):
    """Validation loss (the training loss), cross-entropy and top-1 accuracy; each process takes a shard."""
    import torch
    from torch.utils.data import Subset

    import losses
    from utils.progress import Progress
    run.model.eval()
    shard = Subset(run.test_set, range(run.rank, len(run.test_set), run.world))
    loader = make_loader(run, shard, EVAL_BATCH)
    sums = torch.zeros(4, dtype=torch.float64, device=run.device)
    progress = Progress(len(loader), "eval", run.args.log_every, enabled=run.main)
    with torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(run.device), targets.to(run.device)
            if run.args.channels_last and inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with torch.autocast(run.device.type, dtype=run.dtype, enabled=run.dtype is not None):
                outputs = run.net(inputs).float()
            sums[0] += loss_fn(outputs, targets, reduction="sum").double()
            sums[1] += losses.cross_entropy(outputs, targets, reduction="sum").double()
            sums[2] += (outputs.argmax(1) == targets).sum()
            sums[3] += len(targets)
            progress.update()
    progress.close()
    loss, ce, correct, n = reduce_sums(run, sums)
    return {"val_loss": loss / max(n, 1), "val_ce": ce / max(n, 1), "val_acc": 100.0 * correct / max(n, 1)}


def run_epoch(run, logger):
    """Train and evaluate one epoch, checkpoint it, then log it; returns the metrics or None if stopped.

    The order makes a kill at any point safe: checkpoint.pt first (what --resume continues from), then
    best.pt, then the metrics line, which --resume trims back to the checkpoint's epoch."""
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
    improved = record["val_acc"] > run.best_acc or (run.best_epoch == 0 and run.best_acc == 0)  # first epoch
    if improved:
        run.best_acc, run.best_epoch = record["val_acc"], run.epoch
    record["best_acc"] = run.best_acc
    run.last_record = record
    run.save()
    if improved:
        run.save("best.pt")
    logger(record)
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
        run.dir.log(record)
        if wandb is not None:
            wandb.log(record)
        print(f"epoch {record['epoch']}/{run.args.n_epochs} loss {record['train_loss']:.4f} "
              f"acc {record['train_acc']:.2f} | val loss {record['val_loss']:.4f} ce {record['val_ce']:.4f} "
              f"acc {record['val_acc']:.2f} (best {record['best_acc']:.2f}) | lr {record['lr']:.2e} "
              f"k {record['k']:g} | {record['epoch_s']:.1f}s {record['images_per_s']:.0f} img/s", flush=True)
    return log


# ------------------------------------------------------------------------------------------ main
def open_run_dir(run):
    """The run directory (rank 0 checks and writes it; the others follow rank 0's verdict), then --resume's
    checkpoint: refused if a defining setting differs; metrics.jsonl trimmed back to the checkpoint's epoch."""
    from utils import distributed as du
    config, error = run.config(), None
    keys = defining_keys(config)
    if run.main:
        try:
            run.dir = RunDir(run.out, config, resume=run.args.resume, overwrite=run.args.overwrite,
                             defining=keys)
        except UsageError as err:
            error = err
    if du.all_reduce_sum([float(error is not None)], run.device)[0] > 0:
        raise error if error is not None else SystemExit(2)  # rank 0 printed why
    if not run.main:
        run.dir = RunDir(run.out, config, resume=run.args.resume, main_process=False)
    if run.args.resume:
        path = run.checkpoint_path()
        if not os.path.exists(path):
            raise UsageError(f"--resume: no checkpoint at {path} (give the run's --out)")
        run.restore(path, keys)
        kept = run.dir.trim_metrics(lambda record: record.get("epoch", 0) <= run.epoch)
        last = run.last_record
        if last is not None and last["epoch"] == run.epoch and not any(r.get("epoch") == run.epoch for r in kept):
            run.dir.log(last)  # killed after checkpoint.pt, before the metrics line: the checkpoint has it
        repair_best(run)


def repair_best(run):
    """A kill between checkpoint.pt and best.pt leaves best.pt one improvement behind; the checkpoint then
    holds the best model (best_epoch == epoch), so it is copied over."""
    from utils.checkpoint import load_checkpoint
    best = run.checkpoint_path("best.pt")
    if not run.main or run.best_epoch != run.epoch or run.best_epoch == 0:
        return
    if not os.path.exists(best) or load_checkpoint(best).get("best_epoch", run.epoch) != run.epoch:
        run.save("best.pt")


def summarise(run, status):
    records = run.dir.metrics() if run.main and run.dir is not None else []
    last = records[-1] if records else {}
    mean = (lambda key: sum(r[key] for r in records) / len(records)) if records else (lambda key: None)
    a = run.args
    return {"status": status, "net": a.net, "dataset": a.dataset, "loss": a.loss, "k": a.k, "m": a.m,
            "seed": a.seed, "epochs_done": run.epoch, "steps": run.step, "best_acc": run.best_acc,
            "best_epoch": run.best_epoch, "final_acc": last.get("val_acc"), "final_val_loss": last.get("val_loss"),
            "final_val_ce": last.get("val_ce"), "mean_epoch_s": mean("epoch_s"),
            "mean_images_per_s": mean("images_per_s"), "n_train": run.info["n_train"],
            "n_test": run.info["n_test"], "params": run.config()["params"], "world_size": run.world,
            "out": run.out}


def eval_only(run):
    """Evaluate the run's checkpoint (--resume) or --pretrained weights; write only the eval file."""
    args = run.args
    if not (args.resume or args.pretrained):
        raise UsageError("--eval-only needs --resume (with the run's --out) or --pretrained weights")
    if args.resume:
        path = run.checkpoint_path()
        if not os.path.exists(path):
            raise UsageError(f"--eval-only --resume: no checkpoint at {path} (give the run's --out)")
        run.restore(path, SHAPES)
    metrics = evaluate(run, make_loss(args, run.k_schedule(max(run.epoch - 1, 0))))
    results = dict(summarise(run, "eval"), **metrics, checkpoint=run.checkpoint_path() if args.resume else None)
    target = args.eval_file or os.path.join(run.out, "eval.json")
    if run.main:
        try:
            atomic_write_json(target, results)
        except OSError as err:
            raise UsageError(f"cannot write {target}: {err.strerror or err} (choose another --eval-file)") from None
        print(f"eval: val loss {metrics['val_loss']:.4f} ce {metrics['val_ce']:.4f} acc {metrics['val_acc']:.2f}"
              f" -> {target}")
    return results


def train_loop(run):
    logger = make_logger(run)
    status = "finished"
    while run.epoch < run.args.n_epochs:
        if stop_agreed(run):
            status = "interrupted"
            break
        if run_epoch(run, logger) is None:
            status = "interrupted" if run.stop_signal else "max_steps"
            break
        if run.args.max_steps is not None and run.step >= run.args.max_steps:
            status = "max_steps"
            break
    if status != "finished":
        if run.partial is not None:
            run.gather_rng()
        run.save()
        if run.main:
            where = f"during epoch {run.epoch + 1}" if run.partial is not None else f"after epoch {run.epoch}"
            print(f"stopped ({status}) {where}; continue with --resume --out {run.out}", flush=True)
    return run.dir.finish(summarise(run, status))


def main(args):
    """Train (or --eval-only) as the flags say; returns the results dict (also written to the run directory)."""
    stop, handlers, run = {}, {}, None

    def on_signal(signum, frame):
        stop["signal"] = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: no signal handling
            pass
    from utils import distributed as du
    try:
        run = Run(args, stop)
        if args.eval_only:
            return eval_only(run)
        open_run_dir(run)
        with run.dir:
            return train_loop(run)
    except OSError as err:  # full disk, read-only folder, a file in the way, unreadable data
        raise UsageError(f"{err.strerror or err}: {err.filename}" if err.filename else str(err)) from None
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if run is not None and run.dir is not None:
            run.dir.release()
        run = None  # free the DDP model (and its reducer) while the process group still exists
        du.cleanup()


if __name__ == "__main__":
    run_cli(main, parse_args())
