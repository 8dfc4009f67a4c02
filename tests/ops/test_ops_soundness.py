"""Sampled soundness of every registered operator (hypothesis).

For each op kind, random inputs inside random intervals must map inside the op's interval
bounds and between its relaxation lines (default and random optimisable parameters); linear
ops must have exact transposes. ``CASES`` must cover the whole registry: a new op without a
case here fails ``test_every_registered_op_has_a_soundness_case``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipbound.bounds.interval import Interval
from lipbound.ops import registry
from lipbound.ops.base import Relaxation
from lipbound.ops.shrink import hardshrink_params, threshold_params

DT = torch.float64
TOL = 1e-9


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _t(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=DT) * scale


# Each case: seed -> (params, list of per-sample input shapes)
def _linear(g):
    return {"weight": _t(g, 4, 5), "bias": _t(g, 4)}, [(5,)]


def _conv(g):
    groups = int(torch.randint(1, 3, (1,), generator=g))
    return ({"weight": _t(g, 4, 4 // groups, 3, 3), "bias": _t(g, 4), "stride": 2, "padding": 1,
             "dilation": 1, "groups": groups}, [(4, 7, 7)])


def _conv1d(g):
    return ({"weight": _t(g, 3, 2, 3), "bias": _t(g, 3), "stride": 1, "padding": 2,
             "dilation": 2, "groups": 1}, [(2, 9)])


def _conv_t(g):
    return ({"weight": _t(g, 2, 3, 3, 3), "bias": _t(g, 3), "stride": 2, "padding": 1,
             "output_padding": 1, "groups": 1, "dilation": 1}, [(2, 4, 4)])


def _scale_shift(g):
    return {"scale": _t(g, 3, 1, 1), "shift": _t(g, 3, 1, 1)}, [(3, 2, 2)]


def _add(g):
    return {"coeffs": (1.0, -0.5)}, [(6,), (6,)]


def _reshape(g):
    return {"shape": (3, 4)}, [(2, 6)]


def _permute(g):
    return {"dims": (2, 0, 1)}, [(2, 3, 4)]


def _pad(g):
    return {"pad": (1, 2, 0, 1)}, [(2, 3, 3)]


def _avg_pool(g):
    return ({"kernel_size": 2, "stride": 1, "padding": 1, "ceil_mode": False,
             "count_include_pad": False, "divisor_override": None, "ndim": 2}, [(2, 4, 4)])


def _slice(g):
    return {"dim": 1, "start": 1, "end": 4, "step": 2}, [(2, 5)]


def _concat(g):
    return {"dim": 0}, [(2, 3), (1, 3)]


def _identity(g):
    return {}, [(5,)]


def _transpose(g):
    inner, shapes = _conv(g)
    return ({"inner": "conv", "inner_params": inner, "index": 0, "in_shapes": tuple(shapes)},
            [(4, 4, 4)])


def _unary(shape=(7,)):
    return lambda g: ({}, [shape])


def _leaky(g):
    return {"negative_slope": float(torch.rand(1, generator=g))}, [(7,)]


def _max_pool(g):
    return {"kernel_size": 3, "stride": 2, "padding": 1, "dilation": 1}, [(2, 5, 5)]


def _max_pool_grad(g):
    params, shapes = _max_pool(g)
    return params, [shapes[0], (2, 3, 3)]


def _binary(shape=(7,)):
    return lambda g: ({}, [shape, shape])


def _leaky_switch(g):
    return {"negative_slope": float(torch.rand(1, generator=g))}, [(7,), (7,)]


def _pwl(g):
    n = int(torch.randint(1, 4, (1,), generator=g))
    b = sorted(_t(g, n).tolist())
    return ({"breakpoints": tuple(b), "slopes": tuple(_t(g, n + 1).tolist()),
             "intercepts": tuple(_t(g, n + 1).tolist())}, [(7,)])


_EXPONENTS = (3.0, 2.0, 4.0, -1.0, -2.0, 0.5, -0.5, 1.5, 0.0, 1.0)


def _pow(g):
    p = _EXPONENTS[int(torch.randint(0, len(_EXPONENTS), (1,), generator=g))]
    c = float(_t(g, 1))
    # non-integer or negative exponents need positive inputs (POSITIVE moves them there)
    return {"exponent": p, "coeff": c}, [(7,)]


def _softmax(g):
    return {"dim": int(torch.randint(0, 2, (1,), generator=g)),
            "log": bool(torch.randint(0, 2, (1,), generator=g))}, [(3, 4)]


def _layer_norm(g):
    return {"ndim": 1, "eps": 1e-5, "weight": _t(g, 4), "bias": _t(g, 4)}, [(3, 4)]


def _rms_norm(g):
    return {"ndim": 2, "eps": 1e-6, "weight": _t(g, 3, 4), "bias": None}, [(3, 4)]


def _group_norm(g):
    return ({"groups": 2, "eps": 1e-5, "weight": _t(g, 4, 1, 1), "bias": _t(g, 4, 1, 1)},
            [(4, 2, 3)])


def _reduce(g):
    return {"dims": (0, 2), "keepdim": bool(torch.randint(0, 2, (1,), generator=g))}, [(2, 3, 4)]


def _reduce_max_grad(g):
    return {"dims": (1,), "keepdim": False}, [(3, 4), (3,)]


def _sum(g):
    params, shapes = _reduce(g)
    return {**params, "scale": float(_t(g, 1))}, shapes


def _upsample(g):
    if g.initial_seed() % 2:
        return {"size": (6, 4), "scale_factor": None}, [(2, 3, 2)]
    return {"size": (4, 3), "scale_factor": (1.5, 1.5)}, [(2, 3, 2)]


def _interpolate(g):
    if g.initial_seed() % 2:
        return ({"mode": "bilinear", "align_corners": bool(g.initial_seed() % 3 == 1),
                 "size": (5, 7), "scale_factor": None}, [(2, 3, 4)])
    return ({"mode": "linear", "align_corners": bool(g.initial_seed() % 4 == 0), "size": (10,),
             "scale_factor": (2.5,)}, [(2, 4)])


def _pad_mode(g):
    mode = ("reflect", "replicate", "circular")[g.initial_seed() % 3]
    return {"pad": (2, 1, 1, 2), "mode": mode}, [(2, 4, 5)]


def _einsum(g):
    if g.initial_seed() % 2:
        return {"equation": "bij,jk->bik", "consts": (_t(g, 4, 3),), "index": 0}, [(2, 4)]
    return ({"equation": "kj,bijl,l->bki", "consts": (_t(g, 3, 4), _t(g, 2)), "index": 1},
            [(2, 4, 2)])


def _index_map(g):
    """Copies with repeats and zeros (index -1): 10 outputs from 12 inputs."""
    return {"index": torch.randint(-1, 12, (10,), generator=g), "shape": (2, 5)}, [(3, 4)]


def _logsumexp(g):
    dims = ((1,), (0, 1))[g.initial_seed() % 2]
    return {"dims": dims, "keepdim": bool(g.initial_seed() % 3 == 0)}, [(3, 4)]


def _elu(g):
    return {"alpha": (1.0, 0.3, 1.6732632423543772)[g.initial_seed() % 3]
            * float(0.5 + torch.rand(1, generator=g))}, [(7,)]


def _softplus(g):
    """torch's threshold switch (a tiny jump) at 20, none, or near the inputs (a big one)."""
    t = (20.0, math.inf, float(_t(g, 1)))[g.initial_seed() % 3]
    return {"threshold": t}, [(7,)]


#: kinds whose inputs must be positive (log, and pow with non-integer or negative exponents)
POSITIVE = {"log", "pow"}

CASES = {
    "linear": _linear, "conv": lambda g: _conv(g) if g.initial_seed() % 2 else _conv1d(g),
    "conv_transpose": _conv_t, "scale_shift": _scale_shift, "add": _add,
    "reshape": _reshape, "permute": _permute, "pad": _pad, "avg_pool": _avg_pool,
    "slice": _slice, "concat": _concat, "identity": _identity, "transpose": _transpose,
    "relu": _unary(), "leaky_relu": _leaky, "sigmoid": _unary(), "tanh": _unary(),
    "gelu": _unary(), "silu": _unary(), "softplus": _softplus, "elu": _elu,
    "d_sigmoid": _unary(), "d_tanh": _unary(), "d_gelu": _unary(), "d_silu": _unary(),
    "d_elu": _elu, "d_softplus": _softplus,
    "atan": _unary(), "d_atan": _unary(), "erf": _unary(), "d_erf": _unary(),
    "gelu_tanh": _unary(), "d_gelu_tanh": _unary(), "mish": _unary(), "d_mish": _unary(),
    "sin": _unary(), "cos": _unary(), "d_cos": _unary(),
    "hardshrink": lambda g: (hardshrink_params(float(torch.rand(1, generator=g))), [(7,)]),
    "threshold": lambda g: (threshold_params(*_t(g, 2).tolist()), [(7,)]),
    "max_pool": _max_pool, "max_pool_grad": _max_pool_grad,
    "relu_switch": _binary(), "leaky_switch": _leaky_switch, "mul": _binary(),
    "step_select": _binary(),
    "abs": _unary(), "square": _unary(),
    "pwl": _pwl, "hardswish": _unary(), "exp": _unary(), "log": _unary(), "pow": _pow,
    "sum": _sum, "expand": lambda g: ({"shape": (3, 4)}, [(3, 1)]),
    "center": lambda g: ({"dims": (1,)}, [(3, 4)]), "pairwise_diff": lambda g: ({}, [(2, 4)]),
    "reduce_max": _reduce, "reduce_max_grad": _reduce_max_grad,
    "adaptive_avg_pool": lambda g: ({"output_size": (3, 2)}, [(2, 7, 5)]),
    "upsample_nearest": _upsample, "flip": lambda g: ({"dims": (0, 2)}, [(2, 3, 4)]),
    "softmax": _softmax, "layer_norm": _layer_norm,
    "rms_norm": _rms_norm, "group_norm": _group_norm,
    "interpolate": _interpolate, "pad_mode": _pad_mode, "einsum": _einsum,
    "logsumexp": _logsumexp, "index_map": _index_map,
    "var": lambda g: ({"dims": (1,), "correction": float(g.initial_seed() % 2),
                       "keepdim": bool(g.initial_seed() % 3), "sqrt": False}, [(3, 4)]),
}


def test_every_registered_op_has_a_soundness_case():
    assert set(registry.kinds()) == set(CASES), (
        "ops without a soundness case: " + ", ".join(sorted(set(registry.kinds()) - set(CASES))))


def _random_intervals(g, shapes, B, scale):
    ivals = []
    for s in shapes:
        c = _t(g, B, *s, scale=scale)
        r = torch.rand(B, *s, generator=g, dtype=DT) * scale
        # some degenerate (point) and sign-touching intervals
        r = torch.where(torch.rand(B, *s, generator=g, dtype=DT) < 0.1, torch.zeros_like(r), r)
        ivals.append(Interval(c - r, c + r))
    return ivals


def _sample(g, iv: Interval, n):
    u = torch.rand(n, *iv.lower.shape, generator=g, dtype=DT)
    u = torch.where(torch.rand(u.shape, generator=g, dtype=DT) < 0.2, u.round(), u)  # vertices
    return iv.lower + u * (iv.upper - iv.lower)


def _check_relaxation(rel: Relaxation, xs, y):
    lo = rel.lower_bias
    up = rel.upper_bias
    for lw, uw, x in zip(rel.lower_slopes, rel.upper_slopes, xs):
        if lw is not None:
            lo = lo + lw * x
        if uw is not None:
            up = up + uw * x
    slack = TOL * (1 + y.abs())
    assert (y >= lo - slack).all(), f"lower line violated by {(lo - y).max():.3g}"
    assert (y <= up + slack).all(), f"upper line violated by {(y - up).max():.3g}"


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(sorted(CASES)), seed=st.integers(0, 2**31 - 1),
       scale=st.sampled_from([0.05, 1.0, 4.0]))
def test_op_bounds_contain_sampled_outputs(kind, seed, scale):
    check_op_soundness(kind, seed, scale)


def check_op_soundness(kind: str, seed: int, scale: float) -> None:
    """IBP and relaxations (default and random optimisable parameters) of op ``kind`` contain
    sampled outputs over random intervals; linear ops have exact transposes; composite ops
    lower to their own function."""
    g = _g(seed)
    op = registry.get(kind)
    params, shapes = CASES[kind](g)
    B, n = 2, 64
    ivals = _random_intervals(g, shapes, B, scale)
    if kind in POSITIVE:
        shift = [(-iv.lower).clamp(min=0) + 0.05 for iv in ivals]
        ivals = [Interval(iv.lower + d, iv.upper + d) for iv, d in zip(ivals, shift)]
    xs = [_sample(g, iv, n) for iv in ivals]
    ys = torch.stack([op.apply(params, *[x[i] for x in xs]) for i in range(n)])
    box = op.ibp(params, *ivals)
    assert box.contains(ys, TOL), f"{kind}: IBP bounds violated"
    if op.linear:
        _check_transpose(op, params, shapes, g)
        return
    if hasattr(op, "lower"):  # composite: bounded through its lowering, checked there
        _check_lowering(op, params, [x[0] for x in xs], ys[0])
        return
    unsq = [Interval(v.lower.unsqueeze(1), v.upper.unsqueeze(1)) for v in ivals]
    rels = [op.relax(params, *unsq)]
    init = op.init_opt(params, *ivals)
    if init:
        rnd = {k: v + _t(g, *v.shape) for k, v in init.items()}
        op.project_opt(params, rnd)
        rels.append(op.relax(params, *unsq, opt={k: v.unsqueeze(1) for k, v in rnd.items()}))
    for rel in rels:
        if isinstance(rel, Relaxation):
            _check_relaxation(rel, [x.unsqueeze(2) for x in xs], ys.unsqueeze(2))
        else:  # non-elementwise ops: check the back-substituted bound of random A
            _check_backward(op, params, rel, xs, ys, g)


def _check_backward(op, params, rel, xs, ys, g):
    n, B = ys.shape[:2]
    S = 3
    A = _t(g, B, S, *ys.shape[2:])
    As, bias = op.crown_backward(params, A, rel)
    val = torch.einsum("nbs,nbs->nbs", (A.unsqueeze(0) * ys.unsqueeze(2)).flatten(3).sum(-1),
                       torch.ones(n, B, S, dtype=DT))
    bound = bias.unsqueeze(0).expand(n, B, S).clone()
    for Ai, x in zip(As, xs):
        if Ai is not None:
            bound = bound + (Ai.unsqueeze(0) * x.unsqueeze(2)).flatten(3).sum(-1)
    assert (val <= bound + TOL * (1 + val.abs())).all()


def _check_lowering(op, params, xs, y):
    """The lowered primitive nodes compute the composite's function."""
    from lipbound.graph.ir import Node, freeze

    names = tuple(f"in{i}" for i in range(len(xs)))
    node = Node("out", op.kind, names, tuple(y.shape[1:]), freeze(params), "")
    vals = dict(zip(names, xs))
    for n in op.lower(node, [tuple(x.shape[1:]) for x in xs]):
        vals[n.name] = registry.get(n.op).apply(n.params, *[vals[s] for s in n.inputs])
    assert torch.allclose(vals["out"], y, rtol=1e-9, atol=1e-9)


def _check_transpose(op, params, shapes, g):
    xs = [_t(g, 3, *s) for s in shapes]
    y = op.apply_linear(params, *xs)
    A = _t(g, *y.shape)
    lhs = (A * y).sum()
    rhs = sum((a * x).sum() for a, x in zip(op.vjp(params, A, shapes), xs))
    assert math.isclose(float(lhs), float(rhs), rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "gelu", "silu", "softplus", "elu",
                                  "d_sigmoid", "d_tanh", "d_gelu", "d_silu", "d_elu",
                                  "d_softplus", "atan", "d_atan", "erf", "d_erf", "gelu_tanh",
                                  "d_gelu_tanh", "mish", "d_mish", "sin", "cos", "d_cos"])
def test_smooth_relaxation_is_sound_for_any_slope(kind):
    """Any slope gives valid lines: dense grid check with extreme slopes and intervals."""
    op = registry.get(kind)
    l = torch.tensor([-8.0, -3.0, -1.0, 0.2, -0.5, 2.0], dtype=DT)
    u = torch.tensor([8.0, -0.5, 3.0, 0.3, 0.5, 9.0], dtype=DT)
    grid = l.unsqueeze(0) + torch.linspace(0, 1, 20001, dtype=DT).unsqueeze(1) * (u - l)
    y = op.apply({}, grid)
    for k in [-2.0, -0.3, 0.0, 0.1, 0.25, 1.0, 3.0]:
        opt = {"k_lower": torch.full_like(l, k), "k_upper": torch.full_like(l, k)}
        rel = op.relax({}, Interval(l, u), opt=opt)
        _check_relaxation(rel, [grid], y)
    assert op.ibp({}, Interval(l, u)).contains(y, TOL)


def test_smooth_lipschitz_constants_bound_the_derivative():
    from lipbound.ops.smooth import SmoothActivation

    x = torch.linspace(-30, 30, 600001, dtype=DT)
    params = [{}, {"alpha": 0.3}, {"alpha": 1.6733}, {"threshold": math.inf},
              {"threshold": 1.0}]
    for kind in registry.kinds():
        op = registry.get(kind)
        if not isinstance(op, SmoothActivation) or op.lipschitz({}) == math.inf:
            continue
        for p in params:
            fn = op.fn_of(p)
            d = fn.df(x)
            assert d.abs().max() <= fn.lipschitz, (kind, p)
            if fn.slopes is not None:
                assert fn.slopes[0] <= d.min() and d.max() <= fn.slopes[1], (kind, p)
