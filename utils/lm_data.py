"""Language-model text data: THE corpus registry (CORPORA: WikiText-2, its raw test, PTB, the C4 sample), read
locally or from the HF hub, as rows or HF datasets.

Local layouts under a data directory (those of ../shared/data):

    wikitext-2/{train,valid,test}.txt     wikitext-2-raw/wiki.test.raw
    ptb/ptb.{train,valid,test}.txt        c4/c4_validation_2k.jsonl

The hub is used only for a split whose file is missing, and never when HF_HUB_OFFLINE is set.
A .txt file becomes one row per line (line breaks kept, as in HF's wikitext), a .jsonl file one row per
record's "text". `group_texts` tokenizes every row, concatenates them and cuts blocks of `block_size`
tokens, dropping the remainder (HF's run_clm recipe); labels are the input ids, the model shifts them.
"""
import json
import os
from dataclasses import dataclass

from utils.cli import UsageError, require_file

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Corpus:
    """One text corpus: its files under the data directory and where the HF hub keeps it (the fallback)."""
    files: dict                # split -> path under the data directory
    hub: str                   # HF dataset id
    config: str = None         # its configuration
    column: str = "text"       # the text column there
    hub_files: dict = None     # split -> data_files, for hub datasets read file by file (C4's shards)


# THE corpus registry, keyed by corpus name: every module that reads text looks corpora up here
CORPORA = {
    "wikitext2": Corpus({"train": "wikitext-2/train.txt", "validation": "wikitext-2/valid.txt",
                         "test": "wikitext-2/test.txt"}, "wikitext", "wikitext-2-v1"),
    # the raw release; offline only its test split (see that folder's PROVENANCE.md)
    "wikitext2-raw": Corpus({"test": "wikitext-2-raw/wiki.test.raw"}, "wikitext", "wikitext-2-raw-v1"),
    "ptb": Corpus({"train": "ptb/ptb.train.txt", "validation": "ptb/ptb.valid.txt", "test": "ptb/ptb.test.txt"},
                  "ptb_text_only", "penn_treebank", "sentence"),
    "c4": Corpus({"validation": "c4/c4_validation_2k.jsonl"}, "allenai/c4", "en",
                 hub_files={"validation": "en/c4-validation.00000-of-00008.json.gz"}),
}
TRAINABLE = ("wikitext2", "ptb", "c4")  # the datasets ft_opt.py fine-tunes on (--dataset)
# dataset name -> split -> path under the data directory (the registry's files, for the trainable sets)
LAYOUTS = {name: CORPORA[name].files for name in TRAINABLE}
# dataset name -> (HF hub dataset, config, text column)
HUB = {name: (c.hub, c.config, c.column) for name, c in CORPORA.items()}


def layout_hint(name):
    return ", ".join(CORPORA[name].files.values()) + " under --data-dir"


def read_texts(path):
    """Rows of a local file: lines of a .txt (with their line break), "text" of each .jsonl record."""
    require_file(path, "a .txt or .jsonl text file")
    with open(path, encoding="utf-8") as f:
        if not path.endswith(".jsonl"):
            return f.readlines()
        try:
            return [json.loads(line)["text"] for line in f if line.strip()]
        except (ValueError, KeyError, TypeError) as err:
            raise UsageError(f"{path}: not a JSON-lines file with a 'text' field ({err})") from None


def hub_offline():
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE forbids going to the hub."""
    return any(os.environ.get(v, "0") not in ("", "0") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def local_path(name, split, data_dir):
    """The corpus split's file under data_dir, or None when the registry has none or it is missing."""
    rel = CORPORA[name].files.get(split)
    path = os.path.join(data_dir, rel) if rel else None
    return path if path and os.path.exists(path) else None


def check_available(name, data_dir, split):
    """Fail early (UsageError) when a split is neither under data_dir nor reachable on the hub."""
    if local_path(name, split, data_dir) is None and hub_offline():
        raise UsageError(f"{name} {split} split not found locally (expected {layout_hint(name)}) "
                         "and HF_HUB_OFFLINE is set")


def hub_dataset(name, split):
    """The split from the HF hub as a Dataset with a "text" column; UsageError offline or on failure."""
    check_available(name, "/nonexistent", split)
    import datasets
    corpus = CORPORA[name]
    try:
        if corpus.hub_files:
            ds = datasets.load_dataset(corpus.hub, data_files={split: corpus.hub_files[split]}, split=split)
        else:
            ds = datasets.load_dataset(corpus.hub, corpus.config, split=split)
    except Exception as err:  # network, hub or cache failures: one line, not a traceback
        first = (str(err).splitlines() or [type(err).__name__])[0]
        raise UsageError(f"{name} {split} could not be downloaded ({first}); "
                         f"expected {layout_hint(name)}") from None
    return ds.rename_column(corpus.column, "text") if corpus.column != "text" else ds


def corpus_rows(name, split, data_dir):
    """The split's rows (list of str): the local file when present, else the hub's rows."""
    path = local_path(name, split, data_dir)
    return read_texts(path) if path else list(hub_dataset(name, split)["text"])


def _local_paths(name, data_dir, files):
    paths = {split: files[split] for split in SPLITS if files.get(split)}
    if name is not None:
        for split in CORPORA[name].files:
            local = local_path(name, split, data_dir)
            if split not in paths and local:
                paths[split] = local
    return paths


def load_splits(name, data_dir, files=None, splits=SPLITS):
    """DatasetDict with a "text" column for each requested split that exists for `name`.

    `files` maps split -> explicit local file and wins over the layout. With `name` None only the given
    files are used. A split the dataset lacks (C4 here has validation only) is left out.
    """
    import datasets
    if name is not None and name not in CORPORA:
        raise UsageError(f"unknown dataset {name!r}; choose from {sorted(CORPORA)}")
    files = files or {}
    paths = _local_paths(name, data_dir, files)
    out = {}
    for split in splits:
        if split in paths:
            out[split] = datasets.Dataset.from_dict({"text": read_texts(paths[split])})
        elif name is not None and split in CORPORA[name].files:
            out[split] = hub_dataset(name, split)
    return datasets.DatasetDict(out)


def group_texts(dsd, tokenizer, block_size, desc="tokenize"):
    """Tokenize, concatenate and cut into blocks of `block_size` tokens (remainder dropped)."""
    if block_size <= 0:
        raise UsageError(f"--block-size must be positive, got {block_size}")

    def tokenize(batch):
        return tokenizer(batch["text"], return_attention_mask=False)

    def chunk(batch):
        ids = [tok for row in batch["input_ids"] for tok in row]
        usable = (len(ids) // block_size) * block_size
        blocks = [ids[i:i + block_size] for i in range(0, usable, block_size)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    out = {}
    for split, ds in dsd.items():
        tokens = ds.map(tokenize, batched=True, remove_columns=ds.column_names, desc=f"{desc} {split}")
        # one map batch holds all rows, so only the very last partial block is dropped
        out[split] = tokens.map(chunk, batched=True, batch_size=len(tokens) or 1,
                                remove_columns=tokens.column_names, desc=f"group {split}")
    return type(dsd)(out)
