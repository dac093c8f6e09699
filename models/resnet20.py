"""CIFAR ResNet-20 (He et al. 2016, Sec. 4.2): a 3x3 stem of 16 channels, three stages of three basic blocks
with 16/32/64 channels, option-A shortcuts (stride-2 subsampling plus zero channels, no parameters), global
average pooling and one linear layer. About 268k conv + 640 linear weights: the net gem-miner prunes
(paper Sec. 4.2.2). `affine=False` gives gem-miner's non-affine batch norm; `bias=False` drops the
classifier bias, so that every parameter is a prunable weight.
"""
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = (16, 32, 64)
BLOCKS_PER_STAGE = 3


class ShortcutA(nn.Module):
    """Option A: take every other pixel and pad the new channels with zeros (identity when shapes agree)."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.stride, self.pad = stride, planes - in_planes

    def forward(self, x):
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride, affine):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, affine=affine)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, affine=affine)
        self.shortcut = ShortcutA(in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, num_classes=10, affine=True, bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0], affine=affine)
        blocks, in_planes = [], WIDTHS[0]
        for stage, planes in enumerate(WIDTHS):
            for i in range(BLOCKS_PER_STAGE):
                blocks.append(BasicBlock(in_planes, planes, 2 if stage > 0 and i == 0 else 1, affine))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(WIDTHS[-1], num_classes, bias=bias)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x):
        out = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet20(num_classes, image_size=32, affine=True, bias=True, **_):
    """Registry factory; works at any image size (global pooling), e.g. 16 px for CPU-scale pruning runs."""
    return ResNet20(num_classes, affine=affine, bias=bias)
