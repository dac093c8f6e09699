"""Invariants of the rounding methods and quantizers (quant/rounding.py, quant/quantizers.py)."""
import pytest
import torch

from quant import rounding as R
from quant.driver import QuantConfig, quantize_linear
from quant.quantizers import QUANTIZERS

METHODS = list(R.ROUNDERS)


def correlated(d, seed=0, n=400, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype) @ torch.randn(d, d, generator=g, dtype=dtype)
    X += 0.3 * torch.randn(n, d, generator=g, dtype=dtype)
    return X.T @ X / n


def weights(m, d, seed=1, dtype=torch.float64):
    return torch.randn(m, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def fitted(kind, bits, W, clamp=True, groupsize=-1):
    return QUANTIZERS[kind](bits, groupsize, clamp=clamp).fit(W)


@pytest.mark.parametrize("method", ["ldlq", "ldlqRG", "gptq"])
@pytest.mark.parametrize("kind", ["a", "b"])
def test_diagonal_H_gives_nearest_rounding(method, kind):
    W = weights(24, 40)
    H = torch.diag(torch.rand(40, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.1)
    q = fitted(kind, 3, W)
    assert torch.equal(R.round_weights(method, W, H, q), R.nearest(q.clip(W), H, q))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("method", ["ldlq", "ldlqRG"])
def test_unclamped_ldlq_proxy_below_nearest(seed, method):
    W, H = weights(32, 48, seed), correlated(48, seed)
    q = fitted("a", 3, W, clamp=False)
    ldl = R.proxy_loss(W, q.levels(R.round_weights(method, W, H, q)), H)
    near = R.proxy_loss(W, q.levels(R.nearest(W, H, q)), H)
    assert ldl < near


@pytest.mark.parametrize("clamp", [False, True])
@pytest.mark.parametrize("start", ["ldlq", "nearest", "allbal"])
def test_greedy_passes_never_raise_proxy(clamp, start):
    W, H = weights(20, 70, 3), correlated(70, 3)
    q = fitted("a", 2, W, clamp=clamp)
    C = R.round_weights(start, W, H, q, npasses=1) if start == "allbal" else R.round_weights(start, W, H, q)
    losses = [R.proxy_loss(W, q.levels(C), H)]
    for _ in range(4):
        C = R.greedy_passes(W, C.clone(), H, q, npasses=1, blocksize=16)
        losses.append(R.proxy_loss(W, q.levels(C), H))
    assert all(b <= a + 1e-9 * abs(a) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("kind", ["a", "b"])
def test_codes_are_integers_on_the_grid(method, bits, kind):
    W, H = weights(16, 36, bits) * 3, correlated(36, bits)
    q = fitted(kind, bits, W)
    C = R.round_weights(method, W, H, q, npasses=2)
    assert torch.equal(C, C.round())
    assert C.min() >= 0 and C.max() <= 2 ** bits - 1
    assert len(C.unique()) <= 2 ** bits
    assert len(q.levels(C).unique()) <= 2 ** bits * (W.shape[0] if kind == "a" else 1)


@pytest.mark.parametrize("blocksize", [1, 5, 16, 32, 50, 128])
@pytest.mark.parametrize("kind", ["a", "b"])
def test_blocked_ldlq_equals_unblocked(blocksize, kind):
    W, H = weights(24, 64, 4), correlated(64, 4)
    q = fitted(kind, 2, W)
    assert torch.equal(R.ldlq_core(W, H, q, blocksize=blocksize), R.ldlq_core(W, H, q, blocksize=None))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bits", [2, 4])
def test_gptq_equals_ldlq_up_to_ties(seed, bits):
    # QuIP Theorem 6: GPTQ is LDLQ with columns in GPTQ's order (here first to last), in float64
    W, H = weights(32, 80, seed), correlated(80, seed)
    q = fitted("a", bits, W)
    differ = (R.gptq_core(W, H, q) != R.ldlq_core(W, H, q)).sum().item()
    assert differ <= 1


def test_gptq_groups_refit_parameters():
    W, H = weights(8, 64, 5), correlated(64, 5)
    q = fitted("a", 3, W, groupsize=16)
    C = R.round_weights("gptq", W, H, q, groupsize=16)
    assert q.scale.shape == (8, 4) and C.max() <= 7
    assert R.proxy_loss(W, q.levels(C), H) < R.proxy_loss(W, fitted("a", 3, W).levels(
        R.nearest(W, H, fitted("a", 3, W))), H)


def test_quantizer_b_grid():
    W = weights(10, 12, 6)
    q = fitted("b", 2, W)
    s = 2.4 * W.square().mean().sqrt()
    levels = q.levels(torch.arange(4, dtype=W.dtype).expand(10, 4).repeat(1, 3))
    assert torch.allclose(levels[0, :4], s * torch.tensor([-1, -1 / 3, 1 / 3, 1], dtype=W.dtype))
    with pytest.raises(ValueError):
        QUANTIZERS["b"](2, groupsize=4)


@pytest.mark.parametrize("proj", [None, "butterfly", "kron", "hadamard"])
def test_same_seed_same_result(proj):
    W, H = weights(12, 24, 7), correlated(24, 7)
    cfg = QuantConfig(wbits=2, method="ldlqRG", qfn="b" if proj else "a", rescale=bool(proj), proj=proj,
                      npasses=1)
    Q1, r1 = quantize_linear(W, H, cfg, seed=11)
    Q2, r2 = quantize_linear(W, H, cfg, seed=11)
    assert torch.equal(Q1, Q2) and torch.equal(r1.codes, r2.codes)
    if proj:
        Q3, _ = quantize_linear(W, H, cfg, seed=12)
        assert not torch.equal(Q1, Q3)
