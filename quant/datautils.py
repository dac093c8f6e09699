"""Calibration windows and evaluation token streams for wikitext2, ptb and c4, following the GPTQ/QuIP
protocol: each text joined as that code joins it, random calibration windows, contiguous eval windows.

Where the text lives (local files under --data-dir, the HF hub as fallback) is utils.lm_data's corpus registry;
this module only joins, windows and samples. Evaluation variants (--eval-variant): 'new' is what the authors'
opt.py evaluates (GPTQ's 'ptb-new' and 'c4-new'), 'old' what their llama.py evaluates (GPTQ's original 'ptb':
the validation split joined by blank lines, and 'c4': 256 random windows drawn with seed 0); WikiText-2 is the
same in both.
"""
import hashlib
import os
import random

import torch

from utils import lm_data
from utils.cli import UsageError
from utils.lm_data import read_texts
from utils.runio import atomic_torch_save

LAYOUT = ("DATA_DIR/wikitext-2-raw/wiki.test.raw, DATA_DIR/wikitext-2/{train,test}.txt, "
          "DATA_DIR/ptb/ptb.{train,valid,test}.txt, DATA_DIR/c4/c4_validation_2k.jsonl")
C4_EVAL_DOCS = 1100  # QuIP's c4 evaluation: the first 1100 validation documents, 256 windows
C4_EVAL_WINDOWS = 256
EVAL_VARIANTS = ("new", "old")


def _rows(name, split, data_dir, local=True):
    """lm_data.corpus_rows (local=False: the hub's rows), a failure reported against this module's layout."""
    try:
        if local:
            return lm_data.corpus_rows(name, split, data_dir)
        return list(lm_data.hub_dataset(name, split)["text"])
    except UsageError as err:
        raise UsageError(f"{name} {split} not found under {data_dir} ({err}); expected the layout {LAYOUT} "
                         "(or unset HF_HUB_OFFLINE to download)") from None


def wikitext2_test_rows(data_dir):
    """HF wikitext-2-raw-v1 test rows: '' at the blank lines of the tokenized test.txt, the raw lines
    (which skip blanks, see that folder's PROVENANCE.md) in order everywhere else."""
    raw = lm_data.local_path("wikitext2-raw", "test", data_dir)
    tok = lm_data.local_path("wikitext2", "test", data_dir)
    if raw is None or tok is None:
        return _rows("wikitext2-raw", "test", data_dir, local=False)
    raw_lines = iter(read_texts(raw))
    rows = ["" if not line.strip() else next(raw_lines) for line in read_texts(tok)]
    if next(raw_lines, None) is not None:
        raise UsageError(f"{raw} does not align with the non-blank lines of {tok}")
    return rows


def wikitext2_train_rows(data_dir):
    # Offline there is no raw train split: the tokenized one (with <unk>, @-@) stands in.
    if lm_data.local_path("wikitext2", "train", data_dir) is None:
        return _rows("wikitext2-raw", "train", data_dir)
    return ["" if not line.strip() else line for line in _rows("wikitext2", "train", data_dir)]


def ptb_rows(data_dir, split):
    return [line.strip() for line in _rows("ptb", split, data_dir)]


def c4_docs(data_dir):
    """The local C4 validation sample (2000 documents; not the reference shard, see PROVENANCE.md)."""
    return _rows("c4", "validation", data_dir)


# (set, variant) -> the evaluation text as that code builds it (old c4: the documents, windows drawn later)
EVAL_TEXTS = {
    ("wikitext2", "new"): lambda d: "\n\n".join(wikitext2_test_rows(d)),
    ("wikitext2", "old"): lambda d: "\n\n".join(wikitext2_test_rows(d)),
    ("ptb", "new"): lambda d: " ".join(ptb_rows(d, "test")),
    ("ptb", "old"): lambda d: "\n\n".join(ptb_rows(d, "validation")),
    ("c4", "new"): lambda d: " ".join(c4_docs(d)[:C4_EVAL_DOCS]),
    ("c4", "old"): lambda d: c4_docs(d),
}
# set -> the calibration text as QuIP's code joins it (c4: a list of documents)
CALIBRATION_TEXTS = {
    "wikitext2": lambda d: "\n\n".join(wikitext2_train_rows(d)),
    "ptb": lambda d: "\n\n".join(ptb_rows(d, "train")),
    "c4": lambda d: c4_docs(d)[C4_EVAL_DOCS:],
}
EVAL_SETS = tuple(CALIBRATION_TEXTS)


def _check(name, variant="new"):
    if name not in CALIBRATION_TEXTS:
        raise UsageError(f"unknown evaluation set {name!r}; choose from {sorted(EVAL_SETS)}")
    if variant not in EVAL_VARIANTS:
        raise UsageError(f"unknown evaluation variant {variant!r}; choose from {', '.join(EVAL_VARIANTS)}")


def eval_text(name, data_dir, variant="new"):
    """The evaluation text QuIP's/GPTQ's code tokenizes for `name` in `variant` (old c4: its documents)."""
    _check(name, variant)
    return EVAL_TEXTS[name, variant](data_dir)


def calibration_text(name, data_dir):
    """The calibration text as QuIP's code joins it (c4: a list of documents)."""
    _check(name)
    return CALIBRATION_TEXTS[name](data_dir)


def tokenize(text, tokenizer, cache_dir=None):
    """Token ids (1, N) of text; with cache_dir, reused across runs (keyed by text and tokenizer)."""
    if not cache_dir:
        return tokenizer(text, return_tensors="pt").input_ids
    backend = getattr(tokenizer, "backend_tokenizer", None)
    ident = backend.to_str() if backend is not None else repr(tokenizer)
    key = hashlib.sha256((ident + "\0" + text).encode("utf-8")).hexdigest()[:24]
    path = os.path.join(cache_dir, f"ids-{key}.pt")
    if os.path.exists(path):
        return torch.load(path, weights_only=True)
    ids = tokenizer(text, return_tensors="pt").input_ids
    atomic_torch_save(ids, path)
    return ids


def eval_ids(name, text, tokenizer, seqlen, cache_dir=None, variant="new"):
    """Token ids (1, N) of an evaluation text: new c4 cut to 256 windows as in QuIP's code; old c4 256
    windows from random documents at least seqlen long (GPTQ's original recipe, seed 0), side by side."""
    if name == "c4" and variant == "old":
        windows = _c4_windows(text, tokenizer, C4_EVAL_WINDOWS, seqlen, random.Random(0))
        return torch.cat(windows, dim=1)
    ids = tokenize(text, tokenizer, cache_dir)
    return ids[:, :C4_EVAL_WINDOWS * seqlen] if name == "c4" else ids


def _random_windows(ids, nsamples, seqlen, rng):
    if ids.shape[1] <= seqlen:
        raise UsageError(f"calibration text has {ids.shape[1]} tokens, need more than --seqlen {seqlen}")
    starts = [rng.randint(0, ids.shape[1] - seqlen - 1) for _ in range(nsamples)]
    return [ids[:, i:i + seqlen] for i in starts]


def calibration_windows(text, tokenizer, nsamples, seqlen, seed, cache_dir=None):
    """`nsamples` random windows of `seqlen` tokens from `calibration_text(...)`, drawn with `seed`."""
    rng = random.Random(seed)
    if isinstance(text, list):
        return _c4_windows(text, tokenizer, nsamples, seqlen, rng)
    return _random_windows(tokenize(text, tokenizer, cache_dir), nsamples, seqlen, rng)


def _c4_windows(docs, tokenizer, nsamples, seqlen, rng):
    """QuIP's c4 recipe: a random document long enough for a window, then a random window in it.
    Offline the calibration documents are the sample's last 900 (disjoint from the 1100 used for evaluation)."""
    encoded = [tokenizer(doc, return_tensors="pt").input_ids for doc in docs]
    long_docs = [ids for ids in encoded if ids.shape[1] > seqlen]
    if not long_docs:
        raise UsageError(f"no c4 document is longer than --seqlen {seqlen}")
    windows = []
    for _ in range(nsamples):
        ids = long_docs[rng.randrange(len(long_docs))]
        windows.extend(_random_windows(ids, 1, seqlen, rng))
    return windows
