r"""Dual randomized smoothing (DRS; Xia et al., ICLR 2024) with a sound radius.

The input is split into two sub-images made of disjoint sets of pixels (half resolution each:
``checkerboard`` takes pixels ``(i, 2j + i mod 2)`` for the left image and the others for the
right one; ``columns`` takes even and odd columns). Gaussian noise on the input restricts to
independent ``N(0, sigma^2 I)`` noise on each sub-image, and a perturbation ``delta`` splits into
``delta_l``, ``delta_r`` with ``||delta_l||^2 + ||delta_r||^2 <= ||delta||^2``. Each half has its
own base classifier and smoothed vote share; the DRS classifier predicts
``argmax_c p_{l,c} + p_{r,c}``. Class A keeps winning while ``p_{l,A} + p_{r,A} > 1``, i.e. while
``Phi^-1(p_{l,A}) + Phi^-1(p_{r,A}) > 0``; each term drops by at most ``||delta_side|| / sigma``
and ``||delta_l|| + ||delta_r|| <= sqrt(2) ||delta||``, so

    R = sigma / sqrt(2) (Phi^-1(p_l) + Phi^-1(p_r))

with one-sided Clopper–Pearson lower bounds ``p_l``, ``p_r`` at ``alpha / 2`` each (union bound).
(Combining per-half Cohen radii as ``sqrt(R_l^2 + R_r^2)`` is unsound when ``R_l != R_r``.)
One draw of noise on the full input serves both halves. The class A is the one with the most
votes of both halves together on the n0 selection samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from lipbound.errors import InputError
from lipbound.smoothing.bounds import clopper_pearson_lower, norm_ppf
from lipbound.smoothing.certificates.base import (
    Certificate,
    Certification,
    Context,
    Plan,
    abstain,
    shave,
)
from lipbound.smoothing.sampling import CountConsumer, Samples

SPLITS = ("checkerboard", "columns")


def split_indices(shape: tuple[int, ...], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (into ``prod(shape)``) of the left and right sub-images, each of shape
    ``(*shape[:-1], shape[-1] // 2)``; ``shape`` is ``[..., H, W]`` with ``W`` even."""
    if len(shape) < 2 or shape[-1] % 2:
        raise InputError(f"DRS split {kind!r} needs inputs [..., H, W] with W even, got {shape}")
    idx = torch.arange(math.prod(shape)).reshape(shape)
    w = shape[-1]
    if kind == "columns":
        return idx[..., 0::2].contiguous(), idx[..., 1::2].contiguous()
    if kind == "checkerboard":
        rows = torch.arange(shape[-2]).reshape(-1, 1)
        cols_l = 2 * torch.arange(w // 2).reshape(1, -1) + rows % 2
        cols_r = 2 * torch.arange(w // 2).reshape(1, -1) + 1 - rows % 2
        gather_l = cols_l.expand(shape[-2], w // 2).expand(*shape[:-1], w // 2)
        gather_r = cols_r.expand(shape[-2], w // 2).expand(*shape[:-1], w // 2)
        return idx.gather(-1, gather_l).contiguous(), idx.gather(-1, gather_r).contiguous()
    raise InputError(f"unknown DRS split {kind!r}; choose from {', '.join(SPLITS)} or a callable")


class DualPair:
    """Two base classifiers on complementary half-resolution sub-images.

    ``split``: ``"checkerboard"``, ``"columns"`` or a callable ``points [m, *in] -> (left,
    right)`` that must select disjoint coordinates (checked once on an index tensor).
    ``input_shape``: the full input shape (without batch), needed for the named splits.
    """

    def __init__(
        self,
        left: torch.nn.Module,
        right: torch.nn.Module,
        split: str | Callable = "checkerboard",
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        for nm, mod in (("left", left), ("right", right)):
            if not isinstance(mod, torch.nn.Module):
                raise InputError(f"DualPair: {nm} must be a torch.nn.Module")
        self.left, self.right = left, right
        self.split_kind = split if isinstance(split, str) else getattr(split, "__name__", "custom")
        self._split = split
        self._idx: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        if isinstance(split, str) and split not in SPLITS:
            raise InputError(f"unknown DRS split {split!r}; choose from {', '.join(SPLITS)}")
        self._checked: set[tuple] = set()

    def _indices(self, shape: tuple[int, ...], device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (shape, str(device))
        if key not in self._idx:
            left, right = split_indices(shape, self._split)
            self._idx[key] = (left.to(device), right.to(device))
        return self._idx[key]

    def _check_custom(self, shape: tuple[int, ...]) -> None:
        if shape in self._checked:
            return
        idx = torch.arange(math.prod(shape), dtype=torch.float64).reshape(1, *shape)
        left, right = self._split(idx)
        vals_l = left.reshape(-1).tolist()
        vals_r = right.reshape(-1).tolist()
        both = vals_l + vals_r
        if any(v != int(v) for v in both) or len(set(both)) != len(both):
            raise InputError(
                "the DRS split must select disjoint input coordinates for the two sub-images "
                "(checked on an index tensor); the radius sigma/sqrt(2)(...) needs it"
            )
        self._checked.add(shape)

    def split(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = tuple(points.shape[1:])
        if callable(self._split) and not isinstance(self._split, str):
            self._check_custom(shape)
            return self._split(points)
        il, ir = self._indices(shape, points.device)
        flat = points.reshape(points.shape[0], -1)
        left = flat[:, il.reshape(-1)].reshape(points.shape[0], *il.shape)
        right = flat[:, ir.reshape(-1)].reshape(points.shape[0], *ir.shape)
        return left, right

    def eval(self) -> DualPair:
        self.left.eval()
        self.right.eval()
        return self


def dual_radius(
    k_l: int, k_r: int, n: int, alpha: float, sigma: float
) -> tuple[float, float, float]:
    """``(p_l, p_r, radius)`` with each bound at ``alpha / 2``; radius <= 0 means abstain."""
    p_l = clopper_pearson_lower(k_l, n, alpha / 2)
    p_r = clopper_pearson_lower(k_r, n, alpha / 2)
    s = float(norm_ppf(p_l)) + float(norm_ppf(p_r))
    if not s > 0:
        return p_l, p_r, -1.0
    return p_l, p_r, shave(sigma / math.sqrt(2.0) * s)


class Dual(Certificate):
    """DRS: two half-resolution sub-images smoothed separately (needs ``Smooth(dual=...)``)."""

    name = "dual"

    def check(self, ctx: Context) -> str | None:
        if ctx.evaluator.dual is None:
            return "no DualPair attached (Smooth(..., dual=DualPair(left, right)))"
        return None

    def plan(self, ctx: Context, selection: Samples, alpha: float) -> Plan:
        left, right = selection.dual_logits
        k = ctx.num_classes
        c_l = np.bincount(left.argmax(1).cpu().numpy(), minlength=k)
        c_r = np.bincount(right.argmax(1).cpu().numpy(), minlength=k)
        label = int(np.argmax(c_l + c_r))
        f_l, f_r = c_l[label] / ctx.n0, c_r[label] / ctx.n0
        k_l = int(np.floor(f_l * ctx.n))
        k_r = int(np.floor(f_r * ctx.n))
        score = dual_radius(k_l, k_r, ctx.n, alpha, ctx.sigma)[2]
        consumers = [CountConsumer(k, which="left"), CountConsumer(k, which="right")]
        state = {"selection_counts_left": c_l.tolist(), "selection_counts_right": c_r.tolist()}
        return Plan(self, label, alpha, consumers, score=score, state=state)

    def finish(self, ctx: Context, plan: Plan) -> Certification:
        k_l = int(plan.consumers[0].counts[plan.label])
        k_r = int(plan.consumers[1].counts[plan.label])
        p_l, p_r, radius = dual_radius(k_l, k_r, ctx.n, plan.alpha, ctx.sigma)
        details = {
            "label_selected": plan.label,
            "n_A_left": k_l,
            "n_A_right": k_r,
            "n": ctx.n,
            "p_left_lower": p_l,
            "p_right_lower": p_r,
            "alpha": plan.alpha,
            "alpha_per_bound": plan.alpha / 2,
            **plan.state,
        }
        if not radius > 0:
            return abstain(self.name, details)
        return Certification(plan.label, radius, self.name, details)
