"""Certified upper bounds on spectral norms (largest singular values), rounding included.

Three bounds, each an upper bound on ``||M||_2`` of the exact real matrix M (the float64
values handed in), with the float64 rounding of its own computation accounted for:

* :func:`gram_upper` (Gram iteration, Delattre et al., ICML 2023): with ``G_0 = M`` and
  ``G_{t+1} = G_t^T G_t``, ``||M||_2^(2^t) = ||G_t||_2 <= ||G_t||_F``, so
  ``||M||_2 <= ||G_t||_F^(1/2^t)``, which converges to ``||M||_2`` as t grows (the ratio is at
  most ``rank^(1/2^(t+1))``). The products are computed in float64: a computed product
  ``P = fl(X^T X)`` satisfies ``|P - X^T X| <= gamma_k |X|^T |X|`` (k the inner dimension, any
  summation order; Higham, ch. 3), hence ``||X^T X - P||_2 <= gamma_k ||X||_F^2`` and

      ||X||_2^2 = ||X^T X||_2 <= ||P||_2 + gamma_k ||X||_F^2 .

  Each ``G_{t+1} = P / c_t`` is rescaled by an exact power of two ``c_t``; the Frobenius norms
  are bounded above with their own ``gamma`` allowance, and the recursion is unrolled from the
  last level ``||G_T||_2 <= ||G_T||_F`` down to ``M`` with every scalar operation rounded up
  (``nextafter``). Underflow adds at most ``2^-1074`` per rounded product and is added too.
  Power iteration only gives a *lower* estimate (``||M v|| / ||v||``); this is the rigorous
  upper-bound step, and it is tight to about ``1e-6`` relative after a dozen squarings.
* :func:`schur_upper`: ``||M||_2 <= sqrt(||M||_1 ||M||_inf)`` (Schur test) from the largest
  absolute column and row sums, which cost one pass over M (or one application of ``|M|``).
* :func:`conv_unfold_upper`: a convolution is ``y_o = K u_o`` with ``K`` the
  ``[c_out, c_in k]`` kernel matrix and ``u_o`` the zero-padded input patch at output position
  o; every input element lies in at most ``prod_i ceil(k_i gcd(d_i, s_i) / s_i)`` patches
  (kernel k, stride s, dilation d), so ``||conv||_2 <= sqrt(copies) max_groups ||K_g||_2``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_U = 2.0 ** -53
#: largest Gram dimension iterated (each squaring costs d^3 multiply-adds)
GRAM_MAX_DIM = 1024
#: squarings of the Gram iteration at most: 20 up to dimension 256, 12 above (the bound is
#: within a factor rank^(1/2^(t+1)) of the norm, and usually far closer)
GRAM_STEPS = 20
GRAM_STEPS_LARGE = 12


def up(v: float) -> float:
    """The next float above v: an upper bound of the exact result of one rounded-to-nearest
    operation whose computed value is v."""
    return math.nextafter(v, math.inf)


def gamma_up(n: float) -> float:
    """An upper bound of Higham's gamma_n for float64 (inf when n u >= 1/2)."""
    nu = n * _U
    if nu >= 0.5:
        return math.inf
    return up(up(nu) / (1.0 - up(nu)) * (1 + 4 * _U))


def frobenius_upper(x: Tensor) -> float:
    """An upper bound of ``||x||_F`` (float64 sum of squares, rounding and underflow
    included)."""
    n = x.numel()
    if n == 0:
        return 0.0
    s = float((x * x).sum())
    s = up(s * (1 + gamma_up(n + 1)) + up(n * 5e-324 * 2))
    return up(math.sqrt(s))


def _pow2_scale(x: Tensor) -> float:
    """A power of two near ``max |x|`` (1.0 for a zero matrix): dividing by it is exact."""
    m = float(x.abs().max()) if x.numel() else 0.0
    if not (m > 0.0) or not math.isfinite(m):
        return 1.0
    return math.ldexp(1.0, math.frexp(m)[1])


def gram_upper(m: Tensor, steps: int | None = None, rtol: float = 1e-7) -> float:
    """Certified upper bound of ``||m||_2`` by the Gram iteration (module docstring).

    ``m``: a 2-d tensor (cast to float64; float32 values are exact there). Stops after
    ``steps`` squarings or once a squaring improves the bound by less than ``rtol``."""
    x = m.detach().to(torch.float64)
    if x.dim() != 2:
        raise ValueError("gram_upper needs a matrix")
    if x.numel() == 0:
        return 0.0
    if not bool(torch.isfinite(x).all()):
        return math.inf
    if x.shape[0] < x.shape[1]:
        x = x.T  # the Gram matrix X^T X is then the smaller one
    if steps is None:
        steps = GRAM_STEPS if x.shape[1] <= 256 else GRAM_STEPS_LARGE
    s0 = _pow2_scale(x)
    x = x / s0
    # levels: (frobenius upper F_t, inner dimension k_t of the product, scale c_t, dimension)
    numel = x.numel()
    frob = [frobenius_upper(x)]
    inner: list[int] = []
    scale: list[float] = []
    best = _unroll(frob, [], [], s0, 0, numel)
    for _ in range(steps):
        k = x.shape[0]
        p = x.T @ x
        c = _pow2_scale(p)
        x = p / c
        inner.append(k)
        scale.append(c)
        frob.append(frobenius_upper(x))
        bound = _unroll(frob, inner, scale, s0, x.shape[1], numel)
        if not math.isfinite(bound):
            break
        improved = bound < best * (1 - rtol)
        best = min(best, bound)
        if not improved:
            break
    return best


def _unroll(frob: list[float], inner: list[int], scale: list[float], s0: float,
            dim: int, numel: int) -> float:
    """``||M||_2`` bound from the last level's Frobenius bound down to M (all rounded up).

    Level t: ``||G_t||_2^2 <= c_t (||G_{t+1}||_2 + d 2^-1074) + gamma_k F_t^2 + d k 2^-1074``
    (the scaling by ``c_t`` is exact except for results that underflow, at most ``2^-1075``
    each; every rounded product may underflow by as much); M itself:
    ``||M||_2 <= s0 (||G_0||_2 + numel 2^-1074)``."""
    tiny = 5e-324  # 2^-1074
    b = frob[-1]  # ||G_T||_2 <= ||G_T||_F
    for t in range(len(inner) - 1, -1, -1):
        k = inner[t]
        err = up(gamma_up(k) * up(frob[t] * frob[t]))
        err = up(err + up(dim * k * tiny))
        b = up(math.sqrt(up(up(scale[t] * up(b + up(dim * tiny))) + err)))
    return up(s0 * up(b + up(numel * tiny)))


def spectral_lower(m: Tensor, iterations: int = 50, seed: int = 0) -> float:
    """A power-iteration estimate ``||m v|| / ||v||`` (a lower bound up to rounding; for
    diagnostics and tests, never for certificates)."""
    x = m.detach().to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(x.shape[1], dtype=torch.float64, generator=gen)
    est = 0.0
    for _ in range(iterations):
        w = x @ v
        nw = float(w.norm())
        if nw == 0.0:
            return 0.0
        v = x.T @ (w / nw)
        est = float(v.norm())
        v = v / est
    return est


def schur_upper(max_abs_col_sum: float, max_abs_row_sum: float, terms: int) -> float:
    """``sqrt(||M||_1 ||M||_inf)`` from computed float64 absolute sums of at most ``terms``
    terms each (their rounding included)."""
    g = 1 + gamma_up(terms)
    return up(math.sqrt(up(up(max_abs_col_sum * g) * up(max_abs_row_sum * g))))


def dense_schur_upper(m: Tensor) -> float:
    """:func:`schur_upper` of a dense matrix."""
    a = m.detach().to(torch.float64).abs()
    if a.numel() == 0:
        return 0.0
    return schur_upper(float(a.sum(0).max()), float(a.sum(1).max()), max(a.shape))


def conv_copies(kernel: tuple[int, ...], stride: tuple[int, ...],
                dilation: tuple[int, ...]) -> int:
    """Most patches of a convolution that contain one input element."""
    out = 1
    for k, s, d in zip(kernel, stride, dilation):
        out *= min(k, -(-k * math.gcd(d, s) // s))
    return out


def conv_unfold_upper(weight: Tensor, groups: int, stride: tuple[int, ...],
                      dilation: tuple[int, ...]) -> float:
    """``||conv||_2 <= sqrt(copies) max_g ||K_g||_2`` (module docstring), any zero padding."""
    w = weight.detach().to(torch.float64)
    c_out = w.shape[0]
    kernel = tuple(w.shape[2:])
    per = c_out // groups
    best = 0.0
    for g in range(groups):
        kg = w[g * per : (g + 1) * per].reshape(per, -1)
        best = max(best, gram_upper(kg))
    copies = conv_copies(kernel, stride, dilation)
    return up(best * up(math.sqrt(copies)))


__all__ = [
    "GRAM_MAX_DIM",
    "conv_copies",
    "conv_unfold_upper",
    "dense_schur_upper",
    "frobenius_upper",
    "gamma_up",
    "gram_upper",
    "schur_upper",
    "spectral_lower",
    "up",
]
