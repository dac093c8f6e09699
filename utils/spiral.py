"""The two-class spiral of the paper's Swiss-roll experiment (Sec. 4, Fig. 2b; App. A.4.2): data and split.

Used by synthetic.py (training) and hessian.py (the training set a spiral net's Hessian is taken on), so that
neither entry script imports the other.
"""
import math

import numpy as np


def make_spiral(n=1500, noise=0.05, seed=0):
    """Two interleaved Archimedean spirals, 2 turns each, radius in [0.1, 1].

    Class c has angle theta = 4 pi t + c pi and radius t, with t = 0.1 + 0.9 sqrt(u), u ~ U(0, 1) (sqrt
    spreads points evenly along the arm), plus N(0, noise^2) jitter. Returns float32 X (n, 2), int64 y.
    """
    import torch
    gen = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = 0.1 + 0.9 * np.sqrt(gen.uniform(size=n))
    theta = 4 * math.pi * t + math.pi * y
    X = np.stack([t * np.cos(theta), t * np.sin(theta)], 1) + gen.normal(scale=noise, size=(n, 2))
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def split(n, train_frac=0.7, seed=0):
    """Random train/test index split (70/30 in the paper)."""
    import torch
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(round(train_frac * n))
    return perm[:cut], perm[cut:]


def spiral_data(config):
    """(X_train, y_train, X_test, y_test) exactly as the run described by `config` saw them
    (config keys: n, noise, data_seed, train_frac)."""
    X, y = make_spiral(config["n"], config["noise"], config["data_seed"])
    tr, te = split(config["n"], config["train_frac"], config["data_seed"])
    return X[tr], y[tr], X[te], y[te]


def probability_grid(model, lim=1.2, res=300):
    """P(class 1) on a res x res grid over [-lim, lim]^2: (xs, ys, probs) as numpy arrays."""
    import torch
    xs = torch.linspace(-lim, lim, res)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)), 1)[:, 1]
    return gx.numpy(), gy.numpy(), probs.reshape(res, res).numpy()
