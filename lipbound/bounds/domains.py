"""Input domains: l_p balls (optionally clipped to a data range) and boxes.

Each domain holds a batch of B sets of inputs of per-sample shape ``in_shape`` and can

- give elementwise interval bounds on its points (:meth:`Domain.interval`),
- bound linear functions over itself (:meth:`Domain.concretize_upper`):
  ``sup_{x in D_b} <A[b, s], x> + bias[b, s] <= result[b, s]``,
- sample points inside itself (:meth:`Domain.sample`), for tests and attained lower bounds.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.errors import InputError
from lipbound.norms import dual_norm, parse_norm


def vector_norm(v: Tensor, q: float, dim: int = -1) -> Tensor:
    return torch.linalg.vector_norm(v, ord=q, dim=dim)


def _upper_over_box(A: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """sup over the box [lo, hi] of <A, x>: A [B, S, n], lo/hi [B, n] -> [B, S]."""
    return (A.clamp(min=0) * hi.unsqueeze(1) + A.clamp(max=0) * lo.unsqueeze(1)).sum(-1)


class Domain(ABC):
    """A batch of input sets."""

    @property
    @abstractmethod
    def in_shape(self) -> tuple[int, ...]: ...

    @property
    @abstractmethod
    def batch_size(self) -> int: ...

    @abstractmethod
    def interval(self) -> Interval:
        """Elementwise bounds [B, *in] that contain the domain."""

    @abstractmethod
    def concretize_upper(self, A: Tensor, bias: Tensor) -> Tensor:
        """Upper bound [B, S] of <A[b, s], x> + bias[b, s] over x in D_b, A of shape [B, S, *in]."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n points of every set, shape [n, B, *in], all inside the domain."""

    @abstractmethod
    def contains(self, x: Tensor, tol: float = 1e-9) -> Tensor:
        """Bool [..., B]: whether points x [..., B, *in] lie in the domain (with tolerance)."""

    @abstractmethod
    def select(self, index: Tensor) -> Domain:
        """The sub-batch ``index`` (a LongTensor of batch positions, repeats allowed)."""


@dataclass(frozen=True)
class Box(Domain):
    """{x : lower <= x <= upper} for each batch entry; lower/upper [B, *in]."""

    lower: Tensor
    upper: Tensor

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.lower.shape[1:])

    @property
    def batch_size(self) -> int:
        return self.lower.shape[0]

    def interval(self) -> Interval:
        return Interval(self.lower, self.upper)

    def concretize_upper(self, A: Tensor, bias: Tensor) -> Tensor:
        B, S = A.shape[:2]
        return bias + _upper_over_box(A.reshape(B, S, -1), self.lower.flatten(1),
                                      self.upper.flatten(1))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand((n, *self.lower.shape), generator=generator, dtype=self.lower.dtype,
                       device=self.lower.device)
        return self.lower + u * (self.upper - self.lower)

    def contains(self, x: Tensor, tol: float = 1e-9) -> Tensor:
        nd = len(self.in_shape)
        ok = (x >= self.lower - tol) & (x <= self.upper + tol)
        return ok.flatten(-nd).all(-1)

    def select(self, index: Tensor) -> Box:
        return Box(self.lower[index], self.upper[index])


@dataclass(frozen=True)
class LpBall(Domain):
    """{x : ||x - center||_p <= eps} (intersected with [data_lower, data_upper] if given).

    center [B, *in]; eps [B] (non-negative); p in {inf, 2, 1}; data bounds broadcastable to
    center or None. Requires the center to lie inside the data range.
    """

    center: Tensor
    eps: Tensor
    p: float
    data_lower: Tensor | None = None
    data_upper: Tensor | None = None

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.center.shape[1:])

    @property
    def batch_size(self) -> int:
        return self.center.shape[0]

    def _eps_like(self, t: Tensor) -> Tensor:
        return self.eps.reshape(-1, *([1] * (t.dim() - 1)))

    def interval(self) -> Interval:
        e = self._eps_like(self.center)
        lo, hi = self.center - e, self.center + e
        if self.data_lower is not None:
            lo = torch.maximum(lo, self.data_lower.expand_as(lo))
        if self.data_upper is not None:
            hi = torch.minimum(hi, self.data_upper.expand_as(hi))
        return Interval(lo, hi)

    def concretize_upper(self, A: Tensor, bias: Tensor) -> Tensor:
        B, S = A.shape[:2]
        A = A.reshape(B, S, -1)
        clipped = self.data_lower is not None or self.data_upper is not None
        if self.p == math.inf or clipped:
            box = self.interval()
            box_bound = bias + _upper_over_box(A, box.lower.flatten(1), box.upper.flatten(1))
            if self.p == math.inf:
                return box_bound  # the clipped l_inf ball is exactly this box
        q = dual_norm(self.p)
        ball = bias + (A * self.center.flatten(1).unsqueeze(1)).sum(-1)
        ball = ball + self.eps.reshape(B, 1) * vector_norm(A, q)
        # unclipped, the box [c - eps, c + eps] gives <A, c> + eps ||A||_1 >= the ball's bound
        return torch.minimum(ball, box_bound) if clipped else ball

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        kw = {"generator": generator, "dtype": self.center.dtype, "device": self.center.device}
        shape = (n, *self.center.shape)
        if self.p == math.inf:
            d = 2 * torch.rand(shape, **kw) - 1
        elif self.p == 2.0:
            g = torch.randn(shape, **kw).flatten(2)
            dim = g.shape[-1]
            r = torch.rand((n, g.shape[1], 1), **kw) ** (1.0 / dim)
            d = (g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30) * r).reshape(shape)
        else:
            dk = {"dtype": self.center.dtype, "device": self.center.device}
            g = torch.empty(shape, **dk).exponential_(generator=generator).flatten(2)
            extra = torch.empty((n, g.shape[1], 1), **dk).exponential_(generator=generator)
            sign = torch.randint(0, 2, g.shape, generator=generator, device=g.device) * 2 - 1
            d = (sign * g / (g.sum(-1, keepdim=True) + extra)).reshape(shape)
        x = self.center + d * self._eps_like(self.center)
        return self.clip(x)

    def clip(self, x: Tensor) -> Tensor:
        """``x`` clipped to the data range (unchanged without one)."""
        if self.data_lower is not None:
            x = torch.maximum(x, self.data_lower.expand_as(x))
        if self.data_upper is not None:
            x = torch.minimum(x, self.data_upper.expand_as(x))
        return x

    def project(self, X: Tensor) -> Tensor:
        """Points [N, *in] moved into the ball around ``center[0]`` (radius ``eps[0]``): the
        offset is clamped (l_inf), scaled down (l_2) or projected onto the l_1 ball, then
        clipped to the data range."""
        d = (X - self.center).flatten(1)
        e = float(self.eps[0])
        if self.p == math.inf:
            d = d.clamp(-e, e)
        elif self.p == 2.0:
            nrm = d.norm(dim=1, keepdim=True).clamp_min(1e-30)
            d = d * torch.clamp(e / nrm, max=1.0)
        else:
            d = _project_l1(d, e)
        return self.clip(self.center + d.reshape(X.shape))

    def contains(self, x: Tensor, tol: float = 1e-9) -> Tensor:
        nd = len(self.in_shape)
        diff = (x - self.center).flatten(-nd)
        ok = vector_norm(diff, self.p) <= self.eps * (1 + tol) + tol
        box = self.interval()
        inside = ((x >= box.lower - tol) & (x <= box.upper + tol)).flatten(-nd).all(-1)
        return ok & inside

    def select(self, index: Tensor) -> LpBall:
        def sel(t: Tensor | None) -> Tensor | None:
            # bounds without a batch dimension (0-d, [*in]) or with batch 1 apply to every row
            if t is None or t.dim() < self.center.dim() or t.shape[0] == 1:
                return t
            return t[index]

        return LpBall(self.center[index], self.eps[index], self.p, sel(self.data_lower),
                      sel(self.data_upper))


def _project_l1(d: Tensor, e: float) -> Tensor:
    """Euclidean projection of each row onto the l1 ball of radius e."""
    a = d.abs()
    inside = a.sum(1, keepdim=True) <= e
    srt = a.sort(1, descending=True).values
    css = srt.cumsum(1)
    k = torch.arange(1, d.shape[1] + 1, device=d.device, dtype=d.dtype)
    cond = srt - (css - e) / k > 0
    rho = cond.to(d.dtype).cumsum(1).argmax(1, keepdim=True)
    theta = (css.gather(1, rho) - e) / (rho + 1).to(d.dtype)
    proj = torch.sign(d) * (a - theta).clamp_min(0)
    return torch.where(inside, d, proj)


def make_domain(center: Tensor, eps: float | Tensor, norm: float | int | str,
                data_range: tuple[float | Tensor, float | Tensor] | None = None) -> LpBall:
    """Validate and build an :class:`LpBall` around a batched center [B, *in].

    Raises InputError for NaN/inf in the center, a negative or non-finite eps, a data range
    that is not finite, empty or of the wrong shape, or a center outside the data range;
    UnsupportedNormError for an unknown norm.
    """
    p = parse_norm(norm)
    if not torch.isfinite(center).all():
        raise InputError("the input x contains NaN or inf values; lipbound needs a finite point")
    eps_t = torch.as_tensor(eps, dtype=center.dtype, device=center.device).reshape(-1)
    if eps_t.numel() == 1:
        eps_t = eps_t.expand(center.shape[0]).clone()
    if eps_t.numel() != center.shape[0]:
        raise InputError(f"eps has {eps_t.numel()} entries but the batch has {center.shape[0]}")
    if not torch.isfinite(eps_t).all() or (eps_t < 0).any():
        raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
    lo = hi = None
    if data_range is not None:
        try:
            lo_v, hi_v = data_range
        except (TypeError, ValueError):
            raise InputError("data_range must be a pair (lower, upper)") from None
        lo = torch.as_tensor(lo_v, dtype=center.dtype, device=center.device)
        hi = torch.as_tensor(hi_v, dtype=center.dtype, device=center.device)
        try:
            lo, hi = lo.expand_as(center[:1]), hi.expand_as(center[:1])
        except RuntimeError:
            raise InputError("data_range bounds do not broadcast to the input shape") from None
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            raise InputError("data_range must hold finite numbers (no NaN or inf)")
        if (lo > hi).any():
            raise InputError("data_range lower bound exceeds its upper bound")
        if (center < lo).any() or (center > hi).any():
            raise InputError("the input x lies outside data_range; clip it first")
    return LpBall(center, eps_t, p, lo, hi)
