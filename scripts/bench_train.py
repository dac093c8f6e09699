"""Training throughput (images/s) of one model with RLO and with CE on this machine, measured interleaved
(CE, RLO, RLO, CE, ...) in one process so that load from other jobs hits both alike; writes the ratio to
results/bench_train.md. The issue's target: RLO / CE >= 0.98."""
import os
import sys

import utils.tv_compat  # noqa: F401  (must come before anything imports torchvision)

import copy
import platform
import statistics
import time

import torch
from tqdm import tqdm

import losses
import models
from utils.cli import ArgumentParser, run_cli
from utils.runio import atomic_write_text

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", type=str.lower, default="res18_mini", choices=list(models.MODELS))
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--bs", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=5, help="optimizer steps per timed block")
    p.add_argument("--repeats", type=int, default=6, help="timed blocks per loss (interleaved)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--k", type=float, default=8.0)
    p.add_argument("--m", type=float, default=10.0)
    p.add_argument("--out", default=os.path.join(REPO, "results", "bench_train.md"))
    return p.parse_args(argv)


def timed_block(net, optimizer, loss_fn, x, y, steps):
    """Seconds for `steps` full training steps (forward, loss, backward, Adam step)."""
    start = time.perf_counter()
    for _ in range(steps):
        loss = loss_fn(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def loss_only_us(loss_fn, bs, classes, reps=200):
    """Microseconds per forward+backward of the loss alone on (bs, classes) logits."""
    logits = torch.randn(bs, classes, requires_grad=True)
    y = torch.randint(0, classes, (bs,))
    start = time.perf_counter()
    for _ in range(reps):
        loss_fn(logits, y).backward()
    return 1e6 * (time.perf_counter() - start) / reps


def measure(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = models.build_model(args.net, args.classes, args.size)
    x = torch.randn(args.bs, 3, args.size, args.size)
    y = torch.randint(0, args.classes, (args.bs,))
    setups = {}
    for name, fn in (("ce", losses.get_loss("ce")), ("rlo", losses.get_loss("root", k=args.k, m=args.m))):
        net = copy.deepcopy(base).train()
        setups[name] = (net, torch.optim.Adam(net.parameters(), lr=1e-4), fn)
        timed_block(*setups[name], x, y, 1)  # warm-up
    rates = {"ce": [], "rlo": []}
    for r in tqdm(range(args.repeats), desc="bench"):
        for name in (("ce", "rlo") if r % 2 == 0 else ("rlo", "ce")):
            rates[name].append(args.bs * args.steps / timed_block(*setups[name], x, y, args.steps))
    return rates


def main(args):
    rates = measure(args)
    ce, rlo = statistics.median(rates["ce"]), statistics.median(rates["rlo"])
    pairs = [r / c for r, c in zip(rates["rlo"], rates["ce"])]
    ratio = statistics.median(pairs)
    loss_us = {name: statistics.median(loss_only_us(fn, args.bs, args.classes) for _ in range(5))
               for name, fn in (("ce", losses.get_loss("ce")), ("rlo", losses.get_loss("root", k=args.k, m=args.m)))}
    command = "python -m scripts.bench_train " + " ".join(sys.argv[1:])
    text = "\n".join([
        "# Training throughput: RLO vs CE (same model, same batch, interleaved)", "",
        f"Command: `{command.strip()}`", "",
        f"Model {args.net} at {args.size}px, batch {args.bs}, {args.classes} classes, Adam, fp32, "
        f"{args.threads} torch thread(s), {platform.processor() or platform.machine()}, torch {torch.__version__}. "
        f"RLO = losses 'root' (k={args.k:g}, m={args.m:g}). {args.repeats} blocks of {args.steps} steps per loss, "
        "alternating CE/RLO order. The CPU was shared with other jobs while this ran: absolute images/s are "
        "load-dependent, the ratio much less so.", "",
        "| loss | median images/s | all blocks |", "|---|---|---|",
        f"| CE | {ce:.1f} | {', '.join(f'{v:.1f}' for v in rates['ce'])} |",
        f"| RLO | {rlo:.1f} | {', '.join(f'{v:.1f}' for v in rates['rlo'])} |", "",
        f"**RLO / CE = {ratio:.3f}** (median over adjacent CE/RLO block pairs, which cancels slow load drift; "
        f"pairs range {min(pairs):.3f} to {max(pairs):.3f}; ratio of the two medians {rlo / ce:.3f}). "
        f"Target >= 0.98: {'met' if ratio >= 0.98 else 'NOT met'}.", "",
        f"The loss alone (forward + backward on {args.bs} x {args.classes} logits): CE {loss_us['ce']:.0f} us, "
        f"RLO {loss_us['rlo']:.0f} us per call, against a training step of about "
        f"{1e6 * args.bs / ce:.0f} us.", ""])
    atomic_write_text(args.out, text)
    print(text)
    return {"ce": ce, "rlo": rlo, "ratio": ratio, "loss_us": loss_us}


if __name__ == "__main__":
    run_cli(main, parse_args())
