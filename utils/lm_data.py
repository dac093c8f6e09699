"""Language-model text data: WikiText-2, PTB, the C4 sample or local text files, as HF datasets.

Local layouts under a data directory (those of ../shared/data):

    wikitext-2/{train,valid,test}.txt     ptb/ptb.{train,valid,test}.txt     c4/c4_validation_2k.jsonl

A .txt file becomes one row per line (line breaks kept, as in HF's wikitext), a .jsonl file one row per
record's "text". `group_texts` tokenizes every row, concatenates them and cuts blocks of `block_size`
tokens, dropping the remainder (HF's run_clm recipe); labels are the input ids, the model shifts them.
"""
import json
import os

from utils.cli import UsageError, require_file

SPLITS = ("train", "validation", "test")

# dataset name -> split -> path under the data directory
LAYOUTS = {
    "wikitext2": {"train": "wikitext-2/train.txt", "validation": "wikitext-2/valid.txt",
                  "test": "wikitext-2/test.txt"},
    "ptb": {"train": "ptb/ptb.train.txt", "validation": "ptb/ptb.valid.txt", "test": "ptb/ptb.test.txt"},
    "c4": {"validation": "c4/c4_validation_2k.jsonl"},
}

# dataset name -> (HF hub dataset, config, text column), used only when the local files are missing
HUB = {
    "wikitext2": ("wikitext", "wikitext-2-v1", "text"),
    "ptb": ("ptb_text_only", "penn_treebank", "sentence"),
    "c4": ("allenai/c4", "en", "text"),
}


def layout_hint(name):
    return ", ".join(LAYOUTS[name].values()) + " under --data-dir"


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


def check_available(name, data_dir, split):
    """Fail early (UsageError) when a split is neither under data_dir nor reachable on the hub."""
    if not os.path.exists(os.path.join(data_dir, LAYOUTS[name][split])) and hub_offline():
        raise UsageError(f"{name} {split} split not found locally (expected {layout_hint(name)}) "
                         "and HF_HUB_OFFLINE is set")


def _from_hub(name, split):
    check_available(name, "/nonexistent", split)
    import datasets
    repo, config, column = HUB[name]
    if name == "c4":
        files = {"validation": "en/c4-validation.00000-of-00008.json.gz"}
        ds = datasets.load_dataset(repo, data_files=files, split="validation")
    else:
        ds = datasets.load_dataset(repo, config, split=split)
    return ds.rename_column(column, "text") if column != "text" else ds


def _local_paths(name, data_dir, files):
    paths = {split: files[split] for split in SPLITS if files.get(split)}
    if name is not None:
        for split, rel in LAYOUTS[name].items():
            local = os.path.join(data_dir, rel)
            if split not in paths and os.path.exists(local):
                paths[split] = local
    return paths


def load_splits(name, data_dir, files=None, splits=SPLITS):
    """DatasetDict with a "text" column for each requested split that exists for `name`.

    `files` maps split -> explicit local file and wins over the layout. With `name` None only the given
    files are used. A split the dataset lacks (C4 here has validation only) is left out.
    """
    import datasets
    if name is not None and name not in LAYOUTS:
        raise UsageError(f"unknown dataset {name!r}; choose from {sorted(LAYOUTS)}")
    files = files or {}
    paths = _local_paths(name, data_dir, files)
    out = {}
    for split in splits:
        if split in paths:
            out[split] = datasets.Dataset.from_dict({"text": read_texts(paths[split])})
        elif name is not None and split in LAYOUTS[name]:
            out[split] = _from_hub(name, split)
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
