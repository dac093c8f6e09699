"""quant/calibration.py: Hessian statistics on hand-made H with known values."""
import math

import pytest
import torch

from quant.calibration import hessian_summary


def test_two_by_two_known_values():
    H = torch.tensor([[2.0, 1.0], [1.0, 2.0]])  # eigenvalues 1 and 3, eigenvectors (1, +-1)/sqrt(2)
    s = hessian_summary(H, percdamp=0.0)
    assert s["n"] == 2 and s["alive"] == 2
    assert s["cond"] == pytest.approx(3.0)
    assert s["trD_trH"] == pytest.approx((2.0 + 1.5) / 4.0)  # LDL: D = diag(2, 2 - 1/2)
    assert s["mu"] == pytest.approx(1.0)  # perfectly spread eigenvectors


def test_dead_input_is_left_out_of_cond_and_axes_are_coherent():
    H = torch.diag(torch.tensor([4.0, 1.0, 0.0]))
    s = hessian_summary(H, percdamp=0.01)
    assert s["alive"] == 2
    assert s["cond"] == pytest.approx(4.0)  # on the alive inputs; with the dead one it would be infinite
    assert s["trD_trH"] == pytest.approx(1.0)  # diagonal H: D = H
    assert s["mu"] == pytest.approx(math.sqrt(3))  # eigenvectors are coordinate axes: maximally coherent


def test_singular_on_alive_inputs_is_infinite():
    v = torch.tensor([[1.0], [2.0]])
    assert hessian_summary(v @ v.T)["cond"] == math.inf
