"""Model registry: CLI name -> factory(num_classes, image_size, **opts).

Every architecture the authors' train.py offers, built from timm, torchvision or vit-pytorch configured to the
authors' hyperparameters (see README, Fidelity notes, for the small differences from the authors' copies).
Options shared by the factories: patch (ViT patch / Swin window, the authors' --patch), dimhead (ViT width,
the authors' --dimhead), pretrained (local weights file for vit_timm), depth (override, for quick tests).
"""
import warnings

import utils.tv_compat  # noqa: F401  (before torchvision: `import models` must work first in a user's script)
from models import airbench, convnets, resnet20, transformers

MODELS = {
    "vgg": convnets.vgg19,
    "res18": convnets.res18,
    "res34": convnets.res34,
    "res50": convnets.res50,
    "res101": convnets.res101,
    "res18_mini": convnets.res18_mini,
    "resnet20": resnet20.resnet20,
    "convmixer": convnets.convmixer,
    "vit": transformers.vit,
    "vit_small": transformers.vit_small,
    "vit_tiny": transformers.vit_tiny,
    "vit-l": transformers.vit_large,
    "simplevit": transformers.simplevit,
    "cait": transformers.cait,
    "cait_small": transformers.cait_small,
    "swin": transformers.swin,
    "swin_mini": transformers.swin_mini,
    "mlpmixer": transformers.mlpmixer,
    "vit_timm": transformers.vit_timm,
    "airbench_mini": airbench.airbench_mini,
}

# Nets that only accept a fixed input size: the data pipeline resizes images to it.
FIXED_SIZE = {"vit_timm": 384}


def canonical_name(name):
    """Case-insensitive lookup (the authors' README writes `--net Swin`); ValueError lists the choices."""
    key = str(name).lower()
    if key not in MODELS:
        raise ValueError(f"unknown net {name!r}; choose from {', '.join(MODELS)}")
    return key


def input_size(name, size):
    """The image size the net `name` is fed when the user asked for `size`."""
    return FIXED_SIZE.get(canonical_name(name), size)


def build_model(name, num_classes, image_size, patch=4, dimhead=512, pretrained=None, **opts):
    """Build registry net `name` for `num_classes` classes and square inputs of `image_size` pixels."""
    key = canonical_name(name)
    return MODELS[key](num_classes, input_size(key, image_size), patch=patch, dimhead=dimhead,
                       pretrained=pretrained, **opts)


def load_pretrained(model, path, skip_prefixes=("head.",)):
    """Load a local state dict (file from timm/HF, or our checkpoint) into `model`, skipping the classifier
    head and any tensor whose shape differs; returns the names that were not loaded."""
    from utils.checkpoint import load_state_dict_file
    state = load_state_dict_file(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items()
              if k in own and v.shape == own[k].shape and not k.startswith(skip_prefixes)}
    model.load_state_dict(usable, strict=False)
    missing = sorted(set(own) - set(usable))
    if len(usable) == 0:
        warnings.warn(f"no tensor of {path} matched the model; it stays randomly initialised")
    return missing


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "build_model", "canonical_name", "input_size", "load_pretrained", "count_parameters"]
