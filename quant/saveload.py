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


def save(path, model, tokenizer, cfg, records):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    config = dataclasses.asdict(cfg)
    config["dtype"] = str(cfg.dtype).replace("torch.", "")
    atomic_torch_save({"config": config,
                       "records": {name: dataclasses.asdict(r) for name, r in records.items()}},
                      os.path.join(path, CODES_FILE))


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
