"""models/fcn.py: the spiral experiment's fully connected nets."""
import pytest
import torch

import utils.tv_compat  # noqa: F401  (models/ imports torchvision)
from models.fcn import build_fcn, fcn_from_config


@pytest.mark.parametrize("depth,linears", [(2, 2), (3, 3), (4, 4)])
def test_fcn_depth_counts_linear_layers(depth, linears):
    net = build_fcn(depth, hidden=7)
    assert sum(isinstance(m, torch.nn.Linear) for m in net) == linears
    assert net(torch.zeros(5, 2)).shape == (5, 2)


def test_fcn_from_config_and_bad_depth():
    assert sum(p.numel() for p in fcn_from_config({"depth": 2, "hidden": 6}).parameters()) == 6 * 3 + 2 * 6 + 2
    with pytest.raises(ValueError):
        build_fcn(1)
