"""Fine-tune in quantized space: LoRA adapters on a frozen opt.py / llama.py --save model, with RLO, CE or focal.

The paper's Table 4 setting (2) (LLMTools / ModuLoRA, Yin et al. 2024): the base stays as its integer codes
(quant/qlinear.py dequantizes them on the fly, incoherence transforms regenerated from the saved seed) and
only LoRA matrices A, B on the quantized decoder linears are trained, through peft. Losses, data flags, the
Trainer, the chunked LM head and the true perplexity exp(mean token CE) are ft_opt.py's. Only the adapters
are saved (peft's save_pretrained, in OUT/adapters); --eval-merged also evaluates them folded into dense
weights. Defaults follow LLMTools' finetune: rank 8, alpha 16, dropout 0.05, lr 1e-3, batch 16, block 256,
3 epochs.

    python opt.py MODEL wikitext2 --wbits 2 --quant ldlqRG --incoh_processing --save Q
    python ft_quant.py --base Q --loss root --k 5 --m 5 --eval-test --also-eval c4 --out runs/q2-root
    python ft_quant.py --base Q --eval-only --adapters runs/q2-root/adapters --eval-test --out runs/q2-eval

A finished run in --out is refused unless --resume (which then returns its results.json) or --overwrite.
"""
import argparse
import os
import sys
import time

import utils.tv_compat  # noqa: F401  (transformers and peft may import torchvision)

import torch

import ft_opt
from quant import qlinear, saveload
from quant.families import FAMILIES, family_of, load_causal_lm
from utils.cli import ArgumentParser, UsageError, default_data_dir, run_cli
from utils.lm_data import LAYOUTS
from utils.runio import RunDir, add_run_args, set_threads

ADAPTERS = "adapters"
# settings that define a run: --resume refuses a directory that was run with other values
DEFINING = ("base", "dense_base", "loss", "k", "m", "alpha", "gamma", "seed", "lora_r", "lora_alpha",
            "lora_dropout", "lr", "epochs", "max_steps", "block_size", "bs", "grad_accum", "dataset",
            "max_train_blocks", "adapters", "eval_only")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", type=str, required=True, help="directory written by opt.py / llama.py --save")
    p.add_argument("--dense-base", action="store_true",
                   help="--base is a plain save_pretrained model (the 16-bit reference), not --save output")
    p.add_argument("--family", choices=["auto"] + list(FAMILIES), default="auto",
                   help="model family (auto: from config.model_type)")
    p.add_argument("--adapters", type=str, default=None, help="start from (or, with --eval-only, evaluate) "
                   "adapters saved by an earlier run (its OUT/adapters)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (scaling alpha / r)")
    p.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the LoRA input")
    p.add_argument("--dataset", type=str, default="wikitext2", choices=sorted(LAYOUTS),
                   help="text corpus (local layout under --data-dir)")
    p.add_argument("--data-dir", type=str, default=default_data_dir(), help="root of the local data layouts")
    for split in ("train", "validation", "test"):
        p.add_argument(f"--{split}-file", type=str, default=None, help=f"local {split} text (.txt or .jsonl)")
    ft_opt.add_training_args(p, lr=1e-3, warmup_steps=0, weight_decay=0.0,
                             helps={"seed": "seed of the adapter init, data order and dropout",
                                    "gradient_checkpointing": "transformers' gradient checkpointing (recompute "
                                    "each decoder layer in backward, the codes dequantized again)"})
    p.add_argument("--eval-only", action="store_true", help="evaluate without training")
    p.add_argument("--eval-test", action="store_true", help="also evaluate the test split")
    p.add_argument("--skip-validation", action="store_true",
                   help="do not evaluate the validation split after training (it must still exist)")
    p.add_argument("--eval-merged", action="store_true",
                   help="also evaluate the adapters merged into dense weights (names prefixed merged_)")
    p.add_argument("--also-eval", nargs="*", default=[], choices=sorted(LAYOUTS),
                   help="also evaluate these corpora (test split; C4: its validation sample)")
    p.add_argument("--max-train-blocks", type=int, default=None, help="use only the first N train blocks")
    p.add_argument("--max-eval-blocks", type=int, default=None, help="use only the first N blocks per eval")
    p.add_argument("--logging-steps", type=int, default=10, help="log the training objective every N steps")
    p.add_argument("--save-steps", type=int, default=500, help="Trainer checkpoint (adapters) every N steps")
    add_run_args(p, default_out="runs/ft_quant/BASE-LOSS-kK-sSEED")
    return p.parse_args(argv)


def trainer_namespace(args, out):
    """ft_opt's view of these arguments (its data, loss and Trainer helpers read these names)."""
    return argparse.Namespace(**vars(args), output_dir=os.path.join(out, "trainer"), fp16=False, bf16=False,
                              eval_steps=0, save_total_limit=1)


def check_args(args):
    """Validate; returns (the loss form, ft_opt's namespace). Bad values raise UsageError."""
    if args.lora_r <= 0 or args.lora_alpha <= 0 or not 0 <= args.lora_dropout < 1:
        raise UsageError("--lora-r and --lora-alpha must be positive and --lora-dropout in [0, 1)")
    if not args.dense_base and not os.path.isdir(args.base):  # a dense base may also be a hub id
        raise UsageError(f"--base {args.base}: no such directory")
    if not args.dense_base and not os.path.exists(os.path.join(args.base, saveload.CODES_FILE)):
        raise UsageError(f"--base {args.base} holds no {saveload.CODES_FILE}: not a directory written by "
                         "opt.py / llama.py --save (pass --dense-base for a plain model)")
    if args.adapters is not None and not os.path.exists(os.path.join(args.adapters, "adapter_config.json")):
        raise UsageError(f"--adapters {args.adapters}: no adapter_config.json (peft's save_pretrained)")
    args.out = args.out or default_out(args)
    ns = trainer_namespace(args, args.out)
    return ft_opt.check_args(ns), ns


def default_out(args):
    name = os.path.basename(os.path.normpath(args.base))
    return os.path.join("runs", "ft_quant", f"{name}-{args.loss}-k{args.k:g}-s{args.seed}")


# ----------------------------------------------------------------------------------------- the model
def decoder_linears(model, family):
    """Names of the nn.Linear layers inside the decoder layers (the LoRA targets of a dense base)."""
    prefix = {id(m) for m in family.base(model).layers.modules()}
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and id(m) in prefix]


def base_model(args):
    """(model, tokenizer, bits, quantization method, LoRA targets), every base parameter frozen."""
    if args.dense_base:
        model, tokenizer = load_causal_lm(args.base)
        for p in model.parameters():
            p.requires_grad_(False)
        targets = decoder_linears(model, family_of(model, args.family))
        return model.eval(), tokenizer, 16, "none", targets
    model, tokenizer, cfg = qlinear.load_quantized(args.base, args.family)
    return model, tokenizer, cfg.wbits, cfg.method, qlinear.quant_linear_names(model)


def with_adapters(args, model, targets):
    """The peft model: fresh adapters seeded by --seed (same seed, same init for every loss) or saved ones."""
    from peft import LoraConfig, PeftModel, get_peft_model
    quantized = not args.dense_base
    if args.adapters is not None:
        config = LoraConfig.from_pretrained(args.adapters)
        if quantized:
            config._register_custom_module({qlinear.QuantLinear: qlinear.lora_layer_class()})
        return PeftModel.from_pretrained(model, args.adapters, config=config, is_trainable=not args.eval_only)
    torch.manual_seed(args.seed)
    config = qlinear.lora_config(args.lora_r, args.lora_alpha, args.lora_dropout, targets, quantized)
    return get_peft_model(model, config)


def count_params(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "frozen_params": sum(p.numel() for p in model.parameters()) - trainable,
            "code_bytes": sum(b.numel() * b.element_size() for n, b in model.named_buffers()
                              if n.endswith("codes"))}


# ----------------------------------------------------------------------------------------- running
def train(trainer, run, ns):
    """Train (continuing from a Trainer checkpoint in OUT/trainer if one is there); save the adapters."""
    from transformers.trainer_utils import get_last_checkpoint
    last = get_last_checkpoint(ns.output_dir) if os.path.isdir(ns.output_dir) else None
    tick = time.time()
    out = trainer.train(resume_from_checkpoint=last)
    trainer.model.save_pretrained(run.file(ADAPTERS))
    metrics = {key if key.startswith("train_") else f"train_{key}": value for key, value in out.metrics.items()}
    return {"train_steps": out.global_step, "train_seconds": round(time.time() - tick, 1), **metrics}


def evaluate(trainer, model, sets, form, ns, merged):
    """Perplexity (and the objective) on each set, unmerged, then merged into dense weights if asked."""
    results = {}
    for name, ds in sets.items():
        results.update(trainer.evaluate(eval_dataset=ds, metric_key_prefix=name))
    if merged:
        dense = qlinear.merged_dense(model)
        capture = ft_opt.HiddenStates(dense)
        for name, ds in sets.items():
            found = ft_opt.evaluate_lm(dense, capture, trainer.get_eval_dataloader(ds), form,
                                       head=ns.head, chunk_size=ns.chunk_size)
            results.update({f"merged_{name}_{key}": value for key, value in found.items()})
    return results


def main(args):
    form, ns = check_args(args)
    set_threads(args.threads)
    finished = os.path.join(args.out, "results.json")
    if args.resume and os.path.exists(finished):
        print(f"{args.out} is finished; its results.json stands", file=sys.stderr)
        return RunDir(args.out, vars(args), resume=True, defining=DEFINING).read_json("results.json")
    from transformers import set_seed
    set_seed(args.seed)
    model, tokenizer, bits, method, targets = base_model(args)
    data = ft_opt.load_data(ns, tokenizer)  # bad data fails here, before a run directory is made
    sets = {**({} if args.skip_validation else {"validation": data["validation"]}),
            **({"test": data["test"]} if "test" in data else {}), **ft_opt.extra_eval_sets(ns, tokenizer)}
    run = RunDir(args.out, vars(args), resume=args.resume, overwrite=args.overwrite, defining=DEFINING)
    if not (args.eval_only and args.adapters is None):  # the "no LoRA" evaluation runs the base alone
        model = with_adapters(args, model, targets)
    trainer = ft_opt.make_trainer(ns, model, tokenizer, data, form)
    if args.head == "chunked":
        ft_opt.check_plain_head(model, trainer.capture)
    results = {"base": args.base, "bits": bits, "method": method, "loss": args.loss, "k": args.k,
               "m": args.m, "seed": args.seed, "lora_r": args.lora_r, "lora": hasattr(model, "peft_config"), **count_params(model)}
    if not args.eval_only:
        results.update(train(trainer, run, ns))
    results.update(evaluate(trainer, model, sets, form, ns, args.eval_merged and results["lora"]))
    run.log({key: value for key, value in results.items() if key.endswith("perplexity")})
    summary = "  ".join(f"{name} ppl {results[name + '_perplexity']:.3f}" for name in sets)
    print(f"{args.loss} w{bits}: {summary}", file=sys.stderr)
    return run.finish(results)


if __name__ == "__main__":
    run_cli(main, parse_args())
