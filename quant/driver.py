"""Quantize a causal LM layer by layer (QuIP's `opt_sequential`) and measure perplexity layer by layer
(QuIP's `opt_eval`), on any device, one decoder layer on the device at a time."""
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm import tqdm

from quant import incoherence, rounding
from quant.calibration import HessianHooks, capture_layer_inputs, find_linears, run_layer
from quant.quantizers import QUANTIZERS


@dataclass
class QuantConfig:
    wbits: int
    method: str = "ldlqRG"
    qfn: str = "a"
    rescale: bool = False
    proj: str = None          # an incoherence.ORTHOGONALS name, or None
    percdamp: float = 0.01
    npasses: int = 0
    groupsize: int = -1
    seed: int = 0
    dtype: torch.dtype = torch.float32  # of the rounding loops (H and the transforms stay float64)
    dead_inputs: str = "zero"  # with rescale: 'zero' the columns of dead inputs after undo, or 'keep' (QuIP's code)


@dataclass
class LinearRecord:
    """What reconstructs one quantized linear: integer codes, grid and the incoherence seed."""
    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    col_group: torch.Tensor
    transform_seed: int
    rescale: torch.Tensor = None  # incoherence step (1)'s column scales, when used
    proxy: float = field(default=0.0)
    dead: torch.Tensor = None     # the dead input columns set to zero (DEAD_INPUTS 'zero'), when any


DEAD_INPUTS = ("zero", "keep")
DEAD_TOL = 1e-8  # incoherence.rescale clamps H_jj / max|H| at this: below it the column scale, not H, decides


def dead_columns(H):
    """Inputs whose H_jj is at most DEAD_TOL * max|H|: never (or all but never) active in calibration.

    Under rescaling, such a column's scale s_j is clamped tiny and undo divides by it, so rounding noise comes
    back multiplied by up to 1/s_j (QuIP's code keeps those weights; GPTQ zeroes the weights of dead inputs)."""
    return H.diagonal() <= DEAD_TOL * H.abs().max()


def layer_seed(seed, layer_index, name):
    """A per-linear seed derived from --seed, so each matrix gets its own transforms, reproducibly."""
    return (seed * 1_000_003 + layer_index * 1009 + sum(map(ord, name)) * 7919) % (2 ** 63)


def quantize_linear(weight, H, cfg, seed):
    """Quantized weight (float64, original space) and its record, for one linear layer."""
    gen = torch.Generator().manual_seed(seed)
    W, Hp, state = incoherence.preprocess(weight, H, cfg.rescale, cfg.proj, cfg.percdamp, gen)
    W = W.to(cfg.dtype)
    quantizer = QUANTIZERS[cfg.qfn](cfg.wbits, cfg.groupsize).fit(W)
    codes = rounding.round_weights(cfg.method, W, Hp, quantizer, npasses=cfg.npasses,
                                   groupsize=cfg.groupsize)
    Q = incoherence.undo(quantizer.levels(codes), state)
    dead = None
    if cfg.rescale and cfg.dead_inputs == "zero":
        dead = dead_columns(H.to(Q.device))
        Q[:, dead] = 0
        dead = dead.cpu() if dead.any() else None
    record = LinearRecord(codes.to(torch.uint8).cpu(), quantizer.scale.cpu(), quantizer.zero.cpu(),
                          quantizer.col_group.cpu(), seed,
                          None if state.scale is None else state.scale.cpu(),
                          rounding.proxy_loss(weight.to(torch.float64), Q, H.to(Q.device)), dead)
    return Q, record


def dequantize(record, cfg, shape):
    """Rebuild a quantized weight (float64) from its record, regenerating the seeded transforms."""
    quantizer = QUANTIZERS[cfg.qfn](cfg.wbits)
    quantizer.scale, quantizer.zero, quantizer.col_group = record.scale, record.zero, record.col_group
    quantizer._cache()
    gen = torch.Generator().manual_seed(record.transform_seed)
    state = incoherence.IncoherenceState(scale=record.rescale)
    if cfg.proj is not None:
        state.U = incoherence.ORTHOGONALS[cfg.proj](shape[0], gen)
        state.V = incoherence.ORTHOGONALS[cfg.proj](shape[1], gen)
    Q = incoherence.undo(quantizer.levels(record.codes.to(quantizer.scale.dtype)), state)
    if record.dead is not None:
        Q[:, record.dead] = 0
    return Q


@torch.no_grad()
def quantize_model(model, family, windows, cfg, device, batch=8):
    """Quantize every linear of every decoder layer in place; return {name: LinearRecord}."""
    layers = family.base(model).layers
    inputs, kwargs = capture_layer_inputs(model, family, windows, device, batch)
    records = {}
    for i in tqdm(range(len(layers)), desc=f"quantize {cfg.method} w{cfg.wbits}"):
        layer = layers[i].to(device)
        linears = find_linears(layer)
        hooks = HessianHooks(linears)
        run_layer(layer, inputs, kwargs, batch)
        hessians = hooks.hessians()
        for name, linear in linears.items():
            Q, rec = quantize_linear(linear.weight.data.to(torch.float64), hessians[name], cfg,
                                     layer_seed(cfg.seed, i, name))
            linear.weight.data = Q.to(linear.weight.dtype)
            records[f"layers.{i}.{name}"] = rec
        inputs = run_layer(layer, inputs, kwargs, batch)  # the next layer sees quantized outputs
        layers[i] = layer.cpu()
    return records


@torch.no_grad()
def perplexity(model, family, ids, seqlen, device, batch=8, max_windows=0):
    """exp(mean CE) over non-overlapping windows of seqlen tokens (the remainder is dropped).

    max_windows > 0 keeps that many windows, evenly spaced over the text (a cheaper estimate)."""
    total_windows = ids.shape[1] // seqlen
    if total_windows == 0:
        raise ValueError(f"evaluation text has {ids.shape[1]} tokens, fewer than seqlen {seqlen}")
    keep = range(total_windows)
    if 0 < max_windows < total_windows:
        keep = torch.linspace(0, total_windows - 1, max_windows).round().long().tolist()
    windows = [ids[:, k * seqlen:(k + 1) * seqlen] for k in keep]
    n = len(windows)
    layers = family.base(model).layers
    hidden, kwargs = capture_layer_inputs(model, family, windows, device, batch)
    for i in range(len(layers)):
        layer = layers[i].to(device)
        hidden = run_layer(layer, hidden, kwargs, batch)
        layers[i] = layer.cpu()
    for module in family.head_modules(model):
        module.to(device)
    total = 0.0
    for k in range(0, n, batch):
        logits = family.head(model, hidden[k:k + batch]).float()
        target = torch.cat(windows[k:k + batch]).to(device)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target[:, 1:].reshape(-1),
                               reduction="none").view(logits.shape[0], -1).mean(dim=1)
        total += loss.sum().item()
    return math.exp(total / n)
