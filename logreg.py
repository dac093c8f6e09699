"""Logistic (LR) vs rooted logistic regression (RLO): paper App. A.4.1, Table 7, Fig. 5, Lemma 3.3.

Full-batch gradient descent from w = 0 (200 iterations at lr 0.01; SPECTF 1000), 5-fold stratified
cross-validation with features standardised on the training folds only, with and without L2. RLO is the
paper's binary eq. (4), k * mean((1 + exp(-y w.x))^(1/k)), taken from losses.binary_loss. All
configurations of one fold (LR, LR-L2, RLO-k, RLO-L2-k for every k) train at once as the columns of one
weight matrix; their losses are independent, so this is the same as training them one by one.

Beyond the paper's protocol (which picks the top 3 k on the test folds) it reports nested CV (k chosen on
inner folds), the convergence of the training loss (Fig. 5) and the condition number of the exact Hessian
of every objective at its optimum (Lemma 3.3), solved by Newton's method to a tight tolerance.

It writes a run directory (config.json, metrics.jsonl, results.json with every fold's accuracy, the Fig. 5
curves and the condition numbers); `python -m scripts.table7 OUT` builds results/table7.md and Fig. 5 from it.

    python logreg.py --out runs/logreg                  # all four datasets
    python logreg.py --datasets wine --ks 3 5 --folds 3 --out /tmp/t7
"""
import argparse
import math
import os
from typing import NamedTuple, Optional

import numpy as np

from utils.cli import ArgumentParser, UsageError, default_data_dir, require_file, run_cli
from utils.runio import RunDir, add_run_args, set_threads

# torch, scipy, scikit-learn and losses.py (which imports torch) are imported where they are used, so that
# `python logreg.py -h` answers at once.
DEFAULT_OUT = "runs/logreg"


# ----------------------------------------------------------------------------------------------- data
def _load_ionosphere(data_dir):
    path = require_file(os.path.join(data_dir, "ionosphere", "ionosphere.data"), LAYOUTS["ionosphere"])
    with open(path, encoding="utf-8") as f:
        rows = [line.strip().split(",") for line in f if line.strip()]
    try:
        X = np.array([[float(v) for v in row[:-1]] for row in rows])
    except ValueError as err:
        raise UsageError(f"{path}: not the UCI ionosphere CSV ({err})") from err
    labels = np.array([row[-1] == "g" for row in rows], dtype=int)
    return X, labels


def _load_madelon(data_dir):
    folder = os.path.join(data_dir, "madelon")
    parts = []
    for split in ("train", "valid"):
        data = require_file(os.path.join(folder, f"madelon_{split}.data"), LAYOUTS["madelon"])
        lab = require_file(os.path.join(folder, f"madelon_{split}.labels"), LAYOUTS["madelon"])
        parts.append((np.loadtxt(data, ndmin=2), np.loadtxt(lab, ndmin=1)))
    X = np.vstack([p[0] for p in parts])
    labels = (np.concatenate([p[1] for p in parts]) > 0).astype(int)
    return X, labels


def _load_spectf(data_dir):
    files = [require_file(os.path.join(data_dir, "spectf", f"SPECTF.{s}"), LAYOUTS["spectf"])
             for s in ("train", "test")]
    rows = np.vstack([np.loadtxt(f, delimiter=",", ndmin=2) for f in files])
    return rows[:, 1:], rows[:, 0].astype(int)


def _load_wine(data_dir):
    from sklearn.datasets import load_wine  # shipped inside scikit-learn, no download
    wine = load_wine()
    return wine.data.astype(float), wine.target.astype(int)


LAYOUTS = {
    "ionosphere": "DATA_DIR/ionosphere/ionosphere.data (UCI CSV, no header: 34 features then 'g'/'b')",
    "madelon": "DATA_DIR/madelon/madelon_{train,valid}.data (space-separated, 500 ints a row) "
               "and madelon_{train,valid}.labels (+1/-1)",
    "spectf": "DATA_DIR/spectf/SPECTF.train and SPECTF.test (UCI CSV, no header: label 0/1 then 44 ints)",
    "wine": "scikit-learn's bundled load_wine() (no file needed)",
}

class Dataset(NamedTuple):
    """How to load one dataset, its default GD iterations, and whether it is split one-vs-all."""
    load: object
    iters: int
    one_vs_all: bool


# Paper App. A.4.1: 200 iterations, SPECTF 1000.
DATASETS = {
    "wine": Dataset(_load_wine, 200, True),
    "ionosphere": Dataset(_load_ionosphere, 200, False),
    "madelon": Dataset(_load_madelon, 200, False),
    "spectf": Dataset(_load_spectf, 1000, False),
}


def load_dataset(name, data_dir):
    """(X, labels, tasks): tasks is a list of +-1 label vectors, one per binary problem (wine: 3)."""
    X, labels = DATASETS[name].load(data_dir)
    if DATASETS[name].one_vs_all:
        tasks = [np.where(labels == c, 1.0, -1.0) for c in np.unique(labels)]
    else:
        tasks = [np.where(labels == 1, 1.0, -1.0)]
    return X, labels, tasks


def standardise(X_train, X_other):
    """Scale by the training rows' mean and std, then append a bias 1.

    Columns constant on the training rows (ionosphere's attribute 2) are dropped: they carry no
    information and would make every Hessian singular.
    """
    mean, std = X_train.mean(0), X_train.std(0)
    keep = std > 0

    def prep(X):
        return np.hstack([(X[:, keep] - mean[keep]) / std[keep], np.ones((len(X), 1))])
    return prep(X_train), prep(X_other)


def cv_splits(labels, folds, seed):
    """Stratified K-fold (train_idx, test_idx) pairs, reproducible for a seed."""
    from sklearn.model_selection import StratifiedKFold
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(labels, labels))


# ------------------------------------------------------------------------------------------ objectives
class Config(NamedTuple):
    """One Table 7 column: its name, the binary loss ('lr' or 'rlo'), RLO's k (None for LR), L2 lambda."""
    name: str
    kind: str
    k: Optional[float]
    lam: float

    @property
    def family(self):
        """'LR', 'LR-L2', 'RLO' or 'RLO-L2'."""
        return ("RLO" if self.kind == "rlo" else "LR") + ("-L2" if self.lam > 0 else "")


def make_configs(ks, lam):
    """The Table 7 columns: LR, LR-L2, RLO-k and RLO-L2-k for every k."""
    configs = [Config("LR", "lr", None, 0.0), Config("LR-L2", "lr", None, lam)]
    for k in ks:
        configs += [Config(f"RLO-{k:g}", "rlo", k, 0.0), Config(f"RLO-L2-{k:g}", "rlo", k, lam)]
    return configs


def _groups(configs):
    """Columns that share (kind, k), so each loss form is evaluated once per group."""
    groups = {}
    for col, c in enumerate(configs):
        groups.setdefault((c.kind, c.k), []).append(col)
    return groups


def objectives(W, X, y, configs):
    """Per-configuration training objective (C,): binary loss mean over rows + lambda/2 ||w||^2.

    The bias (last row of W) is not penalised. Paper Fig. 4a adds lbda * ||x||^2 / 2 the same way.
    """
    import torch
    import losses
    margins = y[:, None] * (X @ W)
    values = []
    cols_all = []
    for (kind, k), cols in _groups(configs).items():
        per = losses.binary_loss(kind, margins[:, cols], k=k if k else 3.0, reduction="none")
        values.append(per.mean(0))
        cols_all += cols
    data_term = torch.cat(values)[torch.argsort(torch.tensor(cols_all))]
    lam = torch.tensor([c.lam for c in configs], dtype=W.dtype)
    return data_term + 0.5 * lam * (W[:-1] ** 2).sum(0)


def gradient_descent(X, y, configs, iters, lr):
    """Full-batch GD from zero; returns final W (d, C) and the objective after each step (iters+1, C)."""
    import torch
    dtype = torch.float64
    X, y = torch.as_tensor(X, dtype=dtype), torch.as_tensor(y, dtype=dtype)
    W = torch.zeros(X.shape[1], len(configs), dtype=dtype, requires_grad=True)
    history = []
    for _ in range(iters):
        obj = objectives(W, X, y, configs)
        history.append(obj.detach())
        grad, = torch.autograd.grad(obj.sum(), W)
        with torch.no_grad():
            W -= lr * grad
    with torch.no_grad():
        history.append(objectives(W, X, y, configs))
    return W.detach(), torch.stack(history).numpy()


def accuracy(W, X, y):
    """Per-column accuracy of sign(X w) (a zero score counts as +1)."""
    import torch
    dtype = torch.float64
    scores = torch.as_tensor(X, dtype=dtype) @ W
    pred = torch.where(scores >= 0, 1.0, -1.0).to(dtype)
    return (pred == torch.as_tensor(y, dtype=dtype)[:, None]).to(dtype).mean(0).numpy()


# ------------------------------------------------------------------------------------ cross-validation
def fold_accuracy(X, tasks, train_idx, test_idx, configs, iters, lr):
    """Test accuracy (C,) of every configuration on one fold, averaged over the binary tasks."""
    X_train, X_test = standardise(X[train_idx], X[test_idx])
    accs = []
    for y in tasks:
        W, _ = gradient_descent(X_train, y[train_idx], configs, iters, lr)
        accs.append(accuracy(W, X_test, y[test_idx]))
    return np.mean(accs, axis=0)


def cross_validate(X, labels, tasks, configs, opts, progress=None):
    """Outer-fold accuracies (folds, C) and, for nested CV, inner-CV mean accuracies (folds, C)."""
    outer, inner = [], []
    for train_idx, test_idx in cv_splits(labels, opts["folds"], opts["seed"]):
        outer.append(fold_accuracy(X, tasks, train_idx, test_idx, configs, opts["iters"], opts["lr"]))
        if opts["inner_folds"] > 1:
            sub_tasks = [y[train_idx] for y in tasks]
            scores = [fold_accuracy(X[train_idx], sub_tasks, itr, ite, configs, opts["iters"], opts["lr"])
                      for itr, ite in cv_splits(labels[train_idx], opts["inner_folds"], opts["seed"])]
            inner.append(np.mean(scores, axis=0))
        if progress is not None:
            progress.update(1)
    return np.array(outer), (np.array(inner) if inner else None)


def family_columns(configs, kind, regularised):
    """Column indices of the RLO (or RLO-L2) configurations, in k order."""
    return [i for i, c in enumerate(configs) if c.kind == kind and (c.lam > 0) == regularised]


def top_k(configs, outer, cols, n=3):
    """The paper's protocol: the n columns with the best mean TEST accuracy (ties: lower std, lower k)."""
    mean, std = outer.mean(0), outer.std(0)
    return sorted(cols, key=lambda c: (-round(mean[c], 12), round(std[c], 12), configs[c].k))[:n]


def nested_choice(configs, outer, inner, cols):
    """Per outer fold, the column with the best inner-CV accuracy, and its outer-fold accuracy."""
    picks = [max(cols, key=lambda c: (round(inner[f, c], 12), -configs[c].k)) for f in range(len(outer))]
    return picks, np.array([outer[f, c] for f, c in enumerate(picks)])


# ------------------------------------------------------------------------- optimum and exact Hessian
def margin_derivatives(kind, k, margins):
    """Per-row loss, first and second derivative w.r.t. the margin, by autograd through losses.py."""
    import torch
    import losses
    m = margins.detach().clone().requires_grad_(True)
    per = losses.binary_loss(kind, m, k=k if k else 3.0, reduction="none")
    d1, = torch.autograd.grad(per.sum(), m, create_graph=True)
    d2, = torch.autograd.grad(d1.sum(), m)
    return per.detach(), d1.detach(), d2.detach()


def penalty_mask(d):
    import torch
    mask = torch.ones(d, dtype=torch.float64)
    mask[-1] = 0.0  # the bias is not penalised
    return mask


def value_grad_hessian(w, X, y, kind, k, lam):
    """Objective, gradient and exact Hessian X^T diag(l'') X / n + lambda I' at w."""
    import torch
    per, d1, d2 = margin_derivatives(kind, k, y * (X @ w))
    n, mask = len(y), penalty_mask(len(w))
    value = per.mean() + 0.5 * lam * (mask * w * w).sum()
    grad = X.T @ (y * d1) / n + lam * mask * w
    hess = (X.T * d2) @ X / n + torch.diag(lam * mask)
    return value.item(), grad, hess


def objective_value(w, X, y, kind, k, lam):
    import losses
    per = losses.binary_loss(kind, y * (X @ w), k=k if k else 3.0, reduction="none")
    return (per.mean() + 0.5 * lam * (penalty_mask(len(w)) * w * w).sum()).item()


def newton(X, y, kind, k, lam, tol=1e-9, max_iter=100, max_norm=1e6):
    """Damped Newton with Armijo backtracking; returns (w, value, converged). Stops if ||w|| > max_norm."""
    import torch
    w = torch.zeros(X.shape[1], dtype=torch.float64)
    for _ in range(max_iter):
        value, grad, hess = value_grad_hessian(w, X, y, kind, k, lam)
        if grad.abs().max().item() < tol:
            return w, value, True
        step = torch.linalg.lstsq(hess, grad.unsqueeze(1)).solution.squeeze(1)
        t, slope = 1.0, (grad @ step).item()
        while t > 1e-14 and objective_value(w - t * step, X, y, kind, k, lam) > value - 1e-4 * t * slope:
            t *= 0.5
        w = w - t * step
        if w.norm().item() > max_norm or t <= 1e-14:
            break
    value, grad, _ = value_grad_hessian(w, X, y, kind, k, lam)
    return w, value, bool(grad.abs().max().item() < tol)


def condition_number(hess):
    import torch
    eig = torch.linalg.eigvalsh(hess)
    return (eig[-1] / eig[0]).item() if eig[0] > 0 else math.inf


def linearly_separable(X, y):
    """True/False from the LP y_i (w.x_i) >= 1 (X carries the bias column); None if the LP solver fails."""
    from scipy.optimize import linprog
    res = linprog(np.zeros(X.shape[1]), A_ub=-(y[:, None] * X), b_ub=-np.ones(len(y)),
                  bounds=[(None, None)] * X.shape[1], method="highs")
    return {0: True, 2: False}.get(res.status)


def infimum(kind, k):
    """inf of the data term on separable data (margins -> +inf): LR 0, RLO k."""
    return 0.0 if kind == "lr" else float(k)


def conditioning(X, y, configs):
    """Per configuration: optimum value, kappa of the exact Hessian there, and kappa of it at LR's optimum.

    Unregularised objectives on separable data have no minimiser; they are reported as such, with the
    infimum kept as the reference value for the convergence table.
    """
    import torch
    X, y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    separable = linearly_separable(X.numpy(), y.numpy())
    out, lr_opt = {"separable": separable}, {}
    for name, kind, k, lam in configs:  # Config records unpack as tuples
        if lam == 0 and separable:
            out[name] = {"exists": False, "value": infimum(kind, k), "kappa": None}
            continue
        w, value, ok = newton(X, y, kind, k, lam)
        _, _, hess = value_grad_hessian(w, X, y, kind, k, lam)
        out[name] = {"exists": ok, "value": value if ok else None, "kappa": condition_number(hess) if ok else None,
                     "w_norm": w.norm().item()}
        if kind == "lr" and ok:
            lr_opt[lam] = w
    for name, kind, k, lam in configs:
        if kind == "rlo" and lam in lr_opt:
            _, _, h_rlo = value_grad_hessian(lr_opt[lam], X, y, kind, k, lam)
            _, _, h_lr = value_grad_hessian(lr_opt[lam], X, y, "lr", None, lam)
            out[name]["kappa_at_lr_opt"] = condition_number(h_rlo)
            out[name]["kappa_lr_at_lr_opt"] = condition_number(h_lr)
            # Lemma 3.2's hypothesis, per row, at LR's optimum (App. A.1): k <= 1 + exp(-y w*.x)
            margins = y * (X @ lr_opt[lam])
            out[name]["lemma_hypothesis_frac"] = (k <= 1 + torch.exp(-margins)).double().mean().item()
    return out


# ----------------------------------------------------------------------------------------- convergence
def iters_to_tolerance(curve, rel=1e-3):
    """First iteration t with |L(t) - L(T)| <= rel * |L(T)|."""
    final = curve[-1]
    return int(np.argmax(np.abs(curve - final) <= rel * abs(final)))


def convergence(X_full, tasks, configs, cond, iters, lr):
    """Training-loss curves on the whole standardised dataset, averaged over the binary tasks.

    norm = L(t) / L(0) (the paper's Fig. 5); subopt = (L(t) - L*) / (L(0) - L*), L* the optimum (or the
    infimum on separable data) from `cond`; NaN where no optimum was found.
    """
    norm, subopt = [], []
    for y, task_cond in zip(tasks, cond):
        _, hist = gradient_descent(X_full, y, configs, iters, lr)
        norm.append(hist / hist[0])
        best = np.array([task_cond[c.name]["value"] if task_cond[c.name]["value"] is not None else np.nan
                         for c in configs])
        subopt.append((hist - best) / (hist[0] - best))
    norm, subopt = np.mean(norm, 0), np.mean(subopt, 0)
    rows = {c.name: {"iters_to_1e-3": iters_to_tolerance(norm[:, i]), "norm_final": float(norm[-1, i]),
                   "subopt_final": float(subopt[-1, i])} for i, c in enumerate(configs)}
    return norm, subopt, rows


# --------------------------------------------------------------------------------------- one dataset
def run_dataset(name, data_dir, configs, opts, progress=None):
    X, labels, tasks = load_dataset(name, data_dir)
    outer, inner = cross_validate(X, labels, tasks, configs, opts, progress)
    names = [c.name for c in configs]
    result = {"n": int(len(X)), "d": int(X.shape[1]), "iters": opts["iters"],
              "outer": outer.tolist(), "configs": names, "top3": {}, "nested": {}}
    for family, reg in (("RLO", False), ("RLO-L2", True)):
        cols = family_columns(configs, "rlo", reg)
        result["top3"][family] = [names[c] for c in top_k(configs, outer, cols)]
        if inner is not None:
            picks, accs = nested_choice(configs, outer, inner, cols)
            result["nested"][family] = {"k": [configs[c].k for c in picks], "acc": accs.tolist()}
    X_full = standardise(X, X)[0]
    cond_configs = configs if opts["conditioning"] else []
    cond = [conditioning(X_full, y, cond_configs) for y in tasks] if cond_configs else \
        [{c.name: {"value": None} for c in configs} for _ in tasks]
    result["conditioning"] = cond if cond_configs else None
    shown = [configs[names.index(n)] for n in ["LR", "LR-L2"] + result["top3"]["RLO"] + result["top3"]["RLO-L2"]]
    norm, subopt, rows = convergence(X_full, tasks, shown, cond, opts["iters"], opts["lr"])
    result["convergence"] = rows
    # the Fig. 5 curves of the shown configurations (LR, LR-L2, top-3 RLO and RLO-L2), for the report builder
    result["curves"] = {"configs": [c.name for c in shown], "norm": _finite_or_none(norm.T),
                        "subopt": _finite_or_none(subopt.T)}
    return result


def _finite_or_none(array):
    """Nested lists with NaN / inf as None, so that results.json stays strict JSON."""
    return [[float(x) if math.isfinite(x) else None for x in row] for row in np.asarray(array, dtype=float)]


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
                   help="datasets to run, layouts in README (default: all four)")
    p.add_argument("--data-dir", type=str, default=None,
                   help="folder holding <name>/ data (default: $RLO_DATA_DIR, else ../shared/data, else ./data)")
    p.add_argument("--ks", type=float, nargs="+", default=[float(k) for k in range(3, 21)],
                   help="RLO k values (default: 3 4 ... 20, the paper's k in [3, 20])")
    p.add_argument("--lr", type=float, default=0.01, help="GD step size (default: 0.01, the paper's)")
    p.add_argument("--iters", type=int, default=None,
                   help="GD iterations (default: the paper's, 200; SPECTF 1000)")
    p.add_argument("--lam", type=float, default=0.1,
                   help="L2 strength lambda for LR-L2 / RLO-L2 (default: 0.1; the paper does not give it)")
    p.add_argument("--folds", type=int, default=5, help="outer CV folds (default: 5, the paper's)")
    p.add_argument("--inner-folds", type=int, default=3, help="inner folds for nested CV, <= 1 skips it (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="CV shuffling seed (default: 0)")
    p.add_argument("--no-conditioning", dest="conditioning", action="store_false",
                   help="skip the exact-Hessian condition numbers")
    add_run_args(p, default_out=DEFAULT_OUT)
    p.add_argument("--out-dir", dest="out", help="the same as --out (the older name)")
    p.add_argument("--report", default=None,
                   help="ignored, kept so older command lines run: python -m scripts.table7 OUT writes the report")
    p.add_argument("--fig-prefix", default=None, help="ignored, as --report (the report builder draws Fig. 5)")
    p.set_defaults(threads=1)  # small matrices: extra threads only contend on a shared machine
    return p.parse_args(argv)


def check_args(args):
    if args.lr <= 0 or args.lam < 0 or args.folds < 2 or (args.iters is not None and args.iters < 1):
        raise UsageError("need --lr > 0, --lam >= 0, --folds >= 2 and --iters >= 1")
    if any(k <= 0 or not math.isfinite(k) for k in args.ks):
        raise UsageError("every --ks value must be a finite number > 0")
    if args.resume:
        raise UsageError("--resume: logreg.py runs in one go; rerun with --overwrite")
    args.ks = sorted(set(args.ks))
    args.data_dir = args.data_dir or default_data_dir()


def main(args):
    from tqdm import tqdm
    check_args(args)
    if args.report or args.fig_prefix:
        print("note: --report/--fig-prefix are ignored; build the report with python -m scripts.table7 OUT")
    set_threads(args.threads)
    for name in args.datasets:  # fail on a missing file before any work starts
        load_dataset(name, args.data_dir)
    config = {k: v for k, v in vars(args).items() if k not in ("report", "fig_prefix")}
    run = RunDir(args.out or DEFAULT_OUT, config, overwrite=args.overwrite)
    configs = make_configs(args.ks, args.lam)
    results = {}
    try:
        with tqdm(total=args.folds * len(args.datasets), desc="logreg folds") as bar:
            for name in args.datasets:
                opts = {"folds": args.folds, "seed": args.seed, "lr": args.lr, "inner_folds": args.inner_folds,
                        "iters": args.iters or DATASETS[name].iters, "conditioning": args.conditioning}
                results[name] = run_dataset(name, args.data_dir, configs, opts, bar)
                run.log({"dataset": name, "outer_mean": dict(zip(results[name]["configs"],
                                                                 np.mean(results[name]["outer"], 0).tolist()))})
        return run.finish({"datasets": results})
    finally:
        run.release()


if __name__ == "__main__":
    run_cli(main, parse_args())
