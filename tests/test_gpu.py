"""GPU-only checks (marker `gpu`, skipped without CUDA): AMP training steps, the loss kernels on CUDA against
float64 references, the chunked LM-head loss on CUDA, quantization codes CUDA == CPU, opt.py on CUDA.
scripts/gpu_check.sh runs them on a lent GPU machine."""
import pytest
import torch
import torch.nn.functional as F

import losses

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}
CE_SHAPED = {"ce": {}, "root": {"k": 8.0, "m": 8.0}, "root_paper": {"k": 5.0}, "focal": {"alpha": 0.25, "gamma": 3.0}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", sorted(CE_SHAPED))
def test_loss_kernels_on_cuda_match_float64(name, dtype):
    torch.manual_seed(0)
    logits64 = (3 * torch.randn(512, 1000, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, 1000, (512,))
    fn = losses.get_loss(name, **CE_SHAPED[name])
    ref = fn(logits64, target)
    (ref_grad,) = torch.autograd.grad(ref, logits64)
    logits = logits64.detach().to(CUDA, dtype).requires_grad_()
    out = fn(logits, target.to(CUDA))
    (grad,) = torch.autograd.grad(out, logits)
    assert out.double().cpu() == pytest.approx(ref.item(), rel=TOL[dtype], abs=TOL[dtype])
    assert torch.allclose(grad.double().cpu(), ref_grad, rtol=TOL[dtype] * 10, atol=TOL[dtype] / 100)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_cross_loss_on_cuda(dtype):
    torch.manual_seed(0)
    hidden = torch.randn(1024, 64, device=CUDA, dtype=dtype, requires_grad=True)
    weight = (0.1 * torch.randn(5000, 64, device=CUDA, dtype=dtype)).requires_grad_()
    target = torch.randint(0, 5000, (1024,), device=CUDA)
    fused = losses.linear_cross_loss(hidden, weight, target, loss="root", k=8.0, m=8.0, chunk_size=256)
    gh, gw = torch.autograd.grad(fused, (hidden, weight))
    plain = losses.get_loss("root", k=8.0, m=8.0)((hidden.double() @ weight.double().T), target)
    ph, pw = torch.autograd.grad(plain, (hidden, weight))
    assert fused.item() == pytest.approx(plain.item(), rel=TOL[dtype])
    assert torch.allclose(gh.double(), ph.double(), rtol=0.05, atol=TOL[dtype] / 10)
    assert torch.allclose(gw.double(), pw.double(), rtol=0.05, atol=TOL[dtype] / 10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_training_steps_reduce_loss(dtype):
    import models
    import train
    torch.manual_seed(0)
    net = models.build_model("res18_mini", 10, 32).to(CUDA)
    opt = train.make_optimizer("adam", net.parameters(), 1e-3, fused=dtype == torch.float16)  # as train.py builds it
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x, y = torch.randn(64, 3, 32, 32, device=CUDA), torch.randint(0, 10, (64,), device=CUDA)
    loss_fn, first = losses.get_loss("root", k=8.0, m=8.0), None
    for _ in range(20):
        with torch.autocast("cuda", dtype=dtype):
            loss = loss_fn(net(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert torch.isfinite(loss) and loss.item() < first


def test_quant_codes_on_cuda_equal_cpu():
    from quant import driver
    torch.manual_seed(0)
    W = torch.randn(64, 96)
    X = torch.randn(512, 96)
    H = (X.T @ X / 512).double()
    cfg = driver.QuantConfig(wbits=2, method="ldlqRG", qfn="b", proj="butterfly", dtype=torch.float64)
    _, cpu = driver.quantize_linear(W, H, cfg, seed=3)
    _, gpu = driver.quantize_linear(W.to(CUDA), H.to(CUDA), cfg, seed=3)
    agree = (cpu.codes == gpu.codes).double().mean().item()
    assert agree >= 0.999, agree


def test_opt_py_on_cuda(tmp_path):
    import opt
    from tests.quant_tiny import build
    data, model = build(str(tmp_path), steps=60)
    res = opt.main(opt.parse_args([model, "wikitext2", "--wbits", "2", "--quant", "ldlqRG", "--incoh_processing",
                                   "--nsamples", "16", "--eval", "wikitext2", "--data-dir", data, "--device", "cuda",
                                   "--output-dir", str(tmp_path / "out")]))
    cpu = opt.main(opt.parse_args([model, "wikitext2", "--wbits", "2", "--quant", "ldlqRG", "--incoh_processing",
                                   "--nsamples", "16", "--eval", "wikitext2", "--data-dir", data, "--device", "cpu",
                                   "--output-dir", str(tmp_path / "out_cpu")]))
    assert res["ppl_wikitext2"] == pytest.approx(cpu["ppl_wikitext2"], rel=0.02)
