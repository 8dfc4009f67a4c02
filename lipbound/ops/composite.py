"""Composite operators: softmax, log-softmax, LayerNorm, RMSNorm, GroupNorm (eval), variance
and standard deviation.

The tracer records each as ONE node of its own kind in the unrewritten graph (what the user's
forward pass runs: its rounding facts describe the fused kernel torch executes), and
:func:`lipbound.graph.normalize.normalize` replaces that node by its **lowering** (:meth:`lower`)
to primitive ops before anything is bounded, so IBP, CROWN, alpha-CROWN and the Clarke-Jacobian
rules all come from the primitives (no rule of its own to get wrong). The lowerings are exact
rewrites of the real function:

- softmax over dim d: ``y_i = 1 / sum_j exp(x_j - x_i)`` (``pairwise_diff`` -> ``exp`` ->
  ``sum`` -> ``pow(-1)``), the exponential-reciprocal form of Wei et al. (AAAI 2023). Chosen
  over ``exp(x - max) / sum exp(x - max)``: no product of two bounded activations (McCormick),
  no relaxed max (softmax does not depend on the shift, so relaxing one only loses), the
  diagonal ``exp(0) = 1`` is exact and the denominator is >= 1, so 1/s never meets its pole.
  Its interval image is the exact range of each y_i. log-softmax is ``-log(sum_j exp(x_j -
  x_i))``. Cost: K^2 elements per softmax row.
- LayerNorm / GroupNorm: ``center`` (one linear node, keeps x_i - mean exact) -> ``square`` ->
  mean (``sum``) -> ``+ eps`` -> ``pow(-1/2)`` -> ``expand`` -> ``mul`` with the centred
  values -> affine ``scale_shift`` (GroupNorm reshapes to [groups, rest] around it).
  RMSNorm: ``square`` -> mean -> ``+ eps`` -> ``pow(-1/2)`` -> ``mul`` with x -> scale.
  Only the final product is a McCormick relaxation; the variance is >= 0 in every bound, so
  rsqrt(var + eps) stays inside its domain.
- var / std: ``center`` -> ``square`` -> ``sum`` [-> ``pow(1/2)``: the standard deviation has
  no Lipschitz constant where the variance can reach 0, and its bounds then refuse].

A composite node left in a bounded graph (a hand-built Graph that skipped normalisation) has
no relaxation and raises UnsupportedOperationError saying so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lipbound.bounds.interval import Interval
from lipbound.bounds.rounding import Precision, gamma
from lipbound.errors import UnsupportedOperationError
from lipbound.graph.ir import Node, freeze
from lipbound.ops import registry
from lipbound.ops.base import NonlinearOp, Params
from lipbound.ops.registry import register
from lipbound.ops.smooth import _UNDERFLOW, EVAL_ULPS
from lipbound.ops.tracing import Var, converts, reduction_dims, unsupported

#: factor on the first-order rounding bounds of the fused kernels (their algorithms differ
#: between CPU and GPU and between versions: online softmax, Welford moments)
KERNEL_SAFETY = 2.0


class _Lowering:
    """Collects the primitive nodes that replace one composite node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.nodes: list[Node] = []

    def add(self, tag: str, op: str, inputs: Sequence[str], shape: Sequence[int],
            params: Mapping[str, Any] | None = None, last: bool = False) -> str:
        name = self.node.name if last else f"{self.node.name}__{tag}"
        self.nodes.append(Node(name, op, tuple(inputs), tuple(int(s) for s in shape),
                               freeze(params), self.node.where))
        return name


class Composite(NonlinearOp):
    """A node of the user's model that is bounded through its lowering."""

    interval_facts = True

    def lower(self, node: Node, in_shapes: Sequence[tuple[int, ...]]) -> list[Node]:
        """Primitive nodes computing ``node`` from ``node.inputs``; the last one carries
        ``node.name`` (so readers of the node read the lowering)."""
        raise NotImplementedError

    def lowered_values(self, params: Params, *ivals: Interval) -> dict[str, Interval]:
        """Interval bounds of every node of the lowering (by name; the output is ``out``)."""
        shapes = [tuple(iv.lower.shape[1:]) for iv in ivals]
        names = tuple(f"in{i}" for i in range(len(ivals)))
        out_shape = self.output_shape(params, shapes)
        node = Node("out", self.kind, names, out_shape, freeze(params), "")
        vals = dict(zip(names, ivals))
        for n in self.lower(node, shapes):
            op = registry.get(n.op, n.where)
            vals[n.name] = op.ibp(n.params, *[vals[s] for s in n.inputs])
        return vals

    def ibp(self, params: Params, *ivals: Interval) -> Interval:
        return self.lowered_values(params, *ivals)["out"]

    def relax(self, params: Params, *ivals: Interval, opt=None):
        raise UnsupportedOperationError(
            self.kind, "<graph>", registry.kinds(),
            hint="composite operators are bounded through their lowering; normalise the "
                 "graph first (lipbound.graph.normalize.normalize)")


def _perm_last(nd: int, d: int) -> tuple[int, ...]:
    return tuple(i for i in range(nd) if i != d) + (d,)


class Softmax(Composite):
    """softmax (``log``: log-softmax) over per-sample dim ``dim``."""

    kind = "softmax"

    def apply(self, params: Params, x: Tensor) -> Tensor:
        d = int(params["dim"]) + 1
        return F.log_softmax(x, d) if params.get("log") else F.softmax(x, d)

    def output_shape(self, params: Params, in_shapes) -> tuple[int, ...]:
        return tuple(in_shapes[0])

    def lower(self, node: Node, in_shapes: Sequence[tuple[int, ...]]) -> list[Node]:
        low = _Lowering(node)
        shape = tuple(in_shapes[0])
        nd, d = len(shape), int(node.params["dim"])
        x = node.inputs[0]
        perm = _perm_last(nd, d)
        moved = perm != tuple(range(nd))
        s1 = tuple(shape[i] for i in perm)
        if moved:
            x = low.add("perm", "permute", [x], s1, {"dims": perm})
        K = s1[-1]
        diff = low.add("diff", "pairwise_diff", [x], s1 + (K,))
        e = low.add("exp", "exp", [diff], s1 + (K,))
        s = low.add("sum", "sum", [e], s1, {"dims": (nd,), "keepdim": False, "scale": 1.0})
        if node.params.get("log"):
            lg = low.add("log", "log", [s], s1)
            y = low.add("neg", "scale_shift", [lg], s1,
                        {"scale": torch.tensor(-1.0, dtype=torch.float64), "shift": None},
                        last=not moved)
        else:
            y = low.add("recip", "pow", [s], s1, {"exponent": -1.0, "coeff": 1.0},
                        last=not moved)
        if moved:
            inv = tuple(perm.index(i) for i in range(nd))
            low.add("unperm", "permute", [y], shape, {"dims": inv}, last=True)
        return low.nodes

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision, ivals: Sequence[Interval] | None = None,
                    inner: Mapping[str, Interval] | None = None) -> Tensor:
        """Propagated: softmax is 1/2-Lipschitz and log-softmax 2-Lipschitz from and to the
        l_inf norm of a row (row sums of |diag(p) - p p^T| are 2 p_i (1 - p_i), of
        |I - 1 p^T| are 2 (1 - p_i)). Kernel (``m = max``, ``t = x - m``, ``exp``, sum,
        reciprocal and product, or log and subtraction), to first order with |t| <= 2 M (M:
        the row's largest |x|) and c = EVAL_ULPS ulps per library call: relative
        ``4 u M + gamma_(K + 2c + 2)`` for softmax, absolute
        ``6 u M + gamma_(K + 2c + 2) (1 + log K)`` for log-softmax (the sum lies in [1, K]);
        both times ``KERNEL_SAFETY``."""
        d = int(params["dim"]) + 1
        e, m = errs[0], mags[0]
        K = e.shape[d]
        e_row, m_row = e.amax(d, keepdim=True), m.amax(d, keepdim=True)
        g = gamma(K + 2 * EVAL_ULPS + 2, prec.u)
        if params.get("log"):
            prop = 2.0 * e_row
            ev = 6 * prec.u * m_row + g * (1 + math.log(K))
            return (prop + KERNEL_SAFETY * ev).expand_as(e)
        iv = Interval(-m, m) if ivals is None else ivals[0]
        ymax = self.ibp(params, Interval(iv.lower - e, iv.upper + e)).upper.clamp(max=1.0)
        ev = (4 * prec.u * m_row + g) * ymax + _UNDERFLOW
        return 0.5 * e_row + KERNEL_SAFETY * ev


def moment_errors(var_hi: Tensor, M: Tensor, n: int, u: float) -> tuple[Tensor, Tensor]:
    """(dmean, dvar): bounds on the rounding of a row's mean and (biased) variance as torch's
    LayerNorm kernels compute them (CPU ``RowwiseMoments``: Welford updates per lane merged
    pairwise; CUDA: Welford updates and warp merges; a two-pass kernel is covered too), for a
    row of n values with |x| <= M and variance <= ``var_hi``.

    Any such algorithm is a tree of merges of (count, mean, M2) triples, a single value
    being (1, x, 0); merging (a, m_a, S_a) and (b, m_b, S_b) gives the mean ``(a m_a + b
    m_b) / (a + b)`` and ``S_a + S_b + delta^2 a b / (a + b)``, delta = m_b - m_a (a Welford
    update is the merge of one value, computed as ``delta (x - m_new)``). In exact arithmetic
    ``n var = sum over merges of delta^2 a b / (a + b)``. In floating point:

    - every computed mean is a convex combination of its values up to a few roundings per
      merge (at most 4 u M each, never amplified: the weights are convex), so its error is
      ``mu <= gamma_(4n) M`` along the at most n merges of a path; ``dmean`` is that bound.
    - each merge term is a product of at most 7 rounded factors of the (perturbed) delta,
      and reaches the total through at most n additions of non-negative numbers: relative
      ``gamma_(n+8)`` with the final division by n.
    - the mean errors perturb delta by at most 2 mu: the terms change by at most
      ``4 |delta| mu w + 4 mu^2 w`` (w = a b / (a + b), or 1 for Welford's form, which is
      at most twice that w). By Cauchy-Schwarz ``sum |delta| w <= sqrt(n var sum w)``, and
      ``sum w <= n L`` with L = max(2, ceil(log2 n)) (a value is on the smaller side of at most
      log2 n merges; Welford's weights sum to at most 2n), so the variance moves by at most
      ``4 mu sqrt(var L) + 4 mu^2 L``.

    So ``dvar = gamma_(n+8) var_hi + 4 mu sqrt(var_hi L) + 4 mu^2 L``: relative to the
    row's spread, not to M^2 (the cancellation a one-pass sum of squares would suffer)."""
    mu = gamma(4 * n, u) * M
    L = max(2, math.ceil(math.log2(max(n, 2))))
    v = var_hi.clamp_min(0)
    return mu, gamma(n + 8, u) * v + 4 * mu * (v * L).sqrt() + 4 * mu * mu * L


class Norm(Composite):
    """LayerNorm (kind layer_norm) and RMSNorm (rms_norm) over the last ``ndim`` per-sample
    dims, GroupNorm (group_norm: ``groups`` over [C, *spatial]); params ``weight``, ``bias``
    (None or tensors broadcastable to the per-sample shape), ``eps``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rms = kind == "rms_norm"

    def _rows(self, params: Params, shape: Sequence[int]) -> tuple[tuple[int, ...], int]:
        """The per-sample shape as [R, n] rows that are normalised separately."""
        if self.kind == "group_norm":
            G = int(params["groups"])
            return (G, math.prod(shape) // G), 1
        k = int(params["ndim"])
        return tuple(shape[: len(shape) - k]) + (math.prod(shape[len(shape) - k:]),), 1

    def apply(self, params: Params, x: Tensor) -> Tensor:
        w, b, eps = params.get("weight"), params.get("bias"), float(params["eps"])
        if self.kind == "group_norm":
            y = F.group_norm(x, int(params["groups"]), None, None, eps)
        else:
            k = int(params["ndim"])
            dims = tuple(range(x.dim() - k, x.dim()))
            if self.rms:
                y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)
            else:
                y = F.layer_norm(x, x.shape[x.dim() - k:], None, None, eps)
        if w is not None:
            y = y * w
        if b is not None:
            y = y + b
        return y

    def output_shape(self, params: Params, in_shapes) -> tuple[int, ...]:
        return tuple(in_shapes[0])

    def lower(self, node: Node, in_shapes: Sequence[tuple[int, ...]]) -> list[Node]:
        low = _Lowering(node)
        p = node.params
        shape = tuple(in_shapes[0])
        x = node.inputs[0]
        rows = shape
        if self.kind == "group_norm":
            rows = self._rows(p, shape)[0]
            x = low.add("rows", "reshape", [x], rows, {"shape": rows})
            dims = (1,)
        else:
            k = int(p["ndim"])
            dims = tuple(range(len(shape) - k, len(shape)))
        n = math.prod(rows[d] for d in dims)
        red = tuple(1 if i in dims else s for i, s in enumerate(rows))
        if self.rms:
            c = x
        else:
            c = low.add("center", "center", [x], rows, {"dims": dims})
        q = low.add("square", "square", [c], rows)
        v = low.add("var", "sum", [q], red, {"dims": dims, "keepdim": True, "scale": 1.0 / n})
        ve = low.add("var_eps", "scale_shift", [v], red,
                     {"scale": torch.tensor(1.0, dtype=torch.float64),
                      "shift": torch.tensor(float(p["eps"]), dtype=torch.float64)})
        r = low.add("rstd", "pow", [ve], red, {"exponent": -0.5, "coeff": 1.0})
        re = low.add("rstd_x", "expand", [r], rows, {"shape": rows})
        w, b = p.get("weight"), p.get("bias")
        affine = w is not None or b is not None
        last = not affine and self.kind != "group_norm"
        y = low.add("normed", "mul", [re, c], rows, last=last)
        if self.kind == "group_norm":
            y = low.add("unrows", "reshape", [y], shape, {"shape": shape}, last=not affine)
        if affine:
            one = torch.tensor(1.0, dtype=torch.float64)
            low.add("affine", "scale_shift", [y], shape,
                    {"scale": one if w is None else w, "shift": b}, last=True)
        return low.nodes

    def _grouped(self, params: Params, t: Tensor) -> Tensor:
        """[N, *shape] -> [N, R, n] (rows of the normalisation)."""
        rows, _ = self._rows(params, t.shape[1:])
        return t.reshape(t.shape[0], -1, rows[-1])

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision, ivals: Sequence[Interval] | None = None,
                    inner: Mapping[str, Interval] | None = None) -> Tensor:
        """First-order bound of the fused kernel (``KERNEL_SAFETY`` times), per row of n
        elements with M the row's largest |x~|, r^ >= rsqrt(var + eps) over the computed
        inputs, and |w|, |b| the affine parameters. The variance's lower bound is the larger
        of its interval image over the input box widened by the input errors e and, given
        ``inner["var"]`` (bounds of the lowering's variance at the exact inputs), that bound
        minus how far the errors can move it (``8 M e + 4 e^2``):

        - propagated: |w| r^ (2 + c_i) max e (LayerNorm/GroupNorm: the Jacobian is
          w r (I - 1 1^T / n - c^ c^T / n) with sum c^2 <= n, so row i sums to at most
          r (2 + |c^_i| sum_j |c^_j| / n) <= r (2 + |c^_i|)), |w| r^ (1 + c_i) max e (RMS),
          with c_i the largest |c^_i| over the widened box (its interval image), at most
          sqrt n;
        - mean and variance: LayerNorm :func:`moment_errors` (Welford updates, pairwise
          merges or two passes, in any order); GroupNorm gamma_(n+1) M and (any algorithm,
          one-pass sums of squares included) gamma_(8n+16) (2M)^2; RMSNorm gamma_(n+2) M^2;
          rsqrt at the computed variance
          (>= var - its error, clamped at 0): (r'^3 / 2) dvar + gamma_c r';
        - output ``(x r - mean r) w + b`` (CPU) or ``(x - mean) r w + b`` (GPU):
          |w| ((|x| + M) dr + r' dmean) + gamma_5 (|w| r' (|x| + M) + |b|).
        """
        x_e, x_m = errs[0], mags[0]
        shape = tuple(x_e.shape[1:])
        iv = Interval(-x_m, x_m) if ivals is None else ivals[0]
        wide = Interval(iv.lower - x_e, iv.upper + x_e)
        vals = self.lowered_values({**params, "weight": None, "bias": None}, wide)
        var_lo = vals["out__var"].lower.clamp_min(0)  # [N, rows with 1 in the reduced dims]
        eps = float(params["eps"])
        u = prec.u
        E = self._grouped(params, x_e)
        Mx = self._grouped(params, x_m)
        n = E.shape[-1]
        e_row, M = E.amax(-1, keepdim=True), Mx.amax(-1, keepdim=True)
        v_lo = var_lo.reshape(var_lo.shape[0], -1, 1)
        v_hi = vals["out__var"].upper.reshape(v_lo.shape)
        if inner and "var" in inner:
            move = 8 * M * e_row + 4 * e_row * e_row  # how far the errors move the variance
            vk = inner["var"].lower
            v_lo = torch.maximum(v_lo, (vk.reshape(v_lo.shape) - move).clamp_min(0))
            v_hi = torch.minimum(v_hi, inner["var"].upper.reshape(v_lo.shape) + move)
        rms = self.rms
        if rms:
            dmean, dvar = 0.0, gamma(n + 2, u) * M * M
        elif self.kind == "layer_norm":
            dmean, dvar = moment_errors(v_hi, M, n, u)
        else:
            dmean, dvar = gamma(n + 1, u) * M, gamma(8 * n + 16, u) * (2 * M) ** 2
        r_hat = (v_lo + eps).rsqrt()
        r_c = ((v_lo - dvar).clamp_min(0) + eps).rsqrt()  # at the computed variance
        dr = 0.5 * r_c ** 3 * dvar + gamma(EVAL_ULPS + 3, u) * r_c
        w = params.get("weight")
        b = params.get("bias")
        ones = torch.ones((1, *shape), dtype=x_e.dtype, device=x_e.device)
        W = self._grouped(params, (ones if w is None else ones * w).abs().expand_as(x_e))
        Bb = self._grouped(params, (ones * 0 if b is None else ones * b).abs().expand_as(x_e))
        spread = Mx + (0.0 if rms else M)
        normed = vals["out__normed" if self.kind == "group_norm" else "out"].abs_max()
        c_max = self._grouped(params, normed).nan_to_num(nan=math.inf).clamp(max=math.sqrt(n))
        prop = W * r_hat * ((1.0 if rms else 2.0) + c_max) * e_row
        ev = W * (spread * dr + r_c * dmean) + gamma(5, u) * (W * r_c * spread + Bb)
        out = prop + KERNEL_SAFETY * (ev + _UNDERFLOW)
        return out.reshape(x_e.shape)


class Variance(Composite):
    """Variance (``sqrt``: standard deviation) over per-sample ``dims`` with Bessel
    ``correction`` (``keepdim``): lowered to ``center`` -> ``square`` -> ``sum`` (scale
    1 / (n - correction)) [-> ``pow(1/2)``]."""

    kind = "var"

    def _n(self, params: Params, shape: Sequence[int]) -> int:
        return math.prod(shape[d] for d in params["dims"])

    def apply(self, params: Params, x: Tensor) -> Tensor:
        dims = [d + 1 for d in params["dims"]]
        f = torch.std if params.get("sqrt") else torch.var
        return f(x, dims, correction=params["correction"], keepdim=bool(params["keepdim"]))

    def lower(self, node: Node, in_shapes: Sequence[tuple[int, ...]]) -> list[Node]:
        low = _Lowering(node)
        p = node.params
        shape = tuple(in_shapes[0])
        dims = tuple(p["dims"])
        n = self._n(p, shape)
        c = low.add("center", "center", [node.inputs[0]], shape, {"dims": dims})
        q = low.add("square", "square", [c], shape)
        out = node.shape
        v = low.add("var", "sum", [q], out, {"dims": dims, "keepdim": bool(p["keepdim"]),
                                             "scale": 1.0 / (n - p["correction"])},
                    last=not p.get("sqrt"))
        if p.get("sqrt"):
            low.add("sqrt", "pow", [v], out, {"exponent": 0.5, "coeff": 1.0}, last=True)
        return low.nodes

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision, ivals: Sequence[Interval] | None = None,
                    inner: Mapping[str, Interval] | None = None) -> Tensor:
        """Propagated: |d var / d x_i| = 2 |x_i - mean| / (n - c), so at most
        2 n D e / (n - c) with D >= |x - mean| (2 M). Kernel (two passes or Welford merges, as
        for LayerNorm): gamma_(8n+16) (2M)^2 n / (n - c) plus the division; the standard
        deviation adds min(sqrt(d), d / (2 sqrt(var_lo))) for a variance error d, and a few
        ulps of the square root. ``KERNEL_SAFETY`` times the kernel terms."""
        dims = [d + 1 for d in params["dims"]]
        keep = bool(params["keepdim"])
        e, m = errs[0], mags[0]
        n = self._n(params, e.shape[1:])
        k = n / max(n - float(params["correction"]), 1e-300)
        e_row = e.amax(dims, keepdim=keep)
        M = m.amax(dims, keepdim=keep)
        prop = 2 * k * (2 * M) * e_row
        vmax = k * (2 * M) ** 2
        dvar = prop + KERNEL_SAFETY * (gamma(8 * n + 16, prec.u) * vmax + prec.u * vmax)
        if not params.get("sqrt"):
            return dvar
        iv = Interval(-m, m) if ivals is None else ivals[0]
        wide = Interval(iv.lower - e, iv.upper + e)
        v_lo = self.lowered_values({**params, "sqrt": False}, wide)["out"].lower.clamp_min(0)
        d_sqrt = torch.minimum(dvar.sqrt(), dvar / (2 * v_lo.sqrt()).clamp_min(1e-300))
        return d_sqrt + KERNEL_SAFETY * EVAL_ULPS * prec.u * vmax.sqrt() + _UNDERFLOW


for _op in (Softmax(), Norm("layer_norm"), Norm("rms_norm"), Norm("group_norm"), Variance()):
    register(_op)


# -- ATen converters (lipbound.ops.tracing)

def _variance(sqrt: bool) -> Callable:
    def handler(b, fx, x, dims=None, unbiased=None, keepdim=False, *, correction=None):
        if isinstance(dims, bool):  # var(x, unbiased) spelling
            dims, unbiased = None, dims
        corr = correction if correction is not None else (
            0.0 if unbiased is False else 1.0)
        b.add(fx, "var", [x], {"dims": reduction_dims(fx, x, dims), "correction": float(corr),
                               "keepdim": bool(keepdim), "sqrt": sqrt})

    return handler


def _softmax(log: bool) -> Callable:
    def handler(b, fx, x, dim, *_, **__):
        d = reduction_dims(fx, x, dim)
        b.add(fx, "softmax", [x], {"dim": d[0], "log": log})

    return handler


def _const_param(fx, t, what: str):
    if isinstance(t, Var):
        raise unsupported(fx, f"the {what} depends on the input")
    return None if t is None else t.detach()


@converts("aten.layer_norm.default")
def _layer_norm(b, fx, x, normalized_shape, weight=None, bias=None, eps=1e-5,
                cudnn_enable=True):
    b.add(fx, "layer_norm", [x], {"ndim": len(normalized_shape), "eps": float(eps),
                                  "weight": _const_param(fx, weight, "weight"),
                                  "bias": _const_param(fx, bias, "bias")})


@converts("aten.native_layer_norm.default")
def _native_layer_norm(b, fx, x, normalized_shape, weight, bias, eps):
    shape = tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    var = b.add(fx, "layer_norm", [x], {"ndim": len(normalized_shape), "eps": float(eps),
                                        "weight": _const_param(fx, weight, "weight"),
                                        "bias": _const_param(fx, bias, "bias")}, shape=shape)
    b.vars[fx.name] = (var, None, None)


@converts("aten.rms_norm.default")
def _rms_norm(b, fx, x, normalized_shape, weight=None, eps=None):
    if eps is None:
        eps = torch.finfo(fx.args[0].meta["val"].dtype).eps
    b.add(fx, "rms_norm", [x], {"ndim": len(normalized_shape), "eps": float(eps),
                                "weight": _const_param(fx, weight, "weight"), "bias": None})


def _channel(t, x: Var):
    return None if t is None else t.reshape(-1, *([1] * (len(x.shape) - 1)))


@converts("aten.group_norm.default")
def _group_norm(b, fx, x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    b.add(fx, "group_norm", [x], {"groups": int(num_groups), "eps": float(eps),
                                  "weight": _channel(_const_param(fx, weight, "weight"), x),
                                  "bias": _channel(_const_param(fx, bias, "bias"), x)})


@converts("aten.native_group_norm.default")
def _native_group_norm(b, fx, x, weight, bias, N, C, HxW, group, eps):
    shape = tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    var = b.add(fx, "group_norm", [x], {"groups": int(group), "eps": float(eps),
                                        "weight": _channel(_const_param(fx, weight, "weight"),
                                                           x),
                                        "bias": _channel(_const_param(fx, bias, "bias"), x)},
                shape=shape)
    b.vars[fx.name] = (var, None, None)


converts("aten.var.dim", "aten.var.correction")(_variance(False))
converts("aten.std.dim", "aten.std.correction")(_variance(True))
converts("aten.softmax.int", "aten._softmax.default")(_softmax(False))
converts("aten.log_softmax.int", "aten._log_softmax.default")(_softmax(True))
