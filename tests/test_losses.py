import math

import pytest
import torch
import torch.nn.functional as F

import losses as L

CE_SHAPED = ["ce", "focal", "root", "root_paper"]
HYPER = dict(k=3.0, m=2.0, alpha=0.25, gamma=3.0)


def _data(n=40, c=7, dtype=torch.float64, ignore=(0, 5)):
    x = torch.randn(n, c, dtype=dtype) * 2
    t = torch.randint(0, c, (n,))
    t[list(ignore)] = -100
    return x, t


# ------------------------------------------------------------------ values vs independent formulas
def _reference(name, x, t, k=3.0, m=2.0, alpha=0.25, gamma=3.0):
    """Per-item values written straight from the formulas, in float64, for valid targets."""
    p = torch.softmax(x.double(), dim=1)[torch.arange(len(t)), t]
    if name == "ce":
        return -torch.log(p)
    if name == "root":
        return m * (1 - p ** (1 / k))
    if name == "root_paper":
        return k * (p ** (-1 / k) - 1)
    if name == "focal":
        return -alpha * (1 - p) ** gamma * torch.log(p)
    if name == "square":
        return ((x.double() - F.one_hot(t, x.shape[1]).double()) ** 2).mean(1)
    raise KeyError(name)


@pytest.mark.parametrize("name", CE_SHAPED + ["square"])
@pytest.mark.parametrize("fused", [True, False])
def test_values_match_formulas(name, fused):
    x, t = _data(ignore=())
    kw = {} if name == "square" else {"fused": fused}
    got = L.get_loss(name, **HYPER)(x, t, reduction="none", **kw)
    torch.testing.assert_close(got, _reference(name, x, t, **HYPER))


def test_sparsemax_loss_matches_definition():
    x, t = _data(ignore=())
    p, tau = L.sparsemax(x)
    torch.testing.assert_close(p.sum(1), torch.ones(len(x), dtype=x.dtype))
    assert (p >= 0).all()
    # L(z, y) = max over the simplex of <p, z> - 0.5 |p|^2, minus z_y, plus 0.5 (Martins & Astudillo)
    expect = (p * x).sum(1) - 0.5 * (p ** 2).sum(1) - x[torch.arange(len(t)), t] + 0.5
    torch.testing.assert_close(L.sparsemax_loss(x, t, reduction="none"), expect)
    g, = torch.autograd.grad(L.sparsemax_loss(x.requires_grad_(), t, reduction="sum"), x)
    torch.testing.assert_close(g, p - F.one_hot(t, x.shape[1]).double())


def test_rlo_code_form_is_scaled_ce_gradient():
    x, t = _data(ignore=())
    x.requires_grad_(True)
    k, m = 4.0, 3.0
    g_root, = torch.autograd.grad(L.root_loss(x, t, k=k, m=m, reduction="sum"), x)
    g_ce, = torch.autograd.grad(F.cross_entropy(x, t, reduction="sum"), x)
    p = torch.softmax(x, 1)[torch.arange(len(t)), t].detach()
    torch.testing.assert_close(g_root, (m / k) * p[:, None] ** (1 / k) * g_ce)
    g_paper, = torch.autograd.grad(L.root_paper_loss(x, t, k=k, reduction="sum"), x)
    torch.testing.assert_close(g_paper, p[:, None] ** (-1 / k) * g_ce)


def test_paper_form_upper_bounds_ce_and_tends_to_it():
    x, t = _data(ignore=())
    ce = L.cross_entropy(x, t, reduction="none")
    for k in (1.5, 3.0, 10.0):
        assert (L.root_paper_loss(x, t, k=k, reduction="none") >= ce - 1e-12).all()
    torch.testing.assert_close(L.root_paper_loss(x, t, k=1e6, reduction="none"), ce, rtol=1e-4, atol=1e-4)
    # the code form: m * (1 - p^(1/k)) with m = k tends to CE as well
    torch.testing.assert_close(L.root_loss(x, t, k=1e6, m=1e6, reduction="none"), ce, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("name", list(L.LOSSES))
def test_gradcheck_float64(name):
    x, t = _data(n=12, c=5, ignore=(3,))
    x.requires_grad_(True)
    f = L.get_loss(name, **HYPER)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(lambda z: f(z, t, reduction=reduction), (x,))


@pytest.mark.parametrize("name", CE_SHAPED)
def test_fused_double_backward(name):
    """Hessian-vector products (create_graph=True) through the fused Function are exact."""
    x, t = _data(n=10, c=4, ignore=(2,))
    x.requires_grad_(True)
    f = L.get_loss(name, **HYPER)
    assert torch.autograd.gradgradcheck(lambda z: f(z, t), (x,))


@pytest.mark.parametrize("name", CE_SHAPED)
def test_fused_equals_plain_autograd(name):
    x, t = _data()
    x.requires_grad_(True)
    f = L.get_loss(name, **HYPER)
    a = f(x, t, fused=True)
    b = f(x, t, fused=False)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.autograd.grad(a, x)[0], torch.autograd.grad(b, x)[0])


# ------------------------------------------------------------------ F.cross_entropy semantics
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore_index", [-100, 2])
def test_ce_matches_torch(reduction, ignore_index):
    x, t = _data(dtype=torch.float32, ignore=())
    t[[0, 5, 7]] = ignore_index
    x.requires_grad_(True)
    a = L.cross_entropy(x, t, reduction=reduction, ignore_index=ignore_index)
    b = F.cross_entropy(x, t, reduction=reduction, ignore_index=ignore_index)
    torch.testing.assert_close(a, b)
    w = torch.randn_like(a)
    torch.testing.assert_close(torch.autograd.grad(a, x, w)[0], torch.autograd.grad(b, x, w)[0])


def test_multidimensional_logits_like_cross_entropy():
    x = torch.randn(3, 5, 4, 2)
    t = torch.randint(0, 5, (3, 4, 2))
    t[0, 1, 1] = -100
    for reduction in ("mean", "none"):
        torch.testing.assert_close(L.cross_entropy(x, t, reduction=reduction),
                                   F.cross_entropy(x, t, reduction=reduction))


@pytest.mark.parametrize("name", list(L.LOSSES))
def test_ignored_items_do_not_count(name):
    x, t = _data()
    f = L.get_loss(name, **HYPER)
    per = f(x, t, reduction="none")
    assert (per[t == -100] == 0).all()
    valid = t != -100
    torch.testing.assert_close(f(x, t), per[valid].mean())
    torch.testing.assert_close(f(x, t, reduction="sum"), per.sum())
    # changing the logits of ignored rows changes nothing
    x2 = x.clone()
    x2[~valid] += 100
    torch.testing.assert_close(f(x2, t), f(x, t))


@pytest.mark.parametrize("name", list(L.LOSSES))
def test_all_ignored_gives_zero_not_nan(name):
    x = torch.randn(6, 4, requires_grad=True)
    t = torch.full((6,), -100)
    loss = L.get_loss(name, **HYPER)(x, t)
    assert loss.item() == 0.0
    g, = torch.autograd.grad(loss, x)
    assert (g == 0).all()


# ---------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(L.LOSSES))
def test_extreme_logits_stay_finite(name, dtype):
    x = (torch.randn(16, 6) * 1e4).to(dtype).requires_grad_(True)
    t = torch.randint(0, 6, (16,))
    loss = L.get_loss(name, **HYPER)(x, t)
    g, = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(g).all()
    assert g.dtype == dtype and loss.dtype == torch.float32


def test_low_precision_inputs_are_computed_in_float32():
    """fp16/bf16 logits: value and gradient as float32 arithmetic gives them (float64 reference on the same
    rounded input, float32 tolerance), not as fp16/bf16 arithmetic would (errors ~1e-3 to 1e-2)."""
    x = torch.randn(256, 1000) * 4
    t = torch.randint(0, 1000, (256,))
    for dtype in (torch.float16, torch.bfloat16):
        for name in CE_SHAPED:
            f = L.get_loss(name, **HYPER)
            xl = x.to(dtype).requires_grad_()
            x64 = xl.detach().double().requires_grad_()
            value, ref = f(xl, t), f(x64, t)
            (grad,), (ref_grad,) = torch.autograd.grad(value, xl), torch.autograd.grad(ref, x64)
            assert abs(value.double().item() - ref.item()) <= 2e-6 * abs(ref.item()) + 1e-7, (name, dtype)
            assert grad.dtype == dtype
            # the gradient is rounded to the input's dtype once, at the end: within half an ulp of the reference
            ulp = torch.finfo(dtype).eps
            assert torch.allclose(grad.double(), ref_grad, rtol=ulp, atol=ulp * ref_grad.abs().max().item()), (name, dtype)


def test_softmax_then_pow_is_the_bug_we_avoid():
    """The authors' softmax-then-pow form gives NaN gradients once p_y underflows; ours does not."""
    x = torch.tensor([[0.0, 200.0]], requires_grad=True)
    t = torch.tensor([0])
    p = torch.softmax(x, 1)[0, 0]
    g_bad, = torch.autograd.grad(3 * (1 - p ** (1 / 3)), x)
    assert torch.isnan(g_bad).any()
    g, = torch.autograd.grad(L.root_loss(x, t), x)
    assert torch.isfinite(g).all()


def test_paper_form_cap_is_linear_continuation():
    k = 3.0
    lp = torch.tensor([-k * L.LOG_WEIGHT_CAP + 1e-3, -k * L.LOG_WEIGHT_CAP - 5.0], dtype=torch.float64)
    form = L.root_paper_form(k)
    v = form.value(lp, L.LOG_WEIGHT_CAP)
    assert v[0] == pytest.approx(k * (math.exp(-lp[0].item() / k) - 1))
    slope = math.exp(L.LOG_WEIGHT_CAP)  # d value / d(-lp) above the cap
    assert v[1] == pytest.approx(k * (math.exp(L.LOG_WEIGHT_CAP) - 1) + slope * 5.0, rel=1e-6)


# ------------------------------------------------------------------------------ binary forms
def test_rooted_logit_formula_and_gradient():
    x = torch.linspace(-20, 20, 81, dtype=torch.float64, requires_grad=True)
    k = 2.5
    torch.testing.assert_close(L.rooted_logit(x, k), k * (1 + torch.exp(-x)) ** (1 / k))
    assert torch.autograd.gradcheck(lambda z: L.rooted_logit(z, k), (x,))
    torch.testing.assert_close(L.logistic_logit(x), torch.log1p(torch.exp(-x)))


def test_rooted_logit_extremes_finite():
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.tensor([-1e4, -100.0, 0.0, 100.0, 1e4]).to(dtype).requires_grad_(True)
        v = L.rooted_logit(x, 2.0)
        g, = torch.autograd.grad(v.sum(), x)
        assert torch.isfinite(v).all() and torch.isfinite(g).all()


def test_binary_loss_reductions():
    z = torch.randn(20, dtype=torch.float64)
    per = L.binary_loss("rlo", z, k=4, reduction="none")
    torch.testing.assert_close(L.binary_loss("rlo", z, k=4), per.mean())
    torch.testing.assert_close(L.binary_loss("lr", z, reduction="sum"), F.softplus(-z).sum())
    with pytest.raises(ValueError, match="unknown binary loss"):
        L.binary_loss("hinge", z)


# ------------------------------------------------------------------------------ k schedules
def test_k_schedules():
    assert [L.KSchedule("constant", 5)(e) for e in (0, 3)] == [5, 5]
    assert [L.KSchedule("linear", 3, step=2)(e) for e in (0, 1, 4)] == [3, 5, 11]
    exp = L.KSchedule("exp", 2, rate=2)
    assert [exp(e) for e in (0, 1, 3)] == [2, 4, 16]
    capped = L.KSchedule("exp_max", 2, rate=2, k_max=10)
    assert [capped(e) for e in (0, 1, 2, 3, 10)] == [2, 4, 8, 10, 10]
    with pytest.raises(ValueError, match="unknown k schedule"):
        L.KSchedule("cosine")
    with pytest.raises(ValueError, match="k must be"):
        L.KSchedule("constant", 0)


# ---------------------------------------------------------------------- chunked linear + loss
@pytest.mark.parametrize("name", CE_SHAPED)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_chunked_equals_unfused(name, reduction, use_bias):
    h = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(13, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(13, dtype=torch.float64, requires_grad=True) if use_bias else None
    t = torch.randint(0, 13, (37,))
    t[[4, 20]] = -100
    logits = h @ w.t() + (b if use_bias else 0)
    ref = L.get_loss(name, **HYPER)(logits, t, reduction=reduction)
    out = L.linear_cross_loss(h, w, t, b, loss=name, reduction=reduction, chunk_size=5, **HYPER)
    torch.testing.assert_close(out, ref)
    go = torch.randn_like(ref)
    inputs = (h, w, b) if use_bias else (h, w)
    for a, e in zip(torch.autograd.grad(out, inputs, go), torch.autograd.grad(ref, inputs, go)):
        torch.testing.assert_close(a, e)


def test_chunked_frozen_weight_and_all_ignored():
    h = torch.randn(9, 4, requires_grad=True)
    w = torch.randn(6, 4)  # no grad: a frozen head
    t = torch.randint(0, 6, (9,))
    g, = torch.autograd.grad(L.linear_cross_loss(h, w, t, chunk_size=4), h)
    g_ref, = torch.autograd.grad(F.cross_entropy(h @ w.t(), t), h)
    torch.testing.assert_close(g, g_ref)
    loss = L.linear_cross_loss(h, w, torch.full((9,), -100))
    assert loss.item() == 0.0


def test_chunked_gradient_accumulation_scale():
    """Backward multiplies the precomputed gradients by the incoming scalar (e.g. 1/grad_accum)."""
    h = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 7, (10,))
    (0.25 * L.linear_cross_loss(h, w, t, loss="root", k=5, m=5)).backward()
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    (0.25 * L.root_loss(h @ w.t(), t, k=5, m=5)).backward()
    torch.testing.assert_close(gh, h.grad)
    torch.testing.assert_close(gw, w.grad)


# ------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("kwargs, match", [
    (dict(name="root", k=0), "k must be"),
    (dict(name="root", k=-1), "k must be"),
    (dict(name="root", m=0), "m must be"),
    (dict(name="root_paper", k=float("nan")), "k must be"),
    (dict(name="focal", gamma=-1), "gamma must be"),
    (dict(name="nope"), "unknown loss"),
])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.get_loss(**kwargs)


def test_bad_call_arguments_raise():
    x, t = _data(dtype=torch.float32)
    f = L.get_loss("root")
    with pytest.raises(ValueError, match="reduction must be"):
        f(x, t, reduction="avg")
    bad = t.clone()
    bad[1] = 7
    with pytest.raises(ValueError, match="out of range"):
        f(x, bad)
    bad[1] = -3
    with pytest.raises(ValueError, match="out of range"):
        f(x, bad)
    with pytest.raises(ValueError, match="integer class indices"):
        f(x, t.float())
    with pytest.raises(ValueError, match="does not match"):
        f(x, t[:-1])
    with pytest.raises(ValueError, match="not a function of log p_y"):
        L.linear_cross_loss(torch.randn(3, 2), torch.randn(4, 2), torch.zeros(3, dtype=torch.long),
                            loss="square")
    with pytest.raises(ValueError, match="out of range"):
        L.linear_cross_loss(torch.randn(3, 2), torch.randn(4, 2), torch.tensor([0, 1, 9]))


def test_chunked_refuses_double_backward():
    h = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64)
    loss = L.linear_cross_loss(h, w, torch.randint(0, 4, (5,)))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, h, create_graph=True)


def test_default_chunking_covers_all_rows():
    h = torch.randn(70, 4, dtype=torch.float64)
    w = torch.randn(300000, 4, dtype=torch.float64) * 0.01  # 2^24 / 3e5 = 55 rows per chunk
    t = torch.randint(0, 300000, (70,))
    per = L.linear_cross_loss(h, w, t, reduction="none")
    torch.testing.assert_close(per, L.cross_entropy(h @ w.t(), t, reduction="none"))
