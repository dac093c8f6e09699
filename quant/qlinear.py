"""Quantized linear layers that keep opt.py --save's integer codes, and the loader that puts them in a model.

A QuantLinear holds what quant_codes.pt stores for one linear (uint8 codes, the grid's scale and zero, the
column groups, the column rescaling) and regenerates the random orthogonal transforms from the saved seed,
in factored form (a butterfly is two stacks of small blocks and two permutations, not an n x n matrix).
Its forward never builds the original-space weight: y = ((x / s) V^T) Q^T U + b, with the processed-space
weight Q = scale * (codes - zero) dequantized on the fly in forward and again for the input gradient in
backward (LLMTools / ModuLoRA's scheme, Yin et al. 2024), so no dense weight outlives a matmul.

`load_quantized(DIR)` rebuilds an OPT or Llama model from an opt.py / llama.py --save directory with a
QuantLinear in place of every quantized decoder linear (the dense fake-quantized copy is dropped).
`QuantLoraLinear` is the peft LoRA layer registered for QuantLinear; `merged_dense` folds the adapters into
dense nn.Linear weights, for comparison with the unmerged model.
"""
import copy
import math

import torch
import torch.nn as nn

from quant import incoherence, saveload
from quant.families import family_of, load_causal_lm
from utils.cli import UsageError


# ----------------------------------------------------------------------------------- factored transforms
# Each class draws from the generator exactly as incoherence.ORTHOGONALS[kind](n, gen) does, so the same
# seed gives the same matrix M; `forward(X)` is X @ M^T (M applied to each row) and `transpose(X)` X @ M.
class Butterfly(nn.Module):
    """M = P_out B2 B1 P_in on the a x b index grid (incoherence.butterfly), kept as its factors."""

    def __init__(self, n, gen):
        super().__init__()
        self.a, self.b = incoherence.butterfly_sizes(n)
        B1 = torch.stack([incoherence.haar(self.a, gen) for _ in range(self.b)])
        B2 = torch.stack([incoherence.haar(self.b, gen) for _ in range(self.a)])
        p_in, p_out = torch.randperm(n, generator=gen), torch.randperm(n, generator=gen)
        for name, value in (("B1", B1.float()), ("B2", B2.float()), ("p_in", p_in), ("p_out", p_out),
                            ("inv_in", torch.argsort(p_in)), ("inv_out", torch.argsort(p_out))):
            self.register_buffer(name, value, persistent=False)

    def forward(self, X):
        u = X[..., self.p_in].unflatten(-1, (self.a, self.b))
        w = torch.einsum("cij,...jc->...ic", self.B1.to(X.dtype), u)
        z = torch.einsum("rij,...rj->...ri", self.B2.to(X.dtype), w)
        return z.flatten(-2)[..., self.p_out]

    def transpose(self, X):
        z = X[..., self.inv_out].unflatten(-1, (self.a, self.b))
        w = torch.einsum("rij,...ri->...rj", self.B2.to(X.dtype), z)
        u = torch.einsum("cij,...ic->...jc", self.B1.to(X.dtype), w)
        return u.flatten(-2)[..., self.inv_in]


class Kron(nn.Module):
    """M = A kron B (incoherence.kron): on X viewed as a x b, M x = A X B^T."""

    def __init__(self, n, gen):
        super().__init__()
        self.a, self.b = incoherence.closest_divisors(n)
        self.register_buffer("A", incoherence.haar(self.a, gen).float(), persistent=False)
        self.register_buffer("B", incoherence.haar(self.b, gen).float(), persistent=False)

    def forward(self, X):
        V = X.unflatten(-1, (self.a, self.b))
        return torch.einsum("ij,...jl,kl->...ik", self.A.to(X.dtype), V, self.B.to(X.dtype)).flatten(-2)

    def transpose(self, X):
        V = X.unflatten(-1, (self.a, self.b))
        return torch.einsum("ij,...ik,kl->...jl", self.A.to(X.dtype), V, self.B.to(X.dtype)).flatten(-2)


def walsh_hadamard(X):
    """X @ H for the orthonormal Sylvester Hadamard matrix H (symmetric) along the last axis, O(n log n)."""
    n, h = X.shape[-1], 1
    while h < n:
        Y = X.unflatten(-1, (n // (2 * h), 2, h))
        X = torch.stack((Y[..., 0, :] + Y[..., 1, :], Y[..., 0, :] - Y[..., 1, :]), dim=-2).flatten(-3)
        h *= 2
    return X / math.sqrt(n)


class Hadamard(nn.Module):
    """M = (H_p kron O_r) diag(signs) (incoherence.hadamard), n = p r with p a power of two, r odd."""

    def __init__(self, n, gen):
        super().__init__()
        self.p = n & -n
        self.r = n // self.p
        O = incoherence.haar(self.r, gen) if self.r > 1 else torch.ones(1, 1, dtype=torch.float64)
        signs = torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2 - 1
        self.register_buffer("O", O.float(), persistent=False)
        self.register_buffer("signs", signs.float(), persistent=False)

    def _kron(self, X, O):
        V = X.unflatten(-1, (self.p, self.r)).transpose(-1, -2)          # ... r x p
        V = walsh_hadamard(V).transpose(-1, -2)                           # H_p V (H symmetric)
        return (V @ O.T.to(X.dtype)).flatten(-2)

    def forward(self, X):
        return self._kron(X * self.signs.to(X.dtype), self.O)

    def transpose(self, X):
        return self._kron(X, self.O.T) * self.signs.to(X.dtype)


FACTORED = {"butterfly": Butterfly, "kron": Kron, "hadamard": Hadamard}


# ------------------------------------------------------------------------------------------ the layer
def levels(codes, scale, zero, col_group, dtype):
    """Processed-space weight scale * (codes - zero), per (row, column group), as quantizers.levels."""
    return scale[:, col_group].to(dtype) * (codes.to(dtype) - zero[:, col_group].to(dtype))


class _DequantMatmul(torch.autograd.Function):
    """x @ Q^T with Q rebuilt from the codes in forward and again in backward: only the codes are kept."""

    @staticmethod
    def forward(ctx, x, codes, scale, zero, col_group):
        ctx.save_for_backward(codes, scale, zero, col_group)
        return x @ levels(codes, scale, zero, col_group, x.dtype).T

    @staticmethod
    def backward(ctx, grad):
        codes, scale, zero, col_group = ctx.saved_tensors
        return grad @ levels(codes, scale, zero, col_group, grad.dtype), None, None, None, None


class QuantLinear(nn.Module):
    """A frozen linear layer stored as opt.py --save's codes; see the module docstring for the forward."""

    def __init__(self, record, cfg, out_features, in_features, bias=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.wbits, self.proj = cfg.wbits, cfg.proj
        self.transform_seed = record.transform_seed
        self.register_buffer("codes", record.codes.to(torch.uint8).clone())
        self.register_buffer("scale", record.scale.float().clone())
        self.register_buffer("zero", record.zero.float().clone())
        self.register_buffer("col_group", record.col_group.long().clone())
        rescale = None if record.rescale is None else record.rescale.float().clone()
        self.register_buffer("rescale", rescale)
        self.U = self.V = None
        if cfg.proj is not None:  # the same draws, in the same order, as driver.dequantize
            gen = torch.Generator().manual_seed(record.transform_seed)
            self.U = FACTORED[cfg.proj](out_features, gen)
            self.V = FACTORED[cfg.proj](in_features, gen)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def qweight(self):
        # peft places a new adapter on the device of the base layer's `qweight` (its name for the
        # stored weight of a quantized layer); without it, a bias-free layer would have no tensor to ask
        return self.codes

    def forward(self, x):
        if self.rescale is not None:
            x = x / self.rescale.to(x.dtype)
        if self.V is not None:
            x = self.V(x)
        y = _DequantMatmul.apply(x, self.codes, self.scale, self.zero, self.col_group)
        if self.U is not None:
            y = self.U.transpose(y)
        return y if self.bias is None else y + self.bias

    @torch.no_grad()
    def dense_weight(self, dtype=torch.float32):
        """The original-space weight U^T Q V diag(s)^-1 (what opt.py evaluates), built for merging."""
        W = levels(self.codes, self.scale, self.zero, self.col_group, dtype)
        if self.V is not None:
            W = self.U.transpose(self.V.transpose(W).T).T
        return W if self.rescale is None else W / self.rescale.to(dtype)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, wbits={self.wbits}, "
                f"proj={self.proj}, bias={self.bias is not None}")


# ------------------------------------------------------------------------------------------- loading
def install(model, family, cfg, records):
    """Replace each recorded decoder linear by a QuantLinear built from its record; returns their names."""
    base = family.base(model)
    names = []
    for name, record in records.items():
        parent_name, _, child = name.rpartition(".")
        parent = base.get_submodule(parent_name)
        linear = getattr(parent, child)
        if tuple(record.codes.shape) != tuple(linear.weight.shape):
            raise UsageError(f"{name}: codes of shape {tuple(record.codes.shape)} do not fit the model's "
                             f"{tuple(linear.weight.shape)} weight")
        setattr(parent, child, QuantLinear(record, cfg, *linear.weight.shape, bias=linear.bias))
        names.append(name)
    return names


def load_quantized(path, family="auto"):
    """(model, tokenizer, QuantConfig) from an opt.py / llama.py --save directory, base frozen."""
    cfg, records = saveload.read_codes(path)  # first: a directory without codes fails before any load
    model, tokenizer = load_causal_lm(path)
    install(model, family_of(model, family), cfg, records)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), tokenizer, cfg


def quant_linear_names(model):
    return [name for name, module in model.named_modules() if isinstance(module, QuantLinear)]


# ---------------------------------------------------------------------------------------- LoRA (peft)
def lora_layer_class():
    """peft's LoRA Linear for a QuantLinear base (peft imported only when LoRA is used)."""
    from peft.tuners.lora.layer import Linear

    class QuantLoraLinear(Linear):
        """base(x) + B A dropout(x) * scaling over a QuantLinear; peft's in-place merge cannot write into
        codes, so merging goes through `merged_dense` instead."""

        def merge(self, *args, **kwargs):
            raise NotImplementedError("a QuantLinear base has no dense weight; use qlinear.merged_dense")

    return QuantLoraLinear


def lora_config(r, alpha, dropout, targets, quantized=True):
    from peft import LoraConfig
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none")
    if quantized:
        config._register_custom_module({QuantLinear: lora_layer_class()})
    return config


@torch.no_grad()
def merged_dense(peft_model, adapter="default"):
    """A copy of the base model with every LoRA-wrapped layer replaced by one nn.Linear whose weight is
    the dequantized base weight plus the adapter's B A * scaling."""
    from peft.tuners.lora import LoraLayer
    model = copy.deepcopy(peft_model).get_base_model()
    for name, module in list(model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        W = base.dense_weight() if isinstance(base, QuantLinear) else base.weight.detach().clone()
        dense = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        dense.weight.copy_(W + module.get_delta_weight(adapter).to(W.dtype))
        if base.bias is not None:
            dense.bias.copy_(base.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, dense.requires_grad_(False))
    return model.eval()


def dense_reference(model, names):
    """Evaluation helper: the same model with each named QuantLinear turned into its dense nn.Linear."""
    model = copy.deepcopy(model)
    for name in names:
        q = model.get_submodule(name)
        dense = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None)
        with torch.no_grad():
            dense.weight.copy_(q.dense_weight())
            if q.bias is not None:
                dense.bias.copy_(q.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, dense)
    return model


def frozen_state(model):
    """The codes and grids of every QuantLinear (to check they never change)."""
    return {f"{n}.{k}": v.clone() for n, m in model.named_modules() if isinstance(m, QuantLinear)
            for k, v in m.state_dict().items()}

