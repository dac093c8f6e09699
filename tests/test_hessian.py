"""utils/hvp.py and hessian.py: HVPs vs the explicit Hessian, Lanczos/power/SLQ vs eigvalsh, end to end."""
import json
import sys
import types

import pytest
import torch
from torch import nn
from torch.func import functional_call

import hessian
import losses
import synthetic
from scripts import fig3a
from utils import hvp
from utils.checkpoint import save_checkpoint
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
                                 "--losses", "ce", "root", "--out", str(tmp_path / "syn")])
    return [r["path"] for r in synthetic.main(args)["runs"]]


def test_end_to_end_on_synthetic_models(tmp_path):
    paths = _synthetic_models(tmp_path)
    args = hessian.parse_args(paths + ["--lanczos-steps", "10", "--slq-steps", "10", "--slq-probes", "2",
                                       "--power-iters", "20", "--out", str(tmp_path / "h")])
    records = hessian.main(args)["checkpoints"]
    assert [r["loss"] for r in records] == ["ce", "root"] and records[0]["params"] == 6 * 3 + 6 * 2 + 2 + 6 * 0
    exact = torch.tensor(records[0]["exact"]["eigenvalues"])
    assert abs(records[0]["lanczos_top"][0] - exact.max().item()) < 1e-6 * exact.abs().max().item()
    fig3a.main(fig3a.parse_args([str(tmp_path / "h"), "--out-dir", str(tmp_path)]))
    report = (tmp_path / "fig3a.md").read_text()
    assert "## Verdicts" in report and "exact κ_pos" in report
    assert (tmp_path / "fig3a.png").exists() and (tmp_path / "fig3a_exact.png").exists()


def test_bad_checkpoint_exits_2(tmp_path, capsys):
    bad, gan = tmp_path / "bad.pt", tmp_path / "gan.pt"
    torch.save({"weights": 1}, bad)
    save_checkpoint(gan, "gan", {"z_dim": 4}, G={})
    for path in (str(bad), str(tmp_path / "missing.pt"), str(gan)):
        with pytest.raises(SystemExit) as exc:
            run_cli(hessian.main, hessian.parse_args([path, "--out", str(tmp_path / "h")]))
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3 and "'gan' checkpoint" in err


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
    old, new = tmp_path / "old.pt", tmp_path / "new.pt"  # before and after checkpoints carried a kind
    torch.save({"model": {"module." + k: v for k, v in net.state_dict().items()}, "args": ckpt_args}, old)
    save_checkpoint(new, "train", ckpt_args, model=net.state_dict(), epoch=1)
    records = hessian.main(hessian.parse_args([str(old), str(new), "--samples", "4", "--batch-size", "2",
                                               "--lanczos-steps", "5", "--slq-steps", "5", "--power-iters", "5",
                                               "--out", str(tmp_path / "h")]))["checkpoints"]
    assert [r["params"] for r in records] == [3 * 8 * 8 * 3 + 3] * 2 and records[0]["loss"] == "root"
    assert records[0]["lanczos_top"] == pytest.approx(records[1]["lanczos_top"])


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
                                               "--float32", "--exact-max-params", "0",
                                               "--out", str(tmp_path / "h")]))["checkpoints"]
    assert records[0]["params"] == sum(p.numel() for p in net.parameters())


def _fake_hessian_run(folder, rlo_factor):
    """Three seeds of one setting: RLO's condition numbers = CE's times rlo_factor (a little seed noise)."""
    records = []
    for seed in range(3):
        for loss in ("ce", "root"):
            base = 1e4 * (1 + seed)
            kappa = base * (rlo_factor * (1 + 0.05 * seed) if loss == "root" else 1.0)
            records.append({"label": f"adam fc2 {loss} s{seed}", "setting": "adam fc2", "path": f"{loss}{seed}.pt",
                            "params": 10, "loss": loss, "seed": seed, "lambda_power": 1.0, "power_steps": 3,
                            "lanczos_top": [1.0], "lanczos_min": -0.1, "trace_slq": 2.0, "kappa_q10": kappa,
                            "kappa_q50": kappa, "slq_nodes": [0.1, 1.0], "slq_weights": [0.5, 0.5], "train_loss": 0.1})
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"checkpoints": records}))
    (folder / "config.json").write_text(json.dumps({"argv": ["hessian.py"], "rlo_loss": "root"}))


@pytest.mark.parametrize("factor,expected", [(0.1, "supported"), (10.0, "not supported"), (1.0, "inconclusive")])
def test_fig3a_report_from_fake_results(tmp_path, factor, expected):
    _fake_hessian_run(tmp_path / "h", factor)
    fig3a.main(fig3a.parse_args([str(tmp_path / "h"), "--out-dir", str(tmp_path), "--no-figures"]))
    doc = json.loads((tmp_path / "fig3a.json").read_text())
    assert set(doc) == {"rows", "paper", "verdicts"} and len(doc["rows"]) == 6
    combined = {v["claim"]: v["verdict"] for v in doc["verdicts"] if "settings" in v}
    assert combined[f"{fig3a.CLAIM}, by κ_q50 (SLQ)"] == expected
