"""Pretrain a tiny OPT or Llama built from a config on WikiText-2 with CE: the CPU-scale bases of Table 4.

A byte-level BPE tokenizer (scripts/pretrain_tiny_opt.py's) is trained on the training text, the model is
trained for --steps AdamW steps (linear warmup, linear decay) on random blocks, then saved with
save_pretrained next to run/results.json (validation perplexity). A directory that already holds
run/results.json is left alone (the launcher reruns this to resume a sweep).

    python -m scripts.table4_base --family llama --out runs/table4_cpu/base-llama --steps 600 --threads 1
"""
import math
import os
import time

import utils.tv_compat  # noqa: F401  (transformers imports torchvision)

import torch
from tqdm import tqdm

from scripts.pretrain_tiny_opt import train_tokenizer
from utils.cli import ArgumentParser, UsageError, default_data_dir, require_file, run_cli
from utils.lm_data import group_texts, load_splits
from utils.runio import RunDir, set_threads


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=["opt", "llama"], required=True, help="architecture")
    p.add_argument("--out", type=str, required=True, help="model directory (run files under OUT/run)")
    p.add_argument("--data-dir", type=str, default=default_data_dir(), help="root of the data layouts")
    p.add_argument("--hidden", type=int, default=128, help="hidden size")
    p.add_argument("--layers", type=int, default=2, help="decoder layers")
    p.add_argument("--ffn", type=int, default=512, help="MLP width")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--vocab-size", type=int, default=2048, help="BPE vocabulary size")
    p.add_argument("--block-size", type=int, default=128, help="tokens per block (= max positions)")
    p.add_argument("--bs", type=int, default=16, help="blocks per step")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--eval-blocks", type=int, default=200, help="validation blocks for the final perplexity")
    p.add_argument("--seed", type=int, default=0, help="seed of init and data order")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    return p.parse_args(argv)


def build(family, tokenizer, args):
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM
    torch.manual_seed(args.seed)
    common = dict(vocab_size=len(tokenizer), hidden_size=args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=args.heads, max_position_embeddings=args.block_size,
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    if family == "opt":
        return OPTForCausalLM(OPTConfig(ffn_dim=args.ffn, word_embed_proj_dim=args.hidden, dropout=0.0,
                                        attention_dropout=0.0, activation_dropout=0.0, **common))
    return LlamaForCausalLM(LlamaConfig(intermediate_size=args.ffn, num_key_value_heads=args.heads,
                                        tie_word_embeddings=True, **common))


def blocks(args, tokenizer):
    files = {s: os.path.join(args.data_dir, f"wikitext-2/{s[:5] if s == 'validation' else s}.txt")
             for s in ("train", "validation")}
    for path in files.values():
        require_file(path, "DATA_DIR/wikitext-2/{train,valid}.txt")
    dsd = group_texts(load_splits(None, args.data_dir, files, splits=tuple(files)), tokenizer, args.block_size)
    return {s: torch.tensor(dsd[s]["input_ids"], dtype=torch.long) for s in dsd}


def pretrain(model, train, args):
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * max(0.0, 1 - s / args.steps))
    g = torch.Generator().manual_seed(args.seed)
    model.train()
    for _ in tqdm(range(args.steps), desc=f"pretrain {args.family}"):
        ids = train[torch.randint(0, len(train), (args.bs,), generator=g)]
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def perplexity(model, ids, bs=16):
    total = 0.0
    for k in range(0, len(ids), bs):
        total += model(input_ids=ids[k:k + bs], labels=ids[k:k + bs]).loss.item() * len(ids[k:k + bs])
    return math.exp(total / len(ids))


def main(args):
    if min(args.hidden, args.layers, args.ffn, args.heads, args.steps, args.bs) <= 0:
        raise UsageError("sizes and --steps must be positive")
    set_threads(args.threads)
    done = os.path.join(args.out, "run", "results.json")
    if os.path.exists(done):
        print(f"{args.out} is already trained")
        return None
    run = RunDir(os.path.join(args.out, "run"), vars(args), overwrite=True)
    tokenizer = train_tokenizer(os.path.join(args.data_dir, "wikitext-2/train.txt"), args.vocab_size,
                                args.block_size)
    data = blocks(args, tokenizer)
    tick = time.time()
    model = pretrain(build(args.family, tokenizer, args), data["train"], args)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    results = {"family": args.family, "steps": args.steps, "train_seconds": round(time.time() - tick, 1),
               "parameters": sum(p.numel() for p in model.parameters()),
               "validation_perplexity": perplexity(model, data["validation"][:args.eval_blocks])}
    print(f"{args.family}: validation perplexity {results['validation_perplexity']:.2f}")
    return run.finish(results)


if __name__ == "__main__":
    run_cli(main, parse_args())
