"""Weight audit: per layer spectral norm, condition number and sparsity.

These are the factors of the naive (product of norms) Lipschitz bound; ill-conditioned or
heavily pruned layers are what makes compressed models fragile.

* ``nn.Linear``: exact singular values of W (float64 SVD): ``spectral_norm = s_max``,
  ``condition_number = s_max / s_min`` over the min(out, in) singular values (inf when
  s_min = 0).
* ``nn.Conv1d/2d/3d``: ``spectral_norm`` is the l_2 operator norm of the convolution as a
  linear map (bias excluded). With ``input_shape`` given, the input size of every conv is found
  by one forward pass; the norm is exact (SVD of the dense map) for up to 4096 inputs, else
  estimated by 200 steps of power iteration on ``K^T K``, which approaches it from below, so
  ``details["spectral_norm_upper"]`` also gives a certified upper bound valid for every input
  size, ``sqrt(prod_d ceil(k_d / s_d)) * ||W_mat||_2`` (each input element meets at most that
  many windows; W_mat the [out, in * prod k] reshaped kernel). Without ``input_shape`` the
  upper bound is reported as ``spectral_norm``. ``condition_number`` is that of W_mat.
* ``sparsity``: fraction of exactly zero weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lipbound.audit._common import model_device
from lipbound.inputs import check_module

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerStats:
    name: str
    kind: str
    shape: tuple[int, ...]
    spectral_norm: float
    condition_number: float
    sparsity: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "spectral_norm": self.spectral_norm, "condition_number": self.condition_number,
                "sparsity": self.sparsity, "details": dict(self.details)}


def _matrix_stats(W: Tensor) -> tuple[float, float]:
    s = torch.linalg.svdvals(W.detach().double())
    smax, smin = float(s.max()), float(s.min())
    return smax, (math.inf if smin == 0 else smax / smin)


def _conv_fns(conv: nn.Module):
    nd = conv.weight.dim() - 2
    fwd = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    kw = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation,
          "groups": conv.groups}
    W = conv.weight.detach().double()
    return lambda x: fwd(x, W, None, **kw)


def conv_operator_norm(conv: nn.Module, in_shape: tuple[int, ...], iterations: int = 200,
                       seed: int = 0) -> float:
    """The l_2 operator norm of ``conv`` (no bias) on inputs of shape ``in_shape`` (no batch
    dimension): exact (SVD of the dense map) up to 4096 inputs, else a power-iteration
    estimate, which approaches the norm from below."""
    apply = _conv_fns(conv)
    n_in = math.prod(in_shape)
    if n_in <= 4096:  # small: exact, from the dense matrix of the map
        eye = torch.eye(n_in, dtype=torch.float64, device=conv.weight.device)
        with torch.no_grad():
            M = apply(eye.reshape(n_in, *in_shape)).reshape(n_in, -1)
        return _matrix_stats(M)[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((1, *in_shape), generator=g, dtype=torch.float64).to(conv.weight.device)
    x = x / x.norm()
    sigma = 0.0
    for _ in range(iterations):
        x = x.requires_grad_(True)
        y = apply(x)
        (z,) = torch.autograd.grad(y, x, grad_outputs=y)  # K^T K x
        n = float(z.norm())
        if n == 0:
            return 0.0
        x = (z / n).detach()
        sigma = math.sqrt(n)
    with torch.no_grad():
        return max(sigma, float(apply(x).norm()))


def conv_norm_upper(conv: nn.Module) -> float:
    """Certified upper bound on the conv's l_2 operator norm for any input size."""
    W = conv.weight.detach().double()
    overlap = math.prod(math.ceil(k / s) for k, s in zip(W.shape[2:], conv.stride))
    return math.sqrt(overlap) * _matrix_stats(W.reshape(W.shape[0], -1))[0] * (1 + 1e-12)


def _conv_input_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple]:
    check_module(model)  # it runs the model: never in training mode
    shapes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: shapes.__setitem__(
        n, tuple(inp[0].shape[1:]))) for n, m in model.named_modules() if isinstance(m, _CONV)]
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), dtype=dtype, device=model_device(model)))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def weights(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[LayerStats]:
    """Per-layer statistics of every Linear and Conv layer, in module order (see module doc)."""
    in_shapes = _conv_input_shapes(model, tuple(input_shape)) if input_shape else {}
    out: list[LayerStats] = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            W = mod.weight
            smax, cond = _matrix_stats(W)
            details = {"spectral_norm_method": "svd"}
        elif isinstance(mod, _CONV):
            W = mod.weight
            upper = conv_norm_upper(mod)
            cond = _matrix_stats(W.reshape(W.shape[0], -1))[1]
            details = {"spectral_norm_upper": upper, "condition_number_of": "reshaped kernel"}
            if name in in_shapes:
                smax = conv_operator_norm(mod, in_shapes[name])
                exact = math.prod(in_shapes[name]) <= 4096
                details.update(spectral_norm_method="svd of the dense map" if exact else
                               "power iteration", input_shape=list(in_shapes[name]))
            else:
                smax = upper
                details["spectral_norm_method"] = "window-overlap upper bound"
        else:
            continue
        sparsity = float((W.detach() == 0).double().mean())
        out.append(LayerStats(name or type(mod).__name__, type(mod).__name__,
                              tuple(W.shape), smax, cond, sparsity, details))
    return out
