"""The model zoo: small modern architectures with seeded random weights, for tests and benchmarks.

``zoo_model(name, seed=0)`` builds one in eval mode (float32); ``zoo_input(name, seed=0)``
draws an input of its shape; ``ZOO`` lists them with their input shapes. Every model is
scaled down (few channels, few pixels or tokens) so that a bound call takes seconds on one
CPU thread; the architecture, not the size, is the point:

* ``resnet18``: a ResNet-18-style CIFAR net on **3x8x8** inputs (not 32x32) with base width
  4 (not 64): a 3x3 conv stem + BatchNorm + ReLU, four stages of two BasicBlocks each
  (widths 4, 8, 16, 32; strides 1, 2, 2, 2; strided 3x3 convs, 1x1 strided projection
  shortcuts with BatchNorm where the shape changes, residual adds), adaptive average pooling
  to 1x1, a linear layer to 10 classes. BatchNorm layers hold random non-trivial running
  statistics and affine parameters (eval mode uses them).
* ``vit``: a ViT on 3x8x8 images: a 4x4 patch-embedding conv (4 tokens of width 8), a cls
  token (concatenated) and learned position embeddings, one pre-norm block (LayerNorm,
  two-head softmax attention with 1/sqrt(d_head) scaling written with matmuls, GELU MLP of
  width 16), a final LayerNorm on the cls token and a linear head to 10 classes.
* ``mixer``: an MLP-Mixer on 3x8x8 images: 4x4 patches (4 tokens of width 8), one block of
  pre-norm token mixing (MLP 4 -> 8 -> 4 across tokens) and channel mixing (MLP 8 -> 16 ->
  8), GELU, residual adds, LayerNorm, mean over tokens, linear head to 10 classes.
* ``lipschitz-transformer``: a Lipschitz-constrained transformer as in Newhouse et al.,
  "Training Transformers with Enforced Lipschitz Constants" (2025): every weight matrix
  spectrally normalised (largest singular value 1), no LayerNorm, attention scores scaled by
  1/d_head (not 1/sqrt(d_head)), the attention output scaled by 1/3, GELU divided by its
  largest slope 1.1289 (so it is 1-Lipschitz), and residual connections as convex
  combinations ``(1 - a) x + a block(x)`` with ``a = 1 / (2 * depth)``. Input: a sequence of
  4 tokens of width 8 (``[4, 8]``); two blocks, two heads, no causal mask (a classifier);
  mean over tokens and a spectrally normalised head to 10 classes.
* ``mnist1d-cnn``: the shipped trained 1-D ReLU CNN on MNIST-1D (``lipbound.models``,
  input ``[1, 40]``); its weights are trained, so ``seed`` only changes :func:`zoo_input`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from lipbound.errors import InputError


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: its name, input shape (no batch dimension), number of outputs, and
    ``eps``, an l_inf radius at which CROWN bounds of the float64 model stay informative."""

    name: str
    input_shape: tuple[int, ...]
    num_outputs: int
    description: str
    eps: float


# ---------------------------------------------------------------------------- ResNet-18

class BasicBlock(nn.Module):
    """ResNet BasicBlock: conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:  # 1x1 projection shortcut
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 layout (stages of 2, 2, 2, 2 BasicBlocks) for small CIFAR-style images."""

    def __init__(self, width: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks, c = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2 ** i
            blocks += [BasicBlock(c, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c = c_out
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


# ---------------------------------------------------------------------------- ViT

class Attention(nn.Module):
    """Multi-head softmax self-attention written with matmuls; scores scaled by ``scale``,
    the merged heads by ``out_scale``."""

    def __init__(self, d: int, heads: int, scale: float, out_scale: float = 1.0,
                 bias: bool = True) -> None:
        super().__init__()
        self.heads, self.scale, self.out_scale = heads, scale, out_scale
        self.qkv = nn.Linear(d, 3 * d, bias=bias)
        self.proj = nn.Linear(d, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = (t.reshape(B, T, self.heads, d // self.heads).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        o = (att @ v).transpose(1, 2).reshape(B, T, d)
        return self.proj(o * self.out_scale)


class ViTBlock(nn.Module):
    def __init__(self, d: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads, 1.0 / math.sqrt(d // heads))
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch-embedding conv, cls token, position embeddings, pre-norm blocks, cls head."""

    def __init__(self, image: int = 8, patch: int = 4, d: int = 8, heads: int = 2,
                 depth: int = 1, classes: int = 10) -> None:
        super().__init__()
        tokens = (image // patch) ** 2
        self.embed = nn.Conv2d(3, d, patch, stride=patch)
        self.cls = nn.Parameter(0.1 * torch.randn(1, 1, d))
        self.pos = nn.Parameter(0.1 * torch.randn(1, tokens + 1, d))
        self.blocks = nn.Sequential(*[ViTBlock(d, heads, 2 * d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # [B, tokens, d]
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1) + self.pos
        return self.head(self.norm(self.blocks(t)[:, 0]))


# ---------------------------------------------------------------------------- MLP-Mixer

class MixerBlock(nn.Module):
    def __init__(self, tokens: int, d: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, 2 * tokens), nn.GELU(),
                                       nn.Linear(2 * tokens, tokens))
        self.norm2 = nn.LayerNorm(d)
        self.channel_mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, tokens, d]
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Mixer(nn.Module):
    def __init__(self, image: int = 8, patch: int = 4, d: int = 8, depth: int = 1,
                 classes: int = 10) -> None:
        super().__init__()
        tokens = (image // patch) ** 2
        self.embed = nn.Conv2d(3, d, patch, stride=patch)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, d) for _ in range(depth)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(t)).mean(dim=1))


# ---------------------------------------------------------------------------- Lipschitz transformer

#: largest slope of GELU (erf form); dividing by it makes the activation 1-Lipschitz
GELU_MAX_SLOPE = 1.1289


class LipschitzBlock(nn.Module):
    """Attention then MLP, each as a convex residual ``(1 - a) x + a f(x)``; no LayerNorm."""

    def __init__(self, d: int, heads: int, a: float) -> None:
        super().__init__()
        self.a = a
        self.attn = Attention(d, heads, 1.0 / (d // heads), out_scale=1.0 / 3.0, bias=False)
        self.fc1 = nn.Linear(d, d, bias=False)
        self.fc2 = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (1 - self.a) * x + self.a * self.attn(x)
        h = self.fc2(F.gelu(self.fc1(x)) / GELU_MAX_SLOPE)
        return (1 - self.a) * x + self.a * h


class LipschitzTransformer(nn.Module):
    def __init__(self, d: int = 8, heads: int = 2, depth: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(d, d, bias=False)
        self.blocks = nn.Sequential(*[LipschitzBlock(d, heads, 1.0 / (2 * depth))
                                      for _ in range(depth)])
        self.head = nn.Linear(d, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, tokens, d]
        return self.head(self.blocks(self.embed(x)).mean(dim=1))


def spectral_normalise(model: nn.Module) -> None:
    """Divide every Linear weight by its largest singular value (so its l_2 norm is 1); the
    qkv projection is normalised per q, k, v block."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                parts = m.weight.chunk(3, dim=0) if m.out_features == 3 * m.in_features \
                    else (m.weight,)
                for w in parts:
                    w /= torch.linalg.matrix_norm(w.double(), ord=2).float()


# ---------------------------------------------------------------------------- factory

ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry("resnet18", (3, 8, 8), 10, "ResNet-18 layout, width 4, 3x8x8", 1e-3),
    ZooEntry("vit", (3, 8, 8), 10, "ViT: 4x4 patches, d 8, 2 heads, 1 block, cls token", 1e-3),
    ZooEntry("mixer", (3, 8, 8), 10, "MLP-Mixer: 4x4 patches, d 8, 1 block", 1e-3),
    ZooEntry("lipschitz-transformer", (4, 8), 10,
             "spectrally normalised, no LayerNorm, 1/d attention, convex residuals", 1e-2),
    ZooEntry("mnist1d-cnn", (1, 40), 10, "the shipped trained MNIST-1D CNN", 1e-2),
)}

#: the zoo's model names
ZOO_NAMES: tuple[str, ...] = tuple(ZOO)


def _randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial eval statistics and affine parameters for every BatchNorm layer."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))


def zoo_model(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The zoo model ``name`` with weights drawn from ``seed`` (PyTorch's default
    initialisation), in eval mode, its parameters in ``dtype``; InputError for an unknown
    name. (Bounds on a float32 model contain its float32 forward pass too: on the deep and
    LayerNorm models that rounding allowance dominates the width; float64 shows the
    relaxations' own width.)"""
    if name not in ZOO:
        raise InputError(f"unknown zoo model {name!r}; zoo models: {', '.join(ZOO_NAMES)}")
    if name == "mnist1d-cnn":
        from lipbound.models.registry import load

        return load("mnist1d-cnn").to(dtype)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: nn.Module = {"resnet18": ResNet18, "vit": ViT, "mixer": Mixer,
                            "lipschitz-transformer": LipschitzTransformer}[name]()
    if name == "resnet18":
        _randomise_batchnorm(model, gen)
    if name == "lipschitz-transformer":
        spectral_normalise(model)
    return model.to(dtype).eval()


def zoo_input(name: str, seed: int = 0) -> torch.Tensor:
    """A seeded input of the model's shape (no batch dimension): uniform in [0, 1] for
    images and signals, standard normal for the transformer's token sequence."""
    if name not in ZOO:
        raise InputError(f"unknown zoo model {name!r}; zoo models: {', '.join(ZOO_NAMES)}")
    gen = torch.Generator().manual_seed(10_000 + seed)
    shape = ZOO[name].input_shape
    if name == "lipschitz-transformer":
        return torch.randn(shape, generator=gen)
    if name == "mnist1d-cnn":
        return torch.randn(shape, generator=gen)
    return torch.rand(shape, generator=gen)
