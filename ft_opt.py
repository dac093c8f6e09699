"""Fine-tune OPT (or any causal LM whose logits are hidden @ W.T + b) with RLO, CE or focal loss.

The first stage of the paper's Table 3: fine-tune on WikiText-2 (block 256, batch 16, lr 1e-5 linear,
AdamW, 3 epochs, k = m = 5), then quantize. Built on transformers' Trainer, so `accelerate launch` or
torchrun give multi-GPU runs. The training loss comes from losses.linear_cross_loss on the final hidden
states and the LM head's weight: the batch x block x vocab logits are never materialised in training.
Evaluation reports the true perplexity exp(mean token CE), separately from the training objective.

    python ft_opt.py --model facebook/opt-125m --dataset wikitext2 --loss root --k 5 --m 5
    HF_HUB_OFFLINE=1 python ft_opt.py --model DIR --data-dir ../shared/data --output-dir runs/ft --eval-test
"""
import math
import os
import sys

from utils.cli import ArgumentParser, UsageError, default_data_dir, require_file, run_cli
from utils.lm_data import LAYOUTS, check_available, group_texts, load_splits
from utils.runio import RunDir, add_run_args, atomic_write_json, config_hash

# torch, transformers and losses are imported inside the functions, so that -h answers at once

LM_LOSSES = ("ce", "root", "root_paper", "focal")  # the CE-shaped losses of losses.py: f(log p_y)
EVAL_SPLIT = {"wikitext2": "test", "ptb": "test", "c4": "validation"}  # split used by --also-eval
# Settings that may differ on --resume (how long, how often, what else is evaluated); all others define the run.
MAY_CHANGE = ("epochs", "max_steps", "out", "resume", "overwrite", "threads", "data_dir", "eval_bs", "chunk_size",
              "head", "eval_only", "eval_test", "test_file", "also_eval", "max_eval_blocks", "eval_steps",
              "logging_steps", "save_steps", "save_total_limit", "fp16", "bf16", "gradient_checkpointing")


# Training flags shared with ft_quant.py: name -> (type, default, help). A script overrides the defaults
# (ft_quant: LLMTools' lr 1e-3, no warmup, no weight decay) and the help text where its meaning differs.
TRAINING_FLAGS = {
    "loss": (str, "root", "training objective"),
    "k": (float, 5.0, "RLO root k (root, root_paper)"),
    "m": (float, 5.0, "RLO scale m (root)"),
    "alpha": (float, 0.25, "focal alpha"),
    "gamma": (float, 3.0, "focal gamma"),
    "epochs": (float, 3.0, "training epochs"),
    "max_steps": (int, -1, "optimizer steps; overrides --epochs if > 0"),
    "block_size": (int, 256, "tokens per sequence"),
    "bs": (int, 16, "sequences per micro-batch"),
    "eval_bs": (int, None, "evaluation batch size (default --bs)"),
    "grad_accum": (int, 1, "micro-batches per optimizer step"),
    "lr": (float, 1e-5, "peak learning rate (AdamW, linear decay)"),
    "warmup_steps": (int, 500, "linear warmup steps"),
    "weight_decay": (float, 0.01, "AdamW weight decay"),
    "seed": (int, 42, "seed of init, data order and dropout"),
    "head": (str, "chunked", "LM head + loss: chunked (no full logits) or plain logits"),
    "chunk_size": (int, 256, "tokens per LM-head chunk (chunked head)"),
}
TRAINING_CHOICES = {"loss": LM_LOSSES, "head": ["chunked", "plain"]}


def add_training_args(parser, helps=None, **defaults):
    """Add the loss, schedule, batch and LM-head flags (TRAINING_FLAGS) and --gradient-checkpointing.

    defaults and helps, keyed by the flags' dest names, replace the shared default or help text (a help
    may also be given for gradient_checkpointing, which is off by default everywhere)."""
    helps = helps or {}
    unknown = (set(defaults) - set(TRAINING_FLAGS)) | (set(helps) - set(TRAINING_FLAGS) - {"gradient_checkpointing"})
    if unknown:  # a typo in a caller would otherwise be silently ignored
        raise ValueError(f"not a training flag: {sorted(unknown)}")
    for name, (kind, default, text) in TRAINING_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=defaults.get(name, default),
                            choices=TRAINING_CHOICES.get(name), help=helps.get(name, text))
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help=helps.get("gradient_checkpointing", "transformers' gradient checkpointing (recompute "
                                       "each decoder layer in backward)"))


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__)
    p.add_argument("--model", type=str, default="facebook/opt-125m", help="hub id or local model directory")
    p.add_argument("--dataset", type=str, default="wikitext2", choices=sorted(LAYOUTS),
                   help="text corpus (local layout under --data-dir, else the HF hub when online)")
    p.add_argument("--data-dir", type=str, default=default_data_dir(), help="root of the local data layouts")
    p.add_argument("--train-file", type=str, default=None, help="local training text (.txt or .jsonl)")
    p.add_argument("--validation-file", type=str, default=None, help="local validation text")
    p.add_argument("--test-file", type=str, default=None, help="local test text")
    add_run_args(p, default_out="runs/ft_opt/<model>_<data>_<loss>[_k_m]_lr_s<seed>_<hash of the settings>",
                 resume_flags=(), out_flags=("--output-dir", "--out"))
    add_training_args(p, helps={"bs": "sequences per device per micro-batch",
                                "warmup_steps": "linear warmup steps (authors' code: 500)",
                                "head": "LM head + loss: chunked (no full logits) or plain logits (reference)",
                                "chunk_size": "tokens per LM-head chunk (chunked head); small chunks keep peak "
                                              "memory low",
                                "gradient_checkpointing": "transformers' gradient checkpointing (recompute each "
                                                          "decoder layer in backward); with the chunked head, the "
                                                          "peak memory of a step is about 0.4x plain logits without "
                                                          "it"})
    p.add_argument("--fp16", action="store_true", help="fp16 mixed precision (CUDA)")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (CUDA)")
    p.add_argument("--eval-only", action="store_true", help="evaluate --model without training")
    p.add_argument("--eval-test", action="store_true", help="also evaluate the test split")
    p.add_argument("--also-eval", nargs="*", default=[], choices=sorted(LAYOUTS),
                   help="also evaluate these corpora (test split; C4: its validation sample)")
    p.add_argument("--max-train-blocks", type=int, default=None, help="use only the first N train blocks")
    p.add_argument("--max-eval-blocks", type=int, default=None, help="use only the first N blocks per eval")
    p.add_argument("--eval-steps", type=int, default=0, help="evaluate every N steps during training (0: off)")
    p.add_argument("--logging-steps", type=int, default=10, help="log the training objective every N steps")
    p.add_argument("--save-steps", type=int, default=500, help="Trainer checkpoint every N steps")
    p.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="resume from the latest checkpoint in --output-dir, or from the given one (refused if a "
                        "setting that defines the run differs)")
    return p.parse_args(argv)


def check_args(args):
    """Validate what argparse cannot; returns the loss form (bad k, m, alpha, gamma raise UsageError)."""
    import torch
    import losses
    positive = ["block_size", "bs", "grad_accum", "logging_steps", "save_steps"]
    positive += [n for n in ("eval_bs", "chunk_size", "max_train_blocks", "max_eval_blocks")
                 if getattr(args, n) is not None]
    for name in positive:
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    if args.epochs <= 0 and args.max_steps <= 0:
        raise UsageError("--epochs or --max-steps must be positive")
    if args.fp16 and args.bf16:
        raise UsageError("choose one of --fp16 and --bf16")
    if (args.fp16 or args.bf16) and not torch.cuda.is_available():
        raise UsageError("--fp16/--bf16 need a CUDA device")
    for split in ("train", "validation", "test"):
        path = getattr(args, f"{split}_file")
        if path is not None:
            require_file(path, f"--{split}-file: a .txt or .jsonl text file")
    for name in args.also_eval:
        check_available(name, args.data_dir, EVAL_SPLIT[name])
    try:
        return losses.get_form(args.loss, k=args.k, m=args.m, alpha=args.alpha, gamma=args.gamma)
    except ValueError as err:
        raise UsageError(f"--loss {args.loss}: {err}") from None


# ------------------------------------------------------------------------------- loss on hidden states
def _empty_positions(input_ids):
    import torch
    return torch.zeros(0, dtype=torch.long, device=input_ids.device)


class HiddenStates:
    """Captures the final hidden states (the LM head's input) through a forward hook on the decoder.

    A hook, rather than calling the decoder directly, keeps the forward pass going through the (possibly
    DDP-wrapped) model, so data-parallel gradient hooks work unchanged.
    """

    def __init__(self, model):
        self.model, self.value = model, None
        self.handle = model.get_decoder().register_forward_hook(self._hook)

    def head(self):
        """(weight, bias) of the LM head."""
        head = self.model.get_output_embeddings()
        return head.weight, getattr(head, "bias", None)

    def _hook(self, module, inputs, output):
        self.value = output[0] if isinstance(output, tuple) else output.last_hidden_state

    def pop(self):
        value, self.value = self.value, None
        return value


def _flat_output(model, capture, batch, head):
    """Flat final hidden states (chunked head: the model computes logits for no position) or flat logits."""
    ids = batch["input_ids"]
    kwargs = {} if head == "plain" else {"logits_to_keep": _empty_positions(ids)}
    logits = model(input_ids=ids, attention_mask=batch.get("attention_mask"), **kwargs).logits
    out = logits if head == "plain" else capture.value
    capture.pop()
    return out.reshape(-1, out.shape[-1])


def batch_loss(model, capture, batch, form, reduction="sum", head="chunked", chunk_size=None):
    """phi(log p_y) over the batch's next tokens (targets batch["shift_labels"], -100 ignored).

    Chunked: losses.linear_cross_loss applies the LM head chunk by chunk (same values and gradients as
    the plain path, without the batch x block x vocab logits). Plain: the model's full logits.
    """
    import losses
    targets = batch["shift_labels"].reshape(-1)
    x = _flat_output(model, capture, batch, head)
    if head == "plain":
        return losses.logprob_loss(x, targets, form, reduction=reduction)
    weight, bias = capture.head()
    return losses.linear_cross_loss(x, weight, targets, bias=bias, loss=form, reduction=reduction,
                                    chunk_size=chunk_size)


def check_plain_head(model, capture):
    """Refuse models whose logits are not hidden @ W.T + b (logit scaling, soft-capping, ...)."""
    import torch
    ids = torch.arange(min(8, model.config.vocab_size), device=model.device)[None]
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
        weight, bias = capture.head()
        mine = capture.pop().float() @ weight.float().t() + (0 if bias is None else bias.float())
    if not torch.allclose(logits, mine, rtol=1e-3, atol=1e-3 * float(logits.abs().max()) + 1e-5):
        raise UsageError(f"{type(model).__name__}: logits are not a plain linear head over the decoder's "
                         "output; use --head plain")


# ----------------------------------------------------------------------------------------- data
def collate(features):
    """Stack fixed-length blocks; shift_labels[t] = labels[t + 1], -100 at the end (never predicted)."""
    import torch
    input_ids = torch.tensor([f["input_ids"] for f in features], dtype=torch.long)
    labels = torch.tensor([f["labels"] for f in features], dtype=torch.long)
    pad = torch.full_like(labels[:, :1], -100)
    return {"input_ids": input_ids, "labels": labels, "shift_labels": torch.cat([labels[:, 1:], pad], 1)}


def _first(ds, n):
    return ds if n is None or len(ds) <= n else ds.select(range(n))


def load_data(args, tokenizer):
    """Blocked train / validation (/ test) splits of --dataset or the given files."""
    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    given = any(files.values())
    splits = ["validation"] + (["test"] if args.eval_test else []) + ([] if args.eval_only else ["train"])
    dsd = load_splits(None if given else args.dataset, args.data_dir, files, splits=splits)
    for split in splits:
        if split not in dsd:
            raise UsageError(f"no {split} split: give --{split}-file or a --dataset that has one")
    dsd = group_texts(dsd, tokenizer, args.block_size)
    out = {split: _first(ds, args.max_train_blocks if split == "train" else args.max_eval_blocks)
           for split, ds in dsd.items()}
    for split, ds in out.items():
        if len(ds) == 0:
            raise UsageError(f"{split} split has fewer than --block-size {args.block_size} tokens")
    return out


def extra_eval_sets(args, tokenizer):
    """{name_split: blocks} for --also-eval corpora, read from --data-dir."""
    out = {}
    for name in args.also_eval:
        split = EVAL_SPLIT[name]
        dsd = group_texts(load_splits(name, args.data_dir, splits=(split,)), tokenizer, args.block_size)
        out[f"{name}_{split}"] = _first(dsd[split], args.max_eval_blocks)
    return out


# ------------------------------------------------------------------------------------- evaluation
def evaluate_lm(model, capture, loader, form, accelerator=None, head="chunked", chunk_size=None):
    """True perplexity exp(mean token CE) and the mean training objective over every predicted token.

    Sums are kept per sequence and gathered across processes (duplicates from uneven sharding dropped),
    so the mean is over tokens, not a mean of batch means.
    """
    import torch
    with torch.no_grad():
        return _evaluate_lm(model, capture, loader, form, accelerator, head, chunk_size)


def _evaluate_lm(model, capture, loader, form, accelerator, head, chunk_size):
    import torch
    import losses
    from tqdm import tqdm
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)
    for batch in tqdm(loader, desc="eval", leave=False, disable=len(loader) < 2):
        ce = batch_loss(model, capture, batch, losses.ce_form(), "none", head, chunk_size)
        valid = batch["shift_labels"].reshape(-1) != -100
        objective = torch.where(valid, form.value(-ce), torch.zeros_like(ce))
        per_seq = torch.stack([ce, objective, valid.to(ce.dtype)], -1).reshape(len(batch["input_ids"]), -1, 3)
        per_seq = per_seq.sum(1).double()
        if accelerator is not None:
            per_seq = accelerator.gather_for_metrics(per_seq)
        totals += per_seq.sum(0).cpu()
    model.train(was_training)
    ce_mean = float(totals[0] / totals[2].clamp(min=1))
    return {"ce": ce_mean, "perplexity": math.exp(ce_mean),
            "objective": float(totals[1] / totals[2].clamp(min=1)), "tokens": int(totals[2])}


# ----------------------------------------------------------------------------------------- trainer
def training_arguments(args):
    """TrainingArguments from the CLI: AdamW, linear schedule with warmup, no hub, no reporting."""
    import torch
    from transformers import TrainingArguments
    return TrainingArguments(
        output_dir=args.out, num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.bs, per_device_eval_batch_size=args.eval_bs or args.bs,
        gradient_accumulation_steps=args.grad_accum, learning_rate=args.lr, lr_scheduler_type="linear",
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, optim="adamw_torch",
        seed=args.seed, fp16=args.fp16, bf16=args.bf16, logging_steps=args.logging_steps,
        save_strategy="steps", save_steps=args.save_steps, save_total_limit=args.save_total_limit,
        eval_strategy="steps" if args.eval_steps else "no", eval_steps=args.eval_steps or None,
        report_to="none", push_to_hub=False, remove_unused_columns=False, dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(), gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS if args.gradient_checkpointing else None)


CHECKPOINTING_KWARGS = {"use_reentrant": False}  # non-reentrant: works with the hidden-state hook and frozen inputs


def make_trainer(args, model, tokenizer, data, form):
    """A Trainer whose loss is the losses.py objective and whose evaluation is true perplexity."""
    import torch
    from transformers import Trainer
    if args.gradient_checkpointing:  # here, not only in Trainer.train(): every step uses it
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)

    class RLOTrainer(Trainer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.capture = HiddenStates(self.model)
            # Trainer then counts the predicted tokens (shift_labels != -100) of all micro-batches of an
            # optimizer step, and compute_loss divides the summed objective by that count itself.
            self.model_accepts_loss_kwargs = True
            self.loss_is_scaled_for_ga = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            total = batch_loss(model, self.capture, inputs, form, "sum", args.head, args.chunk_size)
            if num_items_in_batch is None:  # a call outside training_step: this batch alone
                num_items_in_batch = (inputs["shift_labels"] != -100).sum()
            loss = total / torch.as_tensor(num_items_in_batch, device=total.device).clamp(min=1)
            if self.args.average_tokens_across_devices:  # the count is global, DDP averages gradients
                loss = loss * self.accelerator.num_processes
            return (loss, {}) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            loader = self.get_eval_dataloader(self.eval_dataset if eval_dataset is None else eval_dataset)
            found = evaluate_lm(self.model, self.capture, loader, form, self.accelerator, args.head,
                                args.chunk_size)
            found[f"objective_{args.loss}"] = found.pop("objective")
            metrics = {f"{metric_key_prefix}_{key}": value for key, value in found.items()}
            self.log(dict(metrics))
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def log(self, logs, *a, **kw):
            # Trainer's "loss" is the training objective, which is not CE unless --loss ce: name it so
            for key, new in (("loss", f"train_objective_{args.loss}"),
                             ("train_loss", f"train_objective_{args.loss}_mean")):
                if key in logs:
                    logs[new] = logs.pop(key)
            super().log(logs, *a, **kw)

    targs = training_arguments(args)
    return RLOTrainer(model=model, args=targs, data_collator=collate, processing_class=tokenizer,
                      train_dataset=data.get("train"), eval_dataset=data["validation"])


# ----------------------------------------------------------------------------------------- main
def load_model(name):
    """Tokenizer and float32 model from a hub id or a local directory (offline-friendly errors)."""
    import torch

    import utils.tv_compat  # noqa: F401  (before transformers, which may import torchvision)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot load --model {name}: {first}") from None
    return tokenizer, model


def resume_point(args):
    if args.resume is None:
        return None
    if args.resume != "latest":
        if not os.path.isdir(args.resume):
            raise UsageError(f"--resume {args.resume}: no such checkpoint directory")
        return args.resume
    from transformers.trainer_utils import get_last_checkpoint
    last = get_last_checkpoint(args.out) if os.path.isdir(args.out) else None
    if last is None:
        raise UsageError(f"--resume: no checkpoint-* directory in {args.out}")
    return last


def train(trainer, args, tokenizer, resume):
    """Train (from checkpoint `resume` if not None), save model + tokenizer; returns training metrics."""
    out = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.out)
    tokenizer.save_pretrained(args.out)
    trainer.save_state()
    # out.metrics went through log(), which renamed train_loss to train_objective_<loss>_mean
    metrics = {key if key.startswith("train_") else f"train_{key}": value for key, value in out.metrics.items()}
    return {"train_steps": out.global_step, **metrics}


def default_out(args):
    """runs/ft_opt/<model>_<data>_<loss>[_k_m]_lr_s<seed>_<hash of every defining setting>."""
    settings = vars(args)
    model = os.path.basename(os.path.normpath(args.model))
    data = args.dataset if not args.train_file else os.path.splitext(os.path.basename(args.train_file))[0]
    tag = f"_k{args.k:g}_m{args.m:g}" if args.loss == "root" else f"_k{args.k:g}" if args.loss == "root_paper" \
        else ""
    digest = config_hash(settings, defining_keys(settings))
    name = f"{model}_{data}_{args.loss}{tag}_lr{args.lr:g}_s{args.seed}_{digest}"
    return os.path.join("runs", "ft_opt", name)


def defining_keys(config):
    return [key for key in config if key not in MAY_CHANGE]


def open_run_dir(args):
    """The run directory: OUT holds the model and Trainer's checkpoints, OUT/run the run's config.json,
    metrics.jsonl and results.json. Anything already in OUT is refused without --resume (a CE run must not
    replace an RLO run's model), or moved aside with --overwrite; --resume checks the defining settings."""
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process and not args.resume and os.path.isdir(args.out) and os.listdir(args.out):
        if not args.overwrite:
            raise UsageError(f"{args.out} already holds a run; pass --resume to continue it or --overwrite "
                             "to move it aside and start afresh")
        _move_aside(args.out)
    return RunDir(os.path.join(args.out, "run"), vars(args), resume=args.resume is not None,
                  defining=defining_keys(vars(args)), main_process=main_process)


def _move_aside(path):
    import time
    aside = f"{path.rstrip(os.sep)}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        os.replace(path, aside)
    except OSError as err:
        raise UsageError(f"cannot move {path} aside: {err.strerror or err}") from None
    print(f"moved the old run in {path} aside to {aside}", flush=True)


def main(args):
    """Fine-tune (or --eval-only) and evaluate; returns the results (also OUT/eval_results.json and
    OUT/run/results.json)."""
    import utils.tv_compat  # noqa: F401  (before transformers, which may import torchvision)
    from transformers import set_seed

    from utils.runio import set_threads
    form = check_args(args)
    args.out = args.out or default_out(args)
    set_threads(args.threads)
    resume = None if args.eval_only else resume_point(args)
    with open_run_dir(args) as run:  # refusals come before any model or data is loaded
        set_seed(args.seed)
        tokenizer, model = load_model(args.model)
        data = load_data(args, tokenizer)
        extra = extra_eval_sets(args, tokenizer)
        trainer = make_trainer(args, model, tokenizer, data, form)
        if args.head == "chunked":
            check_plain_head(model, trainer.capture)
        results = {"model": args.model, "objective": args.loss}
        if not args.eval_only:
            results.update(train(trainer, args, tokenizer, resume))
        sets = {"validation": data["validation"], **({"test": data["test"]} if "test" in data else {}), **extra}
        for name, ds in sets.items():
            results.update(trainer.evaluate(eval_dataset=ds, metric_key_prefix=name))
        if trainer.is_world_process_zero():
            atomic_write_json(os.path.join(args.out, "eval_results.json"), results)
            run.log(results)
            run.finish(results)
            summary = "  ".join(f"{name} ppl {results[name + '_perplexity']:.2f}" for name in sets)
            print(f"{args.loss}: {summary}", file=sys.stderr)
    return results


if __name__ == "__main__":
    run_cli(main, parse_args())
