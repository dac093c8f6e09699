import subprocess
import sys

import pytest

from utils.runio import REPO

CODE = """
import utils.tv_compat
import torch, torchvision, timm
from torchvision.transforms import v2
img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
assert v2.RandAugment(num_ops=2, magnitude=14)(img).shape == (3, 32, 32)
net = timm.create_model("resnet18", pretrained=False, num_classes=3)
assert net(torch.randn(2, 3, 32, 32)).shape == (2, 3)
utils.tv_compat.ensure_torchvision()  # a second call is a no-op
print("ok")
"""


def test_torchvision_and_timm_import_in_a_fresh_process():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


FIRST = """
import {module}
import torch
{check}
print("ok")
"""


@pytest.mark.parametrize("module,check", [
    ("models", "assert models.build_model('res18_mini', 3, 8)(torch.randn(2, 3, 8, 8)).shape == (2, 3)"),
    ("utils.datasets", "assert 'digits' in utils.datasets.DATASETS"),
])
def test_project_packages_import_first_in_a_fresh_interpreter(module, check):
    """`import models` (README's checkpoint recipe) must not need utils.tv_compat imported before it."""
    code = FIRST.format(module=module, check=check)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
