"""losses.py against float64 references where float32 used to lose the answer, and its argument checks."""
import math

import pytest
import torch

import losses as L


def _rows_with_logprob(lp_target, c=6, dtype=torch.float32):
    """Logits whose target (class 0) has log-probability about lp_target, one row per value."""
    x = torch.zeros(len(lp_target), c, dtype=torch.float64)
    x[:, 1:] = -torch.tensor(lp_target, dtype=torch.float64)[:, None]  # p_0 = 1 / (1 + (c-1) e^-lp)
    return x.to(dtype), torch.zeros(len(lp_target), dtype=torch.long)


@pytest.mark.parametrize("fused, create_graph", [(False, False), (True, True)])
def test_root_gradient_exact_where_p_root_underflows(fused, create_graph):
    """p^(1/k) < 2^-24: expm1's backward (result + 1) gave exactly 0 on the plain-autograd path."""
    x, t = _rows_with_logprob([-60.0, -90.0, -150.0, -3.0])
    x.requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    g, = torch.autograd.grad(L.root_loss(x, t, k=3, m=3, fused=fused, reduction="sum"), x,
                             create_graph=create_graph)
    g64, = torch.autograd.grad(L.root_loss(x64, t, k=3, m=3, fused=False, reduction="sum"), x64)
    assert (g64[:, 0] != 0).all()
    torch.testing.assert_close(g.double(), g64, rtol=1e-5, atol=0)


def test_root_paper_exact_at_vocabulary_size_initialisation():
    """k = 1 at V = 50272: t = log(V) = 10.8 was above the old cap of 10 for almost every row."""
    torch.manual_seed(0)
    x = torch.randn(8, 50272) * 0.5
    t = torch.randint(0, 50272, (8,))
    for k in (1.0, 2.0):
        got = L.root_paper_loss(x, t, k=k, reduction="none")
        p = torch.softmax(x.double(), 1)[torch.arange(8), t]
        torch.testing.assert_close(got.double(), k * (p ** (-1 / k) - 1), rtol=1e-5, atol=0)


def test_gan_form_gradient_exact_at_minus_30():
    x = torch.tensor([-30.0, -60.0, 5.0], requires_grad=True)
    g, = torch.autograd.grad(L.rooted_logit(x, 2.0).sum(), x)
    x64 = x.detach().double()
    exact = -(1 + torch.exp(-x64)) ** (1 / 2 - 1) * torch.exp(-x64)  # d/dx of k (1 + e^-x)^(1/k)
    torch.testing.assert_close(g.double(), exact, rtol=1e-5, atol=0)


def test_cap_is_dtype_aware_and_a_parameter():
    assert L.log_weight_cap(torch.float16) == pytest.approx(math.log(65504) - 1)
    assert L.log_weight_cap(torch.float32) == pytest.approx(math.log(torch.finfo(torch.float32).max) - 16)
    assert L.log_weight_cap(torch.bfloat16) == L.log_weight_cap(torch.float32)
    assert L.log_weight_cap(torch.float64) > 690
    x, t = _rows_with_logprob([-40.0])  # t = 40/k = 20 for k = 2: exact by default, linear above cap=10
    v = L.root_paper_loss(x, t, k=2.0, reduction="none").double()
    capped = L.root_paper_loss(x, t, k=2.0, reduction="none", cap=10.0).double()
    lp = torch.log_softmax(x.double(), 1)[0, 0]
    a = -lp / 2
    torch.testing.assert_close(v, 2 * torch.expm1(a)[None], rtol=1e-5, atol=0)
    torch.testing.assert_close(capped, 2 * (math.exp(10) * (1 + a - 10) - 1)[None], rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match="cap must be"):
        L.get_loss("root_paper", cap=0)


def test_float16_gradients_stay_finite_under_the_fp16_cap():
    x = torch.tensor([[0.0, 300.0], [0.0, 50.0]], dtype=torch.float16, requires_grad=True)
    t = torch.tensor([0, 0])
    g, = torch.autograd.grad(L.root_paper_loss(x, t, k=1.0), x)
    assert torch.isfinite(g).all()


# ------------------------------------------------------------------------------- linear_cross_loss
def _head(n=9, h=4, v=6):
    torch.manual_seed(1)
    hidden = torch.randn(n, h, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, dtype=torch.float64, requires_grad=True)
    return hidden, weight, torch.randint(0, v, (n,))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_second_backward_with_retain_graph(reduction):
    hidden, weight, t = _head()
    loss = L.linear_cross_loss(hidden, weight, t, loss="root", k=3, m=3, reduction=reduction, chunk_size=4)
    first = torch.autograd.grad(2.0 * loss, (hidden, weight), retain_graph=True)
    second = torch.autograd.grad(0.5 * loss, (hidden, weight))
    for a, b in zip(first, second):
        torch.testing.assert_close(a, 4.0 * b)


def test_linear_no_grad_computes_no_gradient(monkeypatch):
    hidden, weight, t = _head()
    expect = L.linear_cross_loss(hidden, weight, t, loss="root_paper", k=2).detach()

    def boom(*args, **kwargs):
        raise AssertionError("a gradient was computed under no_grad")
    monkeypatch.setattr(L, "_logit_grad", boom)
    with torch.no_grad():
        got = L.linear_cross_loss(hidden, weight, t, loss="root_paper", k=2)
    torch.testing.assert_close(got, expect)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_double_backward_is_a_clear_error(reduction):
    hidden, weight, t = _head()
    loss = L.linear_cross_loss(hidden, weight, t, reduction=reduction).sum()
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, hidden, create_graph=True)


# ------------------------------------------------------------------------------------- targets
@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
@pytest.mark.parametrize("name", ["ce", "root", "square", "sparsemax", "gce", "bitempered"])
def test_any_integer_target_dtype(name, dtype):
    x = torch.randn(10, 5)
    t = torch.randint(0, 5, (10,))
    f = L.get_loss(name)
    torch.testing.assert_close(f(x, t.to(dtype), ignore_index=3), f(x, t, ignore_index=3))
    torch.testing.assert_close(L.linear_cross_loss(x, torch.eye(5), t.to(dtype)), L.cross_entropy(x, t))


def test_sparsemax_shift_invariant_in_float32():
    torch.manual_seed(0)
    x = torch.randn(64, 10) * 3
    t = torch.randint(0, 10, (64,))
    base = L.sparsemax_loss(x, t, reduction="none")
    for shift in (1e4, -1e4):
        shifted = x + shift  # rounded to float32's grid at 1e4 (spacing 1e-3)
        got = L.sparsemax_loss(shifted, t, reduction="none")
        torch.testing.assert_close(got, base, atol=1e-2, rtol=0)
        ref = L.sparsemax_loss(shifted.double() - shift, t, reduction="none")  # float64 on the same inputs
        torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=0)
        p, _ = L.sparsemax(shifted)
        torch.testing.assert_close(p.sum(1), torch.ones(64))


# ------------------------------------------------------------------------------------ get_loss
def test_get_loss_rejects_unknown_arguments():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) mm for loss 'root'; it accepts: k, m, "):
        L.get_loss("root", k=3, mm=7)
    with pytest.raises(ValueError, match="bogus, zz .*it accepts: reduction, ignore_index$"):
        L.get_loss("square", zz=1, bogus=2)
    with pytest.raises(ValueError, match="unknown argument"):
        L.get_form("root", kk=3)
    # another registry loss's hyperparameters are dropped: one set of CLI flags configures any loss
    x, t = torch.randn(5, 3), torch.randint(0, 3, (5,))
    torch.testing.assert_close(L.get_loss("root", k=2, m=2, alpha=0.5, q=0.1)(x, t), L.root_loss(x, t, k=2, m=2))


def test_registry_is_one_table():
    assert set(L.LOSSES) == set(L.SPECS)
    for name, spec in L.SPECS.items():
        assert L.LOSSES[name] is spec.fn and spec.source
        assert spec.ce_shaped == (name in ("ce", "focal", "root", "root_paper", "gce", "poly1", "taylor_ce"))
        if spec.ce_shaped:
            assert isinstance(L.get_form(name), L.LogProbForm)
        else:
            with pytest.raises(ValueError, match="not a function of log p_y"):
                L.get_form(name)
