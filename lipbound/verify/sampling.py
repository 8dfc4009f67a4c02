"""Uniform sampling of low-dimensional boxes: verify's last look for counterexamples.

:func:`sample_box` screens chunks of uniform points of a region's box and confirms the most
violating ones on the reference executor (:class:`~lipbound.verify.falsify.Checker`), so
nothing it reports is unconfirmed. Screening runs on :func:`screening_model`: for a ReLU /
LeakyReLU MLP, the traced chain as Linear layers with in-place activations (ACAS Xu: 2.1x the
ONNX module's points per second), otherwise the model itself. The stand-in only ranks points;
the executor decides.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from lipbound.errors import UnsupportedModelError
from lipbound.exact.from_graph import mlp_from_graph
from lipbound.inputs import get_graph
from lipbound.io.vnnlib import InputRegion
from lipbound.verify.falsify import Checker, model_dtype, random_points, screen


def screening_model(model: nn.Module, in_shape: tuple[int, ...]) -> nn.Module:
    """A faster stand-in of ``model`` for ranking many points: where its traced graph is a
    ReLU / LeakyReLU chain, that chain as a flattening ``nn.Sequential`` of Linear layers and
    in-place activations (:meth:`~lipbound.exact.mlp.MLP.to_sequential`) in the model's dtype
    and device; else ``model``."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    x1 = torch.zeros(1, *in_shape, dtype=torch.float64, device=device)
    try:
        mlp = mlp_from_graph(get_graph(model, x1, torch.float64, device), "sampling",
                             "the model itself").mlp
    except UnsupportedModelError:
        return model
    chain = nn.Sequential(nn.Flatten(), *mlp.to_sequential(inplace=True))
    return chain.to(dtype=model_dtype(model), device=device).eval()


def sample_box(model: nn.Module, region: InputRegion, in_shape: tuple[int, ...],
               checker: Checker, seconds: float, generator: torch.Generator, *,
               first_chunk: int = 1024, max_chunk: int = 1 << 16, chunk_seconds: float = 0.05,
               screening: nn.Module | None = None) -> tuple[Tensor, Tensor] | None:
    """Uniform points of the region's box for about ``seconds``, a chunk at a time, each
    chunk's most violating points under ``screening`` (default ``model``; see
    :func:`screening_model`) confirmed on ``checker`` (:func:`screen`); a confirmed
    counterexample or None. Chunks double from ``first_chunk`` while one takes under
    ``chunk_seconds`` (at most ``max_chunk`` points), so memory stays bounded whatever the
    network; no chunk starts that the last one's time says would end after ``seconds``."""
    if not region.disjuncts:
        return None
    end, n = time.perf_counter() + seconds, first_chunk
    while True:
        t0 = time.perf_counter()
        pts = random_points(region, n, model_dtype(model), generator)
        if pts is None:
            return None
        found = screen(model if screening is None else screening, region, in_shape, checker, pts)
        if found is not None:
            return found
        took = time.perf_counter() - t0
        if time.perf_counter() + took > end:
            return None
        if took < chunk_seconds:
            n = min(2 * n, max_chunk)
