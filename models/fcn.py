"""The fully connected ReLU nets of the spiral experiment (paper Sec. 4, Fig. 2b; App. A.4.2).

Not in the image-model registry (models.MODELS): these nets take 2-d points, not images, so they do not fit
its factory(num_classes, image_size) contract. synthetic.py trains them, hessian.py rebuilds them from a
'synthetic' checkpoint's config.
"""
from torch import nn


def build_fcn(depth, hidden=100, in_dim=2, num_classes=2):
    """`depth` linear layers with ReLU between them (depth 2 = one hidden layer)."""
    if depth < 2:
        raise ValueError(f"depth must be >= 2, got {depth}")
    dims = [in_dim] + [hidden] * (depth - 1)
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], num_classes))


def fcn_from_config(config):
    """The net a 'synthetic' checkpoint's config describes (keys depth, hidden)."""
    return build_fcn(config["depth"], config["hidden"])
