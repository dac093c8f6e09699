"""Incoherence processing (quant/incoherence.py): orthogonality, exact undo, seeding."""
import pytest
import torch

from quant import incoherence as I


@pytest.mark.parametrize("kind", list(I.ORTHOGONALS))
@pytest.mark.parametrize("n", [1, 2, 7, 12, 48, 64, 96])
def test_orthogonal(kind, n):
    U = I.ORTHOGONALS[kind](n, torch.Generator().manual_seed(n))
    assert U.shape == (n, n)
    assert torch.allclose(U @ U.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("kind", list(I.ORTHOGONALS))
def test_seeded(kind):
    a = I.ORTHOGONALS[kind](24, torch.Generator().manual_seed(3))
    b = I.ORTHOGONALS[kind](24, torch.Generator().manual_seed(3))
    c = I.ORTHOGONALS[kind](24, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("n", [12, 768, 3072, 97])
def test_butterfly_sizes(n):
    a, b = I.butterfly_sizes(n)
    assert a * b == n


@pytest.mark.parametrize("proj", [None, "butterfly", "kron", "hadamard"])
@pytest.mark.parametrize("rescale", [False, True])
def test_exactly_invertible(proj, rescale):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(20, 36, generator=g, dtype=torch.float64)
    X = torch.randn(100, 36, generator=g, dtype=torch.float64)
    Wp, Hp, state = I.preprocess(W, X.T @ X, rescale, proj, 0.01, torch.Generator().manual_seed(1))
    assert torch.allclose(I.undo(Wp, state), W, atol=1e-12, rtol=0)
    assert torch.linalg.eigvalsh(Hp).min() > 0


def test_processed_hessian_is_the_conjugate():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(8, 16, generator=g, dtype=torch.float64)
    X = torch.randn(50, 16, generator=g, dtype=torch.float64)
    H = X.T @ X
    Wp, Hp, st = I.preprocess(W, H, True, "kron", 0.0, torch.Generator().manual_seed(1))
    # the proxy loss of a perturbation is preserved up to the trace normalisation (and the 0.01 I)
    D = torch.randn(8, 16, generator=g, dtype=torch.float64)
    Dp = st.U @ (D * st.scale[None, :]) @ st.V.T
    Hs = H / st.scale[None, :] / st.scale[:, None]
    Hs = Hs * (16 / torch.trace(Hs))
    lhs = torch.trace(Dp @ (Hp - 0.01 * torch.eye(16, dtype=torch.float64)) @ Dp.T)
    assert torch.allclose(lhs, torch.trace((D * st.scale) @ Hs @ (D * st.scale).T))


def test_dead_inputs_are_zeroed_and_damped():
    W = torch.ones(3, 4, dtype=torch.float64)
    H = torch.diag(torch.tensor([1.0, 0.0, 2.0, 3.0], dtype=torch.float64))
    Wd, Hd = I.damp(W, H, 0.1)
    assert torch.all(Wd[:, 1] == 0) and Hd[1, 1] == 1 + 0.1 * 7 / 4


def _dead_input_problem():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(200, 16, generator=g, dtype=torch.float64)
    X[:, 5] = 0.0  # input 5 never fires during calibration
    return torch.randn(12, 16, generator=g, dtype=torch.float64) * 0.1, X.T @ X / 200


@pytest.mark.parametrize("bits", [2, 3])
def test_dead_inputs_zeroed_after_undo_keep_reproduces_quip(bits):
    from quant.driver import QuantConfig, dead_columns, dequantize, quantize_linear
    W, H = _dead_input_problem()
    assert dead_columns(H).nonzero().flatten().tolist() == [5]
    cfg = dict(wbits=bits, method="ldlqRG", qfn="b", rescale=True, proj="butterfly")
    Qk, rk = quantize_linear(W, H, QuantConfig(**cfg, dead_inputs="keep"), seed=1)
    Qz, rz = quantize_linear(W, H, QuantConfig(**cfg, dead_inputs="zero"), seed=1)
    # QuIP's code: undoing the clamped column scale blows the dead column up far beyond the weights' range
    assert Qk[:, 5].abs().max() > 10 * W.abs().max()
    assert torch.all(Qz[:, 5] == 0) and rz.dead.tolist() == [j == 5 for j in range(16)]
    assert torch.equal(Qz[:, :5], Qk[:, :5]) and torch.equal(Qz[:, 6:], Qk[:, 6:])
    assert rz.proxy == pytest.approx(rk.proxy, abs=1e-9)  # a dead input adds nothing to the proxy loss
    assert torch.equal(dequantize(rz, QuantConfig(**cfg), tuple(W.shape)), Qz)  # the saved codes rebuild it


def test_dead_input_fix_leaves_runs_without_rescale_alone():
    from quant.driver import QuantConfig, quantize_linear
    W, H = _dead_input_problem()
    Q, rec = quantize_linear(W, H, QuantConfig(wbits=2, method="gptq", qfn="a"), seed=0)
    assert rec.dead is None
