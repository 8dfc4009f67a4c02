"""Float32 CROWN coefficients with a proven rounding allowance per back-substitution step.

With ``precision="float32"`` the large tensors of a CROWN back-substitution, the coefficients
Λ_k of every node k (``[B, S, *shape_k]``) and their products with the weights and the
relaxation slopes, are computed in float32 (about twice as fast on a CPU, far more on a GPU).
Everything small stays in float64: the intervals and relaxations of the neurons, the bias
accumulated over the steps, the concretisation over the input set (Λ_x is cast to float64
exactly), and the state's values; their float64 rounding is covered as for a float64 run
(:mod:`lipbound.bounds.rounding`, item 3). ``u = 2^-24``; ``γ_n = n u / (1 - n u)``.

The invariant of the back-substitution (:func:`lipbound.propagate.crown.backsubstitute`) is
``<A, v_target> <= sum_k <Λ_k, v_k> + β`` over the domain, Λ_k the float coefficients
*as computed* and β a float64 bias. A step replaces Λ_k by computed coefficients of the
inputs of node k; it stays valid when β absorbs the step's rounding (below). Under
alpha-CROWN the bias's value is this sound one; its gradient is the plain float32 bias's.

**Centres.** Every node i gets a centre c_i (the midpoint of its sound interval, float64)
and a radius r_i >= |v_i - c_i| (rounded up). A step's float64 bias is formed at the
centres, so the float32 rounding is paired only with the deviations v_i - c_i: for computed
input coefficients Â_i = A_i + E_i (A_i the exact map of the computed Λ),
``<A_i, v_i> = <Â_i, v_i> - <E_i, c_i> - <E_i, v_i - c_i>`` and ``-<E_i, c_i> = <A_i, c_i>
- <Â_i, c_i>``, both computed in float64, so the step's bias is
``<Λ⁺, y_up> + <Λ⁻, y_lo> - sum_i <Â_i, c_i> + sum_i <|E_i|, r_i>`` with y_lo / y_up the
op's lower / upper bounding lines evaluated at the input centres (for an affine op both are
L(c) + b; the step's exact bias is folded into them). The allowance scales with the input
set's size (the radii), not with the values' size.

**Lemma 1 (affine op, conv, batchnorm-folded scale, pooling averages, add, reshape).**
v_k = L(v_1..v_r) + b with every entry of the computed transpose ``fl(L_i^T Λ)`` a sum, in
any order, of at most n products Λ_o · L_oj, each carrying at most two roundings (the cast of
L_oj from float64 to float32 and the product) — true for matrix products, direct/GEMM
convolutions, average pooling (a division), scales, sums with coefficients and data movement
(n: the op's fan-out, :meth:`~lipbound.ops.base.Op.backward_sum_terms`; e.g. output channels
x kernel taps for a convolution). Then (Higham, Thm 3.5, any summation order)
``|E_i| <= γ_{n+2} |Λ| |L_i|`` and ``sum_i <|E_i|, r_i> <= γ_{n+2} <|Λ|, |L| r>``. Ops
state ``(y_lo, y_up, M = |L| r)`` in :meth:`~lipbound.ops.base.Op.backward_facts`.

**Lemma 2 (activation relaxation).** A relaxation ``a_l x + c_l <= σ(x) <= a_u x + c_u`` is
formed in float64 from the float64 intervals (valid as in a float64 run). The step computes
``Λ⁺ fl32(a_u) + Λ⁻ fl32(a_l)`` (two roundings per element: the cast and the product; the
other term is an exact zero), so ``|E| <= γ_2 |Λ| max(|a_l|, |a_u|)`` and M =
``sum_i max(|a_l,i|, |a_u,i|) r_i`` (multi-input relaxations, the products of the Jacobian
graph, sum over their inputs); y_lo, y_up are the two lines at the centres. Max pooling selects
x_{k*} with weight 1 (exact) and the fold sums at most (kernel taps) of them: M = max_window r.

**Lemma 3 (sum of coefficients, casts).** Where coefficients P, Q of two consumers meet at a
node, ``fl(P + Q) = (P + Q)(1 + δ)`` elementwise, |δ| <= u, so with the same centring
``<P + Q, v> = <fl(P + Q), v> + <P, c> + <Q, c> - <fl(P + Q), c> + e``, |e| <=
``u/(1 - u) <|fl(P + Q)|, r>``; a float64 coefficient rounded to float32 obeys the same
bound. An op without ``backward_facts`` is stepped through in float64 on the exactly upcast
coefficients (per node; the next supported node rounds them back with Lemma 3).

**Lemma 4 (the allowance's own rounding, concretisation).** ``<|Λ|, M>`` is a sum of
non-negative float32 products: its computed value t̂ satisfies t <= t̂ / (1 - γ_{N+1}) (N the
node's size), and the float32 M (rounded from float64) is taken one ulp up; the scalar factor
is formed in float64 and rounded up. Concretisation ``<Λ_x, x0> ± eps ||Λ_x||_*`` runs in
float64 on the exactly upcast Λ_x; the float64 dot products of the centring, the float64
relaxations and intervals are covered by the float64 allowance of
:mod:`lipbound.propagate.rounding` (item 3 of :mod:`lipbound.bounds.rounding`), and every
final bound is rounded outward (``nextafter``).

Not covered (stepped through in float64 as above): ops without the fact (exp/log/pow,
normalisations, softmax, max-pool Jacobians, reductions by max), split multipliers of
branch-and-bound (the whole back-substitution then runs in float64). The float32 products
assume an IEEE float32 GEMM/direct convolution, not TensorFloat-32 nor FFT/Winograd
convolutions: on CUDA they are switched off for the step (:func:`exact_float32_kernels`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import fields, replace

import torch
from torch import Tensor

from lipbound.bounds.rounding import gamma, unit_roundoff
from lipbound.graph.ir import Graph, graph_to
from lipbound.propagate import windows
from lipbound.propagate.state import BoundState
from lipbound.propagate.windows import Cols, Window

#: rounded operations per product term beyond the sum's own (the cast of the factor, the product)
EXTRA_OPS = 2


def active(state: BoundState, ref_dtype: torch.dtype) -> bool:
    """Whether this back-substitution runs its coefficients in ``state.coef_dtype``: a lower
    precision than the state's, and no split or kink-box multipliers (branch and bound)."""
    cd = state.coef_dtype
    return cd is not None and cd != ref_dtype and not state.splits and not state.boxes \
        and unit_roundoff(cd) > unit_roundoff(ref_dtype)


def coef_graph(state: BoundState) -> Graph:
    """The state's graph with its parameters cast to the coefficient dtype (cached)."""
    g = state.coef_cache.get("graph")
    if g is None:
        g = graph_to(state.graph, state.coef_dtype)
        state.coef_cache["graph"] = g
    return g


def cast(A, dtype: torch.dtype):
    """A dense, windowed or column-sparse coefficient in ``dtype`` (a batch-shared tensor is
    cast once and stays shared)."""
    if isinstance(A, Window):
        return A.with_data(windows.map_shared(lambda d: d.to(dtype), A.data))
    if isinstance(A, Cols):
        return Cols(windows.map_shared(lambda d: d.to(dtype), A.data), A.idx, A.n)
    return windows.map_shared(lambda d: d.to(dtype), A)


def coef_dtype_of(A) -> torch.dtype:
    return (A.data if isinstance(A, (Window, Cols)) else A).dtype


def cast_relaxation(rel, dtype: torch.dtype):
    """A relaxation (any dataclass of tensors) with its floating tensors in ``dtype``."""
    vals = {}
    for f in fields(rel):
        v = getattr(rel, f.name)
        if isinstance(v, tuple):
            vals[f.name] = tuple(_to(t, dtype) for t in v)
        else:
            vals[f.name] = _to(v, dtype)
    return replace(rel, **vals)


def _to(t, dtype):
    return t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t


def centre(state: BoundState, name: str) -> tuple[Tensor, Tensor]:
    """(c, r), [1 or B, *shape] each: |v - c| <= r for every value v of node ``name`` over
    the domain (c the midpoint of its sound interval, r rounded up); cached per interval."""
    cache = state.coef_cache.setdefault("centres", {})
    iv = state.interval(name)
    hit = cache.get(name)
    if hit is not None and hit[0] is iv.lower:
        return hit[1], hit[2]
    c = iv.lower + (iv.upper - iv.lower) / 2
    r = torch.maximum(iv.upper - c, c - iv.lower)
    r = torch.nextafter(r, torch.full_like(r, math.inf))
    cache[name] = (iv.lower, c, r)
    return c, r


def step_facts(state: BoundState, node, op, rel, cache: bool):
    """(centres, y_lo, y_up, M) of a step through ``node`` (the op's ``backward_facts`` at
    the centres of its inputs), or None when the op states none or they are not finite;
    cached per node for the state's current intervals when ``cache``."""
    store = state.coef_cache.setdefault("facts", {})
    key = tuple(state.interval(s).lower for s in node.inputs)
    hit = store.get(node.name) if cache else None
    if hit is not None and hit[0] is rel and all(a is b for a, b in zip(hit[1], key)):
        return hit[2]
    cr = [centre(state, s) for s in node.inputs]
    cs, rs = [c for c, _ in cr], [r for _, r in cr]
    facts = None
    if all(bool(torch.isfinite(r).all()) for r in rs):
        with torch.no_grad():
            f = op.backward_facts(node.params, cs, rs, rel)
        if f is not None and all(bool(torch.isfinite(t).all()) for t in f):
            facts = (cs, *f)
    if cache:
        store[node.name] = (rel, key, facts)
    return facts


def _factor(n: int, u: float, coeff: float) -> float:
    """coeff / (1 - γ_{n+1}) · (1 + 4u) rounded up: turns a float32 sum of n non-negative
    products into an upper bound of ``coeff`` times its exact value (the cast of the result
    and the product with this factor included)."""
    g = gamma(n + 1, u)
    return math.nextafter(coeff / (1.0 - g) * (1.0 + 4 * u), math.inf)


def step_bias(A, parts, centres, y_lo: Tensor, y_up: Tensor, M: Tensor, n: int,
              size: int, u: float) -> Tensor:
    """The float64 bias [B or 1, S] of one step (Lemmas 1-2): ``<Λ, y_lo> + <Λ⁺, y_up - y_lo>
    - sum_i <Â_i, c_i> + γ_{n+2} <|Λ|, M>`` (the exact step's bias plus its coefficients'
    value at the centres, minus the computed coefficients' value there, plus the rounding
    of the coefficients paired with the deviations from the centres); n: the most terms in
    one coefficient entry, ``size``: the node's number of elements."""
    t = windows.dot(A, y_lo)
    if y_up is not y_lo:
        t = t + windows.dot(_pos(A), y_up - y_lo)
    for part, c in zip(parts, centres):
        if part is not None:
            t = t - windows.dot(part, c.unsqueeze(1))
    return t + _abs_dot(A, M, size, u, gamma(n + EXTRA_OPS, u))


def rounding_bias(exact: list, computed, c: Tensor, r: Tensor, n: int, u: float) -> Tensor:
    """Lemma 3: the bias [B or 1, S] that keeps the bound when coefficients summing to
    ``sum(exact)`` are replaced by ``computed`` (their sum or cast rounded once per
    element): ``sum <exact, c> - <computed, c> + u/(1-u) <|computed|, r>``."""
    c = c.unsqueeze(1)
    t = -windows.dot(computed, c)
    for e in exact:
        t = t + windows.dot(e, c)
    return t + _abs_dot(computed, r.unsqueeze(1), n, u, u / (1.0 - u))


def _abs_dot(A, M: Tensor, n: int, u: float, coeff: float) -> Tensor:
    """An upper bound of ``coeff <|A|, M>`` (M >= 0, float64), [B or 1, S] float64, from a
    float32 sum (Lemma 4)."""
    dt = coef_dtype_of(A)
    M32 = M.to(dt)
    M32 = torch.where(M32.double() < M, torch.nextafter(M32, torch.full_like(M32, math.inf)),
                      M32)
    t = windows.dot(_abs(A), M32)
    return t.double() * _factor(n, u, coeff)


def _pos(A):
    if isinstance(A, Window):
        return A.with_data(windows.map_shared(lambda d: d.clamp(min=0), A.data))
    if isinstance(A, Cols):
        return Cols(windows.map_shared(lambda d: d.clamp(min=0), A.data), A.idx, A.n)
    return windows.map_shared(lambda d: d.clamp(min=0), A)


def _abs(A):
    if isinstance(A, Window):
        return A.with_data(windows.map_shared(torch.abs, A.data))
    if isinstance(A, Cols):
        return Cols(windows.map_shared(torch.abs, A.data), A.idx, A.n)
    return windows.map_shared(torch.abs, A)


@contextlib.contextmanager
def exact_float32_kernels(device: torch.device):
    """On CUDA: IEEE float32 products (no TensorFloat-32) and no cuDNN (its FFT/Winograd
    convolutions do not satisfy Lemma 1's error bound; torch's own GEMM convolution does)."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
