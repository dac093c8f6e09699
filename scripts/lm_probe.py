"""Which decoder layers does a causal LM use, and how robust is it to noise in their weights?

    python -m scripts.lm_probe MODEL [MODEL ...] [--noise 0.1 0.3 0.5 1.0] [--max-eval-windows 24]

For each model: WikiText-2 (raw test) perplexity as it is, with each decoder layer replaced by the identity
(its residual branch removed), and with Gaussian noise of std r x (row RMS) added to every decoder linear's
weight (the layers quantization touches; embeddings, norms and head untouched). 2-bit nearest rounding on a
min-max grid has an error RMS of about 0.5 x the row RMS for Gaussian-like rows, so the noise rows say how much
quantization error of that size can cost a model before any rounding scheme is involved.
Writes results/<--name>.md and .json ({"rows", "paper", "verdicts"}).
"""
import copy
import os

import torch

from quant import datautils
from quant.driver import perplexity
from quant.families import family_of, load_causal_lm
from utils.cli import ArgumentParser, default_data_dir, run_cli
from utils.report import md_table, write_report
from utils.runio import set_threads


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="model directories (transformers format)")
    p.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.3, 0.5, 1.0],
                   help="weight-noise std, relative to each row's RMS")
    p.add_argument("--max-eval-windows", type=int, default=24, help="evenly spaced evaluation windows (0 = all)")
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="noise seed")
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--cache-dir", default=os.path.join("runs", "token_cache"))
    p.add_argument("--name", default="lm_probe", help="report name under results/")
    p.add_argument("--out-dir", default=None, help="report folder (default results/)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


class Identity(torch.nn.Module):
    """A decoder layer without its residual branches: hidden states pass through."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def noisy(model, family, rel, seed):
    """A copy of the model with N(0, (rel * row RMS)^2) added to every decoder linear's weight."""
    model = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    for module in family.base(model).layers.modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight.data
            w += rel * w.pow(2).mean(dim=1, keepdim=True).sqrt() * torch.randn(w.shape, generator=gen)
    return model


def without_layer(model, family, index):
    model = copy.deepcopy(model)
    family.base(model).layers[index] = Identity()
    return model


def probe(model, family, ids, args):
    """Rows: ('full', -), ('skip', layer i), ('noise', r), each with its perplexity and ratio to 'full'."""
    ppl = lambda m: perplexity(m, family, ids, args.seqlen, "cpu", 8, args.max_eval_windows)  # noqa: E731
    full = ppl(model)
    rows = [{"probe": "full", "value": None, "ppl": full}]
    for i in range(len(family.base(model).layers)):
        rows.append({"probe": "skip_layer", "value": i, "ppl": ppl(without_layer(model, family, i))})
    for rel in args.noise:
        rows.append({"probe": "weight_noise", "value": rel, "ppl": ppl(noisy(model, family, rel, args.seed))})
    for row in rows:
        row["ratio"] = row["ppl"] / full
    return rows


def summary(rows):
    """One sentence from the rows: the most and least used layers, and the cost of noise 0.5 if probed."""
    skips = sorted((r for r in rows if r["probe"] == "skip_layer"), key=lambda r: -r["ratio"])
    text = ""
    if skips:
        text = (f"Removing layer {skips[0]['value']} multiplies perplexity by {skips[0]['ratio']:.3g}; "
                f"removing layer {skips[-1]['value']} by only {skips[-1]['ratio']:.3g}.")
    half = [r for r in rows if r["probe"] == "weight_noise" and r["value"] == 0.5]
    if half:
        text += f" Noise 0.5 x row RMS in every decoder linear (about 2-bit min-max rounding's error): x{half[0]['ratio']:.3g}."
    return text.strip()


def load(path):
    model, tokenizer = load_causal_lm(path)
    return model, tokenizer, family_of(model)


def main(args):
    set_threads(args.threads)
    text = datautils.eval_text("wikitext2", args.data_dir)
    rows, lines = [], [f"# {__doc__.splitlines()[0]}", "",
                       f"Command: `python -m scripts.lm_probe {' '.join(args.models)} --noise "
                       f"{' '.join(f'{r:g}' for r in args.noise)} --max-eval-windows {args.max_eval_windows}`", "",
                       __doc__.split("\n\n")[2].replace("\n", " "), ""]
    for path in args.models:
        model, tokenizer, family = load(path)
        ids = datautils.eval_ids("wikitext2", text, tokenizer, args.seqlen, args.cache_dir)
        found = [{"model": path, "dataset": "wikitext2", **row} for row in probe(model, family, ids, args)]
        rows += found
        table = md_table(["probe", "layer / r", "ppl", "ratio to full"],
                         [[r["probe"], "-" if r["value"] is None else f"{r['value']:g}", f"{r['ppl']:.2f}",
                           f"{r['ratio']:.3f}"] for r in found])
        lines += [f"## {path}", "", *table, "", summary(found), ""]
        print("\n".join(table), flush=True)
    write_report(args.name, lines, rows, out_dir=args.out_dir)


if __name__ == "__main__":
    run_cli(main, parse_args())
