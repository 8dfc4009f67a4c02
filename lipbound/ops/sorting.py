"""``sort`` and ``topk`` values as a sorting network of compare-exchanges (lowered at trace
time; GroupSort / MaxMin activations are ``sort`` over small groups).

A compare-exchange of a and b is exact with one ReLU: ``min(a, b) = a - relu(a - b)`` and
``max(a, b) = b + relu(a - b)``; a sorting network (Batcher's odd-even merge sort, pruned to
n elements) composes them into the sorted values, so every relaxation, Jacobian rule and
rounding fact is the ReLU's and the sums'. A comparison rounds nothing (the sort only moves
values): the difference node's rounding is an over-approximation. Sorting indices are not
computed (a call that reads them is refused), and at most ``MAX_SORTED`` elements are
sorted (the network has O(n log^2 n) compare-exchanges).
"""

from __future__ import annotations

from lipbound.ops.tracing import (
    Refused,
    Var,
    converts,
    reduction_dims,
    unit_slices,
    unsupported,
)

#: the longest dimension ``sort`` / ``topk`` are lowered for
MAX_SORTED = 64


def sorting_network(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort on n elements: applied in
    order, each putting the smaller value at i, they sort any input ascending."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def _sorted_parts(b, fx, x: Var, d: int) -> list[Var]:
    """The elements of x along per-sample dim d as slices, sorted ascending."""
    n = x.shape[d]
    if n > MAX_SORTED:
        raise unsupported(fx, f"sorting more than {MAX_SORTED} elements is not supported")
    part = x.shape[:d] + (1,) + x.shape[d + 1:]
    vals = unit_slices(b, fx, x, d, "e")
    for c, (i, j) in enumerate(sorting_network(n)):
        diff = b.aux(fx, f"c{c}d", "add", [vals[i], vals[j]], part, {"coeffs": (1.0, -1.0)})
        r = b.aux(fx, f"c{c}r", "relu", [diff], part)
        vals[i], vals[j] = (
            b.aux(fx, f"c{c}lo", "add", [vals[i], r], part, {"coeffs": (1.0, -1.0)}),
            b.aux(fx, f"c{c}hi", "add", [vals[j], r], part, {"coeffs": (1.0, 1.0)}))
    return vals


def _emit(b, fx, x: Var, d: int, parts: list[Var]) -> None:
    shape = x.shape[:d] + (len(parts),) + x.shape[d + 1:]
    values = (b.aux(fx, "values", "concat", parts, shape, {"dim": d}) if len(parts) > 1
              else parts[0])
    b.vars[fx.name] = (values, Refused("the indices of sort / topk are not supported"))


@converts("aten.sort.default", "aten.sort.stable")
def _sort(b, fx, x, *args, **kwargs):
    if not isinstance(x, Var):
        raise unsupported(fx, "sort of a constant")
    if str(fx.target) == "aten.sort.stable":
        dim, desc = kwargs.get("dim", -1), kwargs.get("descending", False)
    else:
        dim, desc = (list(args) + [-1, False][len(args):])[:2]
        dim, desc = kwargs.get("dim", dim), kwargs.get("descending", desc)
    d = reduction_dims(fx, x, dim)[0]
    parts = _sorted_parts(b, fx, x, d)
    _emit(b, fx, x, d, parts[::-1] if desc else parts)


@converts("aten.topk.default")
def _topk(b, fx, x, k, dim=-1, largest=True, sorted=True):
    if not isinstance(x, Var):
        raise unsupported(fx, "topk of a constant")
    d = reduction_dims(fx, x, dim)[0]
    parts = _sorted_parts(b, fx, x, d)
    _emit(b, fx, x, d, (parts[::-1] if largest else parts)[:int(k)])
