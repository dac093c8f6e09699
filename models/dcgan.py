"""The small DCGAN of gan.py (generator, discriminator) and the digit classifier whose features score it.

Not in the image-classifier registry (models.MODELS): a GAN pair and a feature network do not fit its
factory(num_classes, image_size) contract.
"""
import torch
import torch.nn as nn


class Generator(nn.Module):
    """DCGAN generator for 28x28: z -> 7x7 -> 14x14 -> 28x28 (Radford et al. 2015, sized for MNIST)."""

    def __init__(self, z_dim=64, width=64, channels=1):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(z_dim, 2 * width * 49, bias=False), nn.BatchNorm1d(2 * width * 49),
                                nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())
        self.width = width

    def forward(self, z):
        return self.net(self.fc(z).view(len(z), 2 * self.width, 7, 7))


class Discriminator(nn.Module):
    """DCGAN discriminator for 28x28, one logit per image (no sigmoid: the loss takes logits)."""

    def __init__(self, width=64, channels=1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(2 * width * 49, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


class FeatureNet(nn.Module):
    """Small CNN digit classifier; its 128-d penultimate activations are the features the score uses."""

    def __init__(self, channels=1, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 49, 128), nn.ReLU(True))
        self.head = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.head(self.body(x))

    @torch.no_grad()
    def features(self, x, batch=500):
        return torch.cat([self.body(x[i:i + batch]) for i in range(0, len(x), batch)]).double().numpy()
