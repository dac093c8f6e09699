"""Benchmark every loss in losses.py against F.cross_entropy: time and peak memory of forward+backward.

The cases of one size are timed interleaved (one run of each per round, --repeats rounds) in this process,
so their ratios to F.cross_entropy compare runs made moments apart; torch.compile(F.cross_entropy) is a
column at the largest size. Peak memory is measured in a fresh subprocess per case as the rise of the peak
resident set size (VmHWM, reset once the inputs exist), so it counts everything the loss and its backward
allocate (including the gradient of the logits).

    python -m scripts.bench_losses                     # writes results/bench_losses.md and .json
    python -m scripts.bench_losses --quick             # small sizes only, for a smoke run
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import losses
from utils.memory import peak_rss, reset_peak_rss  # noqa: F401  (peak_rss: read by the subprocess)
from utils import report

SIZES = [(256, 10), (4096, 1000), (4096, 50272)]
LINEAR = (4096, 768, 50272)  # tokens, hidden, vocab
CASES = ["F.cross_entropy", "ce", "root", "root_paper", "focal", "gce", "poly1", "taylor_ce",
         "root, label_smoothing=0.1", "root, soft targets", "root (plain autograd)", "root (softmax-then-pow)",
         "square", "sparsemax", "bitempered"]
SLOW = {"square", "sparsemax", "bitempered"}  # seconds per step at a 50k vocabulary: small sizes only
COMPILED = ["F.cross_entropy (torch.compile)", "root (plain autograd, torch.compile)"]
COMPILE_SIZES = {(4096, 50272)}  # each size compiles anew (about 1-2 minutes of CPU each here)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def authors_root(logits, target, k=3.0, m=3.0):
    """The authors' train.py form: softmax, index, pow. Shown for its NaN gradients, not used."""
    prob = F.softmax(logits, dim=1)
    return (m * (1 - prob[torch.arange(len(target)), target].pow(1 / k))).mean()


def loss_fn(case):
    """f(logits, target, soft) for one benchmark case."""
    plain = {"F.cross_entropy": F.cross_entropy, "root (softmax-then-pow)": authors_root,
             "root (plain autograd)": lambda x, t: losses.root_loss(x, t, fused=False),
             "root, label_smoothing=0.1": lambda x, t: losses.root_loss(x, t, label_smoothing=0.1),
             "F.cross_entropy (torch.compile)": torch.compile(F.cross_entropy) if case in COMPILED else None,
             "root (plain autograd, torch.compile)":
                 torch.compile(lambda x, t: losses.root_loss(x, t, fused=False)) if case in COMPILED else None}
    if case == "root, soft targets":
        return lambda x, t, soft: losses.root_loss(x, soft)
    f = plain[case] if case in plain else losses.get_loss(case, k=3, m=3)
    return lambda x, t, soft: f(x, t)


def cases_for(n, c, chosen=None):
    slow_ok = c < 10_000
    cases = [case for case in CASES if slow_ok or case not in SLOW] + (COMPILED if (n, c) in COMPILE_SIZES else [])
    if chosen:
        cases = [case for case in chosen if case in cases or case in COMPILED]
    return ["F.cross_entropy"] + [case for case in cases if case != "F.cross_entropy"]  # the reference


def make_inputs(n, c, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)
    return x, t, torch.softmax(torch.randn(n, c, generator=g), 1)


def run_loss(case, n, c):
    x, t, soft = make_inputs(n, c)
    x.requires_grad_(True)
    f = loss_fn(case)
    if case in COMPILED:  # compile first: the compiler's own memory is not the loss's
        f(x, t, soft).backward()
        x.grad = None
    base = reset_peak_rss()
    f(x, t, soft).backward()
    return base


def linear_inputs(n, h, v, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(n, h, generator=g) / h ** 0.5).requires_grad_(True)
    weight = torch.randn(v, h, generator=g).requires_grad_(True)
    return hidden, weight, torch.randint(0, v, (n,), generator=g)


def linear_step(case, hidden, weight, t):
    if case == "chunked":
        losses.linear_cross_loss(hidden, weight, t, loss="root", k=3, m=3).backward()
    else:
        losses.root_loss(hidden @ weight.t(), t, k=3, m=3).backward()


def run_linear(case, n, h, v):
    hidden, weight, t = linear_inputs(n, h, v)
    base = reset_peak_rss()
    linear_step(case, hidden, weight, t)
    return base


def peak_in_subprocess(kind, case, dims):
    """Peak bytes allocated above the inputs, measured in a fresh interpreter started in the repository."""
    code = ("import json; import scripts.bench_losses as b; base = b.%s(%r, *%r); "
            "print(json.dumps(b.peak_rss() - base))" % (kind, case, tuple(dims)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved_times(steps, repeats):
    """Time each step once per round, rounds in rotating order, after one warm-up each.

    Returns {name: (median seconds, median over rounds of time / time of the first step)}: every ratio
    compares runs made moments apart, so load that drifts during the benchmark cancels.
    """
    names = list(steps)
    for name in names:
        steps[name]()
    rounds = []
    for r in range(repeats):
        times = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name] = time.perf_counter() - start
        rounds.append(times)
    ref = names[0]
    return {name: (statistics.median(rd[name] for rd in rounds),
                   statistics.median(rd[name] / rd[ref] for rd in rounds)) for name in names}


def loss_steps(n, c, cases):
    x, t, soft = make_inputs(n, c)
    x.requires_grad_(True)
    finite = {}

    def step_of(case):
        f = loss_fn(case)

        def step():
            x.grad = None
            f(x, t, soft).backward()
            finite[case] = bool(torch.isfinite(x.grad).all())
        return step
    return {case: step_of(case) for case in cases}, finite


def mib(b):
    return None if b is None else b / 2**20


def fmt_mib(x):
    return "-" if x is None else f"{x:,.0f}"


def bench_losses(sizes, repeats, chosen=None, memory=True):
    """One flat row per (size, case): seconds, ratio to F.cross_entropy, peak MiB and its ratio."""
    rows = []
    for n, c in sizes:
        cases = cases_for(n, c, chosen)
        steps, finite = loss_steps(n, c, cases)
        timed = interleaved_times(steps, repeats)
        del steps
        print({case: timed[case] for case in cases}, flush=True)
        mems = {case: peak_in_subprocess("run_loss", case, (n, c)) if memory else None for case in cases}
        for case in cases:
            m, ref_m = mems[case], mems["F.cross_entropy"]
            rows.append({"section": "loss", "shape": f"{n}x{c}", "n": n, "classes": c, "loss": case, "seconds": timed[case][0],
                         "ratio": timed[case][1], "peak_mib": mib(m),
                         "mem_ratio": None if m is None else m / max(ref_m, 1), "grad_finite": finite[case]})
            print(rows[-1], flush=True)
    return rows


def bench_linear(dims, repeats):
    """Two rows (unfused, chunked) for the linear + root loss section."""
    n, h, v = dims
    hidden, weight, t = linear_inputs(n, h, v)

    def step_of(case):
        def step():
            hidden.grad = weight.grad = None
            linear_step(case, hidden, weight, t)
        return step
    timed = interleaved_times({"unfused": step_of("unfused"), "chunked": step_of("chunked")}, repeats)
    del hidden, weight
    mems = {case: peak_in_subprocess("run_linear", case, dims) for case in ("unfused", "chunked")}
    paths = {"unfused": "unfused: root_loss(hidden @ W.T)", "chunked": "chunked: linear_cross_loss"}
    return [{"section": "linear", "method": paths[case], "loss": "root", "tokens": n, "hidden": h, "vocab": v,
             "seconds": timed[case][0], "ratio": timed[case][1], "peak_mib": mib(mems[case]),
             "mem_ratio": mems[case] / mems["unfused"]} for case in ("unfused", "chunked")]


def report_lines(rows, linear_rows, dims, repeats, command):
    lines = ["# Loss benchmark: forward + backward on this CPU", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; float32 logits (randn * 3). "
             f"Every case of one size runs once per round, rounds in rotating order, {repeats} rounds after "
             "one warm-up: time is the median over rounds, the ratio the median over rounds of the case's "
             "time over F.cross_entropy's time in the same round (one process, so load drift cancels). "
             "Memory: peak RSS (VmHWM) rise above the inputs in a fresh process (includes the logits' "
             "gradient; compiled cases are compiled before the mark is reset). Soft targets: a softmax of "
             f"random logits. Not run at V = 50272: {', '.join(sorted(SLOW))} (seconds per step).", "",
             "| size (N x C) | loss | time (ms) | time / F.cross_entropy | peak memory (MiB) | "
             "memory / F.cross_entropy | gradient finite |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        mem_ratio = "-" if r["mem_ratio"] is None else f"{r['mem_ratio']:.2f}"
        lines.append(f"| {r['n']} x {r['classes']} | {r['loss']} | {r['seconds'] * 1e3:,.1f} | {r['ratio']:.2f} "
                     f"| {fmt_mib(r['peak_mib'])} | {mem_ratio} | {r['grad_finite']} |")
    if linear_rows:
        n, h, v = dims
        lines += ["", f"## Chunked linear + loss (root, k=3, m=3): N={n}, H={h}, V={v}, float32", "",
                  "| path | time (ms) | time ratio | peak memory (MiB) | memory ratio |", "|---|---|---|---|---|"]
        for r in linear_rows:
            lines.append(f"| {r['method']} | {r['seconds'] * 1e3:,.1f} | {r['ratio']:.2f} | {fmt_mib(r['peak_mib'])} "
                         f"| {r['mem_ratio']:.2f} |")
    return lines + ["", report.load_note()]


def _size(text):
    try:
        n, c = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 4096x50272, got {text!r}") from None
    return n, c


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    p.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    p.add_argument("--out", default="results/bench_losses.md", help="markdown report path")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--sizes", nargs="+", type=_size, default=None, help="N x C sizes, e.g. 4096x50272 "
                   "(default: all of SIZES; --quick: the first two)")
    p.add_argument("--cases", nargs="+", default=None, choices=CASES + COMPILED, metavar="CASE",
                   help=f"cases to run (default: all that fit the size); from {CASES + COMPILED}")
    p.add_argument("--no-linear", action="store_true", help="skip the chunked linear + loss section")
    p.add_argument("--no-memory", action="store_true", help="time only (no peak-memory subprocesses)")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's command line
    return args


def main(args):
    sizes = args.sizes or (SIZES[:2] if args.quick else SIZES)
    dims = (512, 64, 5000) if args.quick else LINEAR
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench_losses(sizes, args.repeats, args.cases, memory=not args.no_memory)
    linear_rows = [] if args.no_linear else bench_linear(dims, args.repeats)
    print(linear_rows, flush=True)
    command = " ".join(["python -m scripts.bench_losses", *map(shlex.quote, args.argv)])
    lines = report_lines(rows, linear_rows, dims, args.repeats, command)
    report.write_report(args.out, lines, rows + linear_rows)
    print(f"wrote {args.out} and its .json")


if __name__ == "__main__":
    main(parse_args())
