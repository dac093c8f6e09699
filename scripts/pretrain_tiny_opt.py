"""Pretrain a small OPT with cross-entropy on a text file: the CPU-scale base model for Table 3.

Trains a byte-level BPE tokenizer on the training file, builds an OPT from a preset config, trains it with
AdamW (linear warmup, linear decay over --max-steps) on blocks of --block-size tokens, and saves model and
tokenizer with save_pretrained, so `AutoModelForCausalLM/AutoTokenizer.from_pretrained(DIR)` load it
offline. Time-bounded and resumable: the learning rate decays to zero over --max-steps or --max-minutes,
whichever comes first; DIR/checkpoint.pt (with the steps and seconds spent) is written every
--save-minutes and at the end, and a rerun with the same DIR continues from it.

    python scripts/pretrain_tiny_opt.py --output-dir /work/artifacts/tiny-opt-wt2 --max-minutes 30
"""
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import utils.tv_compat  # noqa: E402,F401  (transformers imports torchvision)
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from utils.cli import ArgumentParser, UsageError, default_data_dir, require_file, run_cli  # noqa: E402
from utils.lm_data import group_texts, load_splits  # noqa: E402
from utils.runio import (append_jsonl, atomic_torch_save, atomic_write_json,  # noqa: E402
                         write_config)

# preset -> OPTConfig fields (dropout off: the budget is well under one epoch, nothing to regularise)
PRESETS = {
    "tiny-opt-4x256": dict(num_hidden_layers=4, hidden_size=256, ffn_dim=1024, num_attention_heads=4),
    "tiny-opt-6x384": dict(num_hidden_layers=6, hidden_size=384, ffn_dim=1536, num_attention_heads=6),
    "test": dict(num_hidden_layers=2, hidden_size=32, ffn_dim=64, num_attention_heads=2),
}
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-3, as in OPT's tokenizer (bos = eos = "</s>" = 2)


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-file", type=str, default=None,
                   help="training text (default: DATA_DIR/wikitext-2/train.txt)")
    p.add_argument("--validation-file", type=str, default=None,
                   help="validation text (default: DATA_DIR/wikitext-2/valid.txt)")
    p.add_argument("--data-dir", type=str, default=default_data_dir(), help="root of the data layouts")
    p.add_argument("--output-dir", type=str, required=True, help="where model, tokenizer and logs go")
    p.add_argument("--preset", type=str, default="tiny-opt-4x256", choices=sorted(PRESETS),
                   help="model size (OPTConfig fields)")
    p.add_argument("--vocab-size", type=int, default=8192, help="byte-level BPE vocabulary size")
    p.add_argument("--max-positions", type=int, default=512, help="max_position_embeddings")
    p.add_argument("--block-size", type=int, default=256, help="tokens per training sequence")
    p.add_argument("--bs", type=int, default=16, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear warmup steps")
    p.add_argument("--max-steps", type=int, default=1000, help="optimizer steps (sets the lr decay)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training wall-time budget; the lr decays over it too (whichever ends first)")
    p.add_argument("--save-minutes", type=float, default=5.0, help="checkpoint interval")
    p.add_argument("--eval-bs", type=int, default=16, help="sequences per evaluation batch")
    p.add_argument("--seed", type=int, default=0, help="seed of init and data order")
    return p.parse_args(argv)


def check_args(args):
    for name in ("vocab_size", "block_size", "bs", "max_steps", "max_positions", "eval_bs"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if args.block_size > args.max_positions:
        raise UsageError("--block-size must not exceed --max-positions")
    if args.lr <= 0:
        raise UsageError("--lr must be positive")
    layout = "DATA_DIR/wikitext-2/{train,valid}.txt or --train-file/--validation-file"
    args.train_file = require_file(args.train_file or os.path.join(args.data_dir, "wikitext-2/train.txt"),
                                   layout)
    args.validation_file = require_file(
        args.validation_file or os.path.join(args.data_dir, "wikitext-2/valid.txt"), layout)


def train_tokenizer(train_file, vocab_size, max_positions):
    """A byte-level BPE trained on the file, wrapped so that save_pretrained/AutoTokenizer round-trip."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast
    bpe = ByteLevelBPETokenizer()
    bpe.train([train_file], vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL,
              show_progress=False)
    # like OPT's tokenizer: every text starts with </s>
    bpe.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", SPECIAL.index("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="</s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=max_positions)


def build_model(preset, tokenizer, max_positions, seed):
    from transformers import OPTConfig, OPTForCausalLM
    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=len(tokenizer), max_position_embeddings=max_positions,
                       word_embed_proj_dim=PRESETS[preset]["hidden_size"], dropout=0.0,
                       attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, **PRESETS[preset])
    return OPTForCausalLM(config)


def lr_factor(step, elapsed_s, args):
    """Linear warmup, then linear decay to 0 over the run's progress.

    Progress is the larger of the step fraction and, with --max-minutes, the time fraction, so a run cut
    by its time budget still ends with a fully decayed learning rate.
    """
    progress = step / args.max_steps
    if args.max_minutes is not None:
        progress = max(progress, elapsed_s / (60 * args.max_minutes))
    return min(1.0, (step + 1) / max(1, args.warmup_steps)) * max(0.0, 1.0 - progress), progress


def batch_at(blocks, step, bs, seed):
    """The step-th batch of a seeded per-epoch shuffle: resuming needs only the step number."""
    per_epoch = max(1, len(blocks) // bs)
    epoch, pos = divmod(step, per_epoch)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed + epoch))
    return blocks[order[pos * bs:(pos + 1) * bs]]


@torch.no_grad()
def perplexity(model, blocks, bs):
    """True perplexity exp(mean token CE) over every predicted token of the blocks."""
    model.eval()
    total, count = 0.0, 0
    for start in tqdm(range(0, len(blocks), bs), desc="eval", leave=False):
        ids = blocks[start:start + bs]
        logits = model(input_ids=ids).logits[:, :-1].float()
        total += torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum").item()
        count += ids[:, 1:].numel()
    model.train()
    return math.exp(total / count), total / count


def load_blocks(args, tokenizer):
    files = {"train": args.train_file, "validation": args.validation_file}
    dsd = group_texts(load_splits(None, args.data_dir, files, splits=("train", "validation")),
                      tokenizer, args.block_size)
    return {split: torch.tensor(dsd[split]["input_ids"], dtype=torch.long) for split in dsd}


def prepare(args):
    """Tokenizer (trained once, then reloaded from DIR), model, optimizer, scheduler, start step."""
    from transformers import AutoTokenizer
    tok_dir = os.path.join(args.output_dir, "tokenizer")
    if os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer(args.train_file, args.vocab_size, args.max_positions)
        tokenizer.save_pretrained(tok_dir)
    model = build_model(args.preset, tokenizer, args.max_positions, args.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    state = {"step": 0, "elapsed_s": 0.0}
    ckpt = os.path.join(args.output_dir, "checkpoint.pt")
    if os.path.exists(ckpt):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        print(f"resuming from {ckpt} at step {state['step']}", file=sys.stderr)
    return tokenizer, model, opt, {"step": state["step"], "elapsed_s": state["elapsed_s"]}


def save_checkpoint(args, model, opt, progress):
    atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), **progress},
                      os.path.join(args.output_dir, "checkpoint.pt"))


def train(args, model, opt, state, blocks):
    """Run steps until the step or time budget is spent; `state` (step, elapsed_s) is updated in place."""
    began, last_save = time.time() - state["elapsed_s"], time.time()
    metrics = os.path.join(args.output_dir, "run", "metrics.jsonl")
    model.train()
    bar = tqdm(total=args.max_steps, initial=state["step"], desc="pretrain")
    while True:
        factor, progress = lr_factor(state["step"], time.time() - began, args)
        if progress >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = args.lr * factor
        ids = batch_at(blocks, state["step"], args.bs, args.seed)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state["step"] += 1
        state["elapsed_s"] = time.time() - began
        bar.update(1)
        if state["step"] % 20 == 0:
            append_jsonl(metrics, {"step": state["step"], "train_ce": loss.item(), "lr": args.lr * factor,
                                   "elapsed_s": round(state["elapsed_s"], 1)})
            bar.set_postfix(ce=f"{loss.item():.3f}")
        if time.time() - last_save > 60 * args.save_minutes:
            save_checkpoint(args, model, opt, state)
            last_save = time.time()
    bar.close()


def main(args):
    check_args(args)
    os.makedirs(args.output_dir, exist_ok=True)
    write_config(os.path.join(args.output_dir, "run"), args)
    tokenizer, model, opt, state = prepare(args)
    blocks = load_blocks(args, tokenizer)
    if len(blocks["train"]) < args.bs or len(blocks["validation"]) == 0:
        raise UsageError(f"too little text for --bs {args.bs} blocks of {args.block_size} tokens")
    train(args, model, opt, state, blocks["train"])
    save_checkpoint(args, model, opt, state)
    ppl, ce = perplexity(model, blocks["validation"], args.eval_bs)
    model.save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    results = {"step": state["step"], "validation_perplexity": ppl,
               "validation_ce": ce, "validation_tokens": blocks["validation"][:, 1:].numel(),
               "train_blocks": len(blocks["train"]), "parameters": sum(p.numel() for p in model.parameters()),
               "train_seconds": round(state["elapsed_s"], 1)}
    atomic_write_json(os.path.join(args.output_dir, "run", "results.json"), results)
    print(f"step {state['step']}  validation perplexity {ppl:.2f}")
    return results


if __name__ == "__main__":
    run_cli(main, parse_args())
