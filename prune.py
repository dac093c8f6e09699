"""Gem-miner pruning of ResNet-20 on CIFAR-10, then fine-tuning under the mined mask with CE or RLO
(paper Sec. 4.2.2, Fig. 3b-c; gem-miner: Sreenivasan et al. 2022, "Rare Gems", Sec. 3 and Algorithm 1).

One run directory per run, two stages:
  mine       weights frozen at a signed-constant init, non-affine batch norm; every conv / linear weight has a
             score p in [0, 1]; the forward pass uses w * 1[p > 0.5] * flag with a straight-through gradient to
             p; loss CE + lmbda * ||p||^2, SGD on p, then p is clamped to [0, 1]. Every --iter-period epochs the
             lowest-scoring surviving weights are pruned globally, at a rate per round that leaves exactly
             --density percent of the weights after the last round. The result is saved as <out>/mask.pt.
  fine-tune  the mask (the surviving flags) is fixed with torch.nn.utils.prune and the weights, starting from
             the same signed-constant init, are trained with --ft-loss (any loss of losses.py).
--mask PATH skips mining and fine-tunes a saved mask (mine once, fine-tune many); --random-mask layer|global
fine-tunes a random mask with the mined mask's per-layer counts, or the same global count (the baselines).
`--ft-epochs 0` only mines. `--resume` continues at the last finished epoch; `--stop-after N` stops after N
epochs in all (a time-sliced run, continued later with --resume).
"""
import utils.tv_compat  # noqa: F401  (must come before anything imports torchvision)

import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.parametrize as parametrize
import torch.nn.utils.prune as torch_prune
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import losses
import models
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.cli import ArgumentParser, UsageError, default_data_dir, run_cli
from utils.datasets import Transformed, build_datasets, cifar10_data_dir
from utils.runio import RunDir, add_run_args, set_threads

DEFINING = ("density", "mine_epochs", "iter_period", "lmbda", "mine_lr", "ft_epochs", "ft_lr", "ft_wd",
            "ft_loss", "k", "m", "seed", "subset", "test_subset", "size", "bs", "mask", "random_mask")
FT_MILESTONES = (80 / 150, 120 / 150)  # gem-miner's multistep fine-tuning schedule, as fractions of 150 epochs
BN_CALIBRATION_BATCHES = 20
EVAL_BATCH = 500


def parse_args(argv=None):
    p = ArgumentParser(description="Gem-miner pruning of ResNet-20 on CIFAR-10, fine-tuned with RLO or CE.")
    p.add_argument("--density", type=float, default=0.59,
                   help="percent of weights kept (gem-miner's target_sparsity): 0.59 = 99.41%% sparse")
    p.add_argument("--mine-epochs", type=int, default=150, help="mining epochs (scores only)")
    p.add_argument("--iter-period", type=int, default=5, help="prune every this many mining epochs")
    p.add_argument("--lmbda", type=float, default=1e-4, help="L2 penalty on the scores")
    p.add_argument("--mine-lr", type=float, default=0.1, help="mining SGD lr (cosine schedule, momentum 0.9)")
    p.add_argument("--ft-epochs", type=int, default=150, help="fine-tuning epochs (0: mine only)")
    p.add_argument("--ft-lr", type=float, default=0.01, help="fine-tuning SGD lr (x0.1 at 53%% and 80%%)")
    p.add_argument("--ft-wd", type=float, default=1e-4, help="fine-tuning weight decay")
    p.add_argument("--ft-loss", type=str.lower, default="ce", choices=list(losses.LOSSES),
                   help="fine-tuning loss; root = m*(1-p^(1/k)), root_paper = k*(p^(-1/k)-1)")
    p.add_argument("--k", type=float, default=8.0, help="RLO k")
    p.add_argument("--m", type=float, default=8.0, help="RLO m (loss 'root')")
    p.add_argument("--seed", type=int, default=0, help="seed of the init, the scores and the data order")
    p.add_argument("--subset", type=int, default=None, help="train on a fixed random N training images")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on a fixed random N test images")
    p.add_argument("--size", type=int, default=32, help="image size fed to the net (16 for CPU-scale runs)")
    p.add_argument("--bs", type=int, default=128, help="batch size")
    p.add_argument("--data-dir", default=default_data_dir(),
                   help="CIFAR-10 root (pickles or class folders, or the packed cifar10-jpeg/cifar10-jpeg.tar.gz)")
    p.add_argument("--cache", default=os.path.join("runs", "cache"), help="where a packed dataset is unpacked")
    p.add_argument("--mask", default=None, help="fine-tune this saved mask.pt instead of mining")
    p.add_argument("--random-mask", default=None, choices=("layer", "global"),
                   help="replace the mask by a random one: same per-layer counts, or the same global count")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many epochs in all (resumable)")
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--device", type=str.lower, default="auto", choices=("auto", "cpu", "cuda"))
    add_run_args(p, "runs/prune_d<density>_<loss>_s<seed>")
    return p.parse_args(argv)


def check_args(args):
    if not (math.isfinite(args.density) and 0 < args.density <= 100):
        raise UsageError(f"--density is the percent of weights kept and must be in (0, 100], got {args.density}")
    for name in ("iter_period", "bs", "size"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("mine_epochs", "ft_epochs"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.mask is None and args.random_mask != "global" and args.mine_epochs == 0:
        raise UsageError("--mine-epochs 0 needs --mask PATH or --random-mask global")
    if args.lmbda < 0 or args.mine_lr <= 0 or args.ft_lr <= 0 or args.ft_wd < 0:
        raise UsageError("--lmbda and --ft-wd must be >= 0, --mine-lr and --ft-lr > 0")
    try:
        return losses.get_loss(args.ft_loss, k=args.k, m=args.m)
    except ValueError as err:
        raise UsageError(str(err)) from None


def default_out(args):
    tag = {"root": f"_k{args.k:g}_m{args.m:g}", "root_paper": f"_k{args.k:g}"}.get(args.ft_loss, "")
    rand = f"_random-{args.random_mask}" if args.random_mask else ""
    return os.path.join("runs", f"prune_d{args.density:g}_{args.ft_loss}{tag}{rand}_s{args.seed}")


# ------------------------------------------------------------------------------------------ data
class InMemory(Dataset):
    """The items of a dataset read once and kept (decoding JPEGs every epoch cost more than the net here)."""

    def __init__(self, dataset):
        self.items = [dataset[i] for i in range(len(dataset))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def load_data(args):
    """(train, test, info): the decoded train images kept in memory (augmented per epoch), the test set
    fully transformed once (its transform is deterministic)."""
    data_dir = cifar10_data_dir(args.data_dir, args.cache)
    train, test, info = build_datasets("cifar10", data_dir, args.size, augment=False, subset=args.subset,
                                       seed=0, test_subset=args.test_subset)
    return Transformed(InMemory(train.base), train.transform), InMemory(test), info


def train_loader(train_set, args, stage, epoch):
    """The epoch's data order and augmentation, fixed by (seed, stage, epoch): resumed and paired runs agree."""
    seed = args.seed * 100_003 + (0 if stage == "mine" else 50_000) + epoch
    torch.manual_seed(seed)  # the crop / flip draws (workers=0 use the main process's RNG)
    return DataLoader(train_set, batch_size=args.bs, shuffle=True, num_workers=args.workers,
                      generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ masks
def pick_device(choice):
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but no CUDA device is available")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


def device_of(net):
    return next(net.parameters()).device


def prunable(model):
    """(name, module) of every weight gem-miner scores: all convs and the linear layer."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def build_net(num_classes, seed):
    """ResNet-20 with non-affine batch norm, no classifier bias, weights at gem-miner's signed constant
    init: sign(w) * gain / sqrt(fan_in) with w kaiming normal (Ramanujan et al. 2020's 'signed constant')."""
    torch.manual_seed(seed)
    net = models.build_model("resnet20", num_classes, 32, affine=False, bias=False)
    for _, module in prunable(net):
        fan = nn.init._calculate_correct_fan(module.weight, "fan_in")
        module.weight.data = module.weight.data.sign() * (nn.init.calculate_gain("relu") / math.sqrt(fan))
    return net


class StraightThrough(torch.autograd.Function):
    """1[p > 0.5] forward; the gradient passes through unchanged (gem-miner's GetSubnet for hc_iter)."""

    @staticmethod
    def forward(ctx, scores):
        return (scores > 0.5).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


class ScoreMask(nn.Module):
    """Parametrization weight -> weight * 1[scores > 0.5] * flag; d(weight * mask)/d scores = weight * flag."""

    def __init__(self, weight):
        super().__init__()
        self.scores = nn.Parameter(torch.rand_like(weight))  # gem-miner's score_init 'unif'
        self.register_buffer("flag", torch.ones_like(weight))

    def forward(self, weight):
        return weight * StraightThrough.apply(self.scores) * self.flag


def attach_scores(net):
    """Freeze the weights and give each prunable one a score; returns the ScoreMask modules by layer name."""
    for p in net.parameters():
        p.requires_grad_(False)
    masks = {}
    for name, module in prunable(net):
        parametrize.register_parametrization(module, "weight", ScoreMask(module.weight))
        masks[name] = module.parametrizations.weight[0]
    return masks


def prune_schedule(mine_epochs, iter_period, n_weights, density):
    """{epochs done: weights kept after that round}. Rounds come every iter_period epochs, as in gem-miner
    (floor((E - 1) / T) rounds, so the net trains a little after the last one; at least one round, at the
    end when E <= T); the kept fraction falls geometrically and the last round keeps round(n * density %)."""
    rounds = max(1, (mine_epochs - 1) // iter_period)
    target = density / 100
    return {min(r * iter_period, mine_epochs): int(round(n_weights * target ** (r / rounds)))
            for r in range(1, rounds + 1)}


def prune_round(score_masks, keep):
    """Keep the `keep` highest-scoring surviving weights over all layers (global ranking), drop the rest."""
    scores = torch.cat([torch.where(sm.flag > 0, sm.scores.detach(), torch.tensor(-1.0)).flatten()
                        for sm in score_masks.values()])
    kept = torch.zeros_like(scores)
    kept[torch.topk(scores, keep, sorted=False).indices] = 1.0
    start = 0
    for sm in score_masks.values():
        n = sm.flag.numel()
        sm.flag.copy_(kept[start:start + n].view_as(sm.flag))
        start += n


def random_mask(masks, mode, n_keep, seed):
    """A random mask: per layer with the counts of `masks` ('layer'), or `n_keep` weights drawn globally."""
    gen = torch.Generator().manual_seed(seed + 7_919)
    if mode == "layer":
        return {name: _random_like(m, int(m.sum()), gen) for name, m in masks.items()}
    flat = torch.cat([m.flatten() for m in masks.values()])
    drawn, start, out = _random_like(flat, n_keep, gen), 0, {}
    for name, m in masks.items():
        out[name] = drawn[start:start + m.numel()].view_as(m)
        start += m.numel()
    return out


def _random_like(mask, count, gen):
    out = torch.zeros(mask.numel(), dtype=torch.bool)
    out[torch.randperm(mask.numel(), generator=gen)[:count]] = True
    return out.view_as(mask)


def layer_density(masks):
    """Per-layer kept / total weights and percent kept; a layer with nothing kept is 'collapsed'."""
    return [{"layer": name, "kept": int(m.sum()), "total": m.numel(), "density": 100.0 * float(m.sum()) / m.numel(),
             "collapsed": int(m.sum()) == 0} for name, m in masks.items()]


def save_mask(path, masks, init_state, config, summary):
    save_checkpoint(path, "prune", config, masks=masks, init=init_state, mined=summary)


def load_mask(path):
    state = load_checkpoint(path, kind="prune")
    if "masks" not in state or "init" not in state:
        raise UsageError(f"{path} is a prune checkpoint but holds no mask (give a run's mask.pt)")
    return state


# ------------------------------------------------------------------------------------------ loops
@torch.no_grad()
def evaluate(net, test_set):
    net.eval()
    correct, ce, n = 0, 0.0, 0
    for x, y in DataLoader(test_set, batch_size=EVAL_BATCH):
        x, y = x.to(device_of(net)), y.to(device_of(net))
        out = net(x)
        correct += (out.argmax(1) == y).sum().item()
        ce += F.cross_entropy(out, y, reduction="sum").item()
        n += len(y)
    return {"acc": 100.0 * correct / max(n, 1), "test_ce": ce / max(n, 1)}


@torch.no_grad()
def recalibrate_bn(net, train_set, args):
    """Re-estimate batch-norm statistics (cumulative average over a few batches) for a changed mask."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    for i, (x, _) in enumerate(train_loader(train_set, args, "calibrate", 0)):
        if i == BN_CALIBRATION_BATCHES:
            break
        net(x.to(device_of(net)))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1


def train_epoch(net, loader, optimizer, loss_fn, desc, penalty=None, after_step=None):
    """One epoch; returns (mean loss, train accuracy, seconds). `penalty()` is added to every step's loss,
    `after_step()` runs after every optimizer step."""
    net.train()
    start, sums = time.perf_counter(), [0.0, 0, 0]
    bar = tqdm(loader, desc=desc, leave=False, disable=None)
    for x, y in bar:
        x, y = x.to(device_of(net)), y.to(device_of(net))
        out = net(x)
        loss = loss_fn(out, y) + (penalty() if penalty else 0.0)
        if not math.isfinite(loss.item()):
            raise UsageError(f"loss became {loss.item()} during {desc}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step:
            after_step()
        sums = [sums[0] + loss.item() * len(y), sums[1] + (out.argmax(1) == y).sum().item(), sums[2] + len(y)]
        bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}")
    return sums[0] / max(sums[2], 1), 100.0 * sums[1] / max(sums[2], 1), time.perf_counter() - start


class Budget:
    """--stop-after: how many more epochs this invocation may run (None: no limit)."""

    def __init__(self, epochs):
        self.left = epochs

    def spend(self):
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def save_state(run, args, **state):
    save_checkpoint(run.file("checkpoint.pt"), "prune", vars(args), **state)


def mine(args, data, run, state, budget):
    """The mining stage (resumable); returns (masks, init weights, summary) or None when --stop-after hits."""
    train_set, test_set, info = data
    net = build_net(info["num_classes"], args.seed)
    init_state = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(args.seed + 1)
    score_masks = attach_scores(net)
    net.to(args.device)
    scores = [sm.scores for sm in score_masks.values()]
    optimizer = torch.optim.SGD(scores, lr=args.mine_lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(args.mine_epochs, 1))
    schedule = prune_schedule(args.mine_epochs, args.iter_period, sum(s.numel() for s in scores), args.density)
    epoch, seconds = 0, 0.0
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, seconds = state["epoch"], state["seconds"]
    ce = losses.get_loss("ce")
    penalty = lambda: args.lmbda * sum((s ** 2).sum() for s in scores)  # noqa: E731
    clamp = lambda: [s.data.clamp_(0.0, 1.0) for s in scores]  # noqa: E731
    while epoch < args.mine_epochs:
        if not budget.spend():
            return None
        lr = optimizer.param_groups[0]["lr"]
        loss, acc, secs = train_epoch(net, train_loader(train_set, args, "mine", epoch), optimizer, ce,
                                      f"mine {epoch + 1}/{args.mine_epochs}", penalty, clamp)
        scheduler.step()
        epoch, seconds = epoch + 1, seconds + secs
        if epoch in schedule:
            prune_round(score_masks, schedule[epoch])
        kept = int(sum(sm.flag.sum() for sm in score_masks.values()))
        record = {"stage": "mine", "epoch": epoch, "train_loss": loss, "train_acc": acc, "kept": kept,
                  "lr": lr, "epoch_s": secs, "train_s": seconds}
        run.log(record)
        print(f"mine {epoch}/{args.mine_epochs} loss {loss:.4f} acc {acc:.2f} | kept {kept} | lr {lr:.2e} | "
              f"{secs:.1f}s", flush=True)
        save_state(run, args, stage="mine", epoch=epoch, seconds=seconds, model=net.state_dict(),
                   optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
    return finish_mining(args, data, net, score_masks, init_state, seconds)


def finish_mining(args, data, net, score_masks, init_state, seconds):
    """The mined mask, and the accuracy of the mined sub-network before fine-tuning."""
    train_set, test_set, _ = data
    rounded = evaluate(net, test_set)["acc"]  # w * 1[p > 0.5] * flag, mining's batch-norm statistics
    masks = {name: (sm.flag > 0).cpu() for name, sm in score_masks.items()}
    summary = {"mined_acc": rounded, "mine_s": seconds,
               "mine_epoch_s": seconds / args.mine_epochs if args.mine_epochs else None}
    return masks, init_state, summary


def masked_net(init_state, masks, num_classes, seed, device="cpu"):
    """The signed-constant init under a fixed mask (torch.nn.utils.prune: weight = weight_orig * weight_mask)."""
    net = build_net(num_classes, seed)
    net.load_state_dict(init_state)
    for name, module in prunable(net):
        torch_prune.custom_from_mask(module, "weight", masks[name])
    return net.to(device)


def ft_milestones(epochs):
    return sorted({max(1, int(round(f * epochs))) for f in FT_MILESTONES})


def finetune(args, data, run, prepared, state, budget, loss_fn):
    """The fine-tuning stage (resumable); returns (net, start accuracy) or None at --stop-after."""
    train_set, test_set, info = data
    masks, init_state, mined = prepared
    net = masked_net(init_state, masks, info["num_classes"], args.seed, args.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.ft_lr, momentum=0.9, weight_decay=args.ft_wd)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, ft_milestones(args.ft_epochs), gamma=0.1)
    if state is not None and state["stage"] == "ft":
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, seconds, start_acc = state["epoch"], state["seconds"], state["start_acc"]
    else:
        recalibrate_bn(net, train_set, args)
        epoch, seconds, start_acc = 0, 0.0, evaluate(net, test_set)["acc"]
    while epoch < args.ft_epochs:
        if not budget.spend():
            return None
        lr = optimizer.param_groups[0]["lr"]
        loss, acc, secs = train_epoch(net, train_loader(train_set, args, "ft", epoch), optimizer, loss_fn,
                                      f"fine-tune {epoch + 1}/{args.ft_epochs}")
        scheduler.step()
        epoch, seconds = epoch + 1, seconds + secs
        test = evaluate(net, test_set)
        record = {"stage": "ft", "epoch": epoch, "train_loss": loss, "train_acc": acc, **test, "lr": lr,
                  "epoch_s": secs, "train_s": seconds}
        run.log(record)
        print(f"fine-tune {epoch}/{args.ft_epochs} loss {loss:.4f} acc {acc:.2f} | test acc {test['acc']:.2f} "
              f"ce {test['test_ce']:.4f} | lr {lr:.2e} | {secs:.1f}s", flush=True)
        save_state(run, args, stage="ft", epoch=epoch, seconds=seconds, start_acc=start_acc,
                   model=net.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                   masks=masks, init=init_state, mined=mined)
    return net, start_acc


# ------------------------------------------------------------------------------------------ main
def obtain_mask(args, data, run, state, budget):
    """(masks, init weights, mining summary): resumed, loaded (--mask), mined, then maybe randomised."""
    if state is not None and state["stage"] == "ft":
        return state["masks"], state["init"], state["mined"]
    if args.mask:
        saved = load_mask(args.mask)
        if abs(saved["config"].get("density", args.density) - args.density) > 1e-9:
            raise UsageError(f"{args.mask} was mined at --density {saved['config']['density']}, "
                             f"not {args.density}")
        masks, init, mined = saved["masks"], saved["init"], dict(saved["mined"] or {}, mask=args.mask)
    elif args.random_mask == "global":
        net = build_net(data[2]["num_classes"], args.seed)
        init = {k: v.clone() for k, v in net.state_dict().items()}
        masks, mined = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in prunable(net)}, None
    else:
        got = mine(args, data, run, state if state is not None and state["stage"] == "mine" else None, budget)
        if got is None:
            return None
        masks, init, mined = got
        save_mask(run.file("mask.pt"), masks, init, vars(args), dict(mined, layers=layer_density(masks)))
    if args.random_mask:
        n_keep = int(round(sum(m.numel() for m in masks.values()) * args.density / 100))
        masks = random_mask(masks, args.random_mask, n_keep, args.seed)
    return masks, init, mined


def final_model(net, masks):
    """The fine-tuned net with its mask made permanent: pruned weights are stored as exact zeros."""
    for _, module in prunable(net):
        torch_prune.remove(module, "weight")
    return net


def summarise(args, run, info, masks, mined, start_acc):
    curve = [r for r in run.metrics() if r.get("stage") == "ft"]
    best = max(curve, key=lambda r: r["acc"]) if curve else None
    layers = layer_density(masks)
    n_weights, n_kept = sum(x["total"] for x in layers), sum(x["kept"] for x in layers)
    mean = (lambda xs: sum(xs) / len(xs) if xs else None)
    mined = mined or {}
    return {"status": "finished", "net": "resnet20", "dataset": "cifar10", "loss": args.ft_loss,
            "k": args.k, "m": args.m, "seed": args.seed, "density": args.density,
            "sparsity": 100.0 - args.density, "method": f"random-{args.random_mask}" if args.random_mask
            else "gem-miner", "mask": args.mask, "n_weights": n_weights, "n_kept": n_kept,
            "measured_density": 100.0 * n_kept / n_weights, "mined_acc": mined.get("mined_acc"),
            "start_acc": start_acc, "acc": curve[-1]["acc"] if curve else start_acc,
            "best_acc": best["acc"] if best else start_acc, "best_epoch": best["epoch"] if best else 0,
            "time_to_best_s": best["train_s"] if best else 0.0, "ft_s": curve[-1]["train_s"] if curve else 0.0,
            "ft_epoch_s": mean([r["epoch_s"] for r in curve]), "mine_s": mined.get("mine_s"),
            "mine_epoch_s": mined.get("mine_epoch_s"), "ft_epochs": args.ft_epochs,
            "mine_epochs": args.mine_epochs, "curve": [{"epoch": r["epoch"], "acc": r["acc"],
                                                        "train_s": r["train_s"]} for r in curve],
            "layers": layers, "collapsed": [x["layer"] for x in layers if x["collapsed"]],
            "n_train": info["n_train"], "n_test": info["n_test"], "size": args.size, "out": run.path}


def resume_state(run):
    path = run.file("checkpoint.pt")
    return load_checkpoint(path, kind="prune") if os.path.exists(path) else None


def main(args):
    loss_fn = check_args(args)
    set_threads(args.threads)
    args.device = str(pick_device(args.device))
    args.out = args.out or default_out(args)
    run = RunDir(args.out, vars(args), resume=args.resume, overwrite=args.overwrite, defining=DEFINING)
    try:
        data = load_data(args)
        state = resume_state(run) if args.resume else None
        budget = Budget(args.stop_after)
        prepared = obtain_mask(args, data, run, state, budget)
        start_acc = None
        if prepared is not None and args.ft_epochs > 0:
            tuned = finetune(args, data, run, prepared, state, budget, loss_fn)
            if tuned is None:
                prepared = None
            else:
                net, start_acc = tuned
                save_checkpoint(run.file("model.pt"), "prune", vars(args),
                                model={k: v.cpu() for k, v in final_model(net, prepared[0]).state_dict().items()},
                                masks=prepared[0])
        if prepared is None:
            print(f"stopped after --stop-after {args.stop_after} epochs; continue with --resume --out {args.out}")
            return run.finish({"status": "stopped", "out": run.path})
        results = run.finish(summarise(args, run, data[2], prepared[0], prepared[2], start_acc))
        collapsed = f", collapsed layers: {', '.join(results['collapsed'])}" if results["collapsed"] else ""
        print(f"done: kept {results['n_kept']}/{results['n_weights']} weights; mined acc {results['mined_acc']}, "
              f"after fine-tuning {results['acc']} (best {results['best_acc']}){collapsed}", flush=True)
        return results
    finally:
        run.release()


if __name__ == "__main__":
    run_cli(main, parse_args())
