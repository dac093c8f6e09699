"""Pretrain a small OPT with cross-entropy on WikiText-2: the CPU-scale base model for Table 3.

Trains a byte-level BPE tokenizer on the training text, builds an OPT from a preset config, trains it with
AdamW (linear warmup, linear decay over --max-steps or --max-minutes, whichever ends first) on blocks of
--block-size tokens, and saves model and tokenizer to OUT/model with save_pretrained, so
`AutoModelForCausalLM/AutoTokenizer.from_pretrained(OUT/model)` load it offline.

Text form (--text-form raw, the default): the training text is built like the evaluation text of opt.py,
rows joined by "\\n\\n" and tokenized as one string. Only the tokenized WikiText-2 train split exists offline, so
each "<unk>" in it is replaced by a rare training word (see rare_word_fill); `--text-form lines` keeps the old
form (one tokenized row per line, "<unk>" kept). OUT/data/{train,validation}.jsonl hold the text used, for
fine-tuning on the same form (ft_opt.py --train-file).

Run directory OUT (utils.runio.RunDir): config.json, metrics.jsonl, results.json, checkpoint.pt (kind
'pretrain_lm', written every --save-minutes and at the end) and, every --snapshot-steps, OUT/snapshots/step-N
(a loadable model, for the quantization-sensitivity curve). --resume continues from checkpoint.pt; a larger
--max-steps extends a finished run.

    python -m scripts.pretrain_tiny_opt --out runs/table3_cpu/base --preset tiny-opt-4x256 --max-steps 4000
"""
import math
import os
import random
import re
import sys
import time
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import utils.tv_compat  # noqa: E402,F401  (transformers imports torchvision)
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from utils.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from utils.cli import ArgumentParser, UsageError, default_data_dir, require_file, run_cli  # noqa: E402
from utils.lm_data import group_texts, load_splits, read_texts  # noqa: E402
from utils.runio import RunDir, add_run_args, atomic_write_text, set_threads  # noqa: E402

# preset -> OPTConfig fields (dropout off: nothing to regularise in a few epochs of a small model)
PRESETS = {
    "tiny-opt-3x128": dict(num_hidden_layers=3, hidden_size=128, ffn_dim=512, num_attention_heads=2),
    "tiny-opt-4x128": dict(num_hidden_layers=4, hidden_size=128, ffn_dim=512, num_attention_heads=2),
    "tiny-opt-8x128": dict(num_hidden_layers=8, hidden_size=128, ffn_dim=512, num_attention_heads=2),
    "tiny-opt-4x192": dict(num_hidden_layers=4, hidden_size=192, ffn_dim=768, num_attention_heads=3),
    "tiny-opt-4x256": dict(num_hidden_layers=4, hidden_size=256, ffn_dim=1024, num_attention_heads=4),
    "tiny-opt-6x384": dict(num_hidden_layers=6, hidden_size=384, ffn_dim=1536, num_attention_heads=6),
    "test": dict(num_hidden_layers=2, hidden_size=32, ffn_dim=64, num_attention_heads=2),
}
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-3, as in OPT's tokenizer (bos = eos = "</s>" = 2)
TEXT_FORMS = ("raw", "lines")
# settings that define a run: --resume refuses to continue with others
DEFINING = ("preset", "vocab_size", "max_positions", "block_size", "bs", "lr", "weight_decay", "warmup_steps",
            "seed", "text_form", "train_file", "max_minutes")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-file", type=str, default=None,
                   help="training text (default: DATA_DIR/wikitext-2/train.txt)")
    p.add_argument("--validation-file", type=str, default=None,
                   help="validation text (default: DATA_DIR/wikitext-2/valid.txt)")
    p.add_argument("--data-dir", type=str, default=default_data_dir(), help="root of the data layouts")
    add_run_args(p, default_out="runs/pretrain-PRESET")
    p.add_argument("--output-dir", dest="out", help="old name of --out")
    p.add_argument("--text-form", choices=TEXT_FORMS, default="raw",
                   help="raw: rows joined by blank lines as opt.py evaluates, <unk> filled; lines: old form")
    p.add_argument("--preset", type=str, default="tiny-opt-4x256", choices=sorted(PRESETS),
                   help="model size (OPTConfig fields)")
    p.add_argument("--vocab-size", type=int, default=8192, help="byte-level BPE vocabulary size")
    p.add_argument("--max-positions", type=int, default=256,
                   help="max_position_embeddings (opt.py evaluates windows of this length)")
    p.add_argument("--block-size", type=int, default=256, help="tokens per training sequence")
    p.add_argument("--bs", type=int, default=16, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear warmup steps")
    p.add_argument("--max-steps", type=int, default=1000, help="optimizer steps (sets the lr decay)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="training wall-time budget; the lr decays over it too (whichever ends first)")
    p.add_argument("--save-minutes", type=float, default=5.0, help="checkpoint interval")
    p.add_argument("--snapshot-steps", type=int, default=0,
                   help="save a loadable model to OUT/snapshots/step-N every N steps (0: never)")
    p.add_argument("--eval-bs", type=int, default=16, help="sequences per evaluation batch")
    p.add_argument("--seed", type=int, default=0, help="seed of init, data order and the <unk> fill")
    args = p.parse_args(argv)
    args.out = args.out or os.path.join("runs", f"pretrain-{args.preset}")
    return args


def check_args(args):
    for name in ("vocab_size", "block_size", "bs", "max_steps", "max_positions", "eval_bs"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if args.block_size > args.max_positions:
        raise UsageError("--block-size must not exceed --max-positions")
    if args.lr <= 0 or args.snapshot_steps < 0:
        raise UsageError("--lr must be positive and --snapshot-steps not negative")
    layout = "DATA_DIR/wikitext-2/{train,valid}.txt or --train-file/--validation-file"
    args.train_file = require_file(args.train_file or os.path.join(args.data_dir, "wikitext-2/train.txt"),
                                   layout)
    args.validation_file = require_file(
        args.validation_file or os.path.join(args.data_dir, "wikitext-2/valid.txt"), layout)


def rare_word_fill(rows, seed, count=3):
    """Rows with every "<unk>" replaced by a word seen exactly `count` times in the rows (seeded draw).

    WikiText's tokenized release maps words rarer than 3 occurrences to <unk>; its raw release, on which opt.py
    evaluates, keeps them. Filling the markers with the rarest surviving words makes the model spell rare
    words with BPE pieces, as the raw text needs, instead of predicting one special token.
    """
    counts = Counter(word for row in rows for word in row.split())
    pool = sorted(word for word, n in counts.items() if n == count and word != "<unk>")
    rng = random.Random(seed)
    if not pool:
        return [row.replace("<unk>", "") for row in rows]
    return [re.sub(r"<unk>", lambda _: rng.choice(pool), row) for row in rows]


def raw_text(path, seed):
    """opt.py's evaluation form: HF-like rows ("" for blank lines) joined by "\\n\\n", <unk> filled."""
    rows = ["" if not line.strip() else line for line in read_texts(path)]
    return "\n\n".join(rare_word_fill(rows, seed))


def train_tokenizer(texts, vocab_size, max_positions):
    """A byte-level BPE trained on the texts, wrapped so that save_pretrained/AutoTokenizer round-trip."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL,
                            show_progress=False)
    # like OPT's tokenizer: every text starts with </s>
    bpe.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", SPECIAL.index("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="</s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=10 ** 9)


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


def texts_for(args):
    """split -> training-form text (raw) or the files themselves (lines); raw texts go to OUT/data."""
    files = {"train": args.train_file, "validation": args.validation_file}
    if args.text_form == "lines":
        return None, files
    texts = {split: raw_text(path, args.seed + i) for i, (split, path) in enumerate(files.items())}
    import json
    for split, text in texts.items():
        atomic_write_text(os.path.join(args.out, "data", f"{split}.jsonl"), json.dumps({"text": text}) + "\n")
    return texts, files


def to_blocks(ids, block_size):
    usable = (len(ids) // block_size) * block_size
    return torch.tensor(ids[:usable], dtype=torch.long).view(-1, block_size)


def load_blocks(args, tokenizer, texts, files):
    if texts is not None:  # one string each, tokenized whole as opt.py tokenizes its evaluation text
        return {split: to_blocks(tokenizer(text)["input_ids"], args.block_size) for split, text in texts.items()}
    dsd = group_texts(load_splits(None, args.data_dir, files, splits=("train", "validation")),
                      tokenizer, args.block_size)
    return {split: torch.tensor(dsd[split]["input_ids"], dtype=torch.long) for split in dsd}


def get_tokenizer(args, texts, files):
    """Trained once, then reloaded from OUT/tokenizer (so a resumed run tokenizes the same way)."""
    from transformers import AutoTokenizer
    tok_dir = os.path.join(args.out, "tokenizer")
    if os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        return AutoTokenizer.from_pretrained(tok_dir)
    source = [texts["train"]] if texts is not None else read_texts(files["train"])
    tokenizer = train_tokenizer(source, args.vocab_size, args.max_positions)
    tokenizer.save_pretrained(tok_dir)
    return tokenizer


def prepare(args, tokenizer):
    """Model, optimizer and progress {step, elapsed_s}, restored from OUT/checkpoint.pt when resuming."""
    model = build_model(args.preset, tokenizer, args.max_positions, args.seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    progress = {"step": 0, "elapsed_s": 0.0}
    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume and os.path.exists(ckpt):
        state = load_checkpoint(ckpt, kind="pretrain_lm")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        progress = {"step": state["step"], "elapsed_s": state["elapsed_s"]}
        print(f"resuming from {ckpt} at step {progress['step']}", file=sys.stderr)
    return model, opt, progress


def model_config(args):
    return {key: getattr(args, key) for key in ("preset", "vocab_size", "max_positions", "seed")}


def write_checkpoint(args, model, opt, progress):
    save_checkpoint(os.path.join(args.out, "checkpoint.pt"), "pretrain_lm", model_config(args),
                    model=model.state_dict(), optimizer=opt.state_dict(), **progress)


def save_model(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def train_step(model, opt, ids, lr):
    for group in opt.param_groups:
        group["lr"] = lr
    loss = model(input_ids=ids, labels=ids).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def train(args, run, model, opt, progress, blocks, tokenizer):
    """Run steps until the step or time budget is spent; `progress` (step, elapsed_s) is updated in place."""
    began, last_save = time.time() - progress["elapsed_s"], time.time()
    tokens_per_step = args.bs * args.block_size
    bar = tqdm(total=args.max_steps, initial=progress["step"], desc="pretrain")
    while True:
        factor, done = lr_factor(progress["step"], time.time() - began, args)
        if done >= 1.0:
            break
        loss = train_step(model, opt, batch_at(blocks["train"], progress["step"], args.bs, args.seed),
                          args.lr * factor)
        progress["step"] += 1
        progress["elapsed_s"] = time.time() - began
        bar.update(1)
        step = progress["step"]
        if step % 20 == 0:
            run.log({"step": step, "tokens": step * tokens_per_step, "train_ce": loss, "lr": args.lr * factor,
                     "elapsed_s": round(progress["elapsed_s"], 1)})
            bar.set_postfix(ce=f"{loss:.3f}")
        if args.snapshot_steps and step % args.snapshot_steps == 0:
            save_model(model, tokenizer, os.path.join(args.out, "snapshots", f"step-{step:06d}"))
        if time.time() - last_save > 60 * args.save_minutes:
            write_checkpoint(args, model, opt, progress)
            last_save = time.time()
    bar.close()


def main(args):
    check_args(args)
    set_threads(args.threads)
    run = RunDir(args.out, vars(args), resume=args.resume, overwrite=args.overwrite, defining=DEFINING)
    texts, files = texts_for(args)
    tokenizer = get_tokenizer(args, texts, files)
    blocks = load_blocks(args, tokenizer, texts, files)
    if len(blocks["train"]) < args.bs or len(blocks["validation"]) == 0:
        raise UsageError(f"too little text for --bs {args.bs} blocks of {args.block_size} tokens")
    model, opt, progress = prepare(args, tokenizer)
    run.trim_metrics(lambda r: r.get("step", 0) <= progress["step"])
    train(args, run, model, opt, progress, blocks, tokenizer)
    write_checkpoint(args, model, opt, progress)
    ppl, ce = perplexity(model, blocks["validation"], args.eval_bs)
    save_model(model, tokenizer, os.path.join(args.out, "model"))
    results = {"step": progress["step"], "tokens": progress["step"] * args.bs * args.block_size,
               "validation_perplexity": ppl, "validation_ce": ce,
               "validation_tokens": blocks["validation"][:, 1:].numel(), "train_blocks": len(blocks["train"]),
               "parameters": sum(p.numel() for p in model.parameters()),
               "train_seconds": round(progress["elapsed_s"], 1), "text_form": args.text_form}
    run.finish(results)
    run.release()
    print(f"step {progress['step']}  validation perplexity {ppl:.2f}")
    return results


if __name__ == "__main__":
    run_cli(main, parse_args())
