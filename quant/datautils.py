"""Calibration windows and evaluation token streams for wikitext2, ptb and c4, following the GPTQ/QuIP
protocol (text joined as that code joins it, random calibration windows, contiguous eval windows).

Local layouts under --data-dir (those of ../shared/data), used whenever present; the HF hub is used only
when a file is missing and HF_HUB_OFFLINE is not set:

    wikitext-2-raw/wiki.test.raw   wikitext-2/{train,test}.txt   ptb/ptb.{train,test}.txt
    c4/c4_validation_2k.jsonl
"""
import hashlib
import os
import random

import torch

from utils.cli import UsageError
from utils.lm_data import hub_offline, read_texts
from utils.runio import atomic_torch_save

LAYOUT = ("DATA_DIR/wikitext-2-raw/wiki.test.raw, DATA_DIR/wikitext-2/{train,test}.txt, "
          "DATA_DIR/ptb/ptb.{train,test}.txt, DATA_DIR/c4/c4_validation_2k.jsonl")
C4_EVAL_DOCS = 1100  # QuIP's c4 evaluation: the first 1100 validation documents, 256 windows


def _path(data_dir, rel):
    path = os.path.join(data_dir, rel)
    return path if os.path.exists(path) else None


def _missing(what, data_dir):
    return UsageError(f"{what} not found under {data_dir}; expected the layout {LAYOUT} "
                      "(or unset HF_HUB_OFFLINE to download)")


def _hub(name, config, split, column, data_dir):
    if hub_offline():
        raise _missing(f"{name} {split}", data_dir)
    import datasets
    try:
        return datasets.load_dataset(name, config, split=split)[column]
    except Exception as err:  # network, hub or cache failures: one line, not a traceback
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise UsageError(f"{name} {split} not found under {data_dir} and could not be downloaded "
                         f"({first}); expected the layout {LAYOUT}") from None


def wikitext2_test_rows(data_dir):
    """HF wikitext-2-raw-v1 test rows: '' at the blank lines of the tokenized test.txt, the raw lines
    (which skip blanks, see that folder's PROVENANCE.md) in order everywhere else."""
    raw, tok = _path(data_dir, "wikitext-2-raw/wiki.test.raw"), _path(data_dir, "wikitext-2/test.txt")
    if raw is None or tok is None:
        return _hub("wikitext", "wikitext-2-raw-v1", "test", "text", data_dir)
    raw_lines = iter(read_texts(raw))
    rows = ["" if not line.strip() else next(raw_lines) for line in read_texts(tok)]
    if next(raw_lines, None) is not None:
        raise UsageError(f"{raw} does not align with the non-blank lines of {tok}")
    return rows


def wikitext2_train_rows(data_dir):
    # Offline there is no raw train split: the tokenized one (with <unk>, @-@) stands in.
    path = _path(data_dir, "wikitext-2/train.txt")
    if path is None:
        return _hub("wikitext", "wikitext-2-raw-v1", "train", "text", data_dir)
    return ["" if not line.strip() else line for line in read_texts(path)]


def ptb_rows(data_dir, split):
    path = _path(data_dir, f"ptb/ptb.{split}.txt")
    if path is None:
        return _hub("ptb_text_only", "penn_treebank", split, "sentence", data_dir)
    return [line.strip() for line in read_texts(path)]


def c4_docs(data_dir):
    """The local C4 validation sample (2000 documents; not the reference shard, see PROVENANCE.md)."""
    path = _path(data_dir, "c4/c4_validation_2k.jsonl")
    if path is None:
        raise _missing("c4 validation sample", data_dir)
    return read_texts(path)


def eval_text(name, data_dir):
    """The single string QuIP's code tokenizes for evaluation ('wikitext2', 'ptb-new', 'c4-new')."""
    if name == "wikitext2":
        return "\n\n".join(wikitext2_test_rows(data_dir))
    if name == "ptb":
        return " ".join(ptb_rows(data_dir, "test"))
    if name == "c4":
        return " ".join(c4_docs(data_dir)[:C4_EVAL_DOCS])
    raise UsageError(f"unknown evaluation set {name!r}; choose from {sorted(EVAL_SETS)}")


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


def eval_ids(name, text, tokenizer, seqlen, cache_dir=None):
    """Token ids (1, N) of an evaluation text; c4 is cut to 256 windows as in QuIP's code."""
    ids = tokenize(text, tokenizer, cache_dir)
    return ids[:, :256 * seqlen] if name == "c4" else ids


def _random_windows(ids, nsamples, seqlen, rng):
    if ids.shape[1] <= seqlen:
        raise UsageError(f"calibration text has {ids.shape[1]} tokens, need more than --seqlen {seqlen}")
    starts = [rng.randint(0, ids.shape[1] - seqlen - 1) for _ in range(nsamples)]
    return [ids[:, i:i + seqlen] for i in starts]


def calibration_text(name, data_dir):
    """The calibration text as QuIP's code joins it (c4: a list of documents)."""
    if name == "wikitext2":
        return "\n\n".join(wikitext2_train_rows(data_dir))
    if name == "ptb":
        return "\n\n".join(ptb_rows(data_dir, "train"))
    if name == "c4":
        return c4_docs(data_dir)[C4_EVAL_DOCS:]
    raise UsageError(f"unknown calibration set {name!r}; choose from {sorted(EVAL_SETS)}")


def calibration_windows(text, tokenizer, nsamples, seqlen, seed, cache_dir=None):
    """`nsamples` random windows of `seqlen` tokens from `calibration_text(...)`, drawn with `seed`."""
    rng = random.Random(seed)
    if isinstance(text, list):
        return _c4_windows(text, tokenizer, nsamples, seqlen, rng)
    return _random_windows(tokenize(text, tokenizer, cache_dir), nsamples, seqlen, rng)


def _c4_windows(docs, tokenizer, nsamples, seqlen, rng):
    """QuIP's c4 recipe: a random document long enough for a window, then a random window in it.
    Offline the documents are the sample's last 900 (disjoint from the 1100 used for evaluation)."""
    encoded = [tokenizer(doc, return_tensors="pt").input_ids for doc in docs]
    long_docs = [ids for ids in encoded if ids.shape[1] > seqlen]
    if not long_docs:
        raise UsageError(f"no c4 calibration document is longer than --seqlen {seqlen}")
    windows = []
    for _ in range(nsamples):
        ids = long_docs[rng.randrange(len(long_docs))]
        windows.extend(_random_windows(ids, 1, seqlen, rng))
    return windows


EVAL_SETS = ("wikitext2", "ptb", "c4")
