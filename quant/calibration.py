"""Layer-by-layer execution: capture the inputs of the first decoder layer, then run one layer at a
time on the device (so models larger than the device fit), accumulating H = E[x x^T] for each linear.
"""
import math

import torch
import torch.nn as nn


class _Stop(Exception):
    pass


def capture_layer_inputs(model, family, windows, device, batch=8):
    """Hidden states entering layer 0 for each window (list of (1, L) ids), and that layer's kwargs.

    The model's own forward computes embeddings, positions and masks; a pre-hook on layer 0 records
    them and stops the forward. Keyword tensors are recorded from a batch of one and broadcast.
    """
    base = family.base(model)
    layers = base.layers
    for name, child in base.named_children():
        if name != "layers":
            child.to(device)
    layers[0].to(device)
    seen = {}

    def hook(_module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Stop

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    inputs, kwargs = [], None
    try:
        for i in range(0, len(windows), batch):
            ids = torch.cat(windows[i:i + batch]).to(device)
            if kwargs is None:
                _run_until_stop(model, ids[:1])
                kwargs = seen["kwargs"]
            _run_until_stop(model, ids)
            inputs.append(seen["hidden"])
    finally:
        handle.remove()
    layers[0].cpu()
    return torch.cat(inputs), _strip(kwargs)


def _run_until_stop(model, ids):
    try:
        model(input_ids=ids, use_cache=False)
    except _Stop:
        pass


def _strip(kwargs):
    # no cache and no per-call flags: the layers are called on their own, many times
    drop = {"past_key_values", "past_key_value", "use_cache", "output_attentions", "cache_position"}
    return {k: v for k, v in kwargs.items() if k not in drop}


@torch.no_grad()
def run_layer(layer, inputs, kwargs, batch=8):
    """The layer applied to every input, in batches (keyword tensors broadcast over the batch)."""
    outs = []
    for i in range(0, len(inputs), batch):
        out = layer(inputs[i:i + batch], **kwargs)
        outs.append(out[0] if isinstance(out, tuple) else out)
    return torch.cat(outs)


def find_linears(module):
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


class HessianHooks:
    """Forward hooks accumulating sum x x^T (float64) over the inputs of each linear, per sequence."""

    def __init__(self, linears):
        self.H = {name: None for name in linears}
        self.count = {name: 0 for name in linears}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in linears.items()]

    def _hook(self, name):
        def accumulate(_module, inp, _out):
            x = inp[0].detach()
            seqs = x.shape[0] if x.dim() == 3 else 1
            x = x.reshape(-1, x.shape[-1]).to(torch.float64)
            h = x.T @ x
            self.H[name] = h if self.H[name] is None else self.H[name].add_(h)
            self.count[name] += seqs
        return accumulate

    def hessians(self):
        """H = sum x x^T / number of sequences, as QuIP's code normalises it."""
        for h in self.handles:
            h.remove()
        return {name: self.H[name] / self.count[name] for name in self.H}


def hessian_summary(H, percdamp=0.01, dead_tol=0.0):
    """Conditioning statistics of one proxy Hessian H (QuIP, Sec. 3-4; its code's Hessian summaries).

    - alive: inputs whose diagonal exceeds dead_tol (GPTQ/QuIP treat H_jj = 0 as a dead input);
    - cond: lambda_max / lambda_min of H restricted to the alive inputs (inf if singular there);
    - trD_trH: tr(D) / tr(H) of the LDL factorisation H = L D L^T (L unit lower) after percdamp damping,
      the quantity QuIP's LDLQ error bound scales with (small = much for the feedback to win);
    - mu: incoherence of H's eigenvectors Q, sqrt(n) * max |Q_ij| (QuIP, Def. 1: 1 when perfectly spread,
      sqrt(n) when an eigenvector is a coordinate axis).
    """
    H = H.to(torch.float64)
    n = H.shape[0]
    alive = H.diagonal() > dead_tol
    eig = torch.linalg.eigvalsh(H[alive][:, alive]) if alive.any() else torch.zeros(1, dtype=H.dtype)
    lo, hi = eig.min().item(), eig.max().item()
    cond = hi / lo if lo > 0 else float("inf")
    Hd = H.clone()
    Hd[~alive, ~alive] = 1.0
    Hd.diagonal().add_(percdamp * Hd.diagonal().mean())
    D = torch.linalg.cholesky(Hd).diagonal().square()
    Q = torch.linalg.eigh(H)[1]
    return {"n": n, "alive": int(alive.sum()), "cond": cond, "trD_trH": (D.sum() / Hd.trace()).item(),
            "mu": math.sqrt(n) * Q.abs().max().item()}
