"""Recurrent layers (``nn.RNN`` with tanh or ReLU, ``nn.LSTM``, ``nn.GRU``), unrolled at trace
time over the sequence into ops that exist: linear maps, sigmoid, tanh, ReLU, slices and
products of two input-dependent values (McCormick each). An exact rewrite of the layers'
equations (PyTorch's documented gate order and formulas), any number of layers, either
direction, either layout (``batch_first=True`` on a batch-first input, or the default
time-major layout on ``x.transpose(0, 1)``), no LSTM projections, initial states constant
(zeros by default).

- RNN: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``;
- LSTM: ``i, f, g, o = sig, sig, tanh, sig`` of ``W_ih x + b_ih + W_hh h + b_hh`` (four
  chunks), ``c' = f c + i g``, ``h' = o tanh(c')``;
- GRU: ``r, z = sig(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})``,
  ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``, ``h' = n + z (h - n)``.

Values with the batch second (a time-major sequence [T, B, F], a time-major output, the final
states ``h_n`` / ``c_n`` [layers*D, B, H]) are :class:`Stacked` tuples of per-sample values;
the converters below take them through indexing (``out[-1]``, ``h_n[-1]``,
``h_n.squeeze(0)``, ``unbind``), transposing back to batch-first, sums and means over the
leading axis, copies, and the recurrent layers themselves.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lipbound.ops.tracing import (
    Stacked,
    Var,
    converts,
    converts_stacked,
    time_steps,
    unsupported,
)

_ACT = {"rnn_tanh": "tanh", "rnn_relu": "relu"}


class _Unroll:
    """The nodes of one recurrent call, named after it."""

    def __init__(self, b, fx, kind: str, hidden: int) -> None:
        self.b, self.fx, self.kind, self.H = b, fx, kind, hidden
        self.count = 0

    def node(self, op: str, inputs: list, shape: tuple[int, ...], params=None) -> Var:
        self.count += 1
        return self.b.aux(self.fx, f"r{self.count}", op, inputs, shape, params)

    def linear(self, x: Var, w: Tensor, bias: Tensor | None, extra_ops: int = 0) -> Var:
        params = {"weight": w, "bias": bias}
        if extra_ops:
            params["extra_ops"] = extra_ops
        return self.node("linear", [x], (w.shape[0],), params)

    def constant(self, value: Tensor, like: Var) -> Var:
        """A node whose value is the constant ``value`` (0 x + value), so that products
        with it round as the model's own (a nonzero initial state)."""
        w = torch.zeros(value.shape[0], like.shape[0], dtype=torch.float64)
        return self.linear(like, w, value)

    def part(self, v: Var, k: int) -> Var:
        H = self.H
        return self.node("slice", [v], (H,), {"dim": 0, "start": k * H, "end": (k + 1) * H,
                                               "step": 1})

    def act(self, kind: str, v: Var) -> Var:
        return self.node(kind, [v], v.shape)

    def mul(self, a, c) -> Var | Tensor:
        """a * c for Vars or constants (a constant 0 stays a constant)."""
        if isinstance(a, Tensor) and isinstance(c, Tensor):
            return a * c
        if isinstance(a, Tensor) or isinstance(c, Tensor):
            k, v = (a, c) if isinstance(a, Tensor) else (c, a)
            if not k.any():
                return torch.zeros(v.shape, dtype=torch.float64)
            return self.node("scale_shift", [v], v.shape, {"scale": k, "shift": torch.zeros(())})
        return self.node("mul", [a, c], a.shape)

    def add(self, a, c, sign: float = 1.0) -> Var | Tensor:
        """a + sign * c for Vars or constants."""
        if isinstance(a, Tensor) and isinstance(c, Tensor):
            return a + sign * c
        if isinstance(c, Tensor):
            return self.node("scale_shift", [a], a.shape, {"scale": torch.ones(()),
                                                          "shift": sign * c})
        if isinstance(a, Tensor):
            return self.node("scale_shift", [c], c.shape, {"scale": torch.tensor(sign),
                                                          "shift": a})
        return self.node("add", [a, c], a.shape, {"coeffs": (1.0, sign)})

    def gates(self, x: Var, h, w_ih, w_hh, b_ih, b_hh) -> Var:
        """``W_ih x + b_ih + W_hh h + b_hh``: one Linear on [x, h] (on x alone when h is 0);
        its rounding allowance counts the model's two products and two bias additions."""
        bias = _sum_bias(b_ih, b_hh, w_ih.shape[0])
        if isinstance(h, Tensor):  # a zero initial state (nonzero ones are nodes)
            return self.linear(x, w_ih, bias, extra_ops=2)
        xh = self.node("concat", [x, h], (x.shape[0] + h.shape[0],), {"dim": 0})
        return self.linear(xh, torch.cat([w_ih, w_hh], 1), bias, extra_ops=2)

    def step(self, x: Var, state, weights):
        """One time step: the new state (h, or (h, c) for an LSTM)."""
        w_ih, w_hh, b_ih, b_hh = weights
        if self.kind == "gru":
            return self._gru(x, state, w_ih, w_hh, b_ih, b_hh)
        h = state[0] if self.kind == "lstm" else state
        g = self.gates(x, h, w_ih, w_hh, b_ih, b_hh)
        if self.kind != "lstm":
            return self.act(_ACT[self.kind], g)
        i, f, gg, o = (self.part(g, k) for k in range(4))
        i, f, o = (self.act("sigmoid", v) for v in (i, f, o))
        c = self.add(self.mul(f, state[1]), self.mul(i, self.act("tanh", gg)))
        return self.mul(o, self.act("tanh", c)), c

    def _gru(self, x, h, w_ih, w_hh, b_ih, b_hh):
        H = self.H
        gi = self.linear(x, w_ih, b_ih)
        gh = (torch.zeros(w_hh.shape[0], dtype=torch.float64) if b_hh is None else b_hh) \
            if isinstance(h, Tensor) else self.linear(h, w_hh, b_hh)  # h: a zero state

        def chunk(v, k):
            return v[k * H:(k + 1) * H] if isinstance(v, Tensor) else self.part(v, k)

        r = self.act("sigmoid", self.add(self.part(gi, 0), chunk(gh, 0)))
        z = self.act("sigmoid", self.add(self.part(gi, 1), chunk(gh, 1)))
        n = self.act("tanh", self.add(self.part(gi, 2), self.mul(r, chunk(gh, 2))))
        return self.add(n, self.mul(z, self.add(h, n, -1.0)))


def _sum_bias(b_ih: Tensor | None, b_hh: Tensor | None, n: int) -> Tensor:
    total = torch.zeros(n, dtype=torch.float64)
    for v in (b_ih, b_hh):
        if v is not None:
            total = total + v
    return total


def _initial(fx, hx, index: int) -> Tensor:
    """The initial state of layer-direction ``index`` (a constant, the same for every sample)."""
    if isinstance(hx, Var):
        raise unsupported(fx, "initial states that depend on the input are not supported")
    h = hx[index].double()  # [B, H]
    if not torch.equal(h, h[:1].expand_as(h)):
        raise unsupported(fx, "initial states that differ between samples are not supported")
    return h[0]


def _recurrent(b, fx, x, hx, params, has_biases, num_layers, dropout, train, bidirectional,
               batch_first):
    kind = str(fx.target).split(".")[1]
    if any(isinstance(p, (Var, Stacked)) for p in params):
        raise unsupported(fx, "the weights must not depend on the input")
    if batch_first != isinstance(x, Var) or not isinstance(x, (Var, Stacked)):
        raise unsupported(fx, "the sequence must depend on the input, batch-first with "
                              "batch_first=True or time-major (x.transpose(0, 1)) without")
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != num_layers * dirs * per:
        raise unsupported(fx, "LSTM projections (proj_size) are not supported")
    hxs = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    H = params[1].shape[1]
    u = _Unroll(b, fx, kind, H)
    seq = list(time_steps(b, fx, x, "x") if batch_first else x.parts)
    T = len(seq)
    finals: list[list] = [[] for _ in hxs]
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            w = params[k * per:(k + 1) * per]
            weights = (w[0], w[1], w[2] if has_biases else None, w[3] if has_biases else None)
            state = tuple(_initial(fx, h, k) for h in hxs)
            if state[0].any():  # h0 != 0: a node, so that W_hh h0 rounds as the model's
                state = (u.constant(state[0], seq[0]), *state[1:])
            state = state if kind == "lstm" else state[0]
            hs = []
            for t in (range(T - 1, -1, -1) if d else range(T)):
                state = u.step(seq[t], state, weights)
                hs.append(state[0] if kind == "lstm" else state)
            outs.append(hs[::-1] if d else hs)
            for j, s in enumerate(state if kind == "lstm" else (state,)):
                finals[j].append(s)
        seq = outs[0] if dirs == 1 else [
            u.node("concat", [f, r], (2 * H,), {"dim": 0}) for f, r in zip(*outs)]
    out = _stack_batch_first(b, fx, seq) if batch_first else Stacked(tuple(seq))
    b.vars[fx.name] = (out, *(Stacked(tuple(f)) for f in finals))


def _stack_batch_first(b, fx, parts: list[Var]) -> Var:
    """``fx`` stands for the per-sample values ``parts`` stacked along a new first axis."""
    shape = tuple(parts[0].shape)
    rows = [b.aux(fx, f"row{i}", "reshape", [v], (1, *shape), {"shape": (1, *shape)})
            for i, v in enumerate(parts)]
    if len(rows) == 1:
        return b.add(fx, "reshape", [parts[0]], {"shape": (1, *shape)}, shape=(1, *shape))
    return b.add(fx, "concat", rows, {"dim": 0}, shape=(len(rows), *shape))


def _store(b, fx, value) -> None:
    (b.vars if isinstance(value, (Var, Stacked, tuple)) else b.consts)[fx.name] = value


@converts_stacked("aten.select.int")
def _select(b, fx, x, dim, index):
    if dim != 0:
        raise unsupported(fx, "a value with the batch second can only be indexed on axis 0")
    _store(b, fx, x.parts[index])


@converts_stacked("aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default")
def _squeeze(b, fx, x, dim=None):
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    if len(x.parts) != 1 or dims not in ([0], [None]):
        raise unsupported(fx, "only squeezing a leading axis of size 1 (h_n.squeeze(0))")
    _store(b, fx, x.parts[0])


@converts_stacked("aten.unbind.int")
def _unbind(b, fx, x, dim=0):
    if dim != 0:
        raise unsupported(fx, "a value with the batch second can only be unbound on axis 0")
    b.vars[fx.name] = tuple(x.parts)


@converts_stacked("aten.transpose.int", "aten.permute.default")
def _batch_first(b, fx, x, *dims):
    """Back to batch-first: ``transpose(0, 1)`` / ``permute(1, 0, ...)``."""
    order = list(dims[0]) if str(fx.target) == "aten.permute.default" else None
    if order is None:
        nd = len(x.parts[0].shape) + 2
        pair = sorted(d % nd for d in dims)
        ok = pair == [0, 1]
    else:
        nd = len(order)
        order = [d % nd for d in order]
        ok = order[:2] == [1, 0] and order[2:] == list(range(2, nd))
    if not ok or not all(isinstance(v, Var) for v in x.parts):
        raise unsupported(fx, "only swapping the first two axes back to batch-first")
    _stack_batch_first(b, fx, list(x.parts))


@converts_stacked("aten.sum.dim_IntList", "aten.mean.dim")
def _over_time(b, fx, x, dims, keepdim=False, dtype=None):
    """The sum or mean over the leading axis (pooling over time)."""
    if list(dims) not in ([0], [-len(x.parts[0].shape) - 2]) or keepdim:
        raise unsupported(fx, "only a sum or mean over the first axis, without keepdim")
    if not all(isinstance(v, Var) for v in x.parts):
        raise unsupported(fx, "a sum over constant steps")
    w = 1.0 / len(x.parts) if str(fx.target) == "aten.mean.dim" else 1.0
    b.add(fx, "add", list(x.parts), {"coeffs": (w,) * len(x.parts)},
          shape=tuple(x.parts[0].shape))


@converts_stacked("aten.clone.default", "aten.contiguous.default", "aten.alias.default",
                  "aten.detach.default", "aten.dropout.default")
def _same(b, fx, x, *args, **kwargs):
    b.vars[fx.name] = x


_RNN_CALLS = ("aten.lstm.input", "aten.gru.input", "aten.rnn_tanh.input", "aten.rnn_relu.input")
converts(*_RNN_CALLS)(_recurrent)
converts_stacked(*_RNN_CALLS)(_recurrent)
