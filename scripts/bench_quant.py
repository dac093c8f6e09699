"""Benchmark the rounding loops on this CPU: blocked LDLQ vs unblocked LDLQ vs GPTQ, on OPT-125m-sized
layers (768x768, 3072x768, 768x3072) at 2, 3 and 4 bits; writes results/bench_quant.md and .json.

Each timing covers the whole call (the LDL / Cholesky factorisation included), on a random weight and a
correlated H; the LDLQ rows round W clipped to the grid first, as `--quant ldlq` does. The unblocked
baseline is the plain loop at its best: one GEMV per column over the error rows it keeps. The three methods are measured interleaved (A B C A B C ...) and the median of --repeats
is reported, because the machine may be shared. Blocked and unblocked codes are checked to be identical.

    python -m scripts.bench_quant                 # full table -> results/bench_quant.md
    python -m scripts.bench_quant --quick         # one small shape, for a smoke run
"""
import platform
import shlex
import statistics
import sys
import time

import torch

from quant import rounding
from quant.quantizers import QUANTIZERS
from utils import report
from utils.cli import ArgumentParser
from utils.runio import git_commit, set_threads

SHAPES = [(768, 768), (3072, 768), (768, 3072)]
METHODS = {
    "LDLQ blocked (128)": lambda W, H, q: rounding.ldlq_core(W, H, q, blocksize=128),
    "LDLQ unblocked (error rows kept)": lambda W, H, q: rounding.ldlq_core(W, H, q, blocksize=None),
    "GPTQ (lazy batch 128)": lambda W, H, q: rounding.gptq_core(W, H, q, blocksize=128),
}


UNBLOCKED = "LDLQ unblocked (error rows kept)"


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4], help="bit widths")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--shapes", type=str, default=",".join(f"{m}x{d}" for m, d in SHAPES),
                   help="comma-separated layer shapes ROWSxCOLS")
    p.add_argument("--quick", action="store_true", help="one 256x256 layer, one repeat")
    p.add_argument("--out", type=str, default="results/bench_quant.md", help="markdown output")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's command line
    return args


def problem(m, d, bits, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(m, d, generator=g)
    X = torch.randn(2 * d, d, generator=g) @ (torch.eye(d) + 0.1 * torch.randn(d, d, generator=g))
    H = (X.T @ X / (2 * d)).double()
    H.diagonal().add_(0.01 * H.diagonal().mean())
    q = QUANTIZERS["b"](bits).fit(W)
    return q.clip(W), H, q


def time_case(m, d, bits, repeats):
    W, H, q = problem(m, d, bits)
    times = {name: [] for name in METHODS}
    codes = {}
    for _ in range(repeats):
        for name, fn in METHODS.items():  # interleaved: each repeat runs every method once
            tick = time.perf_counter()
            codes[name] = fn(W, H, q)
            times[name].append(time.perf_counter() - tick)
    differ = (codes["LDLQ blocked (128)"] != codes[UNBLOCKED]).sum().item()
    return {name: statistics.median(t) for name, t in times.items()}, differ


def identical_in_float64(m, d, bits=2):
    """Blocked and unblocked LDLQ codes compared with float64 loops (no timing)."""
    W, H, _ = problem(m, d, bits)
    W = W.double()
    q = QUANTIZERS["b"](bits).fit(W)
    W = q.clip(W)
    return torch.equal(rounding.ldlq_core(W, H, q, blocksize=128), rounding.ldlq_core(W, H, q, blocksize=None))


def flat_rows(rows, exact):
    """One flat row per (layer, bits, method) with its median seconds, plus the codes check per (layer, bits)."""
    out = []
    for (m, d, bits), (med, differ) in rows.items():
        layer = {"shape": f"{m}x{d}", "out_features": m, "in_features": d, "bits": bits}
        out += [dict(layer, method=name, seconds=med[name]) for name in METHODS]
        out.append(dict(layer, method="unblocked / blocked", ratio=med[UNBLOCKED] / med["LDLQ blocked (128)"],
                        codes_differing=differ, codes=m * d, identical_float64=exact[(m, d)]))
    return out


def table(flat):
    names = list(METHODS)
    out = ["| layer (rows x cols) | bits | " + " | ".join(f"{n} (s)" for n in names)
           + " | unblocked / blocked | codes differing, blocked vs unblocked (float32) |",
           "|---|---|" + "---|" * (len(names) + 2)]
    for check in (r for r in flat if r["method"] == "unblocked / blocked"):
        same = [r for r in flat if r["shape"] == check["shape"] and r["bits"] == check["bits"]]
        seconds = {r["method"]: r["seconds"] for r in same if "seconds" in r}
        differ, codes = check["codes_differing"], check["codes"]
        out.append(f"| {check['out_features']} x {check['in_features']} | {check['bits']} | "
                   + " | ".join(f"{seconds[n]:.3f}" for n in names)
                   + f" | {check['ratio']:.1f}x | {differ} of {codes} ({differ / codes:.1e}) |")
    return out


def report_lines(flat, exact, args, repeats):
    command = " ".join(["python -m scripts.bench_quant", *map(shlex.quote, args.argv)])
    header = ["# Rounding speed: blocked LDLQ vs unblocked LDLQ vs GPTQ", "",
              f"`{command}` (commit {git_commit()}), {platform.processor() or platform.machine()}, "
              f"torch {torch.__version__}, {args.threads} thread(s), float32 loops, float64 factorisation, "
              "quantizer 'b', W clipped to the grid as `--quant ldlq` rounds it. "
              f"Median of {repeats} interleaved runs per cell; the machine was shared with "
              "other jobs while this ran, so absolute times are noisy, ratios less so.", ""]
    note = ["", "In float32 the blocked loop sums the feedback in a different order than the unblocked one, "
            "so a weight whose target lands within float32 rounding of a half-integer can round the other "
            "way (and that row's later columns then see a different feedback): the last column counts "
            "such codes. With float64 loops the codes are identical: "
            + ", ".join(f"{m} x {d}: {'identical' if ok else 'DIFFERENT'}" for (m, d), ok in exact.items())
            + " (2 bits; also tests/test_quant_rounding.py::test_blocked_ldlq_equals_unblocked).", "",
            report.load_note()]
    return header + table(flat) + note


def main(args):
    set_threads(args.threads)
    shapes = [(256, 256)] if args.quick else [tuple(map(int, s.split("x"))) for s in args.shapes.split(",")]
    repeats = 1 if args.quick else args.repeats
    rows, exact = {}, {}
    for m, d in shapes:
        exact[(m, d)] = identical_in_float64(m, d)
        for bits in args.bits:
            rows[(m, d, bits)] = time_case(m, d, bits, repeats)
            print(f"{m}x{d} {bits}-bit:", {k: round(v, 3) for k, v in rows[(m, d, bits)][0].items()},
                  flush=True)
    flat = flat_rows(rows, exact)
    report.write_report(args.out, report_lines(flat, exact, args, repeats), flat)
    return flat


if __name__ == "__main__":
    main(parse_args())
