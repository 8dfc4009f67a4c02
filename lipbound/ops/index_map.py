"""Data movement by a fixed index map: every output element is a copy of one input element
or zero (``roll``, ``repeat`` / ``tile`` / ``repeat_interleave``, ``channel_shuffle``,
``im2col`` / ``nn.Unfold``, ``Tensor.unfold``, ``index_select``, indexing and ``gather`` with
constant indices, ``diagonal``, ``take_along_dim``).

One op, :class:`IndexMap`, holds the map as a flat index per output element (``-1``: zero).
Its converter learns the index by *probing*: it runs the very ATen call on a tensor whose
entries are their own positions (1-based, exact integers in float64), so the map is torch's by
construction, and it checks on a batch of two probes that sample 1 reads only sample 1 (the
map treats batch entries independently) and that every output is a copy (an integer position
or 0). Only calls that move values are registered, so a probe reads their map exactly.

IBP, CROWN and the Clarke-Jacobian rule come from the linear-op contract (the transpose is a
scatter-add, :meth:`IndexMap.vjp`); copies round nothing; an input copied m times has induced
norm at most m in every l_p (at most m^(1/p) in fact), which is the naive product's factor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lipbound.ops.base import LinearOp, Params
from lipbound.ops.facts import COPY, NormFact
from lipbound.ops.registry import register
from lipbound.ops.tracing import Var, converts, per_sample_shape, unsupported


class IndexMap(LinearOp):
    """``y.flatten()[i] = x.flatten()[index[i]]`` (0 where ``index[i] == -1``) per sample;
    params: ``index`` (int64 [numel(out)]), ``shape`` (per-sample output shape)."""

    kind = "index_map"
    exact_sums = True

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        padded = torch.cat([flat, flat.new_zeros(flat.shape[0], 1)], 1)  # index -1: the zero
        idx = params["index"].to(x.device)
        return padded[:, idx].reshape(x.shape[0], *params["shape"])

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        """The exact transpose: each output coefficient added to the input it copies."""
        n = 1
        for d in in_shapes[0]:
            n *= d
        idx = params["index"].to(A.device)
        out = A.new_zeros(A.shape[0], n + 1).index_add(1, idx % (n + 1), A.reshape(A.shape[0], -1))
        return (out[:, :n].reshape(A.shape[0], *in_shapes[0]),)

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return _most_copies(params["index"])

    def norm_fact(self, params: Params, index: int) -> NormFact:
        m = _most_copies(params["index"])
        return COPY if m == 1 else NormFact(every_p=float(m))

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor]:
        idx = params["index"].cpu()
        w = torch.zeros(idx.numel(), n_in, dtype=torch.float64)
        keep = idx >= 0
        w[torch.arange(idx.numel())[keep], idx[keep]] = 1.0
        return w, torch.zeros(idx.numel(), dtype=torch.float64)


def _most_copies(index: Tensor) -> int:
    """The largest number of outputs that copy one input (1 if none is copied)."""
    kept = index[index >= 0]
    return int(torch.bincount(kept.cpu()).max()) if kept.numel() else 1


register(IndexMap())


# -- ATen converters (lipbound.ops.tracing): calls that only move values

def probe_index(fx, call, in_shape: tuple[int, ...]) -> Tensor:
    """The flat index map of ``call`` (a function of one [2, *in_shape] tensor that only moves
    values), read off a batch of two position probes; refuses maps that mix batch entries."""
    n = 1
    for d in in_shape:
        n *= d
    probe = torch.arange(1, 2 * n + 1, dtype=torch.float64).reshape(2, *in_shape)
    with torch.no_grad():
        out = call(probe)
    if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != 2:
        raise unsupported(fx, "the call does not keep the batch dimension first")
    first, second = out[0].reshape(-1), out[1].reshape(-1)
    pos = first.round()
    copies = bool((pos == first).all()) and bool(((pos >= 0) & (pos <= n)).all())
    same = torch.equal(second, torch.where(pos > 0, pos + n, torch.zeros_like(pos)))
    if not (copies and same):
        raise unsupported(fx, "the call mixes batch entries or is not a copy of its input")
    return pos.long() - 1


def _data_movement(b, fx, x, *args, **kwargs):
    """A call whose only input-dependent argument is its first, which it only moves."""
    if not isinstance(x, Var) or any(isinstance(a, Var) for a in (*args, *kwargs.values())):
        raise unsupported(fx, "only the first argument may depend on the input")
    index = probe_index(fx, lambda t: fx.target(t, *args, **kwargs), x.shape)
    shape = per_sample_shape(fx)
    b.add(fx, "index_map", [x], {"index": index, "shape": shape})


def _dispatch(b, fx, x, *args, **kwargs):
    """``unbind`` returns a tuple of views (one index map each); the others one tensor."""
    if str(fx.target) != "aten.unbind.int":
        return _data_movement(b, fx, x, *args, **kwargs)
    dim = (args[0] if args else kwargs.get("dim", 0)) % (len(x.shape) + 1)
    if dim == 0:
        raise unsupported(fx, "unbinding the batch dimension is not supported")
    parts = []
    for i in range(x.shape[dim - 1]):
        index = probe_index(fx, lambda t, i=i: t.select(dim, i), x.shape)
        shape = x.shape[:dim - 1] + x.shape[dim:]
        parts.append(b.aux(fx, f"part{i}", "index_map", [x], shape,
                           {"index": index, "shape": shape}))
    b.vars[fx.name] = tuple(parts)


converts("aten.roll.default", "aten.repeat.default", "aten.tile.default",
         "aten.channel_shuffle.default", "aten.native_channel_shuffle.default",
         "aten.im2col.default", "aten.unfold.default", "aten.index_select.default",
         "aten.index.Tensor", "aten.gather.default", "aten.take_along_dim.default",
         "aten.diagonal.default", "aten.repeat_interleave.self_int", "aten.narrow.default",
         "aten.movedim.int", "aten.swapaxes.default", "aten.t.default",
         "aten.unbind.int")(_dispatch)
