"""A small, fast CIFAR conv net in the spirit of airbench (Keller Jordan's airbench94: a conv stem, then three
blocks of conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU, global max-pool, one linear layer), at widths
that train in minutes on one CPU thread. Written from the description, not copied; airbench's whitening stem,
lookahead and logit temperature are left out so that the logits the losses see are the plain network output.
"""
import torch.nn as nn


def _conv_bn(c_in, c_out, pool=False):
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers + [nn.BatchNorm2d(c_out), nn.GELU()]


def _block(c_in, c_out):
    return nn.Sequential(*_conv_bn(c_in, c_out, pool=True), *_conv_bn(c_out, c_out))


class AirBench(nn.Module):
    """Stem conv at `widths[0]`, one pooled block per width, global max-pool, linear classifier."""

    def __init__(self, num_classes, widths=(32, 64, 128)):
        super().__init__()
        stem = nn.Sequential(*_conv_bn(3, widths[0]))
        blocks = [_block(c_in, c_out) for c_in, c_out in zip((widths[0],) + tuple(widths[:-1]), widths)]
        self.features = nn.Sequential(stem, *blocks, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.head(self.features(x))


def airbench_mini(num_classes, image_size, width=32, **_):
    """Widths width, 2*width, 4*width (32-64-128 by default, about 0.29M parameters); any input size >= 8."""
    return AirBench(num_classes, (width, 2 * width, 4 * width))
