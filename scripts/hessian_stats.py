"""Per-layer conditioning statistics of the quantization Hessians H = E[x x^T] of a causal LM.

Calibration as opt.py runs it (same windows for the same --seed, --nsamples and --dataset), layers run
unquantized one at a time; for every linear of every decoder layer: its input count n, the alive (non-dead)
inputs, cond(H) on the alive inputs, tr(D)/tr(H) of its LDL factor and the incoherence mu of its eigenvectors
(quant.calibration.hessian_summary). Writes a run directory ending at results.json {"rows": [...]}.

    python -m scripts.hessian_stats runs/table3_cpu/ft/CE-s0 --out runs/table3_cpu/hstats/CE-s0
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import utils.tv_compat  # noqa: E402,F401  (transformers imports torchvision)
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from quant import datautils  # noqa: E402
from quant.families import family_of, load_causal_lm  # noqa: E402
from quant.calibration import HessianHooks, capture_layer_inputs, find_linears, hessian_summary, run_layer  # noqa: E402
from utils.cli import ArgumentParser, UsageError, default_data_dir, run_cli  # noqa: E402
from utils.runio import RunDir, add_run_args, set_threads  # noqa: E402


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", type=str, help="local save_pretrained directory or hub id")
    p.add_argument("--dataset", choices=list(datautils.EVAL_SETS), default="wikitext2", help="calibration data")
    p.add_argument("--nsamples", type=int, default=128, help="calibration windows")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration windows (as opt.py's)")
    p.add_argument("--percdamp", type=float, default=0.01, help="damping before the LDL factorisation")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    p.add_argument("--data-dir", type=str, default=default_data_dir(), help="root of the local data")
    p.add_argument("--cache-dir", type=str, default="", help="token cache shared with opt.py")
    add_run_args(p, default_out="runs/hessian_stats/<model folder name>")
    args = p.parse_args(argv)
    args.out = args.out or os.path.join("runs", "hessian_stats", os.path.basename(args.model.rstrip("/")))
    return args


@torch.no_grad()
def layer_statistics(model, family, windows, percdamp, batch=8):
    """One row per linear: layer index, linear name and hessian_summary of its H."""
    layers = family.base(model).layers
    inputs, kwargs = capture_layer_inputs(model, family, windows, "cpu", batch)
    rows = []
    for i in tqdm(range(len(layers)), desc="hessians"):
        linears = find_linears(layers[i])
        hooks = HessianHooks(linears)
        outputs = run_layer(layers[i], inputs, kwargs, batch)
        for name, H in hooks.hessians().items():
            rows.append({"layer": i, "linear": name, **hessian_summary(H, percdamp)})
        inputs = outputs
    return rows


def load_model(path):
    """Model (float32, eval), tokenizer and family adapter of a causal LM; one-line error when unloadable."""
    model, tokenizer = load_causal_lm(path)
    return model, tokenizer, family_of(model)


def main(args):
    if args.nsamples <= 0 or args.batch <= 0:
        raise UsageError("--nsamples and --batch must be positive")
    set_threads(args.threads)
    run = RunDir(args.out, vars(args), resume=args.resume, overwrite=args.overwrite)
    calib = datautils.calibration_text(args.dataset, args.data_dir)
    model, tokenizer, family = load_model(args.model)
    seqlen = model.config.max_position_embeddings
    windows = datautils.calibration_windows(calib, tokenizer, args.nsamples, seqlen, args.seed, args.cache_dir)
    rows = layer_statistics(model, family, windows, args.percdamp, args.batch)
    run.finish({"model": args.model, "nsamples": args.nsamples, "seqlen": seqlen, "rows": rows})
    run.release()
    return rows


if __name__ == "__main__":
    run_cli(main, parse_args())
