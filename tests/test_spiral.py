"""utils/spiral.py: the spiral generator, its split and the probability grid."""
import torch

import utils.tv_compat  # noqa: F401  (models/ imports torchvision)

from models.fcn import build_fcn
from utils.spiral import make_spiral, probability_grid, spiral_data, split


def test_spiral_is_seeded_balanced_and_bounded():
    X1, y1 = make_spiral(101, seed=3)
    X2, y2 = make_spiral(101, seed=3)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    assert not torch.equal(X1, make_spiral(101, seed=4)[0])
    assert X1.shape == (101, 2) and abs(int(y1.sum()) - 50) <= 1
    assert X1.abs().max() < 1.5


def test_split_is_70_30_and_disjoint():
    tr, te = split(1500, 0.7, seed=0)
    assert len(tr) == 1050 and len(te) == 450
    assert len(set(tr.tolist()) | set(te.tolist())) == 1500


def test_spiral_data_follows_the_config():
    config = {"n": 50, "noise": 0.05, "data_seed": 2, "train_frac": 0.7}
    X_tr, y_tr, X_te, y_te = spiral_data(config)
    assert len(X_tr) == 35 and len(X_te) == 15
    assert torch.equal(spiral_data(config)[0], X_tr)


def test_probability_grid_is_a_probability():
    gx, gy, probs = probability_grid(build_fcn(2, 4), res=7)
    assert gx.shape == gy.shape == probs.shape == (7, 7)
    assert ((probs >= 0) & (probs <= 1)).all()
