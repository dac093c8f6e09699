"""Training throughput (images/s) of one model with RLO and with CE on this machine, measured interleaved
(CE, RLO, RLO, CE, ...) in one process so that load from other jobs hits both alike; writes the ratio to
results/bench_train.md and .json. The issue's target: RLO / CE >= 0.98."""
import os
import sys

import utils.tv_compat  # noqa: F401  (must come before anything imports torchvision)

import copy
import platform
import shlex
import statistics
import time

import torch
from tqdm import tqdm

import losses
import models
from utils import report
from utils.cli import ArgumentParser, run_cli

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
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's command line
    return args


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


def summary_rows(args, rates, loss_us):
    """Flat rows: one per loss (median images/s), one for the RLO / CE ratio, one per timed block."""
    setting = {"net": args.net, "size": args.size, "bs": args.bs, "classes": args.classes, "steps": args.steps,
               "threads": args.threads}
    pairs = [r / c for r, c in zip(rates["rlo"], rates["ce"])]
    rows = [dict(setting, section="loss", loss=name, images_per_s=statistics.median(rates[name]),
                 loss_us=loss_us[name]) for name in ("ce", "rlo")]
    rows.append(dict(setting, section="ratio", loss="rlo/ce", ratio=statistics.median(pairs), ratio_min=min(pairs),
                     ratio_max=max(pairs), ratio_of_medians=rows[1]["images_per_s"] / rows[0]["images_per_s"],
                     target=0.98))
    rows += [dict(setting, section="block", loss=name, block=i, images_per_s=v)
             for name in ("ce", "rlo") for i, v in enumerate(rates[name])]
    return rows


def report_lines(args, rows):
    ce, rlo, ratio = rows[0], rows[1], rows[2]
    blocks = {name: ", ".join(f"{r['images_per_s']:.1f}" for r in rows if r["section"] == "block" and r["loss"] == name)
              for name in ("ce", "rlo")}
    command = " ".join(["python -m scripts.bench_train", *map(shlex.quote, args.argv)])
    return [
        "# Training throughput: RLO vs CE (same model, same batch, interleaved)", "",
        f"Command: `{command}`", "",
        f"Model {args.net} at {args.size}px, batch {args.bs}, {args.classes} classes, Adam, fp32, "
        f"{args.threads} torch thread(s), {platform.processor() or platform.machine()}, torch {torch.__version__}. "
        f"RLO = losses 'root' (k={args.k:g}, m={args.m:g}). {args.repeats} blocks of {args.steps} steps per loss, "
        "alternating CE/RLO order. The CPU was shared with other jobs while this ran: absolute images/s are "
        "load-dependent, the ratio much less so.", "",
        "| loss | median images/s | all blocks |", "|---|---|---|",
        f"| CE | {ce['images_per_s']:.1f} | {blocks['ce']} |",
        f"| RLO | {rlo['images_per_s']:.1f} | {blocks['rlo']} |", "",
        f"**RLO / CE = {ratio['ratio']:.3f}** (median over adjacent CE/RLO block pairs, which cancels slow load "
        f"drift; pairs range {ratio['ratio_min']:.3f} to {ratio['ratio_max']:.3f}; ratio of the two medians "
        f"{ratio['ratio_of_medians']:.3f}). Target >= {ratio['target']:g}: "
        f"{'met' if ratio['ratio'] >= ratio['target'] else 'NOT met'}.", "",
        f"The loss alone (forward + backward on {args.bs} x {args.classes} logits): CE {ce['loss_us']:.0f} us, "
        f"RLO {rlo['loss_us']:.0f} us per call, against a training step of about "
        f"{args.bs / ce['images_per_s']:.2f} s.", "", report.load_note()]


def main(args):
    rates = measure(args)
    loss_us = {name: statistics.median(loss_only_us(fn, args.bs, args.classes) for _ in range(5))
               for name, fn in (("ce", losses.get_loss("ce")), ("rlo", losses.get_loss("root", k=args.k, m=args.m)))}
    rows = summary_rows(args, rates, loss_us)
    lines = report_lines(args, rows)
    report.write_report(args.out, lines, rows)
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    run_cli(main, parse_args())
