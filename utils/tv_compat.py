"""Make `import torchvision` work with a CPU torch and a CUDA-linked torchvision wheel.

The torchvision 0.28.0 wheel on PyPI links its C extension against CUDA. With the CPU build of torch
that extension fails to load, and torchvision's import then dies in its fake-tensor registrations for
`torchvision::nms` / `torchvision::qnms`, the two ops it registers without checking that the extension
defined them. Defining just those two schemas in a library fragment lets torchvision import with its C
ops disabled (datasets, transforms.v2, models and timm all work; only the detection ops are missing).

Import this module before anything imports torchvision. Where the extension loads (CUDA machines, a
matching CPU wheel) it does nothing.
"""
import importlib.util
import os

import torch

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_fragment = None  # keep the fragment alive: dropping it would unregister the schemas


def _extension_loads():
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # no torchvision installed: nothing to repair
    folder = os.path.dirname(spec.origin)
    libs = [f for f in os.listdir(folder) if f.startswith("_C.") and f.endswith((".so", ".pyd"))]
    if not libs:
        return False
    try:
        torch.ops.load_library(os.path.join(folder, libs[0]))
    except (OSError, RuntimeError):
        return False
    return True


def ensure_torchvision():
    """Register the two unguarded op schemas if torchvision's C extension cannot be loaded."""
    global _fragment
    if _fragment is not None or _extension_loads():
        return
    _fragment = torch.library.Library("torchvision", "FRAGMENT")
    for name in ("nms", "qnms"):
        _fragment.define(name + _SCHEMA)


ensure_torchvision()
