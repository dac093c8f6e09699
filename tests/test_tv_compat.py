import subprocess
import sys

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
