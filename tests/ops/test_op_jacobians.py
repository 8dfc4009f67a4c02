"""Per-op properties of the Clarke-Jacobian rules, driven by the soundness case table.

Every registered op of ``tests.ops.test_ops_soundness.CASES`` is wrapped in a one-op graph
(the flat input sliced into the op's inputs, the output flattened) and:

- its Jacobian rule (:meth:`~lipbound.ops.base.Op.jacobian_rule`, built by
  :func:`lipbound.jacobian.build.jacobian_graph`) evaluated at random points equals autograd's
  ``C J(x)`` (random points avoid kinks and ties almost surely);
- the bounds of its gradient node over a box (IBP and CROWN on the joint graph) contain
  autograd's ``C J(x)`` at sampled points of the box, including points moved onto the op's
  kinks (there autograd's derivative is one element of the Clarke set);
- an op without a rule is refused with the error naming it and its place in the model.

Composite ops are checked through their lowering (what the normaliser hands to the engine).
A new op gets all of this from its row in ``CASES``.
"""

from __future__ import annotations

import math

import pytest
import torch

from lipbound.bounds.domains import LpBall
from lipbound.errors import UnsupportedOperationError
from lipbound.graph.ir import INPUT, Graph, Node, freeze
from lipbound.jacobian.bound import jacobian_state
from lipbound.jacobian.build import jacobian_graph
from lipbound.ops import registry
from tests.conftest import evaluate_graph
from tests.ops.test_ops_soundness import CASES, POSITIVE

pytestmark = pytest.mark.usefixtures("one_thread")

DT = torch.float64
WHERE = "module 'op_under_test'"


def _one_op_graph(kind: str, params, shapes) -> Graph:
    """x [N] -> slices reshaped to the op's input shapes -> op -> flattened output."""
    op = registry.get(kind)
    nodes = [Node("x", INPUT, (), (sum(math.prod(s) for s in shapes),))]
    names, start = [], 0
    for i, s in enumerate(shapes):
        n = math.prod(s)
        nodes.append(Node(f"s{i}", "slice", ("x",), (n,),
                          freeze({"dim": 0, "start": start, "end": start + n, "step": 1})))
        nodes.append(Node(f"in{i}", "reshape", (f"s{i}",), tuple(s), freeze({"shape": tuple(s)})))
        names.append(f"in{i}")
        start += n
    out_shape = op.output_shape(params, shapes)
    node = Node("y", kind, tuple(names), out_shape, freeze(params), WHERE)
    if hasattr(op, "lower"):  # composite: the primitives it lowers to, ending in node "y"
        nodes.extend(op.lower(node, [tuple(s) for s in shapes]))
    else:
        nodes.append(node)
    k = math.prod(out_shape)
    nodes.append(Node("out", "reshape", ("y",), (k,), freeze({"shape": (k,)})))
    return Graph(tuple(nodes), "x", "out")


def _case(kind: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    params, shapes = CASES[kind](g)
    graph = _one_op_graph(kind, params, shapes)
    n = graph["x"].shape[0]
    x = torch.randn(1, n, generator=g, dtype=DT)
    if kind in POSITIVE:
        x = x.abs() + 0.5
    C = torch.randn(3, graph["out"].shape[0], generator=g, dtype=DT)
    return graph, x, C, g


def _autograd_rows(graph: Graph, xs: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """C J(x) for each point of xs [P, N] -> [P, S, N] (autograd through the ops' apply)."""
    def f(z):
        return evaluate_graph(graph, z[None])[graph.output][0]
    return torch.stack([C @ torch.autograd.functional.jacobian(f, x) for x in xs])


def _has_rule(kind: str) -> bool:
    op = registry.get(kind)
    return op.differentiable or hasattr(op, "lower")


DIFFERENTIABLE = [k for k in sorted(CASES) if _has_rule(k)]
OTHERS = [k for k in sorted(CASES) if not _has_rule(k)]


def test_differentiable_flag_matches_the_rule():
    """``differentiable`` (used for messages) says whether ``jacobian_rule`` gives a rule."""
    for kind in sorted(CASES):
        op = registry.get(kind)
        params, shapes = CASES[kind](torch.Generator().manual_seed(0))
        rules = [op.jacobian_rule(params, i) for i in range(len(shapes))]
        assert op.differentiable == all(r is not None for r in rules), kind


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", DIFFERENTIABLE)
def test_jacobian_rule_equals_autograd(kind, seed):
    graph, x, C, g = _case(kind, seed)
    xs = torch.cat([x, x + 0.1 * torch.randn(2, x.shape[1], generator=g, dtype=DT)])
    if kind in POSITIVE:
        xs = xs.abs() + 0.1
    jg = jacobian_graph(graph, C)
    for p in xs:
        got = evaluate_graph(jg.graph, p[None].expand(C.shape[0], -1))[jg.gradient]
        torch.testing.assert_close(got, _autograd_rows(graph, p[None], C)[0], rtol=1e-9,
                                   atol=1e-9, msg=lambda m: f"{kind}: {m}")


def _sample_box(lo: torch.Tensor, hi: torch.Tensor, n: int, g) -> torch.Tensor:
    u = torch.rand(n, lo.shape[1], generator=g, dtype=DT)
    u = torch.where(torch.rand(u.shape, generator=g, dtype=DT) < 0.2, u.round(), u)
    return lo + u * (hi - lo)


def _onto_kinks(graph: Graph, xs: torch.Tensor, lo, hi, g) -> torch.Tensor:
    """Copies of xs with random coordinates feeding a kink of the op moved onto the kink
    (where it lies in the box); the op reads x through a slice and reshape (identity maps)."""
    node = graph["y"]
    op = registry.get(node.op)
    kinks = op.kinks(node.params) if len(node.inputs) == 1 else ()
    if not kinks:
        return xs[:0]
    out = xs.clone()
    for row in out:
        k = kinks[int(torch.randint(len(kinks), (1,), generator=g))]
        inside = (lo[0] <= k) & (k <= hi[0])
        pick = inside & (torch.rand(row.shape, generator=g, dtype=DT) < 0.5)
        row[pick] = k
    return out


@pytest.mark.parametrize("method", ["ibp", "crown"])
@pytest.mark.parametrize("kind", DIFFERENTIABLE)
def test_jacobian_bounds_contain_sampled_gradients(kind, method):
    graph, x, C, g = _case(kind, 7)
    eps = 0.3
    if kind in POSITIVE:
        x = x + eps
    dom = LpBall(x, torch.tensor([eps], dtype=DT), math.inf)
    with torch.no_grad():
        state, jg = jacobian_state(graph, C, dom, method)
    box = state.interval(jg.gradient)  # [S, N]
    lo, hi = x - eps, x + eps
    pts = _sample_box(lo, hi, 24, g)
    pts = torch.cat([pts, _onto_kinks(graph, pts[:8], lo, hi, g)])
    rows = _autograd_rows(graph, pts, C)  # [P, S, N]
    slack = 1e-9 * (1 + rows.abs())
    assert (rows >= box.lower - slack).all(), f"{kind}: lower Jacobian bound violated"
    assert (rows <= box.upper + slack).all(), f"{kind}: upper Jacobian bound violated"


@pytest.mark.parametrize("kind", OTHERS)
def test_op_without_a_rule_is_refused_naming_it(kind):
    graph, _, C, _ = _case(kind, 0)
    with pytest.raises(UnsupportedOperationError) as info:
        jacobian_graph(graph, C)
    assert info.value.op == kind and info.value.where == WHERE
