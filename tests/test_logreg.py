"""logreg.py: objectives and derivatives, the LR optimum vs scikit-learn, CV splits, end to end, errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import logreg
from scripts import table7
from utils.cli import run_cli


def _data(n=40, d=3, seed=0):
    gen = np.random.default_rng(seed)
    X = np.hstack([gen.normal(size=(n, d)), np.ones((n, 1))])
    y = np.where(X[:, 0] + 0.8 * gen.normal(size=n) > 0, 1.0, -1.0)  # noisy: not separable
    return torch.tensor(X), torch.tensor(y)


@pytest.mark.parametrize("kind,k,lam", [("rlo", 3.0, 0.0), ("rlo", 7.5, 0.1), ("lr", None, 0.0)])
def test_gradient_and_hessian_match_finite_differences(kind, k, lam):
    X, y = _data()
    w = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    _, grad, hess = logreg.value_grad_hessian(w, X, y, kind, k, lam)
    eps = 1e-6
    fd = torch.tensor([(logreg.objective_value(w + eps * e, X, y, kind, k, lam)
                       - logreg.objective_value(w - eps * e, X, y, kind, k, lam)) / (2 * eps)
                      for e in torch.eye(4, dtype=torch.float64)], dtype=torch.float64)
    assert torch.allclose(grad, fd, atol=1e-8)
    auto = torch.autograd.functional.hessian(
        lambda v: logreg.objectives(v[:, None], X, y, [logreg.Config("c", kind, k, lam)])[0], w)
    assert torch.allclose(hess, auto, atol=1e-10)


def test_rlo_gradient_is_papers_eq5():
    """eq. (5): grad of k (1+exp(-y w.x))^(1/k) = -(1+exp(-m))^(1/k) sigma(-m) y x."""
    X, y = _data(n=10)
    w = torch.tensor([0.4, 0.1, -0.3, 0.2], dtype=torch.float64)
    _, grad, _ = logreg.value_grad_hessian(w, X, y, "rlo", 4.0, 0.0)
    m = y * (X @ w)
    expected = -(X.T @ (y * (1 + torch.exp(-m)) ** 0.25 * torch.sigmoid(-m))) / len(y)
    assert torch.allclose(grad, expected, atol=1e-12)


def test_lr_optimum_matches_sklearn():
    from sklearn.linear_model import LogisticRegression
    X, y = _data(n=80, d=3, seed=1)
    w, _, ok = logreg.newton(X, y, "lr", None, 0.0)
    assert ok
    sk = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-12, max_iter=10000).fit(X.numpy(), y.numpy())
    assert np.allclose(w.numpy(), sk.coef_[0], atol=1e-5)


def test_separable_data_has_no_lr_optimum():
    X, _ = _data(n=30)
    y = torch.where(X[:, 0] > 0, 1.0, -1.0).double()
    cond = logreg.conditioning(X.numpy(), y.numpy(), logreg.make_configs([3.0], 0.1))
    assert cond["separable"] is True and cond["LR"]["exists"] is False and cond["RLO-3"]["value"] == 3.0
    assert cond["LR-L2"]["exists"] and cond["RLO-L2-3"]["kappa"] >= 1


def test_cv_splits_stratified_and_reproducible():
    labels = np.array([0] * 30 + [1] * 12 + [2] * 18)
    a, b = logreg.cv_splits(labels, 5, seed=3), logreg.cv_splits(labels, 5, seed=3)
    assert all((x[1] == y[1]).all() for x, y in zip(a, b))
    assert any((x[1] != y[1]).any() for x, y in zip(a, logreg.cv_splits(labels, 5, seed=4)))
    for _, test in a:
        counts = np.bincount(labels[test], minlength=3)
        assert np.abs(counts - np.array([6, 2.4, 3.6])).max() <= 1
    assert sorted(np.concatenate([t for _, t in a]).tolist()) == list(range(60))


def test_standardise_uses_training_rows_and_drops_constant_columns():
    X_train = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0]])
    X_test = np.array([[5.0, 0.0, 0.0]])
    tr, te = logreg.standardise(X_train, X_test)
    assert tr.shape == (2, 3) and np.allclose(tr[:, 0], [-1, 1]) and np.allclose(tr[:, -1], 1)
    assert np.allclose(te, [[3.0, -3.0, 1.0]])


def _write_tiny_data(root, seed=0):
    gen = np.random.default_rng(seed)
    os.makedirs(root / "ionosphere")
    rows = []
    for i in range(40):
        x = gen.normal(size=5)
        rows.append(",".join(f"{v:.4f}" for v in x) + ("," + ("g" if x[0] + gen.normal() > 0 else "b")))
    (root / "ionosphere" / "ionosphere.data").write_text("\n".join(rows) + "\n")
    os.makedirs(root / "spectf")
    for split, n in (("train", 20), ("test", 25)):
        data = gen.integers(0, 80, size=(n, 6))
        labels = (data[:, 0] + gen.integers(0, 40, size=n) > 60).astype(int)
        (root / "spectf" / f"SPECTF.{split}").write_text(
            "\n".join(",".join(map(str, [l, *r])) for l, r in zip(labels, data)))
    os.makedirs(root / "madelon")
    for split, n in (("train", 30), ("valid", 12)):
        data = gen.integers(400, 600, size=(n, 6))
        np.savetxt(root / "madelon" / f"madelon_{split}.data", data, fmt="%d")
        np.savetxt(root / "madelon" / f"madelon_{split}.labels", np.where(np.arange(n) % 2, 1, -1), fmt="%d")


def test_end_to_end_on_tiny_data_and_report(tmp_path):
    _write_tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    args = logreg.parse_args(["--datasets", "ionosphere", "spectf", "madelon", "wine", "--data-dir",
                              str(tmp_path / "data"), "--ks", "3", "5", "--folds", "3", "--inner-folds", "2",
                              "--iters", "15", "--out", str(out)])
    results = logreg.main(args)["datasets"]
    for name in ("ionosphere", "spectf", "madelon", "wine"):
        assert len(results[name]["outer"]) == 3 and len(results[name]["top3"]["RLO"]) == 2
        assert len(results[name]["curves"]["norm"][0]) == 16  # Fig. 5: L(0) .. L(15)
    saved = json.loads((out / "results.json").read_text())["datasets"]
    assert saved["madelon"]["n"] == 42 and saved["spectf"]["d"] == 6
    assert len(saved["wine"]["conditioning"]) == 3  # one-vs-all
    table7.main(table7.parse_args([str(out), "--out-dir", str(tmp_path)]))
    report = (tmp_path / "table7.md").read_text()
    assert "## Verdicts" in report and "Lemma 3.3" in report and "Nested CV" in report
    assert report.count("| madelon |") >= 1
    for name in ("ionosphere", "spectf", "madelon", "wine"):
        assert (tmp_path / f"fig5_{name}.png").exists()


def _fake_dataset(gain, folds=5, ks=(3.0, 5.0)):
    """One dataset's results.json entry: RLO columns = LR + gain (points) + a little fold noise."""
    configs = [c.name for c in logreg.make_configs(list(ks), 0.1)]
    outer = []
    for f in range(folds):
        base = 0.8 + 0.01 * f
        outer.append([base if not n.startswith("RLO") else base + gain / 100 + 0.001 * f * (f % 2) for n in configs])
    conv = {n: {"iters_to_1e-3": 10, "norm_final": 0.5, "subopt_final": 0.1 if n.startswith("RLO") else 0.2}
            for n in configs}
    return {"n": 50, "d": 3, "iters": 10, "outer": outer, "configs": configs, "conditioning": None,
            "top3": {"RLO": ["RLO-3", "RLO-5"], "RLO-L2": ["RLO-L2-3", "RLO-L2-5"]},
            "nested": {"RLO": {"k": [3.0] * folds, "acc": [row[configs.index("RLO-3")] for row in outer]},
                       "RLO-L2": {"k": [3.0] * folds, "acc": [row[configs.index("RLO-L2-3")] for row in outer]}},
            "convergence": conv}


@pytest.mark.parametrize("gains,expected", [((2.0, 3.0), "supported"), ((2.0, -3.0), "not supported"),
                                            ((2.0, 0.0), "inconclusive")])
def test_table7_report_from_fake_results(tmp_path, gains, expected):
    run = tmp_path / "run"
    run.mkdir()
    datasets = {"toy_a": _fake_dataset(gains[0]), "toy_b": _fake_dataset(gains[1])}
    (run / "results.json").write_text(json.dumps({"datasets": datasets}))
    (run / "config.json").write_text(json.dumps({"argv": ["logreg.py"], "datasets": ["toy_a", "toy_b"],
                                                 "ks": [3.0, 5.0], "lam": 0.1, "folds": 5, "inner_folds": 3,
                                                 "conditioning": False, "seed": 0, "lr": 0.01}))
    table7.main(table7.parse_args([str(run), "--out-dir", str(tmp_path), "--no-figures"]))
    doc = json.loads((tmp_path / "table7.json").read_text())
    assert set(doc) == {"rows", "paper", "verdicts"} and doc["paper"][0]["table"] == "table7"
    verdicts = {v["claim"]: v["verdict"] for v in doc["verdicts"]}
    assert verdicts["Table 7: RLO (best k picked on the test folds) beats LR on every dataset"] == expected
    assert sum(r["what"] == "fold_acc" for r in doc["rows"]) == 2 * 6 * 5
    fig5 = [v for v in doc["verdicts"] if v["claim"].startswith("Fig. 5: RLO ")]
    assert fig5[0]["n"] == 2 and fig5[0]["verdict"] == "supported"  # RLO half LR's suboptimality on both datasets


def test_help_answers_without_torch():
    out = subprocess.run([sys.executable, "-X", "importtime", "logreg.py", "-h"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0 and "--ks" in out.stdout and "Lemma 3.3" in out.stdout
    assert "torch" not in out.stderr.replace("|", " ").split()


def test_missing_dataset_file_exits_2_naming_layout(tmp_path, capsys):
    args = logreg.parse_args(["--datasets", "madelon", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        run_cli(logreg.main, args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "madelon_{train,valid}.data" in err


def test_bad_k_exits_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        run_cli(logreg.main, logreg.parse_args(["--datasets", "wine", "--ks", "0", "--data-dir", str(tmp_path)]))
    assert exc.value.code == 2
