"""utils/hvp.py and hessian.py: HVPs vs the explicit Hessian, Lanczos/power/SLQ vs eigvalsh, end to end."""
import sys
import types

import pytest
import torch
from torch import nn
from torch.func import functional_call

import hessian
import losses
import synthetic
from utils import hvp
from utils.cli import run_cli


def _tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).double()


@pytest.mark.parametrize("loss", ["ce", "root", "root_paper"])
def test_hvp_equals_explicit_hessian(loss):
    net = _tiny_net()
    X, y = torch.randn(12, 2, dtype=torch.float64), torch.arange(12) % 2
    fn = losses.get_loss(loss, k=3.0, m=3.0)
    matvec = hvp.hessian_operator(net.parameters(), [(X, y)], lambda b: fn(net(b[0]), b[1]))
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]

    def flat_loss(theta):
        parts = hvp.unflat(theta, [torch.empty(s) for s in shapes])
        return fn(functional_call(net, dict(zip(names, parts)), (X,)), y)
    theta = hvp.flat([p.detach() for p in net.parameters()])
    exact = torch.autograd.functional.hessian(flat_loss, theta)
    assert torch.allclose(hvp.explicit_hessian(matvec, matvec.dim), exact, atol=1e-10)
    v = torch.randn(matvec.dim, dtype=torch.float64)
    assert torch.allclose(matvec(v), exact @ v, atol=1e-10)


def _symmetric(dim=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    return A @ A.T / dim - 0.3 * torch.eye(dim, dtype=torch.float64)


def test_lanczos_and_power_match_eigvalsh():
    A = _symmetric()
    eig = torch.linalg.eigvalsh(A)
    top, smallest = hvp.lanczos_top(lambda v: A @ v, 30, steps=30, top=3)
    assert torch.allclose(torch.tensor(top, dtype=torch.float64), eig.flip(0)[:3], atol=1e-8)
    assert abs(smallest - eig[0].item()) < 1e-8
    value, _, _ = hvp.power_iteration(lambda v: A @ v, 30, iters=2000, tol=1e-12)
    assert abs(value - eig[-1].item()) < 1e-6 * eig[-1].item()


def test_slq_weights_and_trace():
    A = _symmetric(40, seed=1)
    nodes, weights = hvp.slq(lambda v: A @ v, 40, probes=20, steps=40)
    assert abs(weights.sum().item() - 1) < 1e-8
    assert abs(40 * (nodes * weights).sum().item() - torch.trace(A).item()) < 0.2 * abs(torch.trace(A).item())
    grid = torch.linspace(-2, 6, 2000, dtype=torch.float64)
    mass = (hvp.density(nodes, weights, grid, 0.05) * (grid[1] - grid[0])).sum().item()
    assert abs(mass - 1) < 0.02


def _synthetic_models(tmp_path):
    args = synthetic.parse_args(["--depths", "2", "--iters", "5", "--seeds", "0", "--n", "40", "--hidden", "6",
                                 "--losses", "ce", "root", "--out-dir", str(tmp_path / "syn"),
                                 "--report", str(tmp_path / "syn.md"), "--fig-prefix", ""])
    return [r["path"] for r in synthetic.main(args)]


def test_end_to_end_on_synthetic_models(tmp_path):
    paths = _synthetic_models(tmp_path)
    args = hessian.parse_args(paths + ["--lanczos-steps", "10", "--slq-steps", "10", "--slq-probes", "2",
                                       "--power-iters", "20", "--out-dir", str(tmp_path / "h"),
                                       "--report", str(tmp_path / "h.md"), "--fig", str(tmp_path / "f3.png")])
    records = hessian.main(args)
    assert [r["loss"] for r in records] == ["ce", "root"] and records[0]["params"] == 6 * 3 + 6 * 2 + 2 + 6 * 0
    exact = torch.tensor(records[0]["exact"]["eigenvalues"])
    assert abs(records[0]["lanczos_top"][0] - exact.max().item()) < 1e-6 * exact.abs().max().item()
    report = (tmp_path / "h.md").read_text()
    assert "## Verdicts" in report and "exact κ_pos" in report
    assert (tmp_path / "f3.png").exists() and (tmp_path / "f3_exact.png").exists()


def test_bad_checkpoint_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    for path in (str(bad), str(tmp_path / "missing.pt")):
        with pytest.raises(SystemExit) as exc:
            run_cli(hessian.main, hessian.parse_args([path]))
        assert exc.value.code == 2
    assert capsys.readouterr().err.count("error:") == 2


def _fake_datasets(num_classes=3, n=6, size=8):
    """A stand-in for utils.datasets.build_datasets (train.py's contract) with tiny random images."""
    def build_datasets(name, data_dir, size_, augment, subset=None, seed=0):
        gen = torch.Generator().manual_seed(seed)
        images = torch.randn(n, 3, size, size, generator=gen)
        data = torch.utils.data.TensorDataset(images, torch.arange(n) % num_classes)
        return data, data, {"num_classes": num_classes}
    return build_datasets


def test_train_checkpoint_path_against_the_contract(tmp_path, monkeypatch):
    """train.py's checkpoint format, with stand-in models/ and utils.datasets modules."""
    def build_model(name, num_classes, image_size, patch=4, dimhead=512):
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, num_classes))
    monkeypatch.setitem(sys.modules, "models", types.SimpleNamespace(build_model=build_model))
    monkeypatch.setitem(sys.modules, "utils.datasets", types.SimpleNamespace(build_datasets=_fake_datasets()))
    net = build_model("lin", 3, 8)
    ckpt_args = {"net": "lin", "dataset": "fake", "size": 8, "patch": 4, "dimhead": 512, "loss": "root",
                 "k": 3.0, "m": 3.0, "data_dir": str(tmp_path)}
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()}, "args": ckpt_args}, path)
    records = hessian.main(hessian.parse_args([str(path), "--samples", "4", "--batch-size", "2", "--lanczos-steps",
                                               "5", "--slq-steps", "5", "--power-iters", "5", "--fig", "",
                                               "--out-dir", str(tmp_path / "h"), "--report", str(tmp_path / "h.md")]))
    assert records[0]["params"] == 3 * 8 * 8 * 3 + 3 and records[0]["loss"] == "root"


def test_train_checkpoint_with_real_models(tmp_path, monkeypatch):
    """Activates once train.py's models/ package is merged: a real model from models.build_model."""
    models = pytest.importorskip("models")
    monkeypatch.setitem(sys.modules, "utils.datasets",
                        types.SimpleNamespace(build_datasets=_fake_datasets(10, 4, 32)))
    net = models.build_model("vit_tiny", 10, 32, patch=4, dimhead=64)
    ckpt_args = {"net": "vit_tiny", "dataset": "cifar10", "size": 32, "patch": 4, "dimhead": 64, "loss": "ce",
                 "k": 3.0, "m": 3.0, "data_dir": str(tmp_path)}
    path = tmp_path / "ckpt.pt"
    torch.save({"model": net.state_dict(), "args": ckpt_args}, path)
    records = hessian.main(hessian.parse_args([str(path), "--samples", "4", "--batch-size", "4", "--lanczos-steps",
                                               "3", "--slq-steps", "3", "--slq-probes", "1", "--power-iters", "3",
                                               "--float32", "--fig", "", "--exact-max-params", "0",
                                               "--out-dir", str(tmp_path / "h"), "--report", str(tmp_path / "h.md")]))
    assert records[0]["params"] == sum(p.numel() for p in net.parameters())
