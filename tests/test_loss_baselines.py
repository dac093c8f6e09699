"""Named relatives of RLO: gce, poly1, taylor_ce, bitempered, against their papers' formulas."""
import pytest
import torch
import torch.nn.functional as F

import losses as L


def _data(n=30, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c, dtype=torch.float64, generator=g) * 2,
            torch.randint(0, c, (n,), generator=g))


def _p_target(x, t):
    return torch.softmax(x, 1)[torch.arange(len(t)), t]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("k, m", [(3.0, 3.0), (5.0, 2.0), (0.7, 1.5)])
def test_rlo_forms_are_gce(k, m, fused):
    """root = (m/k) gce(q = 1/k) (the authors' code form) and root_paper = gce(q = -1/k) (the paper's)."""
    x, t = _data()
    x.requires_grad_(True)
    pairs = [(L.root_loss(x, t, k=k, m=m, reduction="none", fused=fused),
              (m / k) * L.gce_loss(x, t, q=1 / k, reduction="none", fused=fused)),
             (L.root_paper_loss(x, t, k=k, reduction="none", fused=fused),
              L.gce_loss(x, t, q=-1 / k, reduction="none", fused=fused))]
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)
        ga, gb = torch.autograd.grad(a.sum(), x)[0], torch.autograd.grad(b.sum(), x)[0]
        torch.testing.assert_close(ga, gb, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("q", [0.7, 0.2, -0.5])
def test_gce_formula_and_ce_limit(q):
    x, t = _data()
    p = _p_target(x, t)
    torch.testing.assert_close(L.gce_loss(x, t, q=q, reduction="none"), (1 - p ** q) / q)
    torch.testing.assert_close(L.gce_loss(x, t, q=0.0), F.cross_entropy(x, t))
    torch.testing.assert_close(L.gce_loss(x, t, q=1e-7), F.cross_entropy(x, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("epsilon", [1.0, -1.0, 2.5])
def test_poly1_formula(epsilon):
    x, t = _data()
    p = _p_target(x, t)
    torch.testing.assert_close(L.poly1_loss(x, t, epsilon=epsilon, reduction="none"),
                               -torch.log(p) + epsilon * (1 - p))


@pytest.mark.parametrize("order", [1, 2, 6])
def test_taylor_ce_formula_and_ce_limit(order):
    x, t = _data()
    p = _p_target(x, t)
    expect = sum((1 - p) ** j / j for j in range(1, order + 1))
    torch.testing.assert_close(L.taylor_ce_loss(x, t, order=order, reduction="none"), expect)
    x = x / 4  # p_y not tiny, so the series converges quickly
    torch.testing.assert_close(L.taylor_ce_loss(x, t, order=200), F.cross_entropy(x, t), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------- bi-tempered
def _tempered_softmax_fixed_point(a, t, iters=2000):
    """Amid et al. 2019, Algorithm 1 (fixed-point normalisation), run to convergence in float64."""
    mu = a.max(1, keepdim=True).values
    a0 = a - mu
    a_hat = a0
    for _ in range(iters):
        z = (1 + (1 - t) * a_hat).pow(1 / (1 - t)).sum(1, keepdim=True)
        a_hat = a0 * z ** (1 - t)
    z = (1 + (1 - t) * a_hat).pow(1 / (1 - t)).sum(1, keepdim=True)
    lam = -((1 / z) ** (1 - t) - 1) / (1 - t)  # -log_t(1 / Z)
    return (1 + (1 - t) * (a0 - lam)).pow(1 / (1 - t))


def _bitempered_reference(x, t, t1, t2):
    p = _tempered_softmax_fixed_point(x, t2)
    y = F.one_hot(t, x.shape[1]).double()
    log_t1 = lambda v: (v ** (1 - t1) - 1) / (1 - t1)  # noqa: E731
    return (-(y * log_t1(p)) - (y ** (2 - t1) - p ** (2 - t1)) / (2 - t1)).sum(1)  # y log_t1 y = 0


@pytest.mark.parametrize("t1, t2", [(0.8, 1.2), (0.2, 4.0), (0.5, 1.0 + 1e-3)])
def test_bitempered_against_the_fixed_point_algorithm(t1, t2):
    x, t = _data()
    torch.testing.assert_close(L.tempered_softmax(x, t2), _tempered_softmax_fixed_point(x, t2))
    torch.testing.assert_close(L.bitempered_loss(x, t, t1=t1, t2=t2, reduction="none"),
                               _bitempered_reference(x, t, t1, t2))


def test_bitempered_limits_and_gradients():
    x, t = _data(n=10, c=4)
    torch.testing.assert_close(L.bitempered_loss(x, t, t1=1.0, t2=1.0), F.cross_entropy(x, t))
    # with a target distribution it is a divergence: CE minus the target's entropy (eq. 13's q log q term)
    smooth = 0.8 * F.one_hot(t, 4).double() + 0.2 / 4
    entropy = lambda q: -(q * q.log()).sum(1).mean()  # noqa: E731
    torch.testing.assert_close(L.bitempered_loss(x, t, t1=1.0, t2=1.0, label_smoothing=0.2),
                               F.cross_entropy(x, t, label_smoothing=0.2) - entropy(smooth))
    q = torch.softmax(torch.randn(10, 4, dtype=torch.float64), 1)
    torch.testing.assert_close(L.bitempered_loss(x, q, t1=1.0, t2=1.0), F.cross_entropy(x, q) - entropy(q))
    for t2 in (0.6, 1.5):  # light and heavy tails: the normaliser is exact either way
        p = L.tempered_softmax(x, t2)
        torch.testing.assert_close(p.sum(1), torch.ones(10, dtype=torch.float64))
        x.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda z: L.bitempered_loss(z, t, t1=0.7, t2=t2, reduction="none"), (x,))
        assert torch.autograd.gradcheck(lambda z: L.bitempered_loss(z, q, t1=0.7, t2=t2), (x,))
        x = x.detach()


def test_bitempered_is_bounded_for_t1_below_one():
    x = torch.tensor([[0.0, 50.0, 50.0]], dtype=torch.float64)  # a confidently wrong prediction
    t = torch.tensor([0])
    t1 = 0.5
    assert L.bitempered_loss(x, t, t1=t1, t2=1.0) <= 1 / (1 - t1) + 1 / (2 - t1)
    assert L.cross_entropy(x, t) > 50


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="gce", q=float("inf")), "q must be"),
    (dict(name="poly1", epsilon=-2), "epsilon must be"),
    (dict(name="taylor_ce", order=0), "order must be"),
    (dict(name="taylor_ce", order=2.5), "order must be"),
    (dict(name="bitempered", t1=1.5), "t1 must be"),
    (dict(name="bitempered", t2=0), "t2 must be"),
])
def test_bad_baseline_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.get_loss(**kwargs)
