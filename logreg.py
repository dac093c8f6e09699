"""Logistic (LR) vs rooted logistic regression (RLO): paper App. A.4.1, Table 7, Fig. 5, Lemma 3.3.

Full-batch gradient descent from w = 0 (200 iterations at lr 0.01; SPECTF 1000), 5-fold stratified
cross-validation with features standardised on the training folds only, with and without L2. RLO is the
paper's binary eq. (4), k * mean((1 + exp(-y w.x))^(1/k)), taken from losses.binary_loss. All
configurations of one fold (LR, LR-L2, RLO-k, RLO-L2-k for every k) train at once as the columns of one
weight matrix; their losses are independent, so this is the same as training them one by one.

Beyond the paper's protocol (which picks the top 3 k on the test folds) it reports nested CV (k chosen on
inner folds), the convergence of the training loss (Fig. 5) and the condition number of the exact Hessian
of every objective at its optimum (Lemma 3.3), solved by Newton's method to a tight tolerance.

    python logreg.py                       # all four datasets, writes results/table7.md and results/fig5_*.png
    python logreg.py --datasets wine --ks 3 5 --folds 3 --report /tmp/t7.md --fig-prefix /tmp/fig5_
"""
import math
import os

import numpy as np
import torch
from scipy.optimize import linprog
from sklearn.model_selection import StratifiedKFold
from tqdm import tqdm

import losses
from utils.cli import ArgumentParser, UsageError, default_data_dir, require_file, run_cli
from utils.runio import atomic_write_json, atomic_write_text, write_config

DTYPE = torch.float64


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

# name -> (loader, default GD iterations, one-vs-all?)  Paper App. A.4.1: 200 iterations, SPECTF 1000.
DATASETS = {
    "wine": (_load_wine, 200, True),
    "ionosphere": (_load_ionosphere, 200, False),
    "madelon": (_load_madelon, 200, False),
    "spectf": (_load_spectf, 1000, False),
}


def load_dataset(name, data_dir):
    """(X, labels, tasks): tasks is a list of +-1 label vectors, one per binary problem (wine: 3)."""
    loader, _, one_vs_all = DATASETS[name]
    X, labels = loader(data_dir)
    if one_vs_all:
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
    return list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(labels, labels))


# ------------------------------------------------------------------------------------------ objectives
def make_configs(ks, lam):
    """The Table 7 columns: LR, LR-L2, RLO-k and RLO-L2-k; each (name, kind, k, lambda)."""
    configs = [("LR", "lr", None, 0.0), ("LR-L2", "lr", None, lam)]
    for k in ks:
        configs += [(f"RLO-{k:g}", "rlo", k, 0.0), (f"RLO-L2-{k:g}", "rlo", k, lam)]
    return configs


def _groups(configs):
    """Columns that share (kind, k), so each loss form is evaluated once per group."""
    groups = {}
    for col, (_, kind, k, _) in enumerate(configs):
        groups.setdefault((kind, k), []).append(col)
    return groups


def objectives(W, X, y, configs):
    """Per-configuration training objective (C,): binary loss mean over rows + lambda/2 ||w||^2.

    The bias (last row of W) is not penalised. Paper Fig. 4a adds lbda * ||x||^2 / 2 the same way.
    """
    margins = y[:, None] * (X @ W)
    values = []
    cols_all = []
    for (kind, k), cols in _groups(configs).items():
        per = losses.binary_loss(kind, margins[:, cols], k=k if k else 3.0, reduction="none")
        values.append(per.mean(0))
        cols_all += cols
    data_term = torch.cat(values)[torch.argsort(torch.tensor(cols_all))]
    lam = torch.tensor([c[3] for c in configs], dtype=W.dtype)
    return data_term + 0.5 * lam * (W[:-1] ** 2).sum(0)


def gradient_descent(X, y, configs, iters, lr):
    """Full-batch GD from zero; returns final W (d, C) and the objective after each step (iters+1, C)."""
    X, y = torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE)
    W = torch.zeros(X.shape[1], len(configs), dtype=DTYPE, requires_grad=True)
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
    scores = torch.as_tensor(X, dtype=DTYPE) @ W
    pred = torch.where(scores >= 0, 1.0, -1.0).to(DTYPE)
    return (pred == torch.as_tensor(y, dtype=DTYPE)[:, None]).to(DTYPE).mean(0).numpy()


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
    return [c for c, (_, knd, k, lam) in enumerate(configs) if knd == kind and (lam > 0) == regularised]


def top_k(configs, outer, cols, n=3):
    """The paper's protocol: the n columns with the best mean TEST accuracy (ties: lower std, lower k)."""
    mean, std = outer.mean(0), outer.std(0)
    return sorted(cols, key=lambda c: (-round(mean[c], 12), round(std[c], 12), configs[c][2]))[:n]


def nested_choice(configs, outer, inner, cols):
    """Per outer fold, the column with the best inner-CV accuracy, and its outer-fold accuracy."""
    picks = [max(cols, key=lambda c: (round(inner[f, c], 12), -configs[c][2])) for f in range(len(outer))]
    return picks, np.array([outer[f, c] for f, c in enumerate(picks)])


# ------------------------------------------------------------------------- optimum and exact Hessian
def margin_derivatives(kind, k, margins):
    """Per-row loss, first and second derivative w.r.t. the margin, by autograd through losses.py."""
    m = margins.detach().clone().requires_grad_(True)
    per = losses.binary_loss(kind, m, k=k if k else 3.0, reduction="none")
    d1, = torch.autograd.grad(per.sum(), m, create_graph=True)
    d2, = torch.autograd.grad(d1.sum(), m)
    return per.detach(), d1.detach(), d2.detach()


def penalty_mask(d):
    mask = torch.ones(d, dtype=DTYPE)
    mask[-1] = 0.0  # the bias is not penalised
    return mask


def value_grad_hessian(w, X, y, kind, k, lam):
    """Objective, gradient and exact Hessian X^T diag(l'') X / n + lambda I' at w."""
    per, d1, d2 = margin_derivatives(kind, k, y * (X @ w))
    n, mask = len(y), penalty_mask(len(w))
    value = per.mean() + 0.5 * lam * (mask * w * w).sum()
    grad = X.T @ (y * d1) / n + lam * mask * w
    hess = (X.T * d2) @ X / n + torch.diag(lam * mask)
    return value.item(), grad, hess


def objective_value(w, X, y, kind, k, lam):
    per = losses.binary_loss(kind, y * (X @ w), k=k if k else 3.0, reduction="none")
    return (per.mean() + 0.5 * lam * (penalty_mask(len(w)) * w * w).sum()).item()


def newton(X, y, kind, k, lam, tol=1e-9, max_iter=100, max_norm=1e6):
    """Damped Newton with Armijo backtracking; returns (w, value, converged). Stops if ||w|| > max_norm."""
    w = torch.zeros(X.shape[1], dtype=DTYPE)
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
    eig = torch.linalg.eigvalsh(hess)
    return (eig[-1] / eig[0]).item() if eig[0] > 0 else math.inf


def linearly_separable(X, y):
    """True/False from the LP y_i (w.x_i) >= 1 (X carries the bias column); None if the LP solver fails."""
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
    X, y = torch.as_tensor(X, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE)
    separable = linearly_separable(X.numpy(), y.numpy())
    out, lr_opt = {"separable": separable}, {}
    for name, kind, k, lam in configs:
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
        best = np.array([task_cond[c[0]]["value"] if task_cond[c[0]]["value"] is not None else np.nan
                         for c in configs])
        subopt.append((hist - best) / (hist[0] - best))
    norm, subopt = np.mean(norm, 0), np.mean(subopt, 0)
    rows = {c[0]: {"iters_to_1e-3": iters_to_tolerance(norm[:, i]), "norm_final": float(norm[-1, i]),
                   "subopt_final": float(subopt[-1, i])} for i, c in enumerate(configs)}
    return norm, subopt, rows


def plot_convergence(path, title, configs, norm, subopt):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    styles, colours = ["-", ":", "--"], {"LR": "black", "LR-L2": "grey", "RLO": "tab:blue", "RLO-L2": "tab:red"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    seen = {}
    for i, (name, kind, _, lam) in enumerate(configs):
        family = ("RLO" if kind == "rlo" else "LR") + ("-L2" if lam > 0 else "")
        style = styles[seen.get(family, 0) % 3]
        seen[family] = seen.get(family, 0) + 1
        for ax, curve in zip(axes, (norm[:, i], np.maximum(subopt[:, i], 1e-16))):
            ax.plot(curve, style, color=colours[family], label=name)
    axes[0].set(title=f"{title}: L(t)/L(0) (paper's Fig. 5)", xlabel="iteration", ylabel="normalised loss")
    axes[1].set(title="(L(t) - L*) / (L(0) - L*)", xlabel="iteration", yscale="log")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------- one dataset
def run_dataset(name, data_dir, configs, opts, progress=None):
    X, labels, tasks = load_dataset(name, data_dir)
    outer, inner = cross_validate(X, labels, tasks, configs, opts, progress)
    names = [c[0] for c in configs]
    result = {"n": int(len(X)), "d": int(X.shape[1]), "iters": opts["iters"],
              "outer": outer.tolist(), "configs": names, "top3": {}, "nested": {}}
    for family, reg in (("RLO", False), ("RLO-L2", True)):
        cols = family_columns(configs, "rlo", reg)
        result["top3"][family] = [names[c] for c in top_k(configs, outer, cols)]
        if inner is not None:
            picks, accs = nested_choice(configs, outer, inner, cols)
            result["nested"][family] = {"k": [configs[c][2] for c in picks], "acc": accs.tolist()}
    X_full = standardise(X, X)[0]
    cond_configs = configs if opts["conditioning"] else []
    cond = [conditioning(X_full, y, cond_configs) for y in tasks] if cond_configs else \
        [{c[0]: {"value": None} for c in configs} for _ in tasks]
    result["conditioning"] = cond if cond_configs else None
    shown = [configs[names.index(n)] for n in ["LR", "LR-L2"] + result["top3"]["RLO"] + result["top3"]["RLO-L2"]]
    norm, subopt, rows = convergence(X_full, tasks, shown, cond, opts["iters"], opts["lr"])
    result["convergence"] = rows
    if opts["fig_prefix"]:
        plot_convergence(f"{opts['fig_prefix']}{name}.png", name, shown, norm, subopt)
    return result


# -------------------------------------------------------------------------------------------- report
# Paper Table 7: dataset -> LR, LR-L2, then rows (k, RLO, RLO-L2), each (mean, std) in %.
PAPER_TABLE7 = {
    "wine": ((90, 4.15), (89.44, 5.66), [(3, (97.22, 1.75), (94.55, 3.51)), (11, (82.77, 1.23), (95.55, 2.22)),
                                         (13, (91.66, 5.55), (95, 5.09))]),
    "ionosphere": ((81.4, 2.73), (83.94, 2.1), [(4, (85.07, 1.12), (86.47, 1.12)), (3, (86.47, 1.69), (85.63, 0.56)),
                                                (16, (84.5, 0.0), (86.19, 0.56))]),
    "madelon": ((52.03, 1.9), (50.83, 1.51), [(6, (54.36, 0.71), (52.75, 0.97)), (9, (54.13, 0.58), (51.8, 1.43)),
                                              (19, (52.36, 1.14), (54.13, 1.42))]),
    "spectf": ((80.49, 3.92), (88.25, 1.69), [(20, (84, 3.10), (88.5, 1.83)), (15, (82.75, 1.83), (88, 1.49)),
                                              (13, (82.99, 2.44), (88, 1.0))]),
}


def _pm(values):
    values = 100 * np.asarray(values)
    return f"{values.mean():.2f} ± {values.std():.2f}"


def _col(result, name):
    return np.asarray(result["outer"])[:, result["configs"].index(name)]


def _paper_best(name, which):
    lr, lr2, rows = PAPER_TABLE7[name]
    return (lr if which == "RLO" else lr2)[0], max(r[1 if which == "RLO" else 2][0] for r in rows)


def table7_lines(results):
    lines = ["| Dataset | LR | LR-L2 | k | RLO | k | RLO-L2 | paper: LR | LR-L2 | k: RLO / RLO-L2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        paper = PAPER_TABLE7.get(name)
        for row in range(3):
            cells = [name, _pm(_col(res, "LR")), _pm(_col(res, "LR-L2"))] if row == 0 else ["", "", ""]
            for family in ("RLO", "RLO-L2"):
                top = res["top3"][family]
                cells += [top[row].rsplit("-", 1)[1], _pm(_col(res, top[row]))] if row < len(top) else ["", ""]
            if paper:
                prow = paper[2][row]
                cells += ([f"{paper[0][0]} ± {paper[0][1]}", f"{paper[1][0]} ± {paper[1][1]}"] if row == 0
                          else ["", ""]) + [f"{prow[0]}: {prow[1][0]} ± {prow[1][1]} / {prow[2][0]} ± {prow[2][1]}"]
            lines.append("| " + " | ".join(cells + [""] * (10 - len(cells))) + " |")
    return lines


def paired(a, b):
    """Mean of the per-fold difference a - b (in points) and its standard error."""
    diff = 100 * (np.asarray(a) - np.asarray(b))
    return diff.mean(), diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")


def nested_lines(results):
    lines = ["| Dataset | LR | RLO nested | k picked per fold | diff ± SE | LR-L2 | RLO-L2 nested | k picked | "
             "diff ± SE |", "|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        if not res["nested"]:
            continue
        cells = [name]
        for base, family in (("LR", "RLO"), ("LR-L2", "RLO-L2")):
            nest = res["nested"][family]
            d, se = paired(nest["acc"], _col(res, base))
            cells += [_pm(_col(res, base)), _pm(nest["acc"]), ",".join(f"{k:g}" for k in nest["k"]),
                      f"{d:+.2f} ± {se:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def convergence_lines(results):
    lines = ["| Dataset | objective | iters to 1e-3 of final L | L(T)/L(0) | (L(T)-L*)/(L(0)-L*) |",
             "|---|---|---|---|---|"]
    for name, res in results.items():
        for obj, row in res["convergence"].items():
            lines.append(f"| {name} | {obj} | {row['iters_to_1e-3']} | {row['norm_final']:.4f} | "
                         f"{row['subopt_final']:.3g} |")
    return lines


def _task_conds(results):
    """(label, cond dict) for every binary task that has conditioning results."""
    for name, res in results.items():
        conds = res.get("conditioning") or []
        for t, cond in enumerate(conds):
            yield (f"{name}/class{t}" if len(conds) > 1 else name), cond


def kappa_ratio(cond, lam_tag, k, where):
    """kappa(RLO-k)/kappa(LR), at each objective's own optimum ('own') or both at LR's optimum ('lr')."""
    lr, rlo = cond.get("LR" + lam_tag, {}), cond.get(f"RLO{lam_tag}-{k:g}", {})
    if where == "own":
        return rlo["kappa"] / lr["kappa"] if lr.get("kappa") and rlo.get("kappa") else None
    if rlo.get("kappa_at_lr_opt") is None:
        return None
    return rlo["kappa_at_lr_opt"] / rlo["kappa_lr_at_lr_opt"]


def conditioning_lines(results, ks):
    tasks = list(_task_conds(results))
    lines = []
    for where, what in (("own", "each objective's Hessian at its own optimum"),
                        ("lr", "both Hessians at LR's optimum w* (Lemma 3.3's same-w statement)")):
        lines += ["", f"kappa(RLO-k) / kappa(LR), {what}; '-' = no finite optimum "
                      "(linearly separable, unregularised) or not converged:", ""]
        header = [f"{lab} λ=0" for lab, _ in tasks] + [f"{lab} L2" for lab, _ in tasks]
        lines += ["| k | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
        row = ["kappa(LR)"] + [_fmt(c.get("LR", {}).get("kappa")) for _, c in tasks] + \
              [_fmt(c.get("LR-L2", {}).get("kappa")) for _, c in tasks]
        lines.append("| " + " | ".join(row) + " |")
        for k in ks:
            cells = [_fmt(kappa_ratio(c, tag, k, where), ratio=True) for tag in ("", "-L2") for _, c in tasks]
            lines.append(f"| {k:g} | " + " | ".join(cells) + " |")
    return lines


def _fmt(x, ratio=False):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.3f}" if ratio else f"{x:.4g}"


def kappa_holds(results, ks, where):
    """Per task and regularisation: the k with kappa(RLO) <= kappa(LR), and how many k were comparable."""
    out = {}
    for lab, cond in _task_conds(results):
        for tag in ("", "-L2"):
            ratios = {k: kappa_ratio(cond, tag, k, where) for k in ks}
            ratios = {k: r for k, r in ratios.items() if r is not None}
            out[f"{lab}{' L2' if tag else ' λ=0'}"] = ([k for k, r in ratios.items() if r <= 1], len(ratios))
    return out


def _status(flags):
    """A claim about every dataset / k: 'supported' only if it held everywhere."""
    return "supported" if flags and all(flags) else "not supported"


def _paired_status(diffs):
    """(mean, SE) per dataset -> 'supported' if every gain > 2 SE, 'not supported' if any loss < -2 SE."""
    if all(d > 2 * se for d, se in diffs):
        return "supported"
    if any(d < -2 * se for d, se in diffs):
        return "not supported"
    return "inconclusive at this scale"


def accuracy_verdicts(results):
    lines = []
    for base, family in (("LR", "RLO"), ("LR-L2", "RLO-L2")):
        parts, flags = [], []
        for name, res in results.items():
            ours_lr, ours_rlo = 100 * _col(res, base).mean(), 100 * _col(res, res["top3"][family][0]).mean()
            flags.append(ours_rlo > ours_lr)
            paper = _paper_best(name, family) if name in PAPER_TABLE7 else ("?", "?")
            parts.append(f"{name} {ours_rlo:.2f} vs {ours_lr:.2f} (paper {paper[1]} vs {paper[0]})")
        lines.append(f"- **Table 7, {family} (best k picked on the test folds) beats {base} on every dataset**: "
                     f"{_status(flags)}. Best-k {family} vs {base}: " + "; ".join(parts) + ".")
        parts, diffs = [], []
        for name, res in results.items():
            if res["nested"]:
                d, se = paired(res["nested"][family]["acc"], _col(res, base))
                diffs.append((d, se))
                parts.append(f"{name} {d:+.2f} ± {se:.2f} points")
        if parts:
            lines.append(f"- **{family} beats {base} when k is chosen on inner folds (nested CV)**: "
                         f"{_paired_status(diffs)} (supported only if every gain exceeds 2 SE of the paired "
                         "fold differences; paper: not tested). " + "; ".join(parts) + ".")
    return lines


def convergence_verdicts(results):
    parts, flags = [], []
    for name, res in results.items():
        conv = res["convergence"]
        for base, family in (("LR", "RLO"), ("LR-L2", "RLO-L2")):
            best = min(conv[n]["subopt_final"] for n in res["top3"][family])
            flags.append(best < conv[base]["subopt_final"])
            parts.append(f"{name} {family} {best:.3g} vs {base} {conv[base]['subopt_final']:.3g}")
    return [f"- **Fig. 5: RLO (top-3 k) converges faster than LR** (measured as the relative suboptimality "
            f"(L(T)-L*)/(L(0)-L*) after the paper's T iterations, lower is better; paper: claimed from "
            f"plots of L(t)/L(0)): {_status(flags)}. " + "; ".join(parts) + "."]


def kappa_verdicts(results, ks):
    lines = []
    for where, what in (("own", "at each objective's own optimum"), ("lr", "at LR's optimum (same w)")):
        holds = kappa_holds(results, ks, where)
        flags, parts = [], []
        for lab, (good, total) in holds.items():
            if total:
                flags.append(len(good) == total)
                parts.append(f"{lab}: {len(good)}/{total} k" + (f" ({','.join(f'{k:g}' for k in good)})"
                                                                 if good and len(good) < total else ""))
        status = _status(flags) if flags else "inconclusive at this scale"
        lines.append(f"- **Lemma 3.3: kappa(RLO) <= kappa(LR) {what}** for every k in [{ks[0]:g}, {ks[-1]:g}]: "
                     f"{status} (paper: proved for k <= exp(l_i^k(w*)), no numbers). k for which it held: "
                     + "; ".join(parts) + ".")
    return lines


def hypothesis_line(results, ks):
    """How often Lemma 3.2's per-row hypothesis k <= 1 + exp(-y w*.x) held at LR's optimum."""
    parts = []
    for lab, cond in _task_conds(results):
        for tag in ("", "-L2"):
            fracs = [cond.get(f"RLO{tag}-{k:g}", {}).get("lemma_hypothesis_frac") for k in (ks[0], ks[-1])]
            if fracs[0] is not None:
                parts.append(f"{lab}{' L2' if tag else ' λ=0'} {100 * fracs[0]:.1f}% (k={ks[0]:g}) / "
                             f"{100 * fracs[1]:.1f}% (k={ks[-1]:g})")
    return ["- Lemma 3.2's hypothesis k <= 1 + exp(-y_i w*.x_i) (App. A.1) held, at LR's optimum, for this share "
            "of rows: " + "; ".join(parts) + "."] if parts else []


def write_report(path, results, args):
    ks = args.ks
    lines = ["# Table 7, Fig. 5, Lemma 3.3: logistic vs rooted logistic regression", "",
             f"Produced by `python logreg.py {' '.join(args.argv)}` (see scripts/table7.sh). Full-batch GD "
             f"from w = 0, lr {args.lr}, {args.iters or 'paper'} iterations (paper: 200, SPECTF 1000), "
             f"{args.folds}-fold stratified CV (seed {args.seed}), features standardised on training folds "
             f"only, an unpenalised bias term, L2 lambda = {args.lam} (lambda/2 ||w||^2, paper Fig. 4a), "
             f"RLO = k mean((1+exp(-y w.x))^(1/k)) (paper eq. 4), k in {{{', '.join(f'{k:g}' for k in ks)}}}. "
             "Accuracies in %, mean ± std (numpy, ddof 0) over folds; wine = mean of its 3 one-vs-all tasks. "
             "Madelon: the 2,600 labelled rows (train + valid); the paper's 4,400 include 1,800 unlabelled "
             "test rows.", "", "## Verdicts", ""]
    lines += accuracy_verdicts(results) + convergence_verdicts(results)
    if args.conditioning:
        lines += kappa_verdicts(results, ks) + hypothesis_line(results, ks)
    lines += ["", "## Table 7 (top 3 k by mean test accuracy, the paper's protocol), ours beside the paper's", ""]
    lines += table7_lines(results)
    if args.inner_folds > 1:
        lines += ["", f"## Nested CV: k chosen per outer fold by {args.inner_folds}-fold inner CV", ""]
        lines += nested_lines(results)
    lines += ["", "## Convergence on the whole standardised dataset (Fig. 5: " +
              ", ".join(f"`{args.fig_prefix}{n}.png`" for n in results) + ")", "",
              "L* is the optimum found by Newton's method (the infimum, 0 for LR and k for RLO, where the "
              "data are linearly separable and unregularised). The criterion `iters to 1e-3 of final L` "
              "favours RLO, whose loss values are >= k: a change is small relative to them.", ""]
    lines += convergence_lines(results)
    if args.conditioning:
        lines += ["", "## Conditioning: exact Hessian at the optimum (Newton to max|grad| < 1e-9)"]
        lines += conditioning_lines(results, ks)
    lines += ["", "## Every configuration (mean ± std over folds)", "", "| config | " +
              " | ".join(results) + " |", "|---" * (len(results) + 1) + "|"]
    for i, cname in enumerate(next(iter(results.values()))["configs"]):
        lines.append(f"| {cname} | " + " | ".join(_pm(np.asarray(r["outer"])[:, i]) for r in results.values()) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS),
                   help="datasets to run (layouts: see README)")
    p.add_argument("--data-dir", type=str, default=None, help="folder holding <name>/ data (default: shared)")
    p.add_argument("--ks", type=float, nargs="+", default=[float(k) for k in range(3, 21)],
                   help="RLO k values (paper: k in [3, 20])")
    p.add_argument("--lr", type=float, default=0.01, help="GD step size (paper: 0.01)")
    p.add_argument("--iters", type=int, default=None, help="GD iterations (default: paper's, 200; SPECTF 1000)")
    p.add_argument("--lam", type=float, default=0.1,
                   help="L2 strength lambda for LR-L2 / RLO-L2 (paper: not given)")
    p.add_argument("--folds", type=int, default=5, help="outer CV folds (paper: 5)")
    p.add_argument("--inner-folds", type=int, default=3, help="inner folds for nested CV (<= 1: skip)")
    p.add_argument("--seed", type=int, default=0, help="CV shuffling seed")
    p.add_argument("--no-conditioning", dest="conditioning", action="store_false",
                   help="skip the exact-Hessian condition numbers")
    p.add_argument("--out-dir", type=str, default="runs/logreg", help="run directory (config.json, results.json)")
    p.add_argument("--report", type=str, default="results/table7.md", help="markdown report path")
    p.add_argument("--fig-prefix", type=str, default="results/fig5_", help="Fig. 5 PNG prefix ('' = none)")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    return args


def check_args(args):
    if args.lr <= 0 or args.lam < 0 or args.folds < 2 or (args.iters is not None and args.iters < 1):
        raise UsageError("need --lr > 0, --lam >= 0, --folds >= 2 and --iters >= 1")
    if any(k <= 0 or not math.isfinite(k) for k in args.ks):
        raise UsageError("every --ks value must be a finite number > 0")
    args.ks = sorted(set(args.ks))
    args.data_dir = args.data_dir or default_data_dir()


def main(args):
    check_args(args)
    torch.set_num_threads(1)  # small matrices: extra threads only contend on a shared machine
    for name in args.datasets:  # fail on a missing file before any work starts
        load_dataset(name, args.data_dir)
    write_config(args.out_dir, {k: v for k, v in vars(args).items() if k != "argv"})
    configs = make_configs(args.ks, args.lam)
    results = {}
    with tqdm(total=args.folds * len(args.datasets), desc="logreg folds") as bar:
        for name in args.datasets:
            opts = {"folds": args.folds, "seed": args.seed, "lr": args.lr, "inner_folds": args.inner_folds,
                    "iters": args.iters or DATASETS[name][1], "conditioning": args.conditioning,
                    "fig_prefix": args.fig_prefix}
            results[name] = run_dataset(name, args.data_dir, configs, opts, bar)
    atomic_write_json(os.path.join(args.out_dir, "results.json"), results)
    write_report(args.report, results, args)
    return results


if __name__ == "__main__":
    run_cli(main, parse_args())
