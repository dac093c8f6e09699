"""Benchmark every loss in losses.py against F.cross_entropy: time and peak memory of forward+backward.

Time is the median of --repeats runs in this process. Peak memory is measured in a fresh subprocess per
case as the rise of the peak resident set size (VmHWM, reset once the inputs exist), so it
counts everything the loss and its backward allocate (including the gradient of the logits).

    python -m scripts.bench_losses                     # writes results/bench_losses.md
    python -m scripts.bench_losses --quick             # small sizes only, for a smoke run
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import losses
from utils.memory import peak_rss, reset_peak_rss  # noqa: F401  (peak_rss: read by the subprocess)
from utils.runio import atomic_write_text

SIZES = [(256, 10), (4096, 1000), (4096, 50272)]
LINEAR = (4096, 768, 50272)  # tokens, hidden, vocab
CASES = ["F.cross_entropy", "ce", "root", "root_paper", "focal", "square", "sparsemax",
         "root (plain autograd)", "root (softmax-then-pow)"]


def authors_root(logits, target, k=3.0, m=3.0):
    """The authors' train.py form: softmax, index, pow. Shown for its NaN gradients, not used."""
    prob = F.softmax(logits, dim=1)
    return (m * (1 - prob[torch.arange(len(target)), target].pow(1 / k))).mean()


def loss_fn(case):
    if case == "F.cross_entropy":
        return F.cross_entropy
    if case == "root (plain autograd)":
        return lambda x, t: losses.root_loss(x, t, fused=False)
    if case == "root (softmax-then-pow)":
        return authors_root
    return losses.get_loss(case, k=3, m=3)


def make_inputs(n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


def run_loss(case, n, c):
    x, t = make_inputs(n, c)
    x.requires_grad_(True)
    base = reset_peak_rss()
    loss_fn(case)(x, t).backward()
    return base


def linear_inputs(n, h, v, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g) / h ** 0.5).requires_grad_(True)
    weight = torch.randn(v, h, generator=g).requires_grad_(True)
    return hidden, weight, torch.randint(0, v, (n,), generator=g)


def run_linear(case, n, h, v):
    hidden, weight, t = linear_inputs(n, h, v)
    base = reset_peak_rss()
    if case == "chunked":
        losses.linear_cross_loss(hidden, weight, t, loss="root", k=3, m=3).backward()
    else:
        losses.root_loss(hidden @ weight.t(), t, k=3, m=3).backward()
    return base


def peak_in_subprocess(kind, case, dims):
    """Peak bytes allocated above the inputs, measured in a fresh interpreter."""
    code = ("import json; import scripts.bench_losses as b; "
            "base = b.%s(%r, *%r); print(json.dumps(b.peak_rss() - base))" % (kind, case, tuple(dims)))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # `-c` imports from the working directory
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_time(fn, repeats):
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # first run is warm-up


def time_loss(case, n, c, repeats):
    x, t = make_inputs(n, c)
    x.requires_grad_(True)
    f = loss_fn(case)

    def step():
        x.grad = None
        f(x, t).backward()
    step()
    finite = bool(torch.isfinite(x.grad).all())
    return median_time(step, repeats), finite


def time_linear(case, n, h, v, repeats):
    hidden, weight, t = linear_inputs(n, h, v)

    def step():
        hidden.grad = weight.grad = None
        if case == "chunked":
            losses.linear_cross_loss(hidden, weight, t, loss="root", k=3, m=3).backward()
        else:
            losses.root_loss(hidden @ weight.t(), t, k=3, m=3).backward()
    return median_time(step, repeats)


def fmt_mb(b):
    return f"{b / 2**20:,.0f}"


def bench_losses(sizes, repeats):
    rows = []
    for n, c in sizes:
        ref_t, _ = time_loss("F.cross_entropy", n, c, repeats)
        ref_m = peak_in_subprocess("run_loss", "F.cross_entropy", (n, c))
        for case in CASES:
            t, finite = time_loss(case, n, c, repeats) if case != "F.cross_entropy" else (ref_t, True)
            m = peak_in_subprocess("run_loss", case, (n, c)) if case != "F.cross_entropy" else ref_m
            rows.append((f"{n} x {c}", case, t * 1e3, t / ref_t, fmt_mb(m), m / max(ref_m, 1), finite))
            print(rows[-1], flush=True)
    return rows


def bench_linear(dims, repeats):
    n, h, v = dims
    ref_t = time_linear("unfused", n, h, v, repeats)
    ref_m = peak_in_subprocess("run_linear", "unfused", dims)
    t = time_linear("chunked", n, h, v, repeats)
    m = peak_in_subprocess("run_linear", "chunked", dims)
    return [("unfused: root_loss(hidden @ W.T)", ref_t * 1e3, 1.0, fmt_mb(ref_m), 1.0),
            ("chunked: linear_cross_loss", t * 1e3, t / ref_t, fmt_mb(m), m / ref_m)]


def write_report(path, rows, linear_rows, dims, repeats, command):
    lines = ["# Loss benchmark: forward + backward on this CPU", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 logits "
             f"(randn * 3), median of {repeats} runs after one warm-up. Memory: peak RSS (VmHWM) rise above "
             "the inputs in a fresh process (includes the logits' gradient).", "",
             "| size (N x C) | loss | time (ms) | time / F.cross_entropy | peak memory (MiB) | "
             "memory / F.cross_entropy | gradient finite |",
             "|---|---|---|---|---|---|---|"]
    for size, case, t, rt, m, rm, fin in rows:
        lines.append(f"| {size} | {case} | {t:,.1f} | {rt:.2f} | {m} | {rm:.2f} | {fin} |")
    n, h, v = dims
    lines += ["", f"## Chunked linear + loss (root, k=3, m=3): N={n}, H={h}, V={v}, float32", "",
              "| path | time (ms) | time ratio | peak memory (MiB) | memory ratio |", "|---|---|---|---|---|"]
    for case, t, rt, m, rm in linear_rows:
        lines.append(f"| {case} | {t:,.1f} | {rt:.2f} | {m} | {rm:.2f} |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    p.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    p.add_argument("--out", default="results/bench_losses.md", help="markdown report path")
    return p.parse_args(argv)


def main(args):
    sizes = SIZES[:2] if args.quick else SIZES
    dims = (512, 64, 5000) if args.quick else LINEAR
    rows = bench_losses(sizes, args.repeats)
    linear_rows = bench_linear(dims, args.repeats)
    print(linear_rows, flush=True)
    command = "python -m scripts.bench_losses" + (" --quick" if args.quick else "") + \
        (f" --repeats {args.repeats}" if args.repeats != 5 else "")
    write_report(args.out, rows, linear_rows, dims, args.repeats, command)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(parse_args())
