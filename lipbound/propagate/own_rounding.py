"""The rounding of a CROWN back-substitution's own arithmetic, bounded step by step.

:func:`lipbound.propagate.crown.crown_upper` computes, in floating point with unit roundoff
u, an upper bound of ``<A, v_target>`` over the domain. Instead of one global allowance
``gamma_N M`` (M: the absolute-value network's magnitude, a product of absolute weights
through every layer), a :class:`Tally` follows the actual back-substitution and adds what
each rounded operation can have cost; the result is a bound of the *real* quantity.
``gamma_n = n u / (1 - n u)``; every factor below is rounded up (``nextafter``).

**Invariant.** After the steps through the nodes above k, ``<A, v_target> <= sum_j <Λ̂_j,
v_j> + β`` over the domain, Λ̂_j the coefficients *as computed* and β real. Each computed
quantity is paired with the intervals of the node values: ``|v_j| <= m_j`` (the abs max of
``state.interval(j)``). Their CROWN parts carry their own tally (every CROWN bound is widened
by its tally before it is stored); their IBP parts are taken as computed (each interval
end is one op's evaluation at the inputs' ends, off by a few ulps of the node's magnitude:
the first-order model of :mod:`lipbound.bounds.rounding`, item 3, as before).

**Step (Lemmas 1-2 of :mod:`lipbound.propagate.mixed`, read with centres 0).** Through node k
with input values v_i (bounded by m_i): the op's ``backward_facts`` at centres 0 and radii
m_i give ``M_k`` with ``sum_i <|E_i|, |v_i|> <= gamma_{n+2} <|Λ̂_k|, M_k>`` for the
coefficients' rounding E_i (n: :meth:`~lipbound.ops.base.Op.backward_sum_terms`, any
summation order; Higham Thm 3.5), and the lines y_lo, y_up at 0, i.e. the offset (affine ops)
or the relaxation's intercepts. The step's bias is one sum of ``numel(out)`` products Λ̂·y,
off by at most ``gamma_{numel(out)+1} <|Λ̂_k|, max(|y_lo|, |y_up|)>``. The relaxation's lines
are formed in floating point from the intervals: allowing each line a violation of at most
``RELAXATION_OPS u (|a| |x| + |c|)`` (slopes and intercepts are a few rounded operations of
the interval ends), all three are covered by
``gamma_{N_k} <|Λ̂_k|, M_k + max(|y_lo|, |y_up|)>``, N_k = max(n + 2, numel(out) + 1) +
``RELAXATION_OPS`` (``gamma_a X + gamma_b Y <= gamma_max(a, b) (X + Y)``; float64 products
carry one rounding, the lemmas' n + 2 allow for two). An op without the facts is charged
``SAFETY gamma_{N'} <|Λ̂_k|, magnitude_k(m)>`` with N' every element it reads or writes plus
``RELAXATION_OPS`` (the first-order model of :mod:`lipbound.bounds.rounding`, item 3,
localised to the step).

**Merges (Lemma 3).** Where coefficients P, Q meet at node j, ``fl(P + Q) = (P + Q)(1 + δ)``,
|δ| <= u, so ``<P + Q, v_j> <= <fl(P + Q), v_j> + u/(1-u) <|fl(P + Q)|, m_j>``. A node
that does not depend on the input adds ``<Λ̂, value>``: ``gamma_{numel+1} <|Λ̂|, |value|>``.

**Bias and concretisation.** β is a recursive sum of K computed step biases b_k: off by at most
``gamma_K sum |b_k|``. The concretisation (``<A_x, x0> + eps ||A_x||_*`` or the box form
``<A_x⁺, hi> + <A_x⁻, lo>``, plus β) sums at most ``n_in`` products, a norm (relative error
below gamma_{n_in+2}) and three more operations; every term is at most ``|A_x| m_x`` (m_x:
the larger of the abs max of the domain's box and, for a ball, ``|x0| + eps``;
``eps ||A||_q <= eps ||A||_1``) or |β|, so it is off by at most
``gamma_{n_in+4} (<|A_x|, m_x> + |β|)``.

**The tally's own arithmetic.** Every term is a sum of products of non-negative floats (at
most ``count`` rounded operations deep), so the computed total T̂ satisfies T <= T̂ / (1 -
gamma_count); the final ``bound + T`` is rounded up by one ulp.

Applies to CROWN and alpha-CROWN in the state's dtype without branch-and-bound multipliers
(:func:`applies`); :mod:`lipbound.propagate.mixed` (float32 coefficients) and split states
keep the global allowance of :func:`lipbound.propagate.rounding.compute_allowance`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from lipbound.bounds.rounding import SAFETY, gamma, unit_roundoff
from lipbound.propagate import mixed, windows
from lipbound.propagate.state import BoundState

#: rounded operations a relaxation's lines may be off by, relative to |a| |x| + |c|
RELAXATION_OPS = 8

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("lipbound_own_rounding",
                                                                default=True)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """CROWN bounds computed inside carry no own-rounding allowance (benchmarks that report
    the propagated, real-arithmetic width; tests that show the allowance matters)."""
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def applies(state: BoundState, dtype: torch.dtype) -> bool:
    """Whether CROWN bounds of ``state`` in ``dtype`` carry their own rounding (a tally):
    coefficients in the state's dtype (not :mod:`lipbound.propagate.mixed`) and no
    branch-and-bound multipliers."""
    return (_ENABLED.get() and not mixed.active(state, dtype) and not state.splits
            and not state.boxes)


def _up(x: float) -> float:
    return math.nextafter(x, math.inf)


class Tally:
    """Running bound [B or 1, S] on the rounding of one back-substitution (module doc)."""

    def __init__(self, state: BoundState, dtype: torch.dtype) -> None:
        self.state = state
        self.u = unit_roundoff(dtype)
        self.total: Tensor | float = 0.0
        self.abs_bias: Tensor | float = 0.0
        self.terms = 0
        self.count = 0

    def _add(self, A, M: Tensor, g: float, n_ops: int) -> None:
        """total += g <|A|, M> (M >= 0, broadcastable to A's dense shape)."""
        with torch.no_grad():
            t = windows.dot(mixed._abs(_detach(A)), M.detach())
        self.total = self.total + _up(g) * t
        self.count += n_ops

    def bias(self, b: Tensor) -> None:
        """A step's bias b [B or 1, S] was added to β."""
        self.abs_bias = self.abs_bias + b.detach().abs()
        self.terms += 1

    def step(self, node, op, A, rel) -> None:
        """Through node ``node`` (op ``op``, relaxation ``rel`` or None) with coefficients A."""
        M, g, n_ops = self._terms(node, op, rel)
        self._add(A, M, g, n_ops)

    def _terms(self, node, op, rel) -> tuple[Tensor, float, int]:
        """(M_k + max(|y_lo|, |y_up|) [N, 1, *out], its gamma factor, rounded ops) of a step
        (module doc), cached per node for the current intervals and relaxation."""
        st = self.state
        ivs = [st.interval(s) for s in node.inputs]
        key = tuple(iv.lower for iv in ivs)
        cache = st.coef_cache.setdefault("own_terms", {})
        hit = cache.get(node.name)
        if hit is not None and hit[0] is rel and all(a is b for a, b in zip(hit[1], key)):
            return hit[2]
        m = [iv.abs_max() for iv in ivs]
        facts = _facts(op, node, m, rel)
        if facts is not None:
            y_lo, y_up, M = facts
            n = op.backward_sum_terms(node.params, [st.graph[s].shape for s in node.inputs],
                                      node.shape)
            N = max(n + mixed.EXTRA_OPS, node.numel + 1) + RELAXATION_OPS
            out = (M + torch.maximum(y_lo.abs(), y_up.abs()), gamma(N, self.u), N)
        else:
            N = sum(st.graph[s].numel for s in node.inputs) + node.numel + RELAXATION_OPS
            use = op.needs_intervals(node.params) or op.interval_aware
            with torch.no_grad():
                mag = op.magnitude(node.params, *m, **({"ivals": ivs} if use else {}))
            out = (mag.unsqueeze(1), SAFETY * gamma(N, self.u), N)
        cache[node.name] = (rel, key, out)
        return out

    def merge(self, src: str, summed) -> None:
        """Coefficients of node ``src`` were summed (rounded once per element)."""
        m = self.state.interval(src).abs_max().unsqueeze(1)
        self._add(summed, m, self.u / (1.0 - self.u), 2)

    def fixed(self, A, value: Tensor) -> None:
        """``<A, value>`` of a node that does not depend on the input was added to β."""
        n = value[0].numel() + 1
        self._add(A, value.abs(), gamma(n, self.u), n)

    def finish(self, A_x: Tensor | None, bias: Tensor) -> Tensor:
        """The allowance [B or 1, S] to add to the concretised bound (module doc)."""
        u = self.u
        out = self.total + _up(gamma(self.terms, u)) * self.abs_bias
        count = self.count + self.terms + 4
        if A_x is not None:
            mx = _input_magnitude(self.state.domain).unsqueeze(1)
            n_in = mx[0].numel() + 4
            with torch.no_grad():
                conc = windows.dot(A_x.detach().abs(), mx) + bias.detach().abs()
            out = out + _up(gamma(n_in, u)) * conc
            count += n_in
        else:
            out = out + _up(gamma(2, u)) * bias.detach().abs()
        return out * _up(1.0 / (1.0 - gamma(count, u)))


def _input_magnitude(domain) -> Tensor:
    """[B, *in]: at least |x| over the domain's box and, for an l_p ball, |center| + eps
    (the terms of its concretisation, clipped to a data range or not)."""
    m = domain.interval().abs_max()
    center = getattr(domain, "center", None)
    if center is None:
        return m
    eps = domain.eps.reshape(-1, *([1] * (center.dim() - 1)))
    return torch.maximum(m, center.abs() + eps)


def _facts(op, node, m: list[Tensor], rel):
    """The op's ``backward_facts`` at centres 0 and radii ``m`` (or None)."""
    with torch.no_grad():
        f = op.backward_facts(node.params, [torch.zeros_like(t) for t in m], m, rel)
    if f is None or not all(bool(torch.isfinite(t).all()) for t in f):
        return None
    return f


def _detach(A):
    if isinstance(A, Tensor):
        return A.detach()
    if isinstance(A, windows.Window):
        return A.with_data(A.data.detach())
    return windows.Cols(A.data.detach(), A.idx, A.n)

