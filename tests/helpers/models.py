"""Small hand-written networks the tests share."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


def conv_bn(cin: int, cout: int, k: int = 3, **kwargs) -> nn.Sequential:
    """conv (no bias, same padding) - BN - ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False, **kwargs), nn.BatchNorm2d(cout), nn.ReLU()
    )


class Head(nn.Module):
    """Global average pool, then a linear classifier."""

    def __init__(self, channels: int, num_classes: int = 10):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


def two_class_net(num_classes: int = 2, dropout: float = 0.0) -> nn.Sequential:
    """One-channel input, conv-BN-ReLU, pool, dropout, linear (the engine tests' model)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4, num_classes),
    )


def two_class_dataset(n: int = 64, seed: int = 0) -> TensorDataset:
    """Two classes separable by brightness: class 0 is dark, class 1 bright."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 2
    images = torch.randn(n, 1, 8, 8, generator=g) * 0.3 + (targets.float() * 2 - 1).view(-1, 1, 1, 1)
    return TensorDataset(images, targets)


def conv_chain(widths=(16, 32, 32, 48), num_classes: int = 5) -> nn.Sequential:
    """conv-BN-ReLU x len(widths), pool, linear: one independent group per conv."""
    layers: list[nn.Module] = []
    channels = 3
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def calibrated(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN weights, BN statistics from one random batch (outputs not vanishingly small), eval mode."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 3, 8, 8))
    return model.eval()


class FeatureNet(nn.Module):
    """conv-BN-ReLU twice (the second of stride 2), pool, linear: ``features`` then ``classifier``."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width * 2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(width * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def calibrate(model: nn.Module, shape: tuple[int, ...], seed: int = 0, *, train: bool = False) -> nn.Module:
    """Give batch norms real running statistics from one random batch, then switch to eval (or train).

    With fresh statistics (mean 0, var 1) eval outputs of deep nets shrink to ~1e-17 and
    every output comparison would pass trivially.
    """
    has_bn = False
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
            has_bn = True
    if has_bn:
        model.train()
        with torch.no_grad():
            model(torch.randn(*shape, generator=torch.Generator().manual_seed(seed + 100)))
    return model.train(train)


@torch.no_grad()
def accuracy_of(model: nn.Module, loader, k: int = 1) -> float:
    """Top-``k`` accuracy (%) of ``model`` on ``loader``, counted here independently of torchslim.engine."""
    model.eval()
    correct = total = 0
    for images, labels in loader:
        logits = model(images)
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        correct += int((top == labels[:, None]).any(dim=1).sum())
        total += len(labels)
    return 100.0 * correct / total
