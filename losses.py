"""Loss functions for the Rooted Logistic Objective (RLO) paper and its baselines.

Every multi-class loss takes logits (N, C) or (N, C, d1, ...) like F.cross_entropy, integer targets,
`reduction` in {'mean', 'sum', 'none'} and `ignore_index` (default -100). Mean is over non-ignored
targets; an all-ignored batch gives 0 with zero gradients (F.cross_entropy gives NaN). Computation runs
in at least float32 whatever the input dtype; the returned loss is float32 (float64 for float64 input).

The losses whose value depends on the logits only through log p_y ("CE-shaped": ce, focal, root,
root_paper) share one autograd Function that keeps only logsumexp and log p_y for backward and forms the
softmax once there, and one chunked linear+loss path for language-model heads.
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")

# Where the paper form k * (p^(-1/k) - 1) would need exp(t) with t = -log(p)/k above this, the loss is
# continued linearly in t (same value and slope at the joint), so values and gradients stay finite in
# fp16/bf16/fp32 for any logits. Exact for p_y >= exp(-k * LOG_WEIGHT_CAP), e.g. 1e-13 at k=3.
LOG_WEIGHT_CAP = 10.0


# ----------------------------------------------------------------------------------------------- checks
def _check_positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _flatten(logits, target):
    """(N, C, d...) logits and (N, d...) targets -> (M, C) and (M,), checking shapes and range."""
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape (N, C) or (N, C, d1, ...), got {tuple(logits.shape)}")
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    num_classes = logits.shape[1]
    if logits.dim() > 2:
        logits = logits.movedim(1, -1)
    expected = logits.shape[:-1]
    if target.shape != expected:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(expected)}")
    return logits.reshape(-1, num_classes), target.reshape(-1), expected


def _check_targets(target, num_classes, ignore_index):
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        value = target[bad][0].item()
        raise ValueError(f"target {value} is out of range for {num_classes} classes "
                         f"(and is not ignore_index={ignore_index})")


def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _reduce(per_item, valid, reduction, shape):
    if reduction == "none":
        return per_item.reshape(shape)
    total = per_item.sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp(min=1)  # all ignored -> 0 / 1 = 0, gradient 0


# --------------------------------------------------------------------------- CE-shaped losses: forms
@dataclass(frozen=True)
class LogProbForm:
    """A per-item loss phi(log p_y), with its derivative dphi/dlog p_y (for the fused backward)."""
    value: Callable[[torch.Tensor], torch.Tensor]
    slope: Callable[[torch.Tensor], torch.Tensor]


def ce_form():
    return LogProbForm(value=lambda lp: -lp, slope=lambda lp: torch.full_like(lp, -1.0))


def root_form(k=3.0, m=3.0):
    """Authors' code form m * (1 - p_y^(1/k)) (their train.py and ft_opt.py; paper Fig. 4b)."""
    _check_positive("k", k)
    _check_positive("m", m)
    return LogProbForm(value=lambda lp: -m * torch.expm1(lp / k),
                       slope=lambda lp: -(m / k) * torch.exp(lp / k))


def _capped_exp(t):
    """exp(t) for t <= LOG_WEIGHT_CAP, continued linearly above it; returns (value, derivative)."""
    tc = t.clamp(max=LOG_WEIGHT_CAP)
    e = torch.exp(tc)
    return e * (1 + (t - tc)), e


def root_paper_form(k=3.0):
    """Paper form k * (p_y^(-1/k) - 1), the multi-class version of eq. (4); an upper bound of CE."""
    _check_positive("k", k)

    def value(lp):
        v, _ = _capped_exp(-lp / k)
        return k * (v - 1)

    def slope(lp):
        return -_capped_exp(-lp / k)[1]
    return LogProbForm(value=value, slope=slope)


def focal_form(alpha=0.25, gamma=3.0):
    """Focal loss -alpha (1 - p_y)^gamma log p_y (Lin et al. 2017), the authors' alpha=0.25, gamma=3."""
    _check_positive("alpha", alpha)
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0, got {gamma!r}")

    def value(lp):
        return -alpha * (-torch.expm1(lp)) ** gamma * lp

    def slope(lp):
        q = -torch.expm1(lp)  # 1 - p_y, accurate when p_y is near 1
        safe_q = torch.where(q > 0, q, torch.ones_like(q))
        inner = torch.where(q > 0, gamma * safe_q ** (gamma - 1) * lp.exp() * lp, torch.zeros_like(q))
        return -alpha * (q ** gamma - inner)
    return LogProbForm(value=value, slope=slope)


# ------------------------------------------------------------------------ CE-shaped losses: engines
def _target_logprob(x, target, ignore_index):
    """log p_y by log_softmax + gather: plain autograd (twice differentiable)."""
    safe = torch.where(target == ignore_index, torch.zeros_like(target), target)
    return torch.log_softmax(x, dim=-1).gather(-1, safe[:, None]).squeeze(-1)


class _FusedLogProbLoss(torch.autograd.Function):
    """Per-item phi(log p_y) whose forward keeps only logsumexp and log p_y; backward forms softmax once.

    F.cross_entropy keeps a full log_softmax for backward; this keeps two length-N vectors, so peak memory
    above the inputs is one N x C buffer instead of two. Double backward (create_graph=True, for
    Hessian-vector products) is delegated to the plain autograd formula.
    """

    @staticmethod
    def forward(ctx, logits, target, ignore_index, form):
        x = logits.to(_compute_dtype(logits.dtype))
        valid = target != ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target))
        lse = torch.logsumexp(x, dim=-1)
        lp = x.gather(-1, safe[:, None]).squeeze(-1) - lse
        per_item = torch.where(valid, form.value(lp), torch.zeros_like(lp))
        ctx.save_for_backward(logits, target, lse, lp)
        ctx.ignore_index, ctx.form = ignore_index, form
        return per_item

    @staticmethod
    def backward(ctx, grad_out):
        logits, target, lse, lp = ctx.saved_tensors
        form, ignore_index = ctx.form, ctx.ignore_index
        valid = target != ignore_index
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain formula instead
            lp_graph = _target_logprob(logits.to(lse.dtype), target, ignore_index)
            per_item = torch.where(valid, form.value(lp_graph), torch.zeros_like(lp_graph))
            grad, = torch.autograd.grad(per_item, logits, grad_out, create_graph=True)
            return grad, None, None, None
        # d phi / d z = slope * (onehot - softmax) = (-slope) * (softmax - onehot)
        coef = torch.where(valid, -form.slope(lp) * grad_out.to(lp.dtype), torch.zeros_like(lp))
        grad = torch.sub(logits.to(lse.dtype), lse[:, None]).exp_().mul_(coef[:, None])
        safe = torch.where(valid, target, torch.zeros_like(target))
        grad.scatter_add_(-1, safe[:, None], -coef[:, None])
        return grad.to(logits.dtype), None, None, None


def logprob_loss(logits, target, form, reduction="mean", ignore_index=-100, fused=True):
    """Apply a CE-shaped loss `form` to logits; `fused=False` uses plain autograd ops (for reference)."""
    _check_reduction(reduction)
    x, t, shape = _flatten(logits, target)
    _check_targets(t, x.shape[1], ignore_index)
    valid = t != ignore_index
    if fused:
        per_item = _FusedLogProbLoss.apply(x, t, ignore_index, form)
    else:
        lp = _target_logprob(x.to(_compute_dtype(x.dtype)), t, ignore_index)
        per_item = torch.where(valid, form.value(lp), torch.zeros_like(lp))
    return _reduce(per_item, valid, reduction, shape)


def cross_entropy(logits, target, reduction="mean", ignore_index=-100, fused=True):
    """-log p_y: F.cross_entropy's values and gradients (0, not NaN, for an all-ignored mean)."""
    return logprob_loss(logits, target, ce_form(), reduction, ignore_index, fused)


def root_loss(logits, target, k=3.0, m=3.0, reduction="mean", ignore_index=-100, fused=True):
    """RLO, authors' code form m * (1 - p_y^(1/k)); gradient = CE's times (m/k) p_y^(1/k)."""
    return logprob_loss(logits, target, root_form(k, m), reduction, ignore_index, fused)


def root_paper_loss(logits, target, k=3.0, reduction="mean", ignore_index=-100, fused=True):
    """RLO, paper form k * (p_y^(-1/k) - 1); gradient = CE's times p_y^(-1/k)."""
    return logprob_loss(logits, target, root_paper_form(k), reduction, ignore_index, fused)


def focal_loss(logits, target, alpha=0.25, gamma=3.0, reduction="mean", ignore_index=-100, fused=True):
    """-alpha (1 - p_y)^gamma log p_y."""
    return logprob_loss(logits, target, focal_form(alpha, gamma), reduction, ignore_index, fused)


# ------------------------------------------------------------------------- other Table 2 baselines
def square_loss(logits, target, reduction="mean", ignore_index=-100):
    """Square loss on logits, mean over classes of (z - onehot)^2 (Hui & Belkin 2021, no rescaling)."""
    _check_reduction(reduction)
    x, t, shape = _flatten(logits, target)
    _check_targets(t, x.shape[1], ignore_index)
    x = x.to(_compute_dtype(x.dtype))
    valid = t != ignore_index
    onehot = F.one_hot(torch.where(valid, t, torch.zeros_like(t)), x.shape[1]).to(x.dtype)
    per_item = torch.where(valid, (x - onehot).pow(2).mean(-1), torch.zeros(1, dtype=x.dtype))
    return _reduce(per_item, valid, reduction, shape)


def sparsemax(x):
    """Sparsemax over the last dim (Martins & Astudillo 2016): Euclidean projection onto the simplex."""
    z, _ = torch.sort(x, dim=-1, descending=True)
    ks = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
    cumsum = z.cumsum(-1)
    support = (1 + ks * z) > cumsum
    k_z = support.sum(-1, keepdim=True)
    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z.to(x.dtype)
    return torch.clamp(x - tau, min=0), tau


def sparsemax_loss(logits, target, reduction="mean", ignore_index=-100):
    """Sparsemax loss (Martins & Astudillo 2016, eq. 17): gradient = sparsemax(z) - onehot."""
    _check_reduction(reduction)
    x, t, shape = _flatten(logits, target)
    _check_targets(t, x.shape[1], ignore_index)
    x = x.to(_compute_dtype(x.dtype))
    valid = t != ignore_index
    p, tau = sparsemax(x)
    z_y = x.gather(-1, torch.where(valid, t, torch.zeros_like(t))[:, None]).squeeze(-1)
    support = p > 0
    per = 0.5 * torch.where(support, x.pow(2) - tau.pow(2), torch.zeros_like(x)).sum(-1) - z_y + 0.5
    per_item = torch.where(valid, per, torch.zeros_like(per))
    return _reduce(per_item, valid, reduction, shape)


# ------------------------------------------------------------------------------------ binary forms
def _softplus(x):
    """log(1 + exp(x)) without F.softplus's switch to x above 20 (off by exp(-20), visible in float64)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def rooted_logit(x, k=2.0):
    """k * (1 + exp(-x))^(1/k) = k * exp(softplus(-x) / k), elementwise, for a positive label.

    The loss of a logit x whose label is +1 (eq. 4 with z = y w.x, and the GAN loss of eq. 20-21);
    use rooted_logit(-x, k) for label -1. Continued linearly where exp would overflow (LOG_WEIGHT_CAP).
    """
    _check_positive("k", k)
    t = _softplus(-x.to(_compute_dtype(x.dtype))) / k
    return k * _capped_exp(t)[0]


def logistic_logit(x):
    """log(1 + exp(-x)) = softplus(-x), the logistic loss of a logit x whose label is +1 (eq. 2)."""
    return _softplus(-x.to(_compute_dtype(x.dtype)))


def binary_loss(name, margins, k=3.0, reduction="mean"):
    """Mean/sum/none of a binary loss over margins z_i = y_i w.x_i, with y in {-1, +1}."""
    _check_reduction(reduction)
    if name not in BINARY_LOSSES:
        raise ValueError(f"unknown binary loss {name!r}; choose from {sorted(BINARY_LOSSES)}")
    per = rooted_logit(margins, k) if name == "rlo" else logistic_logit(margins)
    return {"mean": per.mean, "sum": per.sum, "none": lambda: per}[reduction]()


BINARY_LOSSES = {"lr": logistic_logit, "rlo": rooted_logit}


# ------------------------------------------------------------------------------------------ registry
LOSSES = {
    "ce": cross_entropy,
    "focal": focal_loss,
    "root": root_loss,
    "root_paper": root_paper_loss,
    "square": square_loss,
    "sparsemax": sparsemax_loss,
}

# name -> the hyperparameters it takes, and a builder of its LogProbForm where it is CE-shaped
LOSS_PARAMS = {"ce": (), "focal": ("alpha", "gamma"), "root": ("k", "m"), "root_paper": ("k",),
               "square": (), "sparsemax": ()}
FORMS = {"ce": ce_form, "focal": focal_form, "root": root_form, "root_paper": root_paper_form}


def _pick(name, hyper):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}")
    return {key: hyper[key] for key in LOSS_PARAMS[name] if key in hyper}


def get_loss(name, **hyper):
    """The loss `name` with its hyperparameters bound (extra ones ignored): f(logits, target, **kw).

    Hyperparameters are validated now, so a bad k or m fails before any training starts.
    """
    params = _pick(name, hyper)
    if name in FORMS:
        FORMS[name](**params)

    def loss(logits, target, **kwargs):
        return LOSSES[name](logits, target, **params, **kwargs)
    loss.__name__ = name
    return loss


def get_form(name, **hyper):
    """The LogProbForm of a CE-shaped loss, for linear_cross_loss and other fused paths."""
    params = _pick(name, hyper)
    if name not in FORMS:
        raise ValueError(f"loss {name!r} is not a function of log p_y; CE-shaped ones: {sorted(FORMS)}")
    return FORMS[name](**params)


# ------------------------------------------------------------------------------------------ k schedules
K_SCHEDULES = ("constant", "linear", "exp", "exp_max")


class KSchedule:
    """k as a function of the epoch (paper Sec. 4.3.1, Fig. 2c): constant, linear increase,
    exponential increase, and exponential increase up to k_max then fixed.

    constant: k0;  linear: k0 + step * epoch;  exp: k0 * rate**epoch;  exp_max: min(k0 * rate**epoch, k_max)
    """

    def __init__(self, kind="constant", k0=3.0, step=1.0, rate=1.1, k_max=10.0):
        if kind not in K_SCHEDULES:
            raise ValueError(f"unknown k schedule {kind!r}; choose from {K_SCHEDULES}")
        _check_positive("k", k0)
        if kind == "linear" and not (math.isfinite(step) and step >= 0):
            raise ValueError(f"k step must be a finite number >= 0, got {step!r}")
        if kind in ("exp", "exp_max"):
            _check_positive("k rate", rate)
        if kind == "exp_max":
            _check_positive("k max", k_max)
        self.kind, self.k0, self.step, self.rate, self.k_max = kind, float(k0), step, rate, k_max

    def __call__(self, epoch):
        if self.kind == "constant":
            return self.k0
        if self.kind == "linear":
            return self.k0 + self.step * epoch
        k = self.k0 * self.rate ** epoch
        return min(k, self.k_max) if self.kind == "exp_max" else k

    def __repr__(self):
        return (f"KSchedule(kind={self.kind!r}, k0={self.k0}, step={self.step}, rate={self.rate}, "
                f"k_max={self.k_max})")


# ---------------------------------------------------------------------------- chunked linear + loss
def _row_chunks(num_rows, vocab, chunk_size):
    if chunk_size is None:  # about 2^24 logits (64 MB in fp32) per chunk: big enough for fast GEMMs
        chunk_size = (1 << 24) // max(vocab, 1)
    step = max(1, int(chunk_size))
    return [slice(start, min(start + step, num_rows)) for start in range(0, num_rows, step)]


def _chunk_logprob(h, weight, bias, target, ignore_index):
    """Logits of one chunk (float32 or wider), their logsumexp and log p_y."""
    logits = h @ weight.t()
    if bias is not None:
        logits = logits + bias
    logits = logits.to(_compute_dtype(h.dtype))
    safe = torch.where(target == ignore_index, torch.zeros_like(target), target)
    lse = torch.logsumexp(logits, dim=-1)
    return logits, lse, logits.gather(-1, safe[:, None]).squeeze(-1) - lse


def _chunk_backward(h, weight, target, ignore_index, logits, lse, coef, grads):
    """Turn one chunk's logits into d loss / d logits in place and add its share to (dh, dW, db)."""
    safe = torch.where(target == ignore_index, torch.zeros_like(target), target)
    g = logits.sub_(lse[:, None]).exp_().mul_(coef[:, None])
    g.scatter_add_(-1, safe[:, None], -coef[:, None])
    d_hidden, d_weight, d_bias = grads
    if d_hidden is not None:
        d_hidden.copy_(g.to(weight.dtype) @ weight)
    if d_weight is not None:
        d_weight.addmm_(g.t(), h.to(g.dtype))
    if d_bias is not None:
        d_bias.add_(g.sum(0))


def _grad_buffers(ctx_needs, hidden, weight, bias, dtype):
    d_hidden = torch.empty_like(hidden) if ctx_needs[0] else None
    d_weight = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if ctx_needs[1] else None
    d_bias = (torch.zeros(bias.shape, dtype=dtype, device=bias.device)
              if bias is not None and ctx_needs[2] else None)
    return d_hidden, d_weight, d_bias


def _chunk_grads(grads, rows):
    d_hidden, d_weight, d_bias = grads
    return (d_hidden[rows] if d_hidden is not None else None), d_weight, d_bias


def _finish_grads(grads, weight, bias):
    d_hidden, d_weight, d_bias = grads
    return (d_hidden,
            d_weight.to(weight.dtype) if d_weight is not None else None,
            d_bias.to(bias.dtype) if d_bias is not None else None)


class _LinearLossReduced(torch.autograd.Function):
    """sum_i scale * phi(log p_i) of logits hidden @ weight.T + bias, never holding the N x V logits.

    One pass over token chunks: each chunk's logits give its loss and, since a scalar loss's gradient is
    known up to the incoming scalar, its gradient right away (three matrix products per chunk, as the
    unfused path). Backward only scales the stored gradients (the Liger-Kernel / cut-cross-entropy idea).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, ignore_index, form, chunk_size, scale):
        dtype = _compute_dtype(hidden.dtype)
        grads = _grad_buffers(ctx.needs_input_grad, hidden, weight, bias, dtype)
        total = torch.zeros((), dtype=dtype, device=hidden.device)
        for rows in _row_chunks(hidden.shape[0], weight.shape[0], chunk_size):
            t = target[rows]
            logits, lse, lp = _chunk_logprob(hidden[rows], weight, bias, t, ignore_index)
            valid = t != ignore_index
            total += torch.where(valid, form.value(lp), torch.zeros_like(lp)).sum() * scale
            if any(ctx.needs_input_grad[:3]):
                coef = torch.where(valid, -form.slope(lp) * scale, torch.zeros_like(lp))
                _chunk_backward(hidden[rows], weight, t, ignore_index, logits, lse, coef,
                                _chunk_grads(grads, rows))
        ctx.grads = _finish_grads(grads, weight, bias)
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grads, ctx.grads = ctx.grads, None
        if torch.is_grad_enabled():
            raise RuntimeError("linear_cross_loss does not support double backward (create_graph=True)")
        for g in grads:  # the buffers are ours alone: scale in place rather than copy
            if g is not None and not bool(grad_out == 1):
                g.mul_(grad_out.to(g.dtype))
        return (*grads, None, None, None, None, None)


class _LinearLossPerItem(torch.autograd.Function):
    """Per-item phi(log p_i) of hidden @ weight.T + bias; backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, target, ignore_index, form, chunk_size):
        out = torch.empty(hidden.shape[0], dtype=_compute_dtype(hidden.dtype), device=hidden.device)
        for rows in _row_chunks(hidden.shape[0], weight.shape[0], chunk_size):
            t = target[rows]
            _, _, lp = _chunk_logprob(hidden[rows], weight, bias, t, ignore_index)
            out[rows] = torch.where(t != ignore_index, form.value(lp), torch.zeros_like(lp))
        ctx.save_for_backward(hidden, weight, bias, target)
        ctx.ignore_index, ctx.form, ctx.chunk_size = ignore_index, form, chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, target = ctx.saved_tensors
        grads = _grad_buffers(ctx.needs_input_grad, hidden, weight, bias, grad_out.dtype)
        for rows in _row_chunks(hidden.shape[0], weight.shape[0], ctx.chunk_size):
            t = target[rows]
            logits, lse, lp = _chunk_logprob(hidden[rows], weight, bias, t, ctx.ignore_index)
            coef = torch.where(t != ctx.ignore_index, -ctx.form.slope(lp) * grad_out[rows],
                               torch.zeros_like(lp))
            _chunk_backward(hidden[rows], weight, t, ctx.ignore_index, logits, lse, coef,
                            _chunk_grads(grads, rows))
        return (*_finish_grads(grads, weight, bias), None, None, None, None)


def linear_cross_loss(hidden, weight, target, bias=None, loss="ce", reduction="mean",
                      ignore_index=-100, chunk_size=None, **hyper):
    """A CE-shaped loss of logits = hidden @ weight.T + bias, computed over token chunks.

    hidden (N, H), weight (V, H), bias (V,) or None, target (N,). Same value and gradients (hidden,
    weight, bias) as `get_loss(loss)(hidden @ weight.T + bias, target)`, but the N x V logits never
    exist at once: peak extra memory is one chunk of logits plus the weight's gradient.
    """
    _check_reduction(reduction)
    form = loss if isinstance(loss, LogProbForm) else get_form(loss, **hyper)
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden (N, H) and weight (V, H) do not match: {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}")
    if target.shape != hidden.shape[:1]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match hidden {tuple(hidden.shape)}")
    _check_targets(target, weight.shape[0], ignore_index)
    if reduction == "none":
        return _LinearLossPerItem.apply(hidden, weight, bias, target, ignore_index, form, chunk_size)
    scale = 1.0
    if reduction == "mean":
        scale = 1.0 / max(int((target != ignore_index).sum()), 1)
    return _LinearLossReduced.apply(hidden, weight, bias, target, ignore_index, form, chunk_size, scale)
