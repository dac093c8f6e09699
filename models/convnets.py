"""Convolutional nets: CIFAR-style VGG19 and ResNets (torchvision's blocks with a 3x3 stride-1 stem and no
max-pool, as in the authors' models/resnet.py), a width-quartered ResNet-18 for CPU runs, and ConvMixer (timm).
"""
import torch.nn as nn
import torchvision.models as tvm
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet


def _cifar_resnet(block, layers, num_classes, width=64):
    """torchvision ResNet with the CIFAR stem: conv3x3(3, width, stride 1) + BN + ReLU, no max-pool."""
    net = ResNet(block, layers, num_classes=num_classes) if width == 64 else \
        _narrow_resnet(block, layers, num_classes, width)
    net.conv1 = nn.Conv2d(3, net.bn1.num_features, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _narrow_resnet(block, layers, num_classes, width):
    """torchvision's ResNet with `width` channels in the first stage instead of 64 (for CPU-scale runs)."""
    class Narrow(ResNet):
        def __init__(self):
            nn.Module.__init__(self)
            self._norm_layer, self.inplanes, self.dilation = nn.BatchNorm2d, width, 1
            self.groups, self.base_width = 1, 64
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn1, self.relu, self.maxpool = nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.Identity()
            self.layer1 = self._make_layer(block, width, layers[0])
            self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
            self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
            self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return Narrow()


def res18(num_classes, image_size, **_):
    return _cifar_resnet(BasicBlock, [2, 2, 2, 2], num_classes)


def res34(num_classes, image_size, **_):
    return _cifar_resnet(BasicBlock, [3, 4, 6, 3], num_classes)


def res50(num_classes, image_size, **_):
    return _cifar_resnet(Bottleneck, [3, 4, 6, 3], num_classes)


def res101(num_classes, image_size, **_):
    return _cifar_resnet(Bottleneck, [3, 4, 23, 3], num_classes)


def res18_mini(num_classes, image_size, **_):
    """ResNet-18 layout with widths 16-32-64-128 (1/16 of the FLOPs): the 'small ResNet' of table1_cpu."""
    return _cifar_resnet(BasicBlock, [2, 2, 2, 2], num_classes, width=16)


def vgg19(num_classes, image_size, **_):
    """VGG19 with batch norm, global average pooling and one linear classifier (CIFAR style)."""
    net = tvm.vgg19_bn(num_classes=num_classes)
    net.avgpool = nn.AdaptiveAvgPool2d(1)
    net.classifier = nn.Linear(512, num_classes)
    return net


def convmixer(num_classes, image_size, depth=16, **_):
    """ConvMixer-256/16, kernel 8, patch 1 (the ancestor repository's CIFAR defaults)."""
    from timm.models.convmixer import ConvMixer
    return ConvMixer(dim=256, depth=depth, kernel_size=8, patch_size=1, num_classes=num_classes)
