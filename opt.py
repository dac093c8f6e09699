"""Post-training quantization of OPT (and Llama-family) models with QuIP, GPTQ or nearest rounding,
then perplexity on WikiText-2, PTB and C4: a clean, seeded rewrite of the authors' quantization/opt.py.

    python opt.py MODEL wikitext2 --wbits 2 --quant ldlqRG --incoh_processing --save PATH
    python opt.py MODEL wikitext2 --wbits 4 --quant gptq --pre_gptqH
    python opt.py MODEL wikitext2 --load PATH            # evaluate a saved quantized model again

MODEL is a hub id or a local save_pretrained directory. Offline, data comes from --data-dir (see
quant/datautils.py for the layout). Results print one line per evaluation set, and every run writes a run
directory (--out, by default under runs/opt/): config.json and results.json. An existing run is refused
unless --overwrite moves it aside. --save refuses the model's own directory and, without --overwrite, any
non-empty directory; it writes to a temporary directory renamed into place.
"""
import os
import time

from quant.families import FAMILIES, family_of, load_causal_lm as load_model
from utils.cli import ArgumentParser, UsageError, default_data_dir, registry_choice, run_cli
from utils.runio import RunDir, add_run_args, config_hash

# torch, transformers and quant/ are imported inside the functions, so that -h answers at once.
# Settings that do not change the numbers: left out of the default run name's hash.
EXECUTION = ("out", "output_dir", "threads", "device", "cache_dir", "batch", "overwrite", "data_dir", "resume",
             "save")


def parse_args(argv=None, family="auto"):
    p = ArgumentParser(description=__doc__)
    p.add_argument("model", type=str, help="hub id or local directory of the model (e.g. facebook/opt-125m)")
    p.add_argument("dataset", type=registry_choice("quant.datautils", "EVAL_SETS", lower=False),
                   help="calibration data: wikitext2, ptb or c4")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the calibration windows and of the random orthogonal transforms")
    p.add_argument("--nsamples", type=int, default=128, help="number of calibration windows")
    p.add_argument("--percdamp", type=float, default=.01,
                   help="damping: fraction of mean(diag H) added to diag H")
    p.add_argument("--quant", type=registry_choice("quant.rounding", "ROUNDERS", lower=False), default="nearest",
                   metavar="METHOD", help="rounding method: nearest, gptq, ldlq, ldlqRG, allbal, ... "
                                          "(a wrong name lists them all)")
    p.add_argument("--wbits", type=int, default=16, choices=[2, 3, 4, 16],
                   help="bits per weight; 16 evaluates the unquantized model")
    p.add_argument("--npasses", type=int, default=0,
                   help="greedy coordinate-descent passes after LDLQ (ldlq, ldlqRG) or in allbal")
    p.add_argument("--groupsize", type=int, default=-1,
                   help="columns per quantization group (quantizer 'a' only); -1 = whole row")
    p.add_argument("--pre_gptqH", action="store_true",
                   help="GPTQ's dead-input fix and damping (always applied here; kept for old commands)")
    p.add_argument("--pre_rescale", action="store_true", help="incoherence step 1: column rescaling")
    p.add_argument("--pre_proj", action="store_true",
                   help="incoherence step 2: random orthogonal transforms (kind: --incoh)")
    p.add_argument("--qfn", type=registry_choice("quant.quantizers", "QUANTIZERS", lower=False), default="a",
                   help="grid: a = per-row min/max (GPTQ), b = 2.4 RMS symmetric (QuIP, needs --pre_proj)")
    p.add_argument("--incoh_processing", action="store_true",
                   help="QuIP's incoherence processing: --pre_gptqH --pre_rescale --pre_proj --qfn b")
    p.add_argument("--incoh", type=registry_choice("quant.incoherence", "ORTHOGONALS", lower=False),
                   default="butterfly",
                   help="random orthogonal family for --pre_proj (butterfly is what QuIP's code ran)")
    p.add_argument("--dead-inputs", type=registry_choice("quant.driver", "DEAD_INPUTS"), default="zero",
                   help="with --pre_rescale: zero the weights of inputs dead in calibration (default), or keep "
                        "what undoing the rescale gives them (QuIP's code; can be huge)")
    p.add_argument("--lazy_batch", action="store_true",
                   help="accepted for old commands; rounding always runs in blocks of 128 columns")
    p.add_argument("--save", type=str, default="",
                   help="directory to write the quantized model to (not the model's own; empty unless --overwrite)")
    p.add_argument("--load", type=str, default="", help="evaluate a model written by --save")
    p.add_argument("--proxy_only", action="store_true",
                   help="quantize and report the proxy loss tr(dW H dW^T) only, no perplexity")
    p.add_argument("--seqlen", type=int, default=None,
                   help="tokens per window (default: the model's max_position_embeddings)")
    p.add_argument("--eval", type=str, default="wikitext2,ptb,c4",
                   help="comma-separated evaluation sets (wikitext2, ptb, c4); empty for none")
    p.add_argument("--eval-variant", type=registry_choice("quant.datautils", "EVAL_VARIANTS"),
                   default="old" if family == "llama" else "new",
                   help="PTB/C4 evaluation text: new = the authors' opt.py (ptb test, first c4 documents), old = "
                        "their llama.py (ptb validation, 256 random c4 windows); default: the entry script's")
    p.add_argument("--data-dir", type=str, default=default_data_dir(), help="root of the local data")
    p.add_argument("--device", type=str, default="auto",
                   help="device for the layer being processed (auto: cuda if available, else cpu)")
    p.add_argument("--family", choices=["auto"] + list(FAMILIES), default=family,
                   help="model family (auto: from config.model_type)")
    p.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    p.add_argument("--max-eval-windows", type=int, default=0,
                   help="evaluate this many evenly spaced windows per set (0: all, the reference protocol)")
    add_run_args(p, default_out="runs/opt/<model>_<dataset>_w<bits>_<quant>_s<seed>_<hash of the settings>",
                 resume_flags=(), out_flags=("--out", "--output-dir"))
    p.add_argument("--cache-dir", type=str, default="",
                   help="reuse tokenized calibration/evaluation text across runs (keyed by text+tokenizer)")
    args = p.parse_args(argv)
    args.resume = False  # a quantization run is one pass: nothing to resume
    if args.incoh_processing:
        args.pre_gptqH = args.pre_rescale = args.pre_proj = True
        args.qfn = "b"
    return args


def check_args(args):
    from quant import datautils, saveload
    evals = [name for name in args.eval.split(",") if name]
    unknown = [name for name in evals if name not in datautils.EVAL_SETS]
    if unknown:
        raise UsageError(f"--eval: unknown set {unknown[0]!r}; choose from {', '.join(datautils.EVAL_SETS)}")
    if args.qfn == "b" and not args.pre_proj:
        raise UsageError("--qfn b needs --pre_proj (or --incoh_processing)")
    if args.groupsize > 0 and args.qfn == "b":
        raise UsageError("--groupsize needs --qfn a (quantizer 'b' has one scale per matrix)")
    if args.max_eval_windows < 0:
        raise UsageError("--max-eval-windows must not be negative")
    for name in ("nsamples", "batch"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name} must be positive")
    if args.npasses < 0 or args.percdamp < 0:
        raise UsageError("--npasses and --percdamp must not be negative")
    if args.save and args.wbits == 16 and not args.load:
        raise UsageError("--save needs --wbits 2, 3 or 4")
    if args.load and not os.path.isdir(args.load):
        raise UsageError(f"--load {args.load}: no such directory")
    if args.save:  # before hours of quantization, not after
        saveload.check_target(args.save, [args.model, args.load], args.overwrite)
    return evals


def pick_device(choice):
    import torch
    return ("cuda" if torch.cuda.is_available() else "cpu") if choice == "auto" else choice


def default_out(args):
    """runs/opt/<model>_<dataset>_w<bits>_<quant>[_incoh]_s<seed>_<hash of every setting that changes the numbers>."""
    settings = vars(args)
    model = os.path.basename(os.path.normpath(args.load or args.model)).replace(os.sep, "_")
    extra = "_incoh" if args.pre_proj else ""
    name = (f"{model}_{args.dataset}_w{args.wbits}_{args.quant}{extra}_s{args.seed}_"
            f"{config_hash(settings, [k for k in settings if k not in EXECUTION])}")
    return os.path.join("runs", "opt", name)


def quant_config(args):
    from quant.driver import QuantConfig
    return QuantConfig(wbits=args.wbits, method=args.quant, qfn=args.qfn, rescale=args.pre_rescale,
                       proj=args.incoh if args.pre_proj else None, percdamp=args.percdamp,
                       npasses=args.npasses, groupsize=args.groupsize, seed=args.seed,
                       dead_inputs=args.dead_inputs)


def model_family(model, choice):
    return family_of(model, choice, hint="; use --family")


def seqlen_of(model, args):
    limit = model.config.max_position_embeddings
    seqlen = args.seqlen or limit
    if not 1 < seqlen <= limit:
        raise UsageError(f"--seqlen must be in 2..{limit} (the model's max_position_embeddings)")
    return seqlen


def quantize_or_load(args, model, family, calib, tokenizer, seqlen, results):
    """The quantized linears' records: read from --load, or made by quantizing with calibration data."""
    from quant import datautils, saveload
    from quant.driver import quantize_model
    if args.load:
        cfg, records = saveload.read_codes(args.load)
        saveload.restore_weights(model, family, cfg, records)
        return cfg, records
    cfg, tick = quant_config(args), time.time()
    windows = datautils.calibration_windows(calib, tokenizer, args.nsamples, seqlen, args.seed, args.cache_dir)
    records = quantize_model(model, family, windows, cfg, args.device, args.batch)
    results["quant_seconds"] = round(time.time() - tick, 1)
    return cfg, records


def main(args):
    """Quantize (or --load) and evaluate; returns the results (also in the run directory's results.json)."""
    from quant import datautils, saveload
    from quant.driver import perplexity
    from utils.runio import set_threads
    evals = check_args(args)
    args.device = pick_device(args.device)
    set_threads(args.threads)
    # read all text first, so missing data fails before any model is loaded
    texts = {name: datautils.eval_text(name, args.data_dir, args.eval_variant) for name in evals}
    quantizing = args.wbits < 16 and not args.load
    calib = datautils.calibration_text(args.dataset, args.data_dir) if quantizing else None
    model, tokenizer = load_model(args.load or args.model)
    family = model_family(model, args.family)
    seqlen, results = seqlen_of(model, args), {}
    with RunDir(args.out or default_out(args), vars(args), overwrite=args.overwrite) as run:
        if args.wbits < 16 or args.load:
            cfg, records = quantize_or_load(args, model, family, calib, tokenizer, seqlen, results)
            results["proxy_loss"] = sum(r.proxy for r in records.values())
            print(f"proxy loss tr(dW H dW^T), summed over {len(records)} linears: {results['proxy_loss']:.6g}")
        if args.save:
            saveload.save(args.save, model, tokenizer, cfg, records, overwrite=args.overwrite)
        if not args.proxy_only:
            for name, text in texts.items():
                ids = datautils.eval_ids(name, text, tokenizer, seqlen, args.cache_dir, args.eval_variant)
                results[f"ppl_{name}"] = perplexity(model, family, ids, seqlen, args.device, args.batch,
                                                    args.max_eval_windows)
                print(f"{name} perplexity: {results[f'ppl_{name}']:.4f}")
                run.log({"eval": name, "ppl": results[f"ppl_{name}"]})
        return run.finish(results)


if __name__ == "__main__":
    run_cli(main, parse_args())
