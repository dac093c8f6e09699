"""GPU benchmarks for the device check (scripts/gpu_check.sh): loss kernels and training throughput.

`losses`: forward + backward time and peak memory of F.cross_entropy, torch.compile(F.cross_entropy) and the
project's losses on (N, V) logits, and of the chunked LM-head loss (losses.linear_cross_loss) against
linear + F.cross_entropy on (N, H) hidden states, in bf16 and fp32. `train`: images/s of full training steps
(forward, loss, backward, optimizer) for a few nets with CE and RLO. Every comparison is interleaved in one
process (A, B, B, A, ...) so that drift hits all cases alike. With --quick the sizes shrink so the same code runs
on a CPU in seconds (the check's --dry-run). Writes OUT/<part>.json and OUT/<part>.md.

Run as `python -m scripts.gpu_bench losses --out DIR` (from the repository root).
"""
import argparse
import json
import os
import statistics
import time

PARTS = ("losses", "train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("part", choices=PARTS, help="which benchmark")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU dry run)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per case (interleaved)")
    p.add_argument("--steps", type=int, default=20, help="train: optimizer steps per timed block")
    p.add_argument("--nets", default="res50,vit", help="train: comma-separated nets from the registry")
    p.add_argument("--bs", type=int, default=512, help="train: batch size")
    p.add_argument("--no-compile", action="store_true", help="losses: leave out the torch.compile'd CE column")
    return p.parse_args(argv)


def _device(choice):
    import torch
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(choice)


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_reset(device):
    import torch
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(device):
    import torch
    return torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == "cuda" else None


def timed(fn, device, warmup=1):
    """Seconds of one call of fn (after `warmup` untimed calls) and the peak memory of the timed call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    _peak_reset(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start, _peak_mib(device)


def interleave(cases, device, repeats):
    """{name: (median seconds, peak MiB)} with the cases run round-robin, alternating direction."""
    times = {name: [] for name in cases}
    peaks = {}
    for name, fn in cases.items():  # one warm-up each (compilation, allocator)
        fn()
    for r in range(repeats):
        order = list(cases) if r % 2 == 0 else list(reversed(cases))
        for name in order:
            seconds, peak = timed(cases[name], device, warmup=0)
            times[name].append(seconds)
            peaks[name] = max(peaks.get(name) or 0.0, peak or 0.0) if peak is not None else None
    return {name: (statistics.median(t), peaks[name]) for name, t in times.items()}


def loss_cases(n, v, dtype, device, compile_ce=True):
    import torch
    import torch.nn.functional as F
    import losses
    logits = torch.randn(n, v, device=device, dtype=dtype, requires_grad=True)
    target = torch.randint(0, v, (n,), device=device)

    def run(fn):
        def step():
            logits.grad = None
            fn(logits, target).backward()
        return step
    cases = {"F.cross_entropy": run(F.cross_entropy)}
    if compile_ce:
        cases["compiled CE"] = run(torch.compile(F.cross_entropy))
    cases.update({name: run(losses.get_loss(name, k=8.0, m=8.0)) for name in ("ce", "root", "root_paper", "focal")})
    return cases


def head_cases(n, h, v, dtype, device):
    import torch
    import torch.nn.functional as F
    import losses
    hidden = torch.randn(n, h, device=device, dtype=dtype, requires_grad=True)
    weight = (0.02 * torch.randn(v, h, device=device, dtype=dtype)).requires_grad_()
    target = torch.randint(0, v, (n,), device=device)

    def run(fn):
        def step():
            hidden.grad = weight.grad = None
            fn().backward()
        return step
    return {"linear + F.cross_entropy": run(lambda: F.cross_entropy((hidden @ weight.T).float(), target)),
            "linear_cross_loss ce": run(lambda: losses.linear_cross_loss(hidden, weight, target, loss="ce")),
            "linear_cross_loss root": run(lambda: losses.linear_cross_loss(hidden, weight, target, loss="root",
                                                                           k=8.0, m=8.0))}


def bench_losses(args, device):
    import torch
    n, v, h = (256, 1000, 64) if args.quick else (8192, 50272, 768)
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        for shape, cases in ((f"logits {n}x{v}", loss_cases(n, v, dtype, device, not args.no_compile)),
                             (f"head N={n} H={h} V={v}", head_cases(n, h, v, dtype, device))):
            for name, (seconds, peak) in interleave(cases, device, args.repeats).items():
                rows.append({"shape": shape, "dtype": str(dtype).replace("torch.", ""), "case": name,
                             "ms": 1e3 * seconds, "peak_mib": peak})
    return rows


def bench_train(args, device):
    import torch
    import losses
    import models
    bs = 8 if args.quick else args.bs
    nets = ["res18_mini"] if args.quick else args.nets.split(",")
    dtype = torch.bfloat16 if device.type == "cuda" else None
    rows = []
    for net_name in nets:
        torch.manual_seed(0)
        net = models.build_model(net_name, 10, 32).to(device)
        optimizer = torch.optim.Adam(net.parameters(), 1e-4)
        x = torch.randn(bs, 3, 32, 32, device=device)
        y = torch.randint(0, 10, (bs,), device=device)

        def block(loss_fn):
            def run():
                for _ in range(2 if args.quick else args.steps):
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        loss = loss_fn(net(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            return run
        cases = {"ce": block(losses.get_loss("ce")), "root k=8": block(losses.get_loss("root", k=8.0, m=8.0))}
        steps = 2 if args.quick else args.steps
        for name, (seconds, peak) in interleave(cases, device, 2 if args.quick else args.repeats).items():
            rows.append({"net": net_name, "loss": name, "bs": bs, "amp": str(dtype).replace("torch.", ""),
                         "images_per_s": bs * steps / seconds, "peak_mib": peak})
    return rows


def write(rows, out, part, device):
    from utils.report import md_table
    from utils.runio import atomic_write_json, atomic_write_text
    atomic_write_json(os.path.join(out, f"{part}.json"), {"device": str(device), "rows": rows})
    headers = list(rows[0]) if rows else []
    fmt = lambda x: f"{x:.3g}" if isinstance(x, float) else ("-" if x is None else x)  # noqa: E731
    lines = [f"# gpu_bench {part} on {device}", ""] + md_table(headers, [[fmt(r[h]) for h in headers] for r in rows])
    atomic_write_text(os.path.join(out, f"{part}.md"), "\n".join(lines) + "\n")


def main(args):
    import utils.tv_compat  # noqa: F401  (before torchvision, through models)
    import torch
    device = _device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    rows = (bench_losses if args.part == "losses" else bench_train)(args, device)
    write(rows, args.out, args.part, device)
    print(json.dumps(rows[:3], default=str))
    return rows


if __name__ == "__main__":
    main(parse_args())
