"""Loss functions for the Rooted Logistic Objective (RLO) paper, its relatives and its baselines.

Every multi-class loss takes logits (N, C) or (N, C, d1, ...) like F.cross_entropy, targets of any
integer dtype (or, for the CE-shaped losses and bitempered, class probabilities shaped like the logits),
`reduction` in {'mean', 'sum', 'none'} and `ignore_index` (default -100). Mean is over non-ignored
targets; an all-ignored batch gives 0 with zero gradients (F.cross_entropy gives NaN). Computation runs
in at least float32 whatever the input dtype; the returned loss is float32 (float64 for float64 input).

The losses whose value depends on the logits only through log p_y ("CE-shaped": ce, focal, root,
root_paper, gce, poly1, taylor_ce) are one form phi(log p_y) each. They share one autograd Function that
keeps only logsumexp and the target's log-likelihood for backward and forms the softmax once there, one
chunked linear+loss path for language-model heads, and one set of options with F.cross_entropy's
semantics: class `weight`, `label_smoothing`, probability targets, plus `token_weight`, `z_loss` and
`softcap`. With a target distribution q (smoothed or given) and class weights w, a CE-shaped loss is

    W * phi(u),   W = sum_c w_c q_c,   u = (1/W) sum_c w_c q_c log p_c,
    gradient w.r.t. the logits  -phi'(u) * (W softmax(z) - w * q),

which is exactly F.cross_entropy for phi(u) = -u and reduces to w_y phi(log p_y) for a hard target.
"""
import math
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


# ------------------------------------------------------------------------------------- overflow cap
def _compute_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def log_weight_cap(dtype):
    """Largest exponent t for which the rooted forms use exp(t) exactly, for inputs of `dtype`.

    Above it exp(t) is continued linearly (same value and slope at the joint). The loss is computed in
    float32 or wider and keeps 16 nats of headroom (its value stays finite for t up to about e^16); the
    gradient is returned in `dtype` and keeps 1 nat. float32 and bfloat16: 72.7; float16: 10.1;
    float64: 693.8.
    """
    compute = _compute_dtype(dtype)
    return min(math.log(torch.finfo(compute).max) - 16.0, math.log(torch.finfo(dtype).max) - 1.0)


LOG_WEIGHT_CAP = log_weight_cap(torch.float32)  # the cap for float32 and bfloat16 inputs


def _expm1(a, cap):
    """exp(a) - 1 with an exact gradient for every a, continued linearly above `cap`; (value, exp(a)).

    torch.expm1's backward is grad * (result + 1), which is 0 once exp(a) < 2^-24 in float32; below
    a = -1 exp(a) - 1 has no cancellation, so that branch is differentiated through exp instead.
    """
    ac = a.clamp(max=cap)
    e = torch.exp(ac)
    value = torch.where(ac < -1, e - 1, torch.expm1(ac))
    return value + e * (a - ac), e


# ----------------------------------------------------------------------------------------------- checks
def _check_positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_finite(name, value, low=-math.inf):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
        raise ValueError(f"{name} must be a finite number >= {low}, got {value!r}")


def _check_cap(cap):
    if cap is not None:
        _check_positive("cap", cap)


def _check_reduction(reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _flatten(logits, target):
    """(N, C, d...) logits and (N, d...) classes or (N, C, d...) probabilities -> (M, C), (M,) or (M, C)."""
    if logits.dim() < 2:
        raise ValueError(f"logits must have shape (N, C) or (N, C, d1, ...), got {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    soft = target.dtype.is_floating_point and target.shape == logits.shape
    if target.dtype == torch.bool or (target.dtype.is_floating_point and not soft):
        raise ValueError(f"target must hold integer class indices shaped like the logits without dim 1, or "
                         f"class probabilities shaped like the logits; got dtype {target.dtype}, shape "
                         f"{tuple(target.shape)} for logits {tuple(logits.shape)}")
    if logits.dim() > 2:
        logits = logits.movedim(1, -1)
        target = target.movedim(1, -1) if soft else target
    expected = logits.shape[:-1]
    if not soft and target.shape != expected:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(expected)}")
    target = target.reshape(-1, num_classes) if soft else target.reshape(-1).long()
    return logits.reshape(-1, num_classes), target, expected


def _check_targets(target, num_classes, ignore_index):
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if bool(bad.any()):
        value = target[bad][0].item()
        raise ValueError(f"target {value} is out of range for {num_classes} classes "
                         f"(and is not ignore_index={ignore_index})")


def _check_soft(target):
    if not bool(torch.isfinite(target).all()) or bool((target < 0).any()):
        raise ValueError("probability targets must be finite and >= 0")


def _check_class_weight(weight, num_classes):
    if weight is None:
        return
    if weight.shape != (num_classes,):
        raise ValueError(f"weight must have shape ({num_classes},), one per class, got {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        raise ValueError("weight must be finite and >= 0 for every class")


def _check_token_weight(token_weight, shape):
    if token_weight is None:
        return
    if token_weight.shape != shape:
        raise ValueError(f"token_weight shape {tuple(token_weight.shape)} does not match the targets "
                         f"{tuple(shape)}")
    if not bool(torch.isfinite(token_weight).all()) or bool((token_weight < 0).any()):
        raise ValueError("token_weight must be finite and >= 0")


def _reduce(per_item, divisor, reduction, shape):
    if reduction == "none":
        return per_item.reshape(shape)
    total = per_item.sum()
    if reduction == "sum":
        return total
    return total / torch.where(divisor > 0, divisor, torch.ones_like(divisor))  # all ignored -> 0


# --------------------------------------------------------------------------- CE-shaped losses: forms
@dataclass(frozen=True)
class LogProbForm:
    """A per-item loss phi(log p_y), with its derivative dphi/dlog p_y (for the fused backward).

    Both take (lp, cap=None): `cap` is the overflow cap of the rooted forms (log_weight_cap of the input
    dtype when None); forms that cannot overflow ignore it.
    """
    value: Callable[..., torch.Tensor]
    slope: Callable[..., torch.Tensor]


def _resolve_cap(own, given, lp):
    if own is not None:
        return own
    return given if given is not None else log_weight_cap(lp.dtype)


def ce_form():
    return LogProbForm(value=lambda lp, cap=None: -lp, slope=lambda lp, cap=None: torch.full_like(lp, -1.0))


def gce_form(q=0.7, cap=None):
    """Generalized cross entropy (1 - p_y^q) / q (Zhang & Sabuncu 2018, eq. 6); q = 0 is CE.

    q in (0, 1] is bounded (robust to label noise); q < 0 is an upper bound of CE whose exp(-q log p_y)
    is continued linearly above `cap`.
    """
    _check_finite("q", q)
    _check_cap(cap)
    if q == 0:
        return ce_form()

    def value(lp, c=None):
        return -_expm1(q * lp, _resolve_cap(cap, c, lp))[0] / q

    def slope(lp, c=None):
        return -_expm1(q * lp, _resolve_cap(cap, c, lp))[1]
    return LogProbForm(value=value, slope=slope)


def _scaled(form, scale):
    return LogProbForm(value=lambda lp, cap=None: scale * form.value(lp, cap),
                       slope=lambda lp, cap=None: scale * form.slope(lp, cap))


def root_form(k=3.0, m=3.0):
    """Authors' code form m * (1 - p_y^(1/k)) (their train.py and ft_opt.py; paper Fig. 4b) = (m/k) gce(1/k)."""
    _check_positive("k", k)
    _check_positive("m", m)
    return _scaled(gce_form(1.0 / k), m / k)


def root_paper_form(k=3.0, cap=None):
    """Paper form k * (p_y^(-1/k) - 1), the multi-class version of eq. (4); an upper bound of CE = gce(-1/k)."""
    _check_positive("k", k)
    _check_cap(cap)
    return gce_form(-1.0 / k, cap)


def focal_form(alpha=0.25, gamma=3.0):
    """Focal loss -alpha (1 - p_y)^gamma log p_y (Lin et al. 2017), the authors' alpha=0.25, gamma=3."""
    _check_positive("alpha", alpha)
    _check_finite("gamma", gamma, 0)

    def value(lp, cap=None):
        return -alpha * (-_expm1(lp, 0.0)[0]) ** gamma * lp

    def slope(lp, cap=None):
        q = -torch.expm1(lp)  # 1 - p_y, accurate when p_y is near 1
        safe_q = torch.where(q > 0, q, torch.ones_like(q))
        inner = torch.where(q > 0, gamma * safe_q ** (gamma - 1) * lp.exp() * lp, torch.zeros_like(q))
        return -alpha * (q ** gamma - inner)
    return LogProbForm(value=value, slope=slope)


def poly1_form(epsilon=1.0):
    """Poly-1 loss -log p_y + epsilon (1 - p_y) (Leng et al. 2022, PolyLoss, eq. 3)."""
    _check_finite("epsilon", epsilon, -1)
    return LogProbForm(value=lambda lp, cap=None: -lp - epsilon * _expm1(lp, 0.0)[0],
                       slope=lambda lp, cap=None: -1 - epsilon * lp.exp())


def taylor_ce_form(order=2):
    """Taylor cross entropy sum_{j=1..order} (1 - p_y)^j / j (Feng et al. 2020, eq. 8); CE as order grows."""
    if not (isinstance(order, int) and order >= 1):
        raise ValueError(f"order must be an integer >= 1, got {order!r}")

    def value(lp, cap=None):
        q = -_expm1(lp, 0.0)[0]
        return sum(q ** j / j for j in range(1, order + 1))

    def slope(lp, cap=None):  # d/dlp of (1 - p)^j / j = -p (1 - p)^(j-1)
        q = -torch.expm1(lp)
        return -lp.exp() * sum(q ** j for j in range(order))
    return LogProbForm(value=value, slope=slope)


# ------------------------------------------------------------------------ CE-shaped losses: the batch
@dataclass(frozen=True)
class _Batch:
    """What a batch asks of a CE-shaped loss, beyond the logits: flat targets and the options."""
    index: Optional[torch.Tensor]   # (M,) int64 classes, ignore_index marks rows that do not count
    soft: Optional[torch.Tensor]    # (M, C) target probabilities (no ignored rows)
    weight: Optional[torch.Tensor]  # (C,) class weights
    smoothing: float
    ignore_index: int
    z_loss: float = 0.0
    softcap: Optional[float] = None

    def rows(self, rows):
        return replace(self, index=None if self.index is None else self.index[rows],
                       soft=None if self.soft is None else self.soft[rows])

    def valid(self):
        if self.index is None:
            return torch.ones(self.soft.shape[0], dtype=torch.bool, device=self.soft.device)
        return self.index != self.ignore_index

    def safe_index(self):
        return torch.where(self.valid(), self.index, torch.zeros_like(self.index))

    def soft_weighted(self, dtype):
        """w * q of the soft targets, smoothed: (M, C)."""
        q = self.soft.to(dtype)
        if self.smoothing:
            q = (1 - self.smoothing) * q + self.smoothing / q.shape[1]
        return q * self.weight.to(dtype) if self.weight is not None else q

    def divisor(self, dtype):
        """The mean's denominator, as F.cross_entropy: sum of w_y over valid rows, or the number of rows."""
        if self.index is None:
            return torch.tensor(float(self.soft.shape[0]), dtype=dtype, device=self.soft.device)
        valid = self.valid()
        if self.weight is None:
            return valid.sum().to(dtype)
        wy = self.weight.to(dtype)[self.safe_index()]
        return torch.where(valid, wy, torch.zeros_like(wy)).sum()


def _softcapped(x, softcap):
    return x if softcap is None else softcap * torch.tanh(x / softcap)


def _loglik(x, lse, batch):
    """(W, W u) of each row: W = sum_c w_c q_c and W u = sum_c w_c q_c log p_c (x: compute-dtype logits)."""
    if batch.index is None:
        wq = batch.soft_weighted(x.dtype)
        return wq.sum(-1), (wq * (x - lse[:, None])).sum(-1)
    valid, safe = batch.valid(), batch.safe_index()
    wy = batch.weight.to(x.dtype)[safe] if batch.weight is not None else torch.ones_like(lse)
    wy = torch.where(valid, wy, torch.zeros_like(wy))
    ell = wy * (x.gather(-1, safe[:, None]).squeeze(-1) - lse)
    eps = batch.smoothing
    if not eps:
        return wy, ell
    if batch.weight is None:
        w_mean, xw_mean = 1.0, x.mean(-1)
    else:
        w = batch.weight.to(x.dtype)
        w_mean, xw_mean = w.mean(), (x @ w) / x.shape[1]
    smooth_w = torch.where(valid, torch.full_like(lse, 1.0) * w_mean, torch.zeros_like(lse))
    smooth_ell = torch.where(valid, xw_mean - w_mean * lse, torch.zeros_like(lse))
    return (1 - eps) * wy + eps * smooth_w, (1 - eps) * ell + eps * smooth_ell


def _rows(x, batch, form, cap):
    """Per-row pieces of a CE-shaped loss of compute-dtype logits x: (lse, W, u, value)."""
    lse = torch.logsumexp(x, dim=-1)
    W, ell = _loglik(x, lse, batch)
    pos = W > 0
    u = torch.where(pos, ell / torch.where(pos, W, torch.ones_like(W)), torch.zeros_like(W))
    value = torch.where(pos, W * form.value(u, cap), torch.zeros_like(u))
    if batch.z_loss:
        value = value + torch.where(batch.valid(), batch.z_loss * lse ** 2, torch.zeros_like(lse))
    return lse, W, u, value


def _logit_grad(x, lse, W, u, row_grad, batch, form, cap, inplace):
    """d loss / d x for incoming per-row gradients row_grad: -phi'(u) (W softmax - w q) + z-loss term."""
    coef = -form.slope(u, cap) * row_grad
    coef = torch.where(W > 0, coef, torch.zeros_like(coef))
    on_softmax = coef * W
    if batch.z_loss:
        on_softmax = on_softmax + torch.where(batch.valid(), 2 * batch.z_loss * lse * row_grad,
                                              torch.zeros_like(lse))
    g = (x.sub_(lse[:, None]) if inplace else torch.sub(x, lse[:, None])).exp_().mul_(on_softmax[:, None])
    if batch.index is None:
        return g.sub_(coef[:, None] * batch.soft_weighted(g.dtype))
    safe, eps = batch.safe_index(), batch.smoothing
    wy = batch.weight.to(g.dtype)[safe] if batch.weight is not None else torch.ones_like(coef)
    g.scatter_add_(-1, safe[:, None], (-(1 - eps) * coef * wy)[:, None])
    if eps:
        w = batch.weight.to(g.dtype) if batch.weight is not None else torch.ones(1, dtype=g.dtype,
                                                                                  device=g.device)
        g.sub_((coef * eps / g.shape[1])[:, None] * w)
    return g


def _capped_logits(logits, batch):
    """Compute-dtype, soft-capped logits and the soft cap's derivative factor (None without a cap)."""
    x = logits.to(_compute_dtype(logits.dtype))
    if batch.softcap is None:
        return x, None
    capped = _softcapped(x, batch.softcap)
    return capped, 1 - (capped / batch.softcap) ** 2


class _FusedLogProbLoss(torch.autograd.Function):
    """Per-row W phi(u) whose forward keeps only logsumexp, W and u; backward forms the softmax once.

    F.cross_entropy keeps a full log_softmax for backward; this keeps length-N vectors, so peak memory
    above the inputs is one N x C buffer instead of two. Double backward (create_graph=True, for
    Hessian-vector products) is delegated to the plain autograd formula.
    """

    @staticmethod
    def forward(ctx, logits, batch, form, cap):
        x, _ = _capped_logits(logits, batch)
        lse, W, u, value = _rows(x, batch, form, cap)
        ctx.save_for_backward(logits, lse, W, u)
        ctx.batch, ctx.form, ctx.cap = batch, form, cap
        return value

    @staticmethod
    def backward(ctx, grad_out):
        logits, lse, W, u = ctx.saved_tensors
        batch, form, cap = ctx.batch, ctx.form, ctx.cap
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain formula instead
            value = _plain_rows(logits, batch, form, cap)
            grad, = torch.autograd.grad(value, logits, grad_out, create_graph=True)
            return grad, None, None, None
        x, dcap = _capped_logits(logits, batch)
        grad = _logit_grad(x, lse, W, u, grad_out.to(lse.dtype), batch, form, cap, inplace=dcap is not None)
        if dcap is not None:
            grad.mul_(dcap)
        return grad.to(logits.dtype), None, None, None


def _plain_rows(logits, batch, form, cap):
    """Per-row loss by plain autograd ops (twice differentiable)."""
    x, _ = _capped_logits(logits, batch)
    return _rows(x, batch, form, cap)[3]


def _make_batch(num_classes, t, ignore_index, weight, label_smoothing, z_loss, softcap):
    soft = t.dtype.is_floating_point
    if soft:
        _check_soft(t)
    else:
        _check_targets(t, num_classes, ignore_index)
    _check_class_weight(weight, num_classes)
    if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1):
        raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
    _check_finite("z_loss", z_loss, 0)
    if softcap is not None:
        _check_positive("softcap", softcap)
    if weight is not None:
        weight = weight.to(device=t.device)
    return _Batch(index=None if soft else t, soft=t if soft else None, weight=weight,
                  smoothing=float(label_smoothing), ignore_index=ignore_index, z_loss=float(z_loss),
                  softcap=softcap)


def logprob_loss(logits, target, form, reduction="mean", ignore_index=-100, fused=True, *, weight=None,
                 label_smoothing=0.0, token_weight=None, z_loss=0.0, softcap=None):
    """Apply a CE-shaped loss `form` to logits; `fused=False` uses plain autograd ops (for reference).

    weight (C,): class weights; label_smoothing in [0, 1); target may be (N, C, ...) probabilities;
    token_weight (N, d...): a factor on each item's loss (not in the mean's denominator); z_loss: adds
    z_loss * logsumexp^2 per item; softcap: logits -> softcap * tanh(logits / softcap) first. The mean
    divides by the sum of w_y over non-ignored items (class-index targets) or by the item count
    (probability targets), as F.cross_entropy.
    """
    _check_reduction(reduction)
    x, t, shape = _flatten(logits, target)
    batch = _make_batch(x.shape[1], t, ignore_index, weight, label_smoothing, z_loss, softcap)
    cap = log_weight_cap(x.dtype)
    per_item = (_FusedLogProbLoss.apply(x, batch, form, cap) if fused else _plain_rows(x, batch, form, cap))
    if token_weight is not None:
        _check_token_weight(token_weight, shape)
        per_item = per_item * token_weight.reshape(-1).to(per_item.dtype)
    return _reduce(per_item, batch.divisor(per_item.dtype), reduction, shape)


def cross_entropy(logits, target, reduction="mean", ignore_index=-100, fused=True, **options):
    """-log p_y: F.cross_entropy's values and gradients (0, not NaN, for an all-ignored mean)."""
    return logprob_loss(logits, target, ce_form(), reduction, ignore_index, fused, **options)


def root_loss(logits, target, k=3.0, m=3.0, reduction="mean", ignore_index=-100, fused=True, **options):
    """RLO, authors' code form m * (1 - p_y^(1/k)); gradient = CE's times (m/k) p_y^(1/k)."""
    return logprob_loss(logits, target, root_form(k, m), reduction, ignore_index, fused, **options)


def root_paper_loss(logits, target, k=3.0, reduction="mean", ignore_index=-100, fused=True, cap=None,
                    **options):
    """RLO, paper form k * (p_y^(-1/k) - 1); gradient = CE's times p_y^(-1/k)."""
    return logprob_loss(logits, target, root_paper_form(k, cap), reduction, ignore_index, fused, **options)


def focal_loss(logits, target, alpha=0.25, gamma=3.0, reduction="mean", ignore_index=-100, fused=True,
               **options):
    """-alpha (1 - p_y)^gamma log p_y."""
    return logprob_loss(logits, target, focal_form(alpha, gamma), reduction, ignore_index, fused, **options)


def gce_loss(logits, target, q=0.7, reduction="mean", ignore_index=-100, fused=True, cap=None, **options):
    """Generalized cross entropy (1 - p_y^q) / q; root = (m/k) gce(1/k), root_paper = gce(-1/k)."""
    return logprob_loss(logits, target, gce_form(q, cap), reduction, ignore_index, fused, **options)


def poly1_loss(logits, target, epsilon=1.0, reduction="mean", ignore_index=-100, fused=True, **options):
    """Poly-1: -log p_y + epsilon (1 - p_y)."""
    return logprob_loss(logits, target, poly1_form(epsilon), reduction, ignore_index, fused, **options)


def taylor_ce_loss(logits, target, order=2, reduction="mean", ignore_index=-100, fused=True, **options):
    """Taylor cross entropy: sum_{j=1..order} (1 - p_y)^j / j."""
    return logprob_loss(logits, target, taylor_ce_form(order), reduction, ignore_index, fused, **options)


# ------------------------------------------------------------------------- other Table 2 baselines
def _hard_only(x, t, ignore_index, name):
    if t.dtype.is_floating_point:
        raise ValueError(f"loss {name!r} takes class indices, not probability targets")
    _check_targets(t, x.shape[1], ignore_index)
    return t != ignore_index


def square_loss(logits, target, reduction="mean", ignore_index=-100):
    """Square loss on logits, mean over classes of (z - onehot)^2 (Hui & Belkin 2021, no rescaling)."""
    _check_reduction(reduction)
    x, t, shape = _flatten(logits, target)
    valid = _hard_only(x, t, ignore_index, "square")
    x = x.to(_compute_dtype(x.dtype))
    onehot = F.one_hot(torch.where(valid, t, torch.zeros_like(t)), x.shape[1]).to(x.dtype)
    per = (x - onehot).pow(2).mean(-1)
    per_item = torch.where(valid, per, torch.zeros_like(per))
    return _reduce(per_item, valid.sum().to(x.dtype), reduction, shape)


def sparsemax(x):
    """Sparsemax over the last dim (Martins & Astudillo 2016): Euclidean projection onto the simplex.

    Computed on x - max(x) (the projection is shift invariant), so the cumulative sums stay small and
    the support test does not lose the gaps between logits to rounding at large offsets.
    """
    z = x - x.max(-1, keepdim=True).values.detach()
    zs, _ = torch.sort(z, dim=-1, descending=True)
    ks = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
    cumsum = zs.cumsum(-1)
    support = (1 + ks * zs) > cumsum
    k_z = support.sum(-1, keepdim=True)
    tau = (cumsum.gather(-1, k_z - 1) - 1) / k_z.to(x.dtype)
    return torch.clamp(z - tau, min=0), tau + (x - z)[..., :1]


def sparsemax_loss(logits, target, reduction="mean", ignore_index=-100):
    """Sparsemax loss (Martins & Astudillo 2016, eq. 17): gradient = sparsemax(z) - onehot."""
    _check_reduction(reduction)
    x, t, shape = _flatten(logits, target)
    valid = _hard_only(x, t, ignore_index, "sparsemax")
    x = x.to(_compute_dtype(x.dtype))
    x = x - x.max(-1, keepdim=True).values.detach()  # the loss is shift invariant; keep its terms small
    p, tau = sparsemax(x)
    z_y = x.gather(-1, torch.where(valid, t, torch.zeros_like(t))[:, None]).squeeze(-1)
    support = p > 0
    per = 0.5 * torch.where(support, x.pow(2) - tau.pow(2), torch.zeros_like(x)).sum(-1) - z_y + 0.5
    per_item = torch.where(valid, per, torch.zeros_like(per))
    return _reduce(per_item, valid.sum().to(x.dtype), reduction, shape)


# ----------------------------------------------------------------------------- bi-tempered logistic
def _log_t(x, t):
    return torch.log(x) if t == 1 else (x.pow(1 - t) - 1) / (1 - t)


def _exp_t(x, t):
    return torch.exp(x) if t == 1 else torch.relu(1 + (1 - t) * x).pow(1 / (1 - t))


def tempered_softmax(x, t, iters=64):
    """exp_t(x - lambda(x)) with lambda such that each row sums to 1 (Amid et al. 2019, eq. 11).

    lambda is found by bisection without autograd (it lies in [0, -log_t(1/C)] for x - max(x)), then one
    Newton step is differentiated: its gradient is the implicit one, d lambda / dx_c = exp_t^t / sum exp_t^t.
    """
    if t == 1:
        return torch.softmax(x, dim=-1)
    a = x - x.max(-1, keepdim=True).values.detach()
    with torch.no_grad():
        lo = torch.zeros_like(a[..., :1])
        hi = torch.full_like(lo, -_log_t(torch.tensor(1.0 / x.shape[-1], dtype=torch.float64), t).item())
        for _ in range(iters):
            mid = (lo + hi) / 2
            over = _exp_t(a - mid, t).sum(-1, keepdim=True) > 1
            lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
        lam = (lo + hi) / 2
    p0 = _exp_t(a - lam, t)
    lam = lam + (p0.sum(-1, keepdim=True) - 1) / p0.detach().pow(t).sum(-1, keepdim=True)
    return _exp_t(a - lam, t)


def _check_temperatures(t1=0.8, t2=1.2):
    if not (isinstance(t1, (int, float)) and 0 < t1 <= 1):
        raise ValueError(f"t1 must be a number in (0, 1], got {t1!r}")
    _check_positive("t2", t2)


def bitempered_loss(logits, target, t1=0.8, t2=1.2, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    """Bi-tempered logistic loss (Amid et al. 2019, eq. 13): tempered log-loss (t1) of a tempered softmax (t2).

    t1 = t2 = 1 is cross-entropy; t1 < 1 bounds the loss, t2 > 1 gives the softmax heavier tails. Targets:
    class indices or probabilities; label_smoothing mixes in the uniform distribution as F.cross_entropy.
    """
    _check_reduction(reduction)
    _check_temperatures(t1, t2)
    if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1):
        raise ValueError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
    x, t, shape = _flatten(logits, target)
    soft = t.dtype.is_floating_point
    if soft:
        _check_soft(t)
        valid = torch.ones(len(t), dtype=torch.bool, device=t.device)
    else:
        valid = _hard_only(x, t, ignore_index, "bitempered")
    x = x.to(_compute_dtype(x.dtype))
    q = t.to(x.dtype) if soft else F.one_hot(torch.where(valid, t, torch.zeros_like(t)), x.shape[1]).to(x.dtype)
    q = (1 - label_smoothing) * q + label_smoothing / x.shape[1]
    p = tempered_softmax(x, t2)
    q_log_q = torch.where(q > 0, q * _log_t(torch.where(q > 0, q, torch.ones_like(q)), t1), torch.zeros_like(q))
    per = (q_log_q - q * _log_t(p, t1) - (q.pow(2 - t1) - p.pow(2 - t1)) / (2 - t1)).sum(-1)
    per_item = torch.where(valid, per, torch.zeros_like(per))
    return _reduce(per_item, valid.sum().to(x.dtype), reduction, shape)


# ------------------------------------------------------------------------------------ binary forms
def _softplus(x):
    """log(1 + exp(x)) without F.softplus's switch to x above 20 (off by exp(-20), visible in float64)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def rooted_logit(x, k=2.0, cap=None):
    """k * (1 + exp(-x))^(1/k) = k * exp(softplus(-x) / k), elementwise, for a positive label.

    The loss of a logit x whose label is +1 (eq. 4 with z = y w.x, and the GAN loss of eq. 20-21);
    use rooted_logit(-x, k) for label -1. exp is continued linearly above `cap` (default:
    log_weight_cap(x.dtype)), so it is exact wherever the plain formula is finite and never overflows.
    """
    _check_positive("k", k)
    _check_cap(cap)
    t = _softplus(-x.to(_compute_dtype(x.dtype))) / k
    tc = t.clamp(max=log_weight_cap(x.dtype) if cap is None else cap)
    return k * torch.exp(tc) * (1 + (t - tc))


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
CE_OPTIONS = ("reduction", "ignore_index", "fused", "weight", "label_smoothing", "token_weight", "z_loss",
              "softcap")


@dataclass(frozen=True)
class LossSpec:
    """One registry entry: its function, the hyperparameters it takes, the call options it accepts, and,
    for a CE-shaped loss (a function of log p_y only), the builder of its LogProbForm."""
    fn: Callable
    params: tuple
    form: Optional[Callable] = None
    options: tuple = CE_OPTIONS
    check: Optional[Callable] = None  # validates the hyperparameters of a loss that has no form
    source: str = ""

    @property
    def ce_shaped(self):
        return self.form is not None

    @property
    def takes_probabilities(self):  # probability (soft) targets, e.g. from Mixup/CutMix
        return "label_smoothing" in self.options


SPECS = {
    "ce": LossSpec(cross_entropy, (), ce_form, source="cross-entropy, as F.cross_entropy"),
    "focal": LossSpec(focal_loss, ("alpha", "gamma"), focal_form, source="Lin et al. 2017, focal loss"),
    "root": LossSpec(root_loss, ("k", "m"), root_form, source="RLO, authors' code form (paper Fig. 4b)"),
    "root_paper": LossSpec(root_paper_loss, ("k", "cap"), root_paper_form, source="RLO, paper eq. (4)"),
    "square": LossSpec(square_loss, (), options=("reduction", "ignore_index"), source="Hui & Belkin 2021"),
    "sparsemax": LossSpec(sparsemax_loss, (), options=("reduction", "ignore_index"),
                          source="Martins & Astudillo 2016, eq. 17"),
    "gce": LossSpec(gce_loss, ("q", "cap"), gce_form, source="Zhang & Sabuncu 2018, eq. 6"),
    "poly1": LossSpec(poly1_loss, ("epsilon",), poly1_form, source="Leng et al. 2022, PolyLoss eq. 3"),
    "taylor_ce": LossSpec(taylor_ce_loss, ("order",), taylor_ce_form, source="Feng et al. 2020, eq. 8"),
    "bitempered": LossSpec(bitempered_loss, ("t1", "t2"), options=("reduction", "ignore_index",
                           "label_smoothing"), check=_check_temperatures, source="Amid et al. 2019, eq. 13"),
}
LOSSES = {name: spec.fn for name, spec in SPECS.items()}  # name -> function: the CLIs' choices
_ALL_PARAMS = frozenset(p for spec in SPECS.values() for p in spec.params)


def _spec(name):
    if name not in SPECS:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(SPECS)}")
    return SPECS[name]


def _bind(name, hyper, accepted):
    """The arguments of `hyper` that loss `name` accepts; other registry losses' hyperparameters are
    dropped (so one set of CLI flags can configure any loss), anything else is an error."""
    unknown = sorted(set(hyper) - set(accepted) - _ALL_PARAMS)
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)} for loss {name!r}; it accepts: "
                         f"{', '.join(accepted) or 'none'}")
    return {key: value for key, value in hyper.items() if key in accepted}


def _validate(spec, bound):
    params = {key: bound[key] for key in spec.params if key in bound}
    if spec.form is not None:
        return spec.form(**params)
    if spec.check is not None:
        spec.check(**params)
    return None


def get_loss(name, **hyper):
    """The loss `name` with its hyperparameters (and any call options) bound: f(logits, target, **kw).

    Arguments are checked now against the registry spec, so a bad k or a misspelt name fails before any
    training starts; hyperparameters of other registry losses are ignored.
    """
    spec = _spec(name)
    bound = _bind(name, hyper, spec.params + spec.options)
    _validate(spec, bound)

    def loss(logits, target, **kwargs):
        return spec.fn(logits, target, **{**bound, **kwargs})
    loss.__name__ = name
    return loss


def get_form(name, **hyper):
    """The LogProbForm of a CE-shaped loss, for linear_cross_loss and other fused paths."""
    spec = _spec(name)
    if not spec.ce_shaped:
        ce_shaped = sorted(n for n, s in SPECS.items() if s.ce_shaped)
        raise ValueError(f"loss {name!r} is not a function of log p_y; CE-shaped ones: {ce_shaped}")
    return _validate(spec, _bind(name, hyper, spec.params))


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


def _chunk_logits(h, weight, bias, batch):
    logits = h @ weight.t()
    if bias is not None:
        logits = logits + bias
    return _capped_logits(logits, batch)


def _grad_buffers(needs, hidden, weight, bias, dtype):
    d_hidden = torch.empty_like(hidden) if needs[0] else None
    d_weight = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if needs[1] else None
    d_bias = torch.zeros(bias.shape, dtype=dtype, device=bias.device) if bias is not None and needs[2] else None
    return d_hidden, d_weight, d_bias


def _accumulate(h, weight, g, rows, grads):
    """Add one chunk's d loss / d logits g to (dh, dW, db)."""
    d_hidden, d_weight, d_bias = grads
    if d_hidden is not None:
        d_hidden[rows] = g.to(weight.dtype) @ weight
    if d_weight is not None:
        d_weight.addmm_(g.t(), h.to(g.dtype))
    if d_bias is not None:
        d_bias.add_(g.sum(0))


def _finish_grads(grads, weight, bias):
    d_hidden, d_weight, d_bias = grads
    return (d_hidden,
            d_weight.to(weight.dtype) if d_weight is not None else None,
            d_bias.to(bias.dtype) if d_bias is not None else None)


def _linear_pass(hidden, weight, bias, batch, form, cap, chunk_size, row_grad=None, needs=(False,) * 3):
    """One pass over token chunks: per-row losses and, given per-row incoming gradients, (dh, dW, db)."""
    dtype = _compute_dtype(hidden.dtype)
    values = torch.empty(hidden.shape[0], dtype=dtype, device=hidden.device)
    grads = _grad_buffers(needs, hidden, weight, bias, dtype)
    for rows in _row_chunks(hidden.shape[0], weight.shape[0], chunk_size):
        b = batch.rows(rows)
        x, dcap = _chunk_logits(hidden[rows], weight, bias, b)
        lse, W, u, values[rows] = _rows(x, b, form, cap)
        if any(needs):
            g = _logit_grad(x, lse, W, u, row_grad[rows], b, form, cap, inplace=True)
            _accumulate(hidden[rows], weight, g.mul_(dcap) if dcap is not None else g, rows, grads)
    return values, _finish_grads(grads, weight, bias)


def _refuse_double_backward():
    if torch.is_grad_enabled():
        raise RuntimeError("linear_cross_loss does not support double backward (create_graph=True); "
                           "use the plain logits path (logprob_loss) for Hessian-vector products")


class _LinearLossReduced(torch.autograd.Function):
    """sum_i row_scale_i * loss_i of logits hidden @ weight.T + bias, never holding the N x V logits.

    One pass over token chunks: each chunk's logits give its loss and, since a scalar loss's gradient is
    known up to the incoming scalar, its gradient right away (three matrix products per chunk, as the
    unfused path). The first backward only scales the stored gradients (the Liger-Kernel /
    cut-cross-entropy idea); a second one (retain_graph=True) recomputes them chunk by chunk.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, batch, form, cap, chunk_size, row_scale):
        values, ctx.grads = _linear_pass(hidden, weight, bias, batch, form, cap, chunk_size, row_scale,
                                         ctx.needs_input_grad[:3])
        ctx.save_for_backward(hidden, weight, bias, row_scale)
        ctx.batch, ctx.form, ctx.cap, ctx.chunk_size = batch, form, cap, chunk_size
        return (values * row_scale).sum()

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        grads, ctx.grads = ctx.grads, None
        if grads is None:  # a second backward through a retained graph
            hidden, weight, bias, row_scale = ctx.saved_tensors
            _, grads = _linear_pass(hidden, weight, bias, ctx.batch, ctx.form, ctx.cap, ctx.chunk_size,
                                    row_scale, ctx.needs_input_grad[:3])
        for g in grads:  # the buffers are ours alone: scale in place rather than copy
            if g is not None and not bool(grad_out == 1):
                g.mul_(grad_out.to(g.dtype))
        return (*grads, None, None, None, None, None)


class _LinearLossPerItem(torch.autograd.Function):
    """Per-item loss of hidden @ weight.T + bias; backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, batch, form, cap, chunk_size):
        ctx.save_for_backward(hidden, weight, bias)
        ctx.batch, ctx.form, ctx.cap, ctx.chunk_size = batch, form, cap, chunk_size
        return _linear_pass(hidden, weight, bias, batch, form, cap, chunk_size)[0]

    @staticmethod
    def backward(ctx, grad_out):
        _refuse_double_backward()
        hidden, weight, bias = ctx.saved_tensors
        _, grads = _linear_pass(hidden, weight, bias, ctx.batch, ctx.form, ctx.cap, ctx.chunk_size,
                                grad_out, ctx.needs_input_grad[:3])
        return (*grads, None, None, None, None)


def _check_linear_shapes(hidden, weight, target):
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden (N, H) and weight (V, H) do not match: {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}")
    if target.shape not in (hidden.shape[:1], (hidden.shape[0], weight.shape[0])):
        raise ValueError(f"target shape {tuple(target.shape)} does not match hidden {tuple(hidden.shape)} "
                         f"(want ({hidden.shape[0]},) classes or ({hidden.shape[0]}, {weight.shape[0]}) "
                         "probabilities)")
    if target.dtype == torch.bool or (target.dtype.is_floating_point and target.dim() != 2):
        raise ValueError(f"target must hold integer class indices or probabilities, got dtype {target.dtype}")


def linear_cross_loss(hidden, weight, target, bias=None, loss="ce", reduction="mean", ignore_index=-100,
                      chunk_size=None, *, class_weight=None, label_smoothing=0.0, token_weight=None,
                      z_loss=0.0, softcap=None, **hyper):
    """A CE-shaped loss of logits = hidden @ weight.T + bias, computed over token chunks.

    hidden (N, H), weight (V, H), bias (V,) or None, target (N,) classes or (N, V) probabilities. Same
    value and gradients (hidden, weight, bias) as `get_loss(loss)(hidden @ weight.T + bias, target)`
    with the same options (class_weight is logprob_loss's `weight`), but the N x V logits never exist at
    once: peak extra memory is one chunk of logits plus the weight's gradient. Under torch.no_grad() (or
    when nothing requires grad) only the values are computed.
    """
    _check_reduction(reduction)
    form = loss if isinstance(loss, LogProbForm) else get_form(loss, **hyper)
    _check_linear_shapes(hidden, weight, target)
    t = target if target.dtype.is_floating_point else target.long()
    batch = _make_batch(weight.shape[0], t, ignore_index, class_weight, label_smoothing, z_loss, softcap)
    _check_token_weight(token_weight, hidden.shape[:1])
    cap = log_weight_cap(hidden.dtype)
    dtype = _compute_dtype(hidden.dtype)
    tw = None if token_weight is None else token_weight.to(device=hidden.device, dtype=dtype)
    needs_grad = torch.is_grad_enabled() and any(v is not None and v.requires_grad for v in (hidden, weight, bias))
    if reduction == "none" or not needs_grad:
        per = (_LinearLossPerItem.apply(hidden, weight, bias, batch, form, cap, chunk_size) if needs_grad
               else _linear_pass(hidden, weight, bias, batch, form, cap, chunk_size)[0])
        per = per if tw is None else per * tw
        return _reduce(per, batch.divisor(dtype), reduction, hidden.shape[:1])
    scale = torch.ones(hidden.shape[0], dtype=dtype, device=hidden.device) if tw is None else tw
    if reduction == "mean":
        divisor = batch.divisor(dtype)
        scale = scale / torch.where(divisor > 0, divisor, torch.ones_like(divisor))
    return _LinearLossReduced.apply(hidden, weight, bias, batch, form, cap, chunk_size, scale)


# ----------------------------------------------------------------------------------------- adapters
class Loss(torch.nn.Module):
    """Any registry loss as a module, usable wherever nn.CrossEntropyLoss is.

    Loss("root", k=8, m=10, label_smoothing=0.1)(logits, target); a class `weight` tensor is a buffer,
    so it follows the module's .to(device).
    """

    def __init__(self, name="root", weight=None, **params):
        super().__init__()
        self.name = name
        self.fn = get_loss(name, **params)
        if weight is not None and "weight" not in _spec(name).options:
            raise ValueError(f"loss {name!r} does not take class weights")
        self.register_buffer("weight", weight)
        self.params = params

    def forward(self, logits, target, **kwargs):
        if self.weight is not None:
            kwargs = {"weight": self.weight, **kwargs}
        return self.fn(logits, target, **kwargs)

    def extra_repr(self):
        return ", ".join([repr(self.name)] + [f"{key}={value!r}" for key, value in self.params.items()])


class RootedLoss(Loss):
    """RLO (authors' code form m (1 - p_y^(1/k))) as a drop-in for nn.CrossEntropyLoss."""

    def __init__(self, k=3.0, m=3.0, **options):
        super().__init__("root", k=k, m=m, **options)


def causal_lm_loss(name="root", **params):
    """A `compute_loss_func` for transformers' Trainer: loss `name` on a causal LM's next-token targets.

    Trainer(..., compute_loss_func=losses.causal_lm_loss("root", k=5, m=5)). The logits at position t
    predict labels[t + 1] (-100 ignored, as HF's models); the summed loss is divided by
    `num_items_in_batch` when the Trainer passes it (the token count of the whole accumulated batch, so
    gradient accumulation weighs every token alike, as ft_opt.py does), else by this batch's token count.
    """
    fn = get_loss(name, **params)
    ignore_index = params.get("ignore_index", -100)

    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits = logits[:, :-1].reshape(-1, logits.shape[-1])
        targets = labels[:, 1:].reshape(-1).to(logits.device)
        total = fn(logits, targets, reduction="sum")
        if num_items_in_batch is None:
            num_items_in_batch = (targets != ignore_index).sum()
        return total / torch.as_tensor(num_items_in_batch, device=total.device).clamp(min=1)
    return compute_loss
