"""Exact graph rewrites that make bounds cheaper and tighter.

- drop nodes the output does not depend on;
- fold a scale-shift (BatchNorm in eval, multiplication by constants) into the Linear/Conv
  before it, and chains of scale-shifts into one;
- fold a scale-shift before a Linear (input normalisation, possibly across a Flatten) into the
  Linear's weights;
- merge Linear -> Linear when the product is no larger than the two factors.

The ops state the folds (:mod:`lipbound.ops.scale_shift`, :mod:`lipbound.ops.affine`):
``fold_after`` (the node and the single-consumer node before it as one node) with its
``fold_stage``, ``diagonal`` / ``absorb_input_scale`` / ``flat_view`` (a diagonal scale-shift
carried across flattens into the op after it); this module only walks the graph.

Every rewrite is an algebraic identity (f is unchanged up to float rounding). Before them,
composite nodes (softmax, LayerNorm, ...; ops with a ``lower`` method, see
:mod:`lipbound.ops.composite`) are replaced by their lowering to primitive ops: the
unrewritten graph keeps them, with the rounding facts of the fused kernels torch runs.
"""

from __future__ import annotations

import torch

from lipbound.graph.ir import CONST, INPUT, Graph, Node, freeze


def normalize(graph: Graph) -> Graph:
    """Lower composite nodes, then apply the rewrites until none applies."""
    graph = lower_composites(graph)
    for _ in range(100):
        graph = _prune(graph)
        new = _rewrite_once(graph)
        if new is None:
            return graph
        graph = new
    return graph


def lower_composites(graph: Graph) -> Graph:
    """Replace every node whose op has a ``lower`` method by the nodes it lowers to (the last
    of them keeps the node's name, so its readers are unchanged)."""
    from lipbound.ops import registry

    if not any(hasattr(registry.get(n.op, n.where), "lower") for n in graph.nodes
               if n.op not in ("input", "const")):
        return graph
    nodes: list[Node] = []
    for n in graph.nodes:
        op = None if n.op in ("input", "const") else registry.get(n.op, n.where)
        if op is not None and hasattr(op, "lower"):
            nodes.extend(op.lower(n, [graph[s].shape for s in n.inputs]))
        else:
            nodes.append(n)
    return Graph(tuple(nodes), graph.input, graph.output)


def _prune(graph: Graph) -> Graph:
    keep = graph.ancestors(graph.output) | {graph.output, graph.input}
    return Graph(tuple(n for n in graph.nodes if n.name in keep), graph.input, graph.output)


def _replace(graph: Graph, new: Node, drop: str) -> Graph:
    """Replace node ``new.name`` by ``new`` and bypass node ``drop`` (its readers read new)."""
    nodes = []
    for n in graph.nodes:
        if n.name == drop:
            continue
        if n.name == new.name:
            nodes.append(new)
            continue
        inputs = tuple(new.name if s == drop else s for s in n.inputs)
        nodes.append(Node(n.name, n.op, inputs, n.shape, n.params, n.where))
    output = new.name if graph.output == drop else graph.output
    return Graph(tuple(nodes), graph.input, output)


def _op(n: Node):
    """The op of node ``n``, or None for the input and constants."""
    from lipbound.ops import registry

    return None if n.op in (INPUT, CONST) else registry.get(n.op, n.where)


def _rewrite_once(graph: Graph) -> Graph | None:
    """The first rewrite that applies, in stages: ops with ``fold_stage`` 0 (scale-shifts)
    fold into the node before them or across flattens into the Linear after them, then
    those of stage 1 (Linear after Linear)."""
    users = graph.consumers()
    ops = {n.name: _op(n) for n in graph.nodes}
    for stage in (0, 1):
        for n in graph.nodes:
            op = ops[n.name]
            if getattr(op, "fold_stage", None) != stage:
                continue
            src = graph[n.inputs[0]]
            if len(users[src.name]) == 1 and ops[src.name] is not None:
                fused = op.fold_after(n.params, n.shape, ops[src.name], src.params, src.shape)
                if fused is not None:  # the merged node takes the later node's place and name
                    kind, params = fused
                    merged = Node(n.name, kind, src.inputs, n.shape, freeze(params), src.where)
                    return _replace_pair(graph, src.name, merged)
            if hasattr(op, "diagonal"):
                chain = _fold_across_views(graph, users, ops, n)
                if chain is not None:
                    return chain
    return None


def _replace_pair(graph: Graph, first: str, merged: Node) -> Graph:
    nodes = tuple(merged if m.name == merged.name else m for m in graph.nodes if m.name != first)
    return Graph(nodes, graph.input, graph.output)


def _cheaper(a: Node, b: Node) -> bool:
    """Whether node ``b`` folds into node ``a`` before it (its op's ``fold_after``; Linear
    after Linear: when the product has no more entries than the two factors)."""
    op_b = _op(b)
    fused = op_b.fold_after(b.params, b.shape, _op(a), a.params, a.shape)
    return fused is not None


def _fold_across_views(graph: Graph, users: dict, ops: dict, ss: Node) -> Graph | None:
    """Fold a diagonal scale-shift -> (flat views: reshapes)* -> an op with
    ``absorb_input_scale`` (Linear) into that op (single consumers only)."""
    cur = ss
    while len(users[cur.name]) == 1:
        nxt = graph[users[cur.name][0]]
        op = ops[nxt.name]
        if getattr(op, "flat_view", False):
            cur = nxt
            continue
        absorb = getattr(op, "absorb_input_scale", None)
        if absorb is None:
            return None
        scale, shift = ops[ss.name].diagonal(ss.params)
        scale = torch.as_tensor(scale).expand(ss.shape).reshape(-1)
        if shift is not None:
            shift = torch.as_tensor(shift).expand(ss.shape).reshape(-1)
        params = absorb(nxt.params, scale, shift)
        if params is None:
            return None
        new = Node(nxt.name, nxt.op, nxt.inputs, nxt.shape, freeze(params), nxt.where)
        nodes = []
        for n in graph.nodes:
            if n.name == ss.name:
                continue
            if n is nxt:
                n = new
            inputs = tuple(ss.inputs[0] if s == ss.name else s for s in n.inputs)
            nodes.append(Node(n.name, n.op, inputs, n.shape, n.params, n.where))
        return Graph(tuple(nodes), graph.input, graph.output)
    return None
