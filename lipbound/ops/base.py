"""The operator contract every registered op fulfils.

Shapes: ops act on batched tensors ``[N, *shape]`` (one leading batch dimension). Bound
propagation hands them intervals ``[B, *shape]`` and backward coefficient matrices
``A: [B, S, *out]`` (S = number of specification rows).

- A :class:`LinearOp` is affine: ``y = L(x_1, ..., x_k) + offset``. It provides the linear part
  ``L`` (and ``|L|``, the same map with absolute coefficients, for interval arithmetic), the
  constant ``offset``, and the transpose ``L^T`` (``vjp``). Propagation rules are derived once.
- A :class:`NonlinearOp` provides exact interval bounds (``ibp``) and a linear relaxation
  (``relax``): elementwise lines with ``sum_i lw_i x_i + lb <= y <= sum_i uw_i x_i + ub`` for all
  inputs inside their intervals. Ops that are not elementwise (max-pooling) override
  :meth:`NonlinearOp.crown_backward`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lipbound.autodiff import vjp
from lipbound.bounds.interval import Interval, sum_elements
from lipbound.bounds.rounding import Precision, gamma
from lipbound.ops.facts import CHAIN, TRANSPOSE, UNKNOWN, JacobianRule, NormFact, WindowMap

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Relaxation:
    """Linear bounds of an elementwise op, valid wherever every input lies in its interval.

    ``sum_i lower_slopes[i] * x_i + lower_bias <= y <= sum_i upper_slopes[i] * x_i + upper_bias``
    elementwise. Slopes may be None (zero). Tensors broadcast against ``[B, S, *shape]``.
    """

    lower_slopes: tuple[Tensor | None, ...]
    lower_bias: Tensor
    upper_slopes: tuple[Tensor | None, ...]
    upper_bias: Tensor


class Op:
    """Base class: a registered operator kind."""

    kind: str = ""
    linear: bool = False
    #: True when :meth:`magnitude` and :meth:`float_error` need the inputs' intervals (ops
    #: whose value or slope is unbounded near some point, such as log or 1/x): callers then
    #: pass them as the keyword ``ivals`` (sound intervals of the exact input values)
    interval_facts: bool = False
    #: True when :meth:`magnitude` can use the inputs' intervals (keyword ``ivals``) to give a
    #: tighter value when the caller has them (products: their relaxation's slopes are the
    #: other factor's bounds); the caller computes intervals only for ``interval_facts`` ops
    interval_aware: bool = False
    #: True when :meth:`jacobian_rule` states a rule (for some params): the Clarke-Jacobian
    #: builder can differentiate through this op (listed in its error messages)
    differentiable: bool = False
    #: why the op has no Jacobian rule or Lipschitz factor when that is a property of the
    #: function (a discontinuous one), added to the errors of Lipschitz and Jacobian bounds
    no_jacobian_reason: str = ""

    def jacobian_rule(self, params: Params, index: int) -> JacobianRule | None:
        """How the cotangent of this op's output reaches input ``index`` (see
        :class:`~lipbound.ops.facts.JacobianRule`); None: no Clarke-Jacobian rule."""
        return None

    def kinks(self, params: Params) -> tuple[float, ...]:
        """Points where an elementwise op of one input is not differentiable, where branch
        and bound may split its input (0 for ReLU; both limits of hardtanh): restricted to
        either side of a kink, the op's relaxation and derivative bounds tighten. () for
        smooth or non-elementwise ops."""
        return ()

    def relu_like_slope(self, params: Params) -> float | None:
        """k when this op is ``max(x, k x)`` with 0 <= k <= 1 (ReLU: 0), else None. Such ops
        are what the exact solvers encode (one binary per neuron), what the sign search splits
        at 0 (with beta multipliers) and what makes alpha-CROWN cheap."""
        return None

    #: True when :meth:`float_error` accepts the keyword ``ivals`` (sound intervals of the
    #: exact input values) and is tighter with them (ReLU: an error on a stably negative
    #: input dies); the caller passes the intervals it has, but never computes them for it
    error_uses_intervals: bool = False

    def needs_intervals(self, params: Params) -> bool:
        """Whether this node's rounding facts need its inputs' intervals (default:
        :attr:`interval_facts`; a step function's slopes, for instance, are unbounded
        without them)."""
        return self.interval_facts

    def apply(self, params: Params, *xs: Tensor) -> Tensor:
        """Concrete evaluation on batched inputs [N, *in_i] -> [N, *out]."""
        raise NotImplementedError

    def output_shape(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        """Per-sample output shape, by evaluating on zeros (ops may override)."""
        xs = [torch.zeros((1, *s), dtype=torch.float64) for s in in_shapes]
        return tuple(self.apply(_to64(params), *xs).shape[1:])

    def magnitude(self, params: Params, *mags: Tensor) -> Tensor:
        """A bound on |y| and on the terms a bound computation sums for this op (its
        absolute-value network), given bounds ``mags`` on |x_i|."""
        raise NotImplementedError

    def backward_facts(self, params: Params, centres: Sequence[Tensor],
                       radii: Sequence[Tensor], rel: Any = None
                       ) -> tuple[Tensor, Tensor, Tensor] | None:
        """The facts of Lemmas 1-2 of :mod:`lipbound.propagate.mixed` for one CROWN step
        through this op in a lower precision: ``(y_lo, y_up, M)``, broadcastable to
        [B, S, *out], with y_lo / y_up the lower / upper bounding lines (``rel``; the op
        itself for linear ops) at the inputs' centres ``centres`` [N, *in_i], and M such
        that the computed input coefficients Â_i of coefficients Λ differ from their exact
        values A_i by at most ``gamma_{numel(out)+2}(u) <|Λ|, M>`` when paired with
        deviations |x_i - centre_i| <= ``radii[i]``. None: the op does not state them (that
        step then runs in the state's dtype)."""
        return None

    def backward_sum_terms(self, params: Params, in_shapes: Sequence[tuple[int, ...]],
                           out_shape: tuple[int, ...]) -> int:
        """The most terms in one entry of a CROWN step's input coefficients (n in the lemmas
        of :mod:`lipbound.propagate.mixed`): default every output element; ops override it
        with their fan-out (1 for elementwise ops and data movement)."""
        n = 1
        for d in out_shape:
            n *= d
        return n

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision) -> Tensor:
        """A bound on |y_computed - y_exact| for one evaluation in floating point with
        precision ``prec``, when the computed inputs are off by at most ``errs`` and their
        computed values are bounded by ``mags`` in absolute value (all [N, *in_i])."""
        raise NotImplementedError(f"no floating-point error rule for op {self.kind!r}")


class LinearOp(Op):
    """An affine operator y = L(x_1..x_k) + offset."""

    linear = True

    def apply_linear(self, params: Params, *xs: Tensor, absolute: bool = False) -> Tensor:
        """L(x) (or |L|(x) with absolute=True): the map without its constant offset."""
        raise NotImplementedError

    def offset(self, params: Params) -> Tensor | None:
        """The constant part, broadcastable to [N, *out], or None for zero."""
        return None

    def apply_linear_one(self, params: Params, index: int, x: Tensor,
                         in_shapes: Sequence[tuple[int, ...]]) -> Tensor:
        """L_index(x): the linear part with every input but ``index`` zero (x [N, *in_index]).

        Default: :meth:`apply_linear` with zero tensors for the other inputs; multi-input ops
        override it to skip them.
        """
        xs = [x if i == index else torch.zeros((x.shape[0], *s), dtype=x.dtype, device=x.device)
              for i, s in enumerate(in_shapes)]
        return self.apply_linear(params, *xs)

    def apply(self, params: Params, *xs: Tensor) -> Tensor:
        y = self.apply_linear(params, *xs)
        off = self.offset(params)
        return y if off is None else y + off

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]
            ) -> tuple[Tensor, ...]:
        """Transpose: for A [N, *out], the tensors L_i^T A of shapes [N, *in_i].

        Default: reverse-mode autodiff of the linear part (exact because L is linear); keeps
        the graph when A requires grad (optimised bounds).
        """
        with torch.enable_grad():
            xs = [torch.zeros((A.shape[0], *s), dtype=A.dtype, device=A.device,
                              requires_grad=True) for s in in_shapes]
            y = self.apply_linear(params, *xs)
            grads = vjp(y, xs, A, create_graph=A.requires_grad, allow_unused=True)
        return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, xs))

    #: True for ops whose products may run on TensorFloat-32 operands (matmul, convolution)
    matmul_like: bool = False

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        """The most rounded operations behind one output element in floating point: n + 1
        for a sum of n products plus an offset; 0 for ops that only move values (default)."""
        return 0

    #: every entry of the computed :meth:`vjp` is a sum (any order) of at most numel(out)
    #: products of a coefficient and one entry of L with at most two roundings each (matrix
    #: products, direct/GEMM convolutions, averages, scales, data movement): Lemma 1 of
    #: :mod:`lipbound.propagate.mixed`
    exact_sums: bool = False

    def backward_facts(self, params: Params, centres: Sequence[Tensor],
                       radii: Sequence[Tensor], rel: Any = None
                       ) -> tuple[Tensor, Tensor, Tensor] | None:
        """Lemma 1 when :attr:`exact_sums`: y = L(centres) + offset, M = |L| radii."""
        if not self.exact_sums:
            return None
        y = self.apply(params, *centres).unsqueeze(1)
        return y, y, self.apply_linear(params, *radii, absolute=True).unsqueeze(1)

    def magnitude(self, params: Params, *mags: Tensor) -> Tensor:
        """|L|(mags) + |offset|."""
        m = self.apply_linear(params, *mags, absolute=True)
        off = self.offset(params)
        return m if off is None else m + off.abs()

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision) -> Tensor:
        """|L| errs (input errors carried through) + gamma_n (|L| mags + |offset|) with
        n = :meth:`rounded_ops` (Higham, Thm 3.5 for dot products in any order), plus the
        operand rounding of TensorFloat-32 products where ``prec.u_operand`` is set."""
        e = self.apply_linear(params, *errs, absolute=True)
        n = self.rounded_ops(params, [tuple(m.shape[1:]) for m in mags])
        if n == 0:
            return e
        g = gamma(n, prec.u)
        if self.matmul_like and prec.u_operand:
            g += (2 * prec.u_operand + prec.u_operand ** 2) * (1 + g)
        return e + g * self.magnitude(params, *mags)

    differentiable = True

    def jacobian_rule(self, params: Params, index: int) -> JacobianRule:
        """The transpose of the linear part (a ``transpose`` node)."""
        return JacobianRule(TRANSPOSE)

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor] | None:
        """(W [m, n_in], b [m]) when this op maps a flat vector of length ``n_in`` (C order)
        to the flat output ``W x + b`` of per-sample shape ``out_shape`` as a layer of an MLP
        (how the exact solvers and LP layers read it); None when it is not such a map."""
        return None

    def norm_fact(self, params: Params, index: int) -> NormFact:
        """What this op knows about the induced norms of input ``index``'s map (default:
        nothing; the naive bound then computes them numerically from :meth:`apply_linear`)."""
        return UNKNOWN

    def window_map(self, params: Params, forward: bool = False) -> WindowMap | None:
        """How the map CROWN applies to coefficients acts on windowed ones: L^T (a step
        through this op) or, with ``forward``, L itself (a step through a ``transpose`` node
        of this op); None: such coefficients are made dense first (the default)."""
        return None

    def ibp(self, params: Params, *ivals: Interval) -> Interval:
        """Exact interval image of a box under an affine map: centre +- |L| radius."""
        c = self.apply(params, *[iv.center for iv in ivals])
        r = self.apply_linear(params, *[iv.radius for iv in ivals], absolute=True)
        return Interval(c - r, c + r)


class NonlinearOp(Op):
    """A nonlinear operator with interval bounds and a linear relaxation."""

    def ibp(self, params: Params, *ivals: Interval) -> Interval:
        raise NotImplementedError

    def relax(self, params: Params, *ivals: Interval, opt: Mapping[str, Tensor] | None = None
              ) -> Relaxation:
        """Sound linear bounds for inputs inside ``ivals`` (tensors broadcast like [B, S, *shape]).

        ``opt`` holds free parameters from :meth:`init_opt` (any value they take is sound after
        :meth:`project_opt`); None selects the op's default relaxation.
        """
        raise NotImplementedError

    def lipschitz(self, params: Params) -> float | None:
        """sup |f'| of an elementwise op over the real line (how much it can amplify an input
        error); None for ops that are not elementwise functions of one input."""
        return None

    def slope_range(self, params: Params) -> tuple[float, float] | None:
        """``(alpha, beta)`` with ``alpha <= (f(a) - f(b)) / (a - b) <= beta`` for all a != b
        (slope restriction) of an elementwise op of one input; None if unknown or not
        elementwise (the compositional global bounds then do not apply)."""
        return None

    def eval_error(self, params: Params, m_in: Tensor, m_out: Tensor, prec: Precision
                   ) -> Tensor | float:
        """Bound on the rounding of one evaluation at exact inputs (0: exact, like max)."""
        return 0.0

    def naive_factor(self, params: Params, p: float) -> float | None:
        """An upper bound on this op's Lipschitz constant w.r.t. ||.||_p on inputs and outputs
        (its factor in the naive product of :mod:`lipbound.jacobian.naive`), or None when it
        has no global one (exp, log, products). Default: a finite :meth:`lipschitz`, which an
        elementwise op has for every p."""
        lip = self.lipschitz(params)
        return float(lip) if lip is not None and math.isfinite(lip) else None

    def error_slopes(self, params: Params, iv: Interval, e: Tensor
                     ) -> tuple[Tensor, Tensor] | None:
        """For an elementwise op f: bounds (lo, hi) on (f(x~) - f(x)) / (x~ - x) for every x
        in ``iv`` and every x~ with |x~ - x| <= e (how an input error reaches the output,
        with its sign), or None when the op does not state them."""
        return None

    def magnitude(self, params: Params, *mags: Tensor) -> Tensor:
        """max |y| over inputs |x_i| <= mags (by :meth:`ibp`), and at least lipschitz * |x|
        (the slopes of a relaxation scale coefficients by at most that)."""
        m = self.ibp(params, *[Interval(-v, v) for v in mags]).abs_max()
        lip = self.lipschitz(params)
        return m if lip is None else torch.maximum(m, lip * mags[0])

    def float_error(self, params: Params, errs: Sequence[Tensor], mags: Sequence[Tensor],
                    prec: Precision) -> Tensor:
        """lipschitz * input error + :meth:`eval_error` (elementwise ops)."""
        lip = self.lipschitz(params)
        if lip is None:
            return super().float_error(params, errs, mags, prec)
        m_out = self.magnitude(params, *mags)
        return lip * errs[0] + self.eval_error(params, mags[0], m_out, prec)

    def backward_sum_terms(self, params: Params, in_shapes: Sequence[tuple[int, ...]],
                           out_shape: tuple[int, ...]) -> int:
        if self.elementwise:
            return 1
        return super().backward_sum_terms(params, in_shapes, out_shape)

    def backward_facts(self, params: Params, centres: Sequence[Tensor],
                       radii: Sequence[Tensor], rel: Any = None
                       ) -> tuple[Tensor, Tensor, Tensor] | None:
        """Lemma 2 for elementwise ops stepped through by this class's :meth:`crown_backward`:
        the relaxation's lines at the centres and M = sum_i max(|a_l,i|, |a_u,i|) radii[i]
        (the step's coefficients are one rounded product per element)."""
        if not (self.elementwise and isinstance(rel, Relaxation)
                and type(self).crown_backward is NonlinearOp.crown_backward):
            return None
        y_lo, y_up, M = rel.lower_bias, rel.upper_bias, 0
        for lw, uw, c, r in zip(rel.lower_slopes, rel.upper_slopes, centres, radii):
            c, r = c.unsqueeze(1), r.unsqueeze(1)
            if lw is not None:
                y_lo = y_lo + lw * c
                M = M + lw.abs() * r
            if uw is not None:
                y_up = y_up + uw * c
                M = M + uw.abs() * r
        return y_lo, y_up, M + torch.zeros_like(y_lo)

    #: how CROWN coefficients zero outside a window pass through this op when it is not
    #: elementwise (:data:`~lipbound.ops.facts.POOL` / ``POOL_GRAD``: the windowed max-pool
    #: rules of :mod:`lipbound.propagate.window_pool`); None: they are made dense
    window_rule: str | None = None

    #: Adam step size for this op's optimisable parameters (alpha-CROWN)
    opt_lr: float = 0.1

    #: True when every input has the output's shape and :meth:`relax` and
    #: :meth:`crown_backward` act element by element: the relaxation of element i depends only
    #: on the intervals and parameters of element i (so both may be cropped to any window)
    elementwise: bool = False

    def init_opt(self, params: Params, *ivals: Interval) -> dict[str, Tensor] | None:
        """Initial optimisable parameters (shape [B, *shape]) or None if the op has none."""
        return None

    def project_opt(self, params: Params, opt: dict[str, Tensor]) -> None:
        """Clamp optimisable parameters into their valid range, in place."""

    #: for :meth:`derivative`: the derivative of this op is its own output (exp)
    DERIVATIVE_IS_OUTPUT = "output"

    def derivative(self, params: Params) -> tuple[str, dict[str, Any]] | str | None:
        """The Clarke derivative of an elementwise op as another registered op applied to the
        same input, ``(kind, params)`` (the set-valued derivative at a kink must be contained
        in that op's interval bounds there), :attr:`DERIVATIVE_IS_OUTPUT`, or None when the op
        has no such rule (then :meth:`jacobian_rule` states another one or none)."""
        return None

    def jacobian_rule(self, params: Params, index: int) -> JacobianRule | None:
        """Default: the chain rule with :meth:`derivative`, ``mul(d, g)``."""
        rule = self.derivative(params)
        if rule is None:
            return None
        if rule == self.DERIVATIVE_IS_OUTPUT:
            return JacobianRule(CHAIN)
        kind, dparams = rule
        return JacobianRule(CHAIN, kind, dparams)

    #: True when :meth:`ibp` is the exact range over its (single) input interval, so CROWN
    #: cannot tighten this op's output bounds in practice (intermediate bounds skip it)
    exact_interval: bool = False

    def tighten_mask(self, params: Params, index: int, *ivals: Interval) -> Tensor | None:
        """Elements of input ``index`` whose bounds can change this op's relaxation (a bool
        mask broadcastable to that input), or None for all. Used to skip intermediate bounds
        that cannot matter (a stable ReLU stays stable when its bounds tighten)."""
        return None

    def sign_only(self, params: Params, index: int) -> bool:
        """True when this op's *unoptimised* relaxation (``opt`` None) depends on the bounds
        of input ``index`` only through which of ``l > 0`` and ``u < 0`` hold (e.g. the
        Clarke switch of a ReLU reads its pre-activation's sign status). Bounds of a node
        that only such relaxations read need tightening only where a sign can be decided."""
        return False

    def crown_backward(self, params: Params, A: Tensor, rel: Relaxation
                       ) -> tuple[tuple[Tensor | None, ...], Tensor]:
        """Back-substitute an upper bound of <A, y> through the op's relaxation ``rel``.

        A: [B, S, *out]. Returns (A_i for each input or None, bias [B, S]) such that
        <A, y> <= sum_i <A_i, x_i> + bias whenever the inputs lie in the relaxed intervals.
        """
        if A.requires_grad:  # optimised bounds: keep the gradient of the selection at A = 0
            return self._crown_backward_where(A, rel)
        pos_part, neg_part = A.clamp(min=0), A.clamp(max=0)
        As: list[Tensor | None] = []
        for lw, uw in zip(rel.lower_slopes, rel.upper_slopes):
            if uw is None and lw is None:
                As.append(None)
            elif uw is None:
                As.append(neg_part * lw)
            elif lw is None:
                As.append(pos_part * uw)
            else:  # A+ uw + A- lw: one of the two products is an exact zero per element
                As.append(torch.addcmul(neg_part * lw, pos_part, uw))
        return tuple(As), _signed_bias(pos_part, neg_part, rel.upper_bias, rel.lower_bias)

    def _crown_backward_where(self, A: Tensor, rel: Relaxation
                              ) -> tuple[tuple[Tensor | None, ...], Tensor]:
        pos = A > 0
        As: list[Tensor | None] = []
        for lw, uw in zip(rel.lower_slopes, rel.upper_slopes):
            if uw is None and lw is None:
                As.append(None)
                continue
            uw = torch.zeros_like(lw) if uw is None else uw
            lw = torch.zeros_like(uw) if lw is None else lw
            As.append(A * torch.where(pos, uw, lw))
        return tuple(As), _signed_bias_where(A, pos, rel.upper_bias, rel.lower_bias)


def _signed_bias(pos_part: Tensor, neg_part: Tensor, ub: Tensor, lb: Tensor) -> Tensor:
    """``sum over elements of A+ * ub + A- * lb``, as [B, S] (A+ = max(A, 0), A- = min(A, 0)).

    When a bias is shared by the S rows (the usual case) its sum is a matrix product
    ``A+ @ ub`` (the same sum, accumulated in a different order), skipped when it is zero.
    """
    B, S = pos_part.shape[:2]
    out = None
    for part, b in ((pos_part, ub), (neg_part, lb)):
        if not isinstance(b, Tensor):
            b = torch.as_tensor(b, dtype=part.dtype, device=part.device)
        if b.dim() == part.dim() and b.shape[1] == 1 and b.shape[0] in (1, B):
            if not bool(b.any()):
                continue
            bf = b.expand(B, 1, *part.shape[2:]).reshape(B, -1, 1)
            term = torch.bmm(part.reshape(B, S, -1), bf)[..., 0]
        else:
            term = sum_elements(part * b)
        out = term if out is None else out + term
    return pos_part.new_zeros(B, S) if out is None else out


def _signed_bias_where(A: Tensor, pos: Tensor, ub: Tensor, lb: Tensor) -> Tensor:
    """``sum over elements of A * (ub where A > 0 else lb)``, as [B, S] (``relu(A) @ ub`` when
    the lower bias is zero and the upper one is shared by the S rows)."""
    B, S = A.shape[:2]
    if (ub.dim() == A.dim() and ub.shape[1] == 1 and ub.shape[0] in (1, B)
            and not ub.requires_grad and not lb.requires_grad and not bool(lb.any())):
        ubf = ub.expand(B, 1, *A.shape[2:]).reshape(B, -1, 1)
        return torch.bmm(A.clamp(min=0).reshape(B, S, -1), ubf)[..., 0]
    return sum_elements(A * torch.where(pos, ub, lb))


def _to64(params: Params) -> dict[str, Any]:
    return {k: (v.double() if isinstance(v, Tensor) and v.is_floating_point() else v)
            for k, v in params.items()}
