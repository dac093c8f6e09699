"""Options of the CE-shaped losses: class weights, label smoothing, probability targets, token weights,
z-loss and soft-capping, on logits and through linear_cross_loss."""
import pytest
import torch
import torch.nn.functional as F

import losses as L

CE_SHAPED = [name for name, spec in L.SPECS.items() if spec.ce_shaped]


def _data(n=12, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, dtype=torch.float64, generator=g) * 2
    t = torch.randint(0, c, (n,), generator=g)
    t[[1, 4]] = -100
    w = torch.rand(c, dtype=torch.float64, generator=g) + 0.1
    q = torch.softmax(torch.randn(n, c, dtype=torch.float64, generator=g) * 2, 1)
    return x, t, w, q


OPTION_CASES = {  # name -> (options for the logits path, target kind)
    "weight": (lambda w: dict(weight=w), "index"),
    "smoothing": (lambda w: dict(label_smoothing=0.2), "index"),
    "weight+smoothing": (lambda w: dict(weight=w, label_smoothing=0.3), "index"),
    "soft": (lambda w: {}, "soft"),
    "soft+weight+smoothing": (lambda w: dict(weight=w, label_smoothing=0.1), "soft"),
}


# ------------------------------------------------------------------------ ce == F.cross_entropy
@pytest.mark.parametrize("case", list(OPTION_CASES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("fused", [True, False])
def test_ce_options_match_torch(case, reduction, fused):
    x, t, w, q = _data()
    make, kind = OPTION_CASES[case]
    opts = make(w)
    target = t if kind == "index" else q
    x.requires_grad_(True)
    ours = L.cross_entropy(x, target, reduction=reduction, fused=fused, **opts)
    ref = F.cross_entropy(x, target, reduction=reduction, **opts)
    torch.testing.assert_close(ours, ref)
    go = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(ours, x, go)[0], torch.autograd.grad(ref, x, go)[0])


def test_ce_options_on_multidimensional_and_low_precision_logits():
    x = torch.randn(3, 5, 4, 2)
    t = torch.randint(0, 5, (3, 4, 2))
    t[0, 1, 1] = -100
    w = torch.rand(5) + 0.5
    q = torch.softmax(torch.randn(3, 5, 4, 2), 1)
    for target, opts in ((t, dict(weight=w, label_smoothing=0.1)), (q, dict(label_smoothing=0.2))):
        torch.testing.assert_close(L.cross_entropy(x, target, **opts), F.cross_entropy(x, target, **opts))
        torch.testing.assert_close(L.cross_entropy(x.bfloat16(), target, **opts),
                                   F.cross_entropy(x.bfloat16().float(), target, **opts))


def test_unnormalised_soft_targets_match_torch():
    """The definition is homogeneous in q, so ce needs no normalisation (as F.cross_entropy)."""
    x, _, w, q = _data()
    torch.testing.assert_close(L.cross_entropy(x, 3 * q, weight=w), F.cross_entropy(x, 3 * q, weight=w))


# ---------------------------------------------------------------- the definition for the other forms
def _reference(name, x, t_or_q, w=None, eps=0.0, k=3.0, m=2.0):
    """Per-item W phi(u), u = sum_c w_c q_c log p_c / W, written from the README's definition."""
    lp = torch.log_softmax(x, 1)
    q = t_or_q if t_or_q.dtype.is_floating_point else F.one_hot(t_or_q.clamp(min=0), x.shape[1]).double()
    q = (1 - eps) * q + eps / x.shape[1]
    wq = q * (w if w is not None else 1)
    W = wq.sum(1)
    u = (wq * lp).sum(1) / W
    phi = {"ce": lambda u: -u, "root": lambda u: m * (1 - torch.exp(u / k)),
           "root_paper": lambda u: k * (torch.exp(-u / k) - 1)}[name]
    per = W * phi(u)
    if not t_or_q.dtype.is_floating_point:
        per = torch.where(t_or_q != -100, per, torch.zeros_like(per))
    return per


@pytest.mark.parametrize("name", ["root", "root_paper"])
@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_rooted_forms_follow_the_definition(name, case):
    x, t, w, q = _data()
    make, kind = OPTION_CASES[case]
    opts = make(w)
    target = t if kind == "index" else q
    f = L.get_loss(name, k=3.0, m=2.0)
    expect = _reference(name, x, target, opts.get("weight"), opts.get("label_smoothing", 0.0))
    torch.testing.assert_close(f(x, target, reduction="none", **opts), expect)


def test_soft_target_gradient_formula():
    """d/dz of W phi(u) = -phi'(u) (W softmax - w q); for root -phi'(u) = (m/k) exp(u/k)."""
    x, _, w, q = _data()
    x.requires_grad_(True)
    k, m = 4.0, 3.0
    g, = torch.autograd.grad(L.root_loss(x, q, k=k, m=m, weight=w, reduction="sum"), x)
    p = torch.softmax(x, 1).detach()
    wq = w * q
    W = wq.sum(1, keepdim=True)
    u = (wq * torch.log(p)).sum(1, keepdim=True) / W
    torch.testing.assert_close(g, (m / k) * torch.exp(u / k) * (W * p - wq))


def test_one_hot_soft_targets_equal_class_targets():
    x, t, w, _ = _data()
    t = t.clamp(min=0)
    onehot = F.one_hot(t, x.shape[1]).double()
    for name in CE_SHAPED:
        f = L.get_loss(name)
        torch.testing.assert_close(f(x, onehot, reduction="none", weight=w),
                                   f(x, t, reduction="none", weight=w))


# ---------------------------------------------------------------------- fused path, gradcheck
@pytest.mark.parametrize("name", CE_SHAPED)
@pytest.mark.parametrize("case", list(OPTION_CASES) + ["token_weight", "z_loss+softcap"])
def test_fused_equals_plain_and_gradcheck(name, case):
    x, t, w, q = _data(n=8, c=4)
    if case in OPTION_CASES:
        make, kind = OPTION_CASES[case]
        opts, target = make(w), (t if kind == "index" else q)
    elif case == "token_weight":
        opts, target = dict(token_weight=torch.rand(8, dtype=torch.float64)), t
    else:
        opts, target = dict(z_loss=0.1, softcap=2.0), t
    f = L.get_loss(name)
    x.requires_grad_(True)
    a, b = f(x, target, fused=True, **opts), f(x, target, fused=False, **opts)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0])
    assert torch.autograd.gradcheck(lambda z: f(z, target, reduction="none", **opts), (x,))
    assert torch.autograd.gradgradcheck(lambda z: f(z, target, **opts), (x,))


def test_token_weight_z_loss_and_softcap_formulas():
    x, t, w, _ = _data()
    s = torch.rand(len(t), dtype=torch.float64)
    valid = t != -100
    base = F.cross_entropy(x, t, weight=w, reduction="none")
    torch.testing.assert_close(L.cross_entropy(x, t, weight=w, token_weight=s), (s * base).sum() / w[t[valid]].sum())
    lse = torch.logsumexp(x, 1)
    torch.testing.assert_close(L.cross_entropy(x, t, z_loss=0.01, reduction="none"),
                               F.cross_entropy(x, t, reduction="none") + 0.01 * lse ** 2 * valid)
    torch.testing.assert_close(L.cross_entropy(x, t, softcap=1.5, reduction="none"),
                               F.cross_entropy(1.5 * torch.tanh(x / 1.5), t, reduction="none"))


# ----------------------------------------------------------------------------- linear_cross_loss
@pytest.mark.parametrize("name", ["ce", "root", "root_paper"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", ["weight+smoothing", "soft", "token+zloss+softcap"])
def test_linear_cross_loss_options_equal_logits_path(name, reduction, case):
    torch.manual_seed(3)
    h = torch.randn(11, 4, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 7, (11,))
    t[2] = -100
    cw = torch.rand(7, dtype=torch.float64) + 0.2
    if case == "weight+smoothing":
        target, lin, logit = t, dict(class_weight=cw, label_smoothing=0.2), dict(weight=cw, label_smoothing=0.2)
    elif case == "soft":
        target = torch.softmax(torch.randn(11, 7, dtype=torch.float64), 1)
        lin = logit = dict(label_smoothing=0.1)
    else:
        target = t
        lin = logit = dict(token_weight=torch.rand(11, dtype=torch.float64), z_loss=1e-2, softcap=3.0)
    out = L.linear_cross_loss(h, wt, target, b, loss=name, reduction=reduction, chunk_size=4, k=3, m=2, **lin)
    ref = L.get_loss(name, k=3, m=2)(h @ wt.t() + b, target, reduction=reduction, fused=False, **logit)
    torch.testing.assert_close(out, ref)
    go = torch.randn_like(ref)
    for a, e in zip(torch.autograd.grad(out, (h, wt, b), go), torch.autograd.grad(ref, (h, wt, b), go)):
        torch.testing.assert_close(a, e)


# ------------------------------------------------------------------------- empty and all-ignored
@pytest.mark.parametrize("name", CE_SHAPED)
def test_empty_and_all_ignored_batches(name):
    f = L.get_loss(name)
    w = torch.rand(4) + 0.1
    for x, target in ((torch.randn(0, 4, requires_grad=True), torch.zeros(0, dtype=torch.long)),
                      (torch.randn(5, 4, requires_grad=True), torch.full((5,), -100))):
        loss = f(x, target, weight=w, label_smoothing=0.1)
        assert loss.item() == 0.0
        assert (torch.autograd.grad(loss, x)[0] == 0).all()
    h, wt = torch.randn(0, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    loss = L.linear_cross_loss(h, wt, torch.zeros(0, dtype=torch.long), loss=name)
    assert loss.item() == 0.0
    loss.backward()
    assert (wt.grad == 0).all()


# ------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("opts, match", [
    (dict(weight=torch.tensor([1.0, -1.0, 1.0])), "weight must be finite and >= 0"),
    (dict(weight=torch.ones(4)), r"weight must have shape \(3,\)"),
    (dict(label_smoothing=1.0), r"label_smoothing must be a number in \[0, 1\)"),
    (dict(label_smoothing=-0.1), r"label_smoothing must be a number in \[0, 1\)"),
    (dict(token_weight=torch.ones(3)), "token_weight shape"),
    (dict(token_weight=-torch.ones(6)), "token_weight must be finite"),
    (dict(z_loss=-1.0), "z_loss must be"),
    (dict(softcap=0.0), "softcap must be"),
])
def test_bad_options_raise_value_error(opts, match):
    x, t = torch.randn(6, 3), torch.randint(0, 3, (6,))
    with pytest.raises(ValueError, match=match):
        L.root_loss(x, t, **opts)


def test_bad_soft_targets_raise_value_error():
    x = torch.randn(4, 3)
    q = torch.softmax(torch.randn(4, 3), 1)
    q[0, 0] = -0.1
    with pytest.raises(ValueError, match="probability targets must be finite and >= 0"):
        L.root_loss(x, q)
    with pytest.raises(ValueError, match="class probabilities shaped like the logits"):
        L.root_loss(x, torch.rand(4, 2))
    with pytest.raises(ValueError, match="takes class indices"):
        L.square_loss(x, torch.softmax(x, 1))
    with pytest.raises(ValueError, match="target shape"):
        L.linear_cross_loss(torch.randn(4, 2), torch.randn(3, 2), torch.rand(4, 2))
