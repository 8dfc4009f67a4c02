"""Attained lower bounds: gradient norms at witness points inside the input set.

Candidates: the centre, random points of the set, random l_inf vertices, then (for nets with
smooth activations) a few steps of projected ascent on the gradient norm. Gradients come from
autograd on a float64 copy of the model, so each value is the dual norm of a real gradient
(an element of the Clarke Jacobian where f is differentiable) at a point of the set.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from lipbound.autodiff import vjp
from lipbound.bounds.domains import LpBall, vector_norm
from lipbound.graph.trace import as_matrix_output


def model64(model: nn.Module, probe: Tensor | None = None) -> tuple[nn.Module, torch.dtype]:
    """A float64 copy of ``model`` in eval mode and the dtype it computes in; the model itself,
    in its own dtype, when it cannot be copied, or when the copy fails on ``probe`` (one input
    [1, *in]; e.g. a forward that builds float32 constants of its own). Either is wrapped in
    :class:`Functionalized` when autograd cannot differentiate it at ``probe``."""
    param = next(iter(model.parameters()), None)
    own = model, (param.dtype if param is not None else torch.float32)
    try:
        copy64 = copy.deepcopy(model).double().eval()
        if probe is not None:
            with torch.no_grad():
                copy64(probe.to(torch.float64))
    except Exception:  # noqa: BLE001 - any failure of the copy: use the model as it is
        return _prepared(own[0], probe, own[1]), own[1]
    return _prepared(copy64, probe, torch.float64), torch.float64


def _prepared(model: nn.Module, probe: Tensor | None, dtype: torch.dtype) -> nn.Module:
    """``model`` with [B, K] outputs (:func:`~lipbound.graph.trace.as_matrix_output`) and
    differentiable by autograd (:func:`_differentiable`)."""
    if probe is not None:
        model = as_matrix_output(model, probe.detach().to(dtype))
    return _differentiable(model, probe, dtype)


class Functionalized(nn.Module):
    """``model`` run through ``torch.func.functionalize``: the same function, with in-place
    calls replaced by out-of-place ones, so that autograd can differentiate a forward pass
    that overwrites a value its backward needs (``h.relu_().mul_(2)``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return torch.func.functionalize(self.model)(x)


def _differentiable(model: nn.Module, probe: Tensor | None, dtype: torch.dtype) -> nn.Module:
    if probe is None:
        return model
    z = probe.detach().to(dtype).clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            torch.autograd.grad(model(z).sum(), z, allow_unused=True)
    except RuntimeError as exc:
        if "inplace operation" in str(exc):
            return Functionalized(model)
    return model


def row_gradients(model: nn.Module, X: Tensor, C: Tensor, chunk: int = 4096) -> Tensor:
    """Gradients of C_s . f at every point: X [N, *in] -> [S, N, *in].

    One forward pass per chunk of points and one backward pass per row (cotangent C_s),
    with at most ``chunk`` point-rows per chunk.
    """
    S, N = C.shape[0], X.shape[0]
    out = []
    step = max(1, chunk // S)
    for lo in range(0, N, step):
        Xc = X[lo:lo + step].detach().clone().requires_grad_(True)
        n = Xc.shape[0]
        with torch.enable_grad():
            y = model(Xc).reshape(n, -1)
            grads = [vjp(y, Xc, C[s].expand(n, -1), retain_graph=s < S - 1)[0]
                     for s in range(S)]
        out.append(torch.stack(grads))
    return torch.cat(out, 1)


def _candidates(domain: LpBall, n: int, gen: torch.Generator) -> Tensor:
    pts = [domain.center, domain.sample(n, gen)[:, 0]]
    if domain.p == math.inf and n > 0:
        signs = torch.randint(0, 2, (n, *domain.in_shape), generator=gen).to(domain.center) * 2 - 1
        pts.append(domain.clip(domain.center + signs * domain.eps.reshape(1, *[1] *
                                                                           len(domain.in_shape))))
    return torch.cat(pts)


def attained_lower(model: nn.Module, C: Tensor, domain: LpBall, q: float, n_samples: int = 256,
                   ascent_steps: int = 10, seed: int = 0, smooth_steps: int = 0
                   ) -> tuple[Tensor, Tensor]:
    """(lower [S], witness [S, *in]): the best dual gradient norm found per row (with
    ``smooth_steps``, also by :func:`_smooth_ascend` on ReLU / LeakyReLU networks)."""
    m64, dtype = model64(model, domain.center[:1])
    gen = torch.Generator(device="cpu").manual_seed(seed)
    dom = LpBall(domain.center.to(dtype), domain.eps.to(dtype), domain.p,
                 None if domain.data_lower is None else domain.data_lower.to(dtype),
                 None if domain.data_upper is None else domain.data_upper.to(dtype))
    X = _candidates(dom, n_samples, gen)
    Cd = C.to(dtype)
    G = row_gradients(m64, X, Cd)
    norms = vector_norm(G.flatten(2), q)  # [S, N]
    best, idx = norms.max(1)
    witness = X[idx]
    if ascent_steps > 0 and float(domain.eps[0]) > 0:
        best, witness = _ascend(m64, Cd, dom, q, witness, best, ascent_steps)
    if smooth_steps > 0 and float(domain.eps[0]) > 0:
        starts = X[norms.topk(min(SMOOTH_STARTS, X.shape[0]), dim=1).indices.flatten()]
        best, witness = _smooth_ascend(m64, Cd, dom, q, starts, best, witness, smooth_steps)
    return best, witness


#: starting points per spec row of the smoothed ascent (the best sampled candidates)
SMOOTH_STARTS = 8
#: widths of the smoothed kinks, relative to each neuron's spread over the ascent's points
SMOOTH_WIDTHS = (0.3, 0.1, 0.03)


class _SoftKink(nn.Module):
    """k z + (1 - k) tau softplus(z / tau): a LeakyReLU (ReLU: k = 0) with its kink smoothed
    over tau = ``width`` times the neuron's spread over the batch (detached)."""

    def __init__(self, k: float, width: float):
        super().__init__()
        self.k, self.width = k, width

    def forward(self, z: Tensor) -> Tensor:
        tau = self.width * z.detach().std(0, keepdim=True).clamp_min(1e-12) if z.shape[0] > 1 \
            else torch.full_like(z, 1e-3)
        return self.k * z + (1 - self.k) * tau * nn.functional.softplus(z / tau)


def _smoothed(model: nn.Module, width: float) -> nn.Module | None:
    """A copy of ``model`` with every nn.ReLU / nn.LeakyReLU module a :class:`_SoftKink`, or
    None when it has none (or cannot be copied)."""
    try:
        out = copy.deepcopy(model)
    except Exception:
        return None
    found = False
    for name, mod in list(out.named_modules()):
        if name and isinstance(mod, (nn.ReLU, nn.LeakyReLU)):
            k = mod.negative_slope if isinstance(mod, nn.LeakyReLU) else 0.0
            parent = out.get_submodule(name.rpartition(".")[0]) if "." in name else out
            setattr(parent, name.rpartition(".")[2], _SoftKink(float(k), width))
            found = True
    return out if found else None


def _smooth_ascend(model: nn.Module, C: Tensor, dom: LpBall, q: float, starts: Tensor,
                   best: Tensor, witness: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Projected sign-ascent on the gradient norm of a smoothed copy of a piecewise-linear
    network (its own gradient norm is piecewise constant: no ascent direction), from
    ``starts`` [S * k, *in] (k per row, row-major), narrowing the smoothing
    (:data:`SMOOTH_WIDTHS`). Every iterate is scored by the real model's autograd gradient,
    so the values returned are real gradient norms at points of the set."""
    S = C.shape[0]
    row = torch.arange(S, device=starts.device).repeat_interleave(starts.shape[0] // S)
    X = starts.clone()
    for width in SMOOTH_WIDTHS:
        soft = _smoothed(model, width)
        if soft is None:
            break
        step = float(dom.eps[0]) / 4
        for _ in range(max(1, steps // len(SMOOTH_WIDTHS))):
            Xr = X.detach().requires_grad_(True)
            with torch.enable_grad():
                y = soft(Xr) @ C.t()
                g = torch.autograd.grad(y.gather(1, row[:, None]).sum(), Xr,
                                        create_graph=True)[0]
                h = torch.autograd.grad(vector_norm(g.flatten(1), q).sum(), Xr)[0]
            if not torch.isfinite(h).all():
                break
            X = dom.project(X + step * h.sign())
            val = vector_norm(_diag_grads(model, X, C[row]).flatten(1), q)
            top = torch.full_like(best, -torch.inf).scatter_reduce(0, row, val, "amax")
            up = top > best
            if bool(up.any()):
                idx = torch.arange(len(val), device=val.device)
                arg = torch.where(val == top[row], idx, len(val))
                first = torch.full((S,), len(val), device=val.device).scatter_reduce(
                    0, row, arg, "amin")
                witness = witness.clone()
                witness[up] = X[first[up]]
                best = torch.where(up, top, best)
            step *= 0.85
    return best, witness


def _ascend(model: nn.Module, C: Tensor, dom: LpBall, q: float, start: Tensor, best: Tensor,
            steps: int) -> tuple[Tensor, Tensor]:
    """Projected sign-ascent on ||grad C_s . f||_q from each row's witness."""
    X = start.clone()
    step = float(dom.eps[0]) / 4
    for _ in range(steps):
        Xr = X.detach().requires_grad_(True)
        with torch.enable_grad():
            y = model(Xr) @ C.t()
            g = torch.autograd.grad(y.diagonal().sum(), Xr, create_graph=True)[0]
            obj = vector_norm(g.flatten(1), q)
            if not obj.requires_grad:
                break
            try:
                h = torch.autograd.grad(obj.sum(), Xr, allow_unused=True)[0]
            except RuntimeError:  # no second derivative in torch (hardsigmoid): stop here
                break
        if h is None or not torch.isfinite(h).all() or h.abs().max() == 0:
            break
        X = dom.project(X + step * h.sign())
        val = vector_norm(_diag_grads(model, X, C).flatten(1), q)
        better = val > best
        best = torch.where(better, val, best)
        start = torch.where(better.reshape(-1, *[1] * (X.dim() - 1)), X, start)
        step *= 0.8
    return best, start


def _diag_grads(model: nn.Module, X: Tensor, C: Tensor) -> Tensor:
    Xr = X.detach().requires_grad_(True)
    with torch.enable_grad():
        y = model(Xr) @ C.t()
        return torch.autograd.grad(y.diagonal().sum(), Xr)[0]
