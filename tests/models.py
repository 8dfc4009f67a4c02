"""Small models used across the tests (built with fixed seeds)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def mlp(sizes=(4, 8, 8, 3), act: type[nn.Module] | nn.Module = nn.ReLU, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(copy.deepcopy(act) if isinstance(act, nn.Module) else act())
    return nn.Sequential(*layers).eval()


class SmallCNN(nn.Module):
    """Conv + BatchNorm + max/avg pooling + padding + residual add + concat."""

    def __init__(self, act=F.relu, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.act = act
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(6 * 2 * 2, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)

    def forward(self, x):
        x = (x - 0.4) / 0.3
        h = self.act(self.bn(self.c1(x)))
        h = h + self.act(self.c2(h))
        a = F.max_pool2d(h, 2)
        b = F.avg_pool2d(F.pad(h, (1, 1, 1, 1)), 3, stride=2)[..., :2, :2]
        return self.fc(torch.flatten(torch.cat([a, b], 1), 1))


def small_cnn(act=F.relu, seed=0) -> nn.Module:
    return SmallCNN(act, seed).eval()
