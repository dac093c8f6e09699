"""The CPU-scale Table 4 sweep for one model family, in one process (no per-run start-up cost).

Pretrains the base (scripts.table4_base), quantizes it at each --bits with opt.py (ldlqRG + incoherence
processing), evaluates the 16-bit and the quantized bases without LoRA, then runs ft_quant.py for every
seed x bits x loss (CE, RLO-5 = root k=m=5, RLO-10 = root k=m=10). Every step whose output exists is skipped,
so a rerun resumes. scripts/table4_cpu.sh launches it; scripts.table4_cpu builds the report.

    python -m scripts.table4_runs --family opt --out runs/table4_cpu --data-dir ../shared/data --threads 1
"""
import os

import utils.tv_compat  # noqa: F401

import ft_quant
import opt
from scripts import table4_base
from utils.cli import ArgumentParser, default_data_dir, run_cli

LOSSES = {"ce": ["--loss", "ce"], "root5": ["--loss", "root", "--k", "5", "--m", "5"],
          "root10": ["--loss", "root", "--k", "10", "--m", "10"]}


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=["opt", "llama"], required=True, help="architecture")
    p.add_argument("--out", type=str, default="runs/table4_cpu", help="root of the sweep")
    p.add_argument("--data-dir", type=str, default=default_data_dir(), help="full data (pretraining, calibration)")
    p.add_argument("--eval-data", type=str, required=True, help="data dir for fine-tuning and evaluation")
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4], help="quantization bits (in this order)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="fine-tuning seeds (none: bases only)")
    p.add_argument("--pretrain-steps", type=int, default=200, help="pretraining steps of the base")
    p.add_argument("--nsamples", type=int, default=32, help="calibration windows for quantization")
    p.add_argument("--ft-flags", type=str, default="--max-steps 15 --bs 8", help="extra ft_quant.py flags")
    p.add_argument("--eval-flags", type=str, default="--max-eval-blocks 32", help="evaluation flags")
    p.add_argument("--threads", type=int, default=1, help="CPU threads")
    return p.parse_args(argv)


def finetune(args, name, base, *flags):
    out = os.path.join(args.out, "runs", name)
    if os.path.exists(os.path.join(out, "results.json")):
        return
    argv = ["--base", base, "--dataset", "wikitext2", "--data-dir", args.eval_data, "--eval-test",
            "--also-eval", "c4", "--skip-validation", "--block-size", "128", "--threads", str(args.threads),
            "--out", out, "--overwrite", *args.eval_flags.split(), *flags]
    ft_quant.main(ft_quant.parse_args(argv))


def quantize(args, base, bits):
    q = os.path.join(args.out, f"q-{args.family}-w{bits}")
    if not os.path.exists(os.path.join(q, "quant_codes.pt")):
        opt.main(opt.parse_args([base, "wikitext2", "--wbits", str(bits), "--quant", "ldlqRG",
                                 "--incoh_processing", "--save", q, "--nsamples", str(args.nsamples),
                                 "--eval", "", "--threads", str(args.threads), "--data-dir", args.data_dir,
                                 "--out", q + ".run", "--overwrite"]))
    return q


def main(args):
    fam = args.family
    base = os.path.join(args.out, f"base-{fam}")
    table4_base.main(table4_base.parse_args(["--family", fam, "--out", base, "--steps", str(args.pretrain_steps),
                                             "--threads", str(args.threads), "--data-dir", args.data_dir]))
    finetune(args, f"{fam}-w16-nolora", base, "--dense-base", "--eval-only")
    quantized = {bits: quantize(args, base, bits) for bits in args.bits}
    for bits, q in quantized.items():
        finetune(args, f"{fam}-w{bits}-nolora", q, "--eval-only")
    for seed in args.seeds:
        for bits, q in quantized.items():
            for loss, flags in LOSSES.items():
                finetune(args, f"{fam}-w{bits}-{loss}-s{seed}", q, *flags, "--seed", str(seed),
                         *args.ft_flags.split(), "--logging-steps", "5", "--save-steps", "100000")


if __name__ == "__main__":
    run_cli(main, parse_args())
