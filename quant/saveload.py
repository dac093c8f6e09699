"""Quantized checkpoints: a save_pretrained model directory (dense, fake-quantized weights, loadable by
any HF tool) plus quant_codes.pt with what defines each quantized linear exactly: uint8 codes, the grid
(scale, zero per row/group), the column rescaling and the seed of the random orthogonal transforms.
`load` rebuilds every quantized weight from the codes, so the codes, not the dense copy, are evaluated.
"""
import dataclasses
import os

import torch

from quant.driver import LinearRecord, QuantConfig, dequantize
from utils.cli import UsageError
from utils.runio import atomic_torch_save

CODES_FILE = "quant_codes.pt"


def check_target(path, sources, overwrite=False):
    """Refuse to --save over a model it reads (`sources`: --model, --load) or, without --overwrite, into a
    non-empty directory or onto a file."""
    here = os.path.realpath(path)
    for source in sources:
        if source and os.path.exists(source) and os.path.realpath(source) == here:
            raise UsageError(f"--save {path} is the directory of the model being read ({source}); "
                             "choose another directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"--save {path} exists and is not a directory")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise UsageError(f"--save {path} is not empty; choose another directory or pass --overwrite "
                         "(which moves the old one aside)")


def save(path, model, tokenizer, cfg, records, overwrite=False):
    """Write the model directory into a temporary directory beside `path`, then rename it into place (a
    crash never leaves a half-written model); with overwrite, an existing non-empty `path` is moved aside to
    PATH.old-TIMESTAMP first."""
    import shutil
    import tempfile
    import time
    check_target(path, [], overwrite)
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(os.path.abspath(path)))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders; keep what os.makedirs would give
    except OSError as err:
        raise UsageError(f"cannot write --save {path}: {err.strerror or err}") from None
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config = dataclasses.asdict(cfg)
        config["dtype"] = str(cfg.dtype).replace("torch.", "")
        atomic_torch_save({"config": config,
                           "records": {name: dataclasses.asdict(r) for name, r in records.items()}},
                          os.path.join(tmp, CODES_FILE))
        if os.path.isdir(path) and os.listdir(path):
            aside = f"{os.path.abspath(path)}.old-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(path, aside)
            print(f"moved the old {path} aside to {aside}", flush=True)
        elif os.path.isdir(path):
            os.rmdir(path)
        os.replace(tmp, path)
    except OSError as err:
        raise UsageError(f"cannot write --save {path}: {err.strerror or err}") from None
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def read_codes(path):
    file = os.path.join(path, CODES_FILE)
    if not os.path.exists(file):
        raise UsageError(f"{file} not found; --load expects a directory written by --save")
    try:
        blob = torch.load(file, map_location="cpu", weights_only=True)
        config = dict(blob["config"], dtype=getattr(torch, blob["config"]["dtype"]))
        records = {name: LinearRecord(**r) for name, r in blob["records"].items()}
    except (RuntimeError, KeyError, TypeError, AttributeError, EOFError) as err:
        raise UsageError(f"{file} is not a quantized checkpoint ({err})") from None
    return QuantConfig(**config), records


@torch.no_grad()
def restore_weights(model, family, cfg, records):
    """Overwrite each quantized linear of the decoder layers with the weight rebuilt from its codes."""
    layers = family.base(model).layers
    for name, record in records.items():
        _, index, sub = name.split(".", 2)
        linear = layers[int(index)].get_submodule(sub)
        Q = dequantize(record, cfg, tuple(linear.weight.shape))
        linear.weight.data = Q.to(linear.weight.dtype)
