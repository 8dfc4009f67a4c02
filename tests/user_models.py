"""The six models users bring (issue 17), small and with seeded random weights.

1. ``NegAbsMeanMLP``: an MLP with unary minus, ``abs`` and a mean over features;
2. ``PreNormResidualMLP``: x + MLP(LayerNorm(x)) with GELU, then a head;
3. ``TinyViTBlock``: patch embedding of an 8x8 image into 4 tokens, a pre-norm block with
   LayerNorm, two-head softmax attention written with matmuls, an MLP, mean over tokens, head;
4. ``SoftmaxClassifier``: an MLP whose output is softmax probabilities;
5. ``ReLU6HardtanhMLP``: ReLU6 and Hardtanh activations;
6. ``ConvBNResidual``: strided conv + BatchNorm residual block (1x1 strided shortcut), ReLU,
   adaptive average pooling to a size that does not divide the feature map, head.

``residual_family`` varies the sixth (widths, input sizes, pooled sizes that divide the feature
map, as auto_LiRPA needs, radii) for tests and ``experiments/bench_residual_gap.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class NegAbsMeanMLP(nn.Module):
    def __init__(self, d_in=6, width=10, out=3):
        super().__init__()
        self.fc1 = nn.Linear(d_in, width)
        self.fc2 = nn.Linear(width, width)
        self.head = nn.Linear(width, out)

    def forward(self, x):
        h = torch.abs(self.fc1(x))
        h = -self.fc2(h)
        h = h - h.mean(dim=1, keepdim=True)
        return self.head(torch.relu(h))


class PreNormResidualMLP(nn.Module):
    def __init__(self, d=8, hidden=16, out=3):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)
        self.head = nn.Linear(d, out)

    def forward(self, x):
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(x)


class TinyViTBlock(nn.Module):
    def __init__(self, patch=4, d=8, heads=2, out=3):
        super().__init__()
        self.patch, self.d, self.heads = patch, d, heads
        self.embed = nn.Linear(patch * patch, d)
        self.pos = nn.Parameter(torch.randn(4, d) * 0.1)
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.head = nn.Linear(d, out)

    def forward(self, img):  # [B, 1, 8, 8]
        B = img.shape[0]
        p = self.patch
        t = img.reshape(B, 2, p, 2, p).permute(0, 1, 3, 2, 4).reshape(B, 4, p * p)
        x = self.embed(t) + self.pos
        h = self.norm1(x)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        dh = self.d // self.heads
        q = q.reshape(B, 4, self.heads, dh).transpose(1, 2)
        k = k.reshape(B, 4, self.heads, dh).transpose(1, 2)
        v = v.reshape(B, 4, self.heads, dh).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, 4, self.d)
        x = x + self.proj(o)
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(dim=1))


class SoftmaxClassifier(nn.Module):
    def __init__(self, d_in=5, width=12, out=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, out))

    def forward(self, x):
        return torch.softmax(self.net(x), dim=-1)


class ReLU6HardtanhMLP(nn.Module):
    def __init__(self, d_in=6, width=10, out=3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, width), nn.ReLU6(), nn.Linear(width, width),
                                 nn.Hardtanh(-0.5, 0.5), nn.Linear(width, out))

    def forward(self, x):
        return self.net(2 * x)


class ConvBNResidual(nn.Module):
    def __init__(self, c_in=1, c=4, out=3, pool=(2, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.short = nn.Conv2d(c_in, c, 1, stride=2, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Linear(c * pool[0] * pool[1], out)

    def forward(self, x):  # [B, 1, 9, 9] -> feature map 5x5 -> pooled 2x3 (uneven windows)
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        h = F.relu(h + self.bn3(self.short(x)))
        return self.head(self.pool(h).flatten(1))


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)


def user_models() -> dict[str, tuple[nn.Module, torch.Tensor]]:
    """name -> (eval-mode model, one input without batch dimension)."""
    out = {}
    specs = {
        "neg_abs_mean_mlp": (NegAbsMeanMLP, (6,)),
        "prenorm_residual_mlp": (PreNormResidualMLP, (8,)),
        "tiny_vit_block": (TinyViTBlock, (1, 8, 8)),
        "softmax_classifier": (SoftmaxClassifier, (5,)),
        "relu6_hardtanh_mlp": (ReLU6HardtanhMLP, (6,)),
        "conv_bn_residual": (ConvBNResidual, (1, 9, 9)),
    }
    for i, (name, (cls, shape)) in enumerate(specs.items()):
        torch.manual_seed(100 + i)
        model = cls()
        _randomise_bn(model, torch.Generator().manual_seed(200 + i))
        x = torch.rand(shape, generator=torch.Generator().manual_seed(300 + i))
        out[name] = (model.eval(), x)
    return out


def residual_family(n: int = 12) -> list[tuple[str, nn.Module, torch.Tensor, float]]:
    """(name, eval-mode ConvBNResidual, input [c_in, side, side], eps) for seeds 0..n-1:
    widths 3-8, 1-3 input channels, inputs 8/12/16 (feature maps 4/6/8) pooled to 1x1, 2x2 or
    half the feature map, eps 0.005-0.05, BatchNorm statistics randomised."""
    out = []
    for s in range(n):
        c, c_in, side = (3, 4, 6, 8)[s % 4], (1, 2, 3)[s % 3], (8, 12, 16)[s % 3]
        p = (1, 2, (side + 1) // 4)[(s // 3) % 3]
        eps = (0.005, 0.01, 0.02, 0.05)[s % 4]
        torch.manual_seed(1000 + s)
        model = ConvBNResidual(c_in, c, 3, (p, p))
        _randomise_bn(model, torch.Generator().manual_seed(2000 + s))
        x = torch.rand((c_in, side, side), generator=torch.Generator().manual_seed(3000 + s))
        out.append((f"res{s}_c{c}_in{c_in}_{side}px_pool{p}", model.eval(), x, eps))
    return out
