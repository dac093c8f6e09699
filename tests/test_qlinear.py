"""quant/qlinear.py: the codes-only linear layer agrees with the fake-quantized dense model opt.py evaluates."""
import pytest
import torch

import opt
from quant import incoherence, qlinear
from tests.quant_tiny import build
from utils.cli import UsageError

AUTHORS = ["--quant", "ldlqRG", "--incoh_processing"]


def quantize(model, data, out, *flags):
    opt.main(opt.parse_args([model, "wikitext2", *flags, "--save", out, "--nsamples", "8", "--eval", "",
                             "--data-dir", data, "--out", out + ".run"]))
    return out


@pytest.fixture(scope="module", params=["opt", "llama"])
def tiny(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"qlinear_{request.param}")
    data, model = build(str(root), request.param, steps=40)
    return request.param, data, model, root


@pytest.mark.parametrize("kind", sorted(incoherence.ORTHOGONALS))
@pytest.mark.parametrize("n", [7, 12, 32, 96])
def test_factored_transforms_equal_the_dense_ones(kind, n):
    M = incoherence.ORTHOGONALS[kind](n, torch.Generator().manual_seed(5)).float()
    factored = qlinear.FACTORED[kind](n, torch.Generator().manual_seed(5))
    X = torch.randn(3, 4, n)
    torch.testing.assert_close(factored(X), X @ M.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(factored.transpose(X), X @ M, rtol=1e-5, atol=1e-5)
    assert sum(b.numel() for b in factored.buffers()) < 3 * n * n  # never more than the dense pair


@pytest.mark.parametrize("flags", [["--wbits", "2", *AUTHORS], ["--wbits", "3", *AUTHORS, "--incoh", "hadamard"],
                                   ["--wbits", "4", "--quant", "gptq", "--groupsize", "16"]])
def test_logits_equal_the_fake_quantized_dense_model(tiny, tmp_path, flags):
    family, data, model, _ = tiny
    saved = quantize(model, data, str(tmp_path / "q"), *flags)
    dense, _ = opt.load_model(saved)  # what opt.py evaluates: the dense copy written beside the codes
    quant, _, cfg = qlinear.load_quantized(saved)
    names = qlinear.quant_linear_names(quant)
    assert len(names) == (12 if family == "opt" else 14) and cfg.wbits == int(flags[1])
    ids = torch.randint(4, 14, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = dense(input_ids=ids).logits, quant(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    for name in names:  # no dense weight left: only uint8 codes of the weight's shape
        layer = quant.get_submodule(name)
        assert layer.codes.dtype == torch.uint8 and not hasattr(layer, "weight")


def test_input_gradient_equals_the_dense_layer(tiny, tmp_path):
    _, data, model, _ = tiny
    saved = quantize(model, data, str(tmp_path / "q"), "--wbits", "2", *AUTHORS)
    quant, _, _ = qlinear.load_quantized(saved)
    layer = quant.get_submodule(qlinear.quant_linear_names(quant)[0])
    W = layer.dense_weight()
    x = torch.randn(5, layer.in_features, requires_grad=True)
    layer(x).square().sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    torch.nn.functional.linear(x2, W, layer.bias).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-5)
    assert all(b.grad is None for b in layer.buffers())


def test_directory_without_codes_is_a_usage_error(tiny):
    _, _, model, _ = tiny
    with pytest.raises(UsageError, match="quant_codes.pt"):
        qlinear.load_quantized(model)
