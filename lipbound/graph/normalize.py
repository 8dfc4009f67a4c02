"""Exact graph rewrites that make bounds cheaper and tighter.

- drop nodes the output does not depend on;
- fold a scale-shift (BatchNorm in eval, multiplication by constants) into the Linear/Conv
  before it, and chains of scale-shifts into one;
- fold a scale-shift before a Linear (input normalisation, possibly across a Flatten) into the
  Linear's weights;
- merge Linear -> Linear when the product is no larger than the two factors.

Every rewrite is an algebraic identity (f is unchanged up to float rounding). Before them,
composite nodes (softmax, LayerNorm, ...; ops with a ``lower`` method, see
:mod:`lipbound.ops.composite`) are replaced by their lowering to primitive ops: the
unrewritten graph keeps them, with the rounding facts of the fused kernels torch runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lipbound.graph.ir import Graph, Node, freeze


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


def _rewrite_once(graph: Graph) -> Graph | None:
    users = graph.consumers()
    for n in graph.nodes:
        if n.op != "scale_shift":
            continue
        src = graph[n.inputs[0]]
        if len(users[src.name]) == 1 and src.op in ("linear", "conv") and src.name != graph.input:
            folded = _fold_after(src, n)
            if folded is not None:
                # the merged node takes the later node's place and name
                merged = Node(n.name, src.op, src.inputs, n.shape, freeze(folded), src.where)
                return _replace_pair(graph, src.name, merged)
        if src.op == "scale_shift" and len(users[src.name]) == 1:
            params = _compose_scale_shift(src.params, n.params)
            merged = Node(n.name, "scale_shift", src.inputs, n.shape, freeze(params), src.where)
            return _replace_pair(graph, src.name, merged)
        chain = _follow_reshapes(graph, users, n)
        if chain is not None:
            return chain
    for n in graph.nodes:
        if n.op == "linear":
            src = graph[n.inputs[0]]
            if src.op == "linear" and len(users[src.name]) == 1 and _cheaper(src, n):
                w = n.params["weight"] @ src.params["weight"]
                b = _bias(n) + n.params["weight"] @ _bias(src)
                merged = Node(n.name, "linear", src.inputs, n.shape,
                              freeze({"weight": w, "bias": b}), src.where)
                return _replace_pair(graph, src.name, merged)
    return None


def _replace_pair(graph: Graph, first: str, merged: Node) -> Graph:
    nodes = tuple(merged if m.name == merged.name else m for m in graph.nodes if m.name != first)
    return Graph(nodes, graph.input, graph.output)


def _bias(n: Node) -> Tensor:
    b = n.params.get("bias")
    w = n.params["weight"]
    return torch.zeros(w.shape[0], dtype=w.dtype) if b is None else b


def _cheaper(a: Node, b: Node) -> bool:
    wa, wb = a.params["weight"], b.params["weight"]
    return wb.shape[0] * wa.shape[1] <= wa.numel() + wb.numel()


def _fold_after(src: Node, ss: Node) -> dict | None:
    """Params of ``ss(src(x))`` as one Linear/Conv, or None if the scale is not per-channel."""
    scale = torch.as_tensor(ss.params["scale"])
    shift = ss.params.get("shift")
    w = src.params["weight"]
    if src.op == "linear" and len(ss.shape) != 1:
        return None  # per-feature scaling of a linear layer applied to a non-vector input
    out_ch = w.shape[0]
    spatial = len(ss.shape) - 1
    s_vec = _per_channel(scale, out_ch, spatial)
    t_vec = None if shift is None else _per_channel(torch.as_tensor(shift), out_ch, spatial)
    if s_vec is None or (shift is not None and t_vec is None):
        return None
    s_vec, w = s_vec.to(w.dtype), w
    new_w = w * s_vec.reshape(-1, *([1] * (w.dim() - 1)))
    new_b = _bias(src) * s_vec + (0 if t_vec is None else t_vec.to(w.dtype))
    params = dict(src.params)
    params.update(weight=new_w, bias=new_b)
    return params


def _per_channel(t: Tensor, channels: int, spatial: int) -> Tensor | None:
    """t as a [channels] vector if it broadcasts per channel over [C, *spatial], else None."""
    if t.dim() == 0:
        return t.expand(channels).clone()
    if t.dim() > spatial + 1:
        return None
    shape = (1,) * (spatial + 1 - t.dim()) + tuple(t.shape)
    if any(s != 1 for s in shape[1:]) or shape[0] not in (1, channels):
        return None
    return t.reshape(-1).expand(channels).clone()


def _compose_scale_shift(first: dict, second: dict) -> dict:
    s1, s2 = torch.as_tensor(first["scale"]), torch.as_tensor(second["scale"])
    t1, t2 = first.get("shift"), second.get("shift")
    shift = None
    if t1 is not None:
        shift = torch.as_tensor(t1) * s2
    if t2 is not None:
        shift = torch.as_tensor(t2) if shift is None else shift + t2
    return {"scale": s1 * s2, "shift": shift}


def _follow_reshapes(graph: Graph, users: dict, ss: Node) -> Graph | None:
    """Fold scale_shift -> (reshape)* -> linear into the linear (single consumers only)."""
    path = [ss]
    cur = ss
    while len(users[cur.name]) == 1:
        nxt = graph[users[cur.name][0]]
        if nxt.op == "reshape":
            path.append(nxt)
            cur = nxt
            continue
        if nxt.op != "linear":
            return None
        scale = torch.as_tensor(ss.params["scale"]).expand(ss.shape).reshape(-1)
        shift = ss.params.get("shift")
        w = nxt.params["weight"]
        if scale.numel() != w.shape[1]:
            return None
        new_w = w * scale.to(w.dtype)
        new_b = _bias(nxt)
        if shift is not None:
            new_b = new_b + w @ torch.as_tensor(shift).expand(ss.shape).reshape(-1).to(w.dtype)
        new_lin = Node(nxt.name, "linear", nxt.inputs, nxt.shape,
                       freeze({"weight": new_w, "bias": new_b}), nxt.where)
        nodes = []
        for n in graph.nodes:
            if n.name == ss.name:
                continue
            if n is nxt:
                n = new_lin
            inputs = tuple(ss.inputs[0] if s == ss.name else s for s in n.inputs)
            nodes.append(Node(n.name, n.op, inputs, n.shape, n.params, n.where))
        return Graph(tuple(nodes), graph.input, graph.output)
    return None
