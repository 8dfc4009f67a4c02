"""Operators of modern architectures (issue 17): op-level and model-level soundness.

Op level: for every new op kind, sampled containment of IBP and of the linear relaxations
(default and random optimisable parameters) over random intervals (the harness of
``tests/ops/test_ops_soundness.py``, more seeds here), and a dense grid check of every slope the
optimiser can pick for the elementwise ops.

Model level, for a small model using each op: ``output_bounds`` (ibp, crown, alpha-crown)
contain the outputs at sampled points (of the real function, float64, and of the model's own
float32 forward pass); ``jacobian_bounds`` at eps = 0 contain the autograd Jacobian and at
eps > 0 the autograd Jacobians at sampled points; ``local_lipschitz(method="crown")`` is at
least every sampled gradient norm. Ops that stay unsupported raise UnsupportedOperationError
naming the op and where it is.

Mutation checks (run by hand; each made the named tests fail, then was reverted):

- ``PiecewiseLinear._h_extremes`` without the one-sided breakpoint values (only l and u as
  candidates): ``test_new_op_relaxations_contain_samples[pwl-*]`` and
  ``test_elementwise_relaxations_sound_for_every_slope[pwl_*]`` fail (lines cut the kinks).
- exp's derivative given as ``2 e^x`` to the candidate-point machinery (the tangent point is
  missed, the lower intercept is too high): ``test_elementwise_relaxations_sound_for_every_slope
  [exp]`` and exp's op and model tests fail; ``pow``'s derivative without its coefficient
  (``p x^(p-1)``): the grid tests of ``recip_pos`` and ``fourth`` fail. (Taking the chord on
  the wrong side is *not* a soundness bug here: every slope gets its own sound intercepts.)
- ``ReduceMax.crown_backward`` treating every group as dominant:
  ``test_new_op_relaxations_contain_samples[reduce_max-*]`` and
  ``test_undecided_kinks_and_maximisers[max]``/``[min]`` fail (at eps 0.05 every group of the
  small models is decided, so only the large-ball test sees it); ``reduce_max_grad`` routing
  the cotangent only to the element of largest lower bound (``cand = onehot``): the same
  tests fail (the Jacobian part).
- the product rule in ``jacobian/build.py`` sending ``mul(x, a)`` to x (the wrong factor):
  the eps = 0 Jacobian tests of mul, div, matmul, softmax and layer_norm fail.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lipbound
from lipbound.bounds.interval import Interval
from lipbound.errors import UnsupportedOperationError
from lipbound.inputs import get_traced
from lipbound.ops import registry
from tests.ops.test_ops_soundness import check_op_soundness

DT = torch.float64

NEW_KINDS = ["pwl", "hardswish", "exp", "log", "pow", "sum", "expand", "center",
             "pairwise_diff", "reduce_max", "reduce_max_grad", "adaptive_avg_pool",
             "upsample_nearest", "softmax", "layer_norm", "rms_norm", "group_norm", "mul",
             "abs", "square", "flip", "var"]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", NEW_KINDS)
def test_new_op_relaxations_contain_samples(kind, seed):
    check_op_soundness(kind, 1000 + seed, (0.05, 1.0, 4.0)[seed % 3])


def _elementwise_cases():
    from lipbound.ops.piecewise import hardsigmoid_params, hardtanh_params, pwl_params

    return {
        "pwl_hardtanh": ("pwl", hardtanh_params(-1.0, 2.0), (-6.0, 6.0)),
        "pwl_hardsigmoid": ("pwl", hardsigmoid_params(), (-6.0, 6.0)),
        "pwl_step": ("pwl", pwl_params((-1.0, 0.5), (0.0, 0.0, 0.0), (-1.0, 2.0, 0.3)),
                     (-3.0, 3.0)),
        "pwl_jumps": ("pwl", pwl_params((0.0, 1.0), (1.0, -2.0, 0.5), (0.0, 1.0, -3.0)),
                      (-3.0, 3.0)),
        "hardswish": ("hardswish", {}, (-7.0, 7.0)),
        "exp": ("exp", {}, (-6.0, 4.0)),
        "log": ("log", {}, (0.01, 9.0)),
        "sqrt": ("pow", {"exponent": 0.5, "coeff": 1.0}, (0.0, 9.0)),
        "rsqrt": ("pow", {"exponent": -0.5, "coeff": 1.0}, (0.01, 9.0)),
        "recip_pos": ("pow", {"exponent": -1.0, "coeff": -2.0}, (0.05, 9.0)),
        "recip_neg": ("pow", {"exponent": -1.0, "coeff": 1.0}, (-9.0, -0.05)),
        "cube": ("pow", {"exponent": 3.0, "coeff": 1.0}, (-3.0, 3.0)),
        "fourth": ("pow", {"exponent": 4.0, "coeff": -0.5}, (-2.0, 2.0)),
        "pow_1.5": ("pow", {"exponent": 1.5, "coeff": 1.0}, (0.0, 5.0)),
    }


@pytest.mark.parametrize("case", sorted(_elementwise_cases()))
def test_elementwise_relaxations_sound_for_every_slope(case):
    """Dense grid over many sub-intervals, with the extreme and random optimisable
    parameters (every value in [0, 1] must give valid lines)."""
    kind, params, (a, b) = _elementwise_cases()[case]
    op = registry.get(kind)
    g = torch.Generator().manual_seed(0)
    ends = a + (b - a) * torch.rand(2, 40, generator=g, dtype=DT)
    l, u = ends.min(0).values, ends.max(0).values
    l[:3] = torch.tensor([a, 0.0 if a <= 0 <= b else a, a], dtype=DT)  # kinks and domain ends
    u[:3] = torch.tensor([b, b, a], dtype=DT)
    grid = l + torch.linspace(0, 1, 4001, dtype=DT).unsqueeze(1) * (u - l)
    y = op.apply(params, grid)
    box = op.ibp(params, Interval(l, u))
    assert box.contains(y, 1e-9)
    init = op.init_opt(params, Interval(l, u))
    opts = [None] + [{k: torch.full_like(v, t) for k, v in init.items()} for t in (0.0, 1.0)]
    opts.append({k: torch.rand(v.shape, generator=g, dtype=DT) for k, v in init.items()})
    for opt in opts:
        rel = op.relax(params, Interval(l, u), opt=opt)
        lo = rel.lower_slopes[0] * grid + rel.lower_bias
        up = rel.upper_slopes[0] * grid + rel.upper_bias
        slack = 1e-9 * (1 + y.abs())
        assert (y >= lo - slack).all() and (y <= up + slack).all(), opt


def test_pwl_set_valued_at_jumps_and_kinks():
    """A step's interval at its jump holds both one-sided values (the Clarke segment)."""
    from lipbound.ops.piecewise import hardtanh_params, pwl_params

    op = registry.get("pwl")
    step = pwl_params((0.0,), (0.0, 0.0), (-1.0, 1.0))
    iv = op.ibp(step, Interval(torch.zeros(1, dtype=DT), torch.zeros(1, dtype=DT)))
    assert float(iv.lower) == -1.0 and float(iv.upper) == 1.0
    assert op.kinks(hardtanh_params(-1.0, 2.0)) == (-1.0, 2.0)
    assert registry.get("abs").kinks({}) == (0.0,)
    assert registry.get("hardswish").kinks({}) == (-3.0, 3.0)


def test_domain_violations_give_infinite_bounds():
    """log at 0 and 1/x across 0 have no finite bound: infinite, never a finite number."""
    log, pw = registry.get("log"), registry.get("pow")
    iv = Interval(torch.tensor([-1.0, 0.5], dtype=DT), torch.tensor([1.0, 2.0], dtype=DT))
    b = log.ibp({}, iv)
    assert math.isinf(float(b.lower[0])) and math.isfinite(float(b.lower[1]))
    b = pw.ibp({"exponent": -1.0, "coeff": 1.0}, iv)
    assert math.isinf(float(b.upper[0])) and math.isfinite(float(b.upper[1]))


# ------------------------------------------------------------------------------ models
class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _pos(z):
    return F.softplus(z) + 0.3


def _mm(z):
    a, b = z[:, :6].reshape(-1, 2, 3), z[:, 2:8].reshape(-1, 3, 2)
    return torch.cat([(a @ b).flatten(1), torch.bmm(b, a).flatten(1)[:, :4]], 1)


#: name -> (activation on the [B, 8] hidden layer, output width)
MLP_OPS = {
    "neg": lambda z: -z,
    "rsub": lambda z: 1 - z,
    "abs": torch.abs,
    "relu6": lambda z: F.relu6(3 * z),
    "hardtanh": lambda z: F.hardtanh(z, -0.4, 0.6),
    "clamp": lambda z: z.clamp(-0.3, 0.5),
    "clamp_min": lambda z: z.clamp(min=0.2),
    "clamp_max": lambda z: torch.clamp(z, max=-0.1),
    "hardsigmoid": lambda z: F.hardsigmoid(6 * z),
    "hardswish": lambda z: F.hardswish(6 * z),
    "exp": torch.exp,
    "log": lambda z: torch.log(_pos(z)),
    "sqrt": lambda z: torch.sqrt(_pos(z)),
    "rsqrt": lambda z: torch.rsqrt(_pos(z)),
    "reciprocal": lambda z: torch.reciprocal(_pos(z)),
    "pow3": lambda z: z ** 3,
    "pow1.5": lambda z: _pos(z) ** 1.5,
    "square": lambda z: z * z,
    "mul": lambda z: z * torch.sigmoid(z.flip(1)),
    "div": lambda z: z / _pos(z.flip(1)),
    "const_div": lambda z: 2.0 / _pos(z),
    "sum": lambda z: z + torch.cat([z.reshape(-1, 2, 4).sum(1)] * 2, 1),
    "mean": lambda z: z.reshape(-1, 2, 4).mean(-1),
    "max": lambda z: torch.cat([z.reshape(-1, 2, 4).amax(-1), z[:, :2]], 1),
    "min": lambda z: z.reshape(-1, 2, 4).min(1).values,
    "matmul": _mm,
    "softmax": lambda z: F.softmax(2 * z, -1),
    "softmax_dim": lambda z: F.softmax(z.reshape(-1, 2, 4), 1).flatten(1),
    "log_softmax": lambda z: F.log_softmax(z, -1),
    "layer_norm": nn.LayerNorm(8),
    "rms_norm": nn.RMSNorm(8, eps=1e-6),  # eps=None would mean finfo(dtype).eps: 2^-23 in
    # the float32 model, 2^-52 in a float64 copy (two different functions)
    "group_norm": "group_norm",
    "var": lambda z: z * torch.var(z, -1, keepdim=True),
    "std_layer_norm": lambda z: (z - z.mean(-1, keepdim=True))
    / (z.std(-1, correction=0, keepdim=True) + 1e-3),
}


class GroupNormFlat(nn.Module):
    """GroupNorm(2 groups, 4 channels) on the hidden layer seen as [4, 2]."""

    def __init__(self):
        super().__init__()
        self.gn = nn.GroupNorm(2, 4)
        with torch.no_grad():
            self.gn.weight.uniform_(0.5, 1.5)
            self.gn.bias.uniform_(-0.3, 0.3)

    def forward(self, z):
        return self.gn(z.reshape(-1, 4, 2)).flatten(1)


def _mlp(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    act = MLP_OPS[name]
    if act == "group_norm":
        act = GroupNormFlat()
    act = act if isinstance(act, nn.Module) else Fn(act)
    with torch.no_grad():
        probe = act(torch.zeros(1, 8))
    m = nn.Sequential(nn.Linear(4, 8), act, nn.Linear(probe.shape[1], 3)).eval()
    if isinstance(act, (nn.LayerNorm, nn.RMSNorm)):
        with torch.no_grad():
            act.weight.uniform_(0.5, 1.5)
            if getattr(act, "bias", None) is not None:
                act.bias.uniform_(-0.3, 0.3)
    return m


def _conv(kind: str) -> nn.Module:
    torch.manual_seed(1)
    mid = nn.AdaptiveAvgPool2d((3, 2)) if kind == "adaptive_pool" else nn.Upsample(
        scale_factor=2, mode="nearest")
    n = 2 * 3 * 2 if kind == "adaptive_pool" else 2 * 10 * 10
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), mid, nn.Flatten(),
                         nn.Linear(n, 3)).eval()


def _model(name: str):
    if name in ("adaptive_pool", "upsample"):
        return _conv(name), torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(2))
    return _mlp(name), torch.rand(4, generator=torch.Generator().manual_seed(2)) - 0.5


def _points(x: torch.Tensor, eps: float, n: int, seed: int) -> torch.Tensor:
    """The centre, uniform points and vertices of the l_inf ball, [n + 1 + n // 2, *in]."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, *x.shape, generator=g, dtype=DT) * 2 - 1
    v = torch.randint(0, 2, (n // 2, *x.shape), generator=g).to(DT) * 2 - 1
    return x.double().unsqueeze(0) + eps * torch.cat([torch.zeros(1, *x.shape, dtype=DT), u, v])


#: relative error of torch's autograd reference: hardsigmoid's backward multiplies by the
#: float32 constant 1/6 even in float64 (off by 5e-9 relative)
REF_TOL = {"hardsigmoid": 1e-7}


def _tol(name: str, J: torch.Tensor) -> torch.Tensor:
    return REF_TOL.get(name, 0.0) * J.abs()


def _jacobians(model: nn.Module, pts: torch.Tensor) -> torch.Tensor:
    """Autograd Jacobians [K, n, *in] of the float64 model."""
    p = pts.clone().requires_grad_(True)
    y = model(p)
    return torch.stack([torch.autograd.grad(y[:, k].sum(), p, retain_graph=True)[0]
                        for k in range(y.shape[1])])


ALL_MODELS = sorted(MLP_OPS) + ["adaptive_pool", "upsample"]
EPS = 0.05


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_output_bounds_contain_samples(name):
    model, x = _model(name)
    pts = _points(x, EPS, 300, 0)
    with torch.no_grad():
        y32 = model(pts.float()).double()
        m64 = _copy64(model)
        y64 = m64(pts)
    for method in ("ibp", "crown", "alpha-crown"):
        lo, up = lipbound.output_bounds(model, x, EPS, method=method, iterations=5)
        assert torch.isfinite(lo).all() and torch.isfinite(up).all()
        for y in (y64, y32):
            assert (y >= lo).all() and (y <= up).all(), (method, (lo - y).max(), (y - up).max())


def _copy64(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double().eval()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_jacobian_bounds_contain_autograd(name):
    model, x = _model(name)
    m64 = _copy64(model)
    J0 = _jacobians(m64, x.double().unsqueeze(0))[:, 0]
    lo, up = lipbound.jacobian_bounds(model, x, 0.0)
    J0 = J0.reshape(lo.shape)  # a leading 1 of x may be read as the batch dimension
    t = _tol(name, J0)
    assert (J0 + t >= lo).all() and (J0 - t <= up).all()
    assert float((up - lo).max()) < 1e-6 * (1 + float(J0.abs().max()))
    lo, up = lipbound.jacobian_bounds(model, x, EPS, method="crown")
    J = _jacobians(m64, _points(x, EPS, 100, 1))
    J = J.reshape(J.shape[0], J.shape[1], *lo.shape[1:])
    t = _tol(name, J)
    assert (J + t >= lo.unsqueeze(1)).all() and (J - t <= up.unsqueeze(1)).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_lipschitz_dominates_sampled_gradients(name):
    model, x = _model(name)
    r = lipbound.local_lipschitz(model, x, EPS, method="crown")
    J = _jacobians(_copy64(model), _points(x, EPS, 200, 2))
    norms = (J.abs() - _tol(name, J)).flatten(2).sum(-1)  # l_inf input norm: dual l_1
    assert (norms.max(1).values <= r.upper).all()
    # the attained lower bound comes from torch's autograd (see REF_TOL)
    assert (r.lower * (1 - REF_TOL.get(name, 0.0)) <= r.upper).all()


@pytest.mark.parametrize("name", ["softmax", "layer_norm", "matmul", "hardtanh", "log"])
@pytest.mark.parametrize("norm", [2, 1])
def test_model_lipschitz_other_norms(name, norm):
    model, x = _model(name)
    r = lipbound.local_lipschitz(model, x, EPS, norm=norm, method="crown")
    J = _jacobians(_copy64(model), _points(x, EPS / 4, 100, 3))  # inside the l_1 / l_2 balls
    q = {2: 2.0, 1: math.inf}[norm]
    norms = torch.linalg.vector_norm(J.flatten(2), ord=q, dim=-1)
    assert (norms.max(1).values <= r.upper).all()


@pytest.mark.parametrize("name", ["max", "min", "abs", "hardtanh"])
def test_undecided_kinks_and_maximisers(name):
    """A large ball: maximisers are not decided and kinks are crossed (the non-dominant
    branches of reduce_max / reduce_max_grad and the kink lines of pwl and abs)."""
    model, x = _model(name)
    eps = 0.5
    pts = _points(x, eps, 400, 5)
    m64 = _copy64(model)
    with torch.no_grad():
        y = m64(pts)
    for method in ("crown", "alpha-crown"):
        lo, up = lipbound.output_bounds(model, x, eps, method=method, iterations=5)
        assert (y >= lo).all() and (y <= up).all()
    lo, up = lipbound.jacobian_bounds(model, x, eps, method="crown")
    J = _jacobians(m64, pts)
    assert (J >= lo.unsqueeze(1)).all() and (J <= up.unsqueeze(1)).all()
    r = lipbound.local_lipschitz(model, x, eps, method="crown")
    assert (J.flatten(2).abs().sum(-1).max(1).values <= r.upper).all()


@pytest.mark.parametrize("name", ["abs", "relu6", "hardtanh", "hardswish", "max", "min",
                                  "clamp", "hardsigmoid"])
def test_naive_bound_with_globally_lipschitz_ops(name):
    model, x = _model(name)
    r = lipbound.local_lipschitz(model, x, EPS, method="naive")
    crown = lipbound.local_lipschitz(model, x, EPS, method="crown")
    J = _jacobians(_copy64(model), _points(x, EPS, 100, 4))
    norms = (J.abs() - _tol(name, J)).flatten(2).sum(-1).max(1).values
    assert (norms <= r.upper).all() and (norms <= crown.upper).all()


def test_naive_bound_refuses_ops_without_a_global_constant():
    model, x = _model("exp")
    with pytest.raises(UnsupportedOperationError, match="exp") as err:
        lipbound.local_lipschitz(model, x, EPS, method="naive")
    assert err.value.op == "exp" and "module" in err.value.where, err.value.where


def test_alpha_crown_when_no_parameter_reaches_the_target():
    """A linear node bounded after unrelated nonlinear ones (a parallel branch; LayerNorm's
    square has the linear derivative 2 z): its alpha-CROWN bound has nothing to optimise."""

    class Parallel(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.o = nn.Linear(4, 5), nn.Linear(4, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.o(torch.relu(self.a(x)) + torch.tanh(self.b(x)))

    torch.manual_seed(0)
    for model in (Parallel().eval(), _model("layer_norm")[0]):
        r = lipbound.local_lipschitz(model, torch.rand(4), 0.1, norm=2, method="alpha-crown",
                                     iterations=3)
        assert torch.isfinite(r.upper).all()


def test_composites_are_single_nodes_in_the_raw_graph_and_lowered_for_bounds():
    model, x = _model("layer_norm")
    t = get_traced(model, x.unsqueeze(0), DT, torch.device("cpu"))
    assert "layer_norm" in [n.op for n in t.raw]
    ops = [n.op for n in t.graph]
    assert "layer_norm" not in ops and {"center", "square", "pow", "mul"} <= set(ops)
    model, x = _model("softmax")
    t = get_traced(model, x.unsqueeze(0), DT, torch.device("cpu"))
    assert "softmax" in [n.op for n in t.raw]
    assert {"pairwise_diff", "exp", "sum", "pow"} <= {n.op for n in t.graph}


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "layer_norm", "rms_norm",
                                  "group_norm", "exp", "matmul", "hardsigmoid", "var",
                                  "std_layer_norm"])
def test_float32_forward_inside_eps_zero_bounds_under_stress(name):
    """At eps = 0 the bounds are only the rounding allowances: they must still contain the
    float32 forward pass when the kernels' rounding is large (big offsets and logits)."""
    model, x = _model(name)
    with torch.no_grad():
        model[0].bias.add_(torch.linspace(-30, 30, 8) if name != "exp" else 3.0)
        model[0].weight.mul_(20.0 if name != "exp" else 1.0)
    pts = x.unsqueeze(0)
    lo, up = lipbound.output_bounds(model, x, 0.0)
    with torch.no_grad():
        y32 = model(pts)[0].double()
        y64 = _copy64(model)(pts.double())[0]
    assert (y32 >= lo).all() and (y32 <= up).all(), (lo - y32, y32 - up)
    assert (y64 >= lo).all() and (y64 <= up).all()


# --------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("fn,op", [
    (torch.sinh, "aten.sinh"),
    (lambda z: z.argsort(-1) * z, "aten.argsort"),
    (lambda z: z ** z, "aten.pow.Tensor_Tensor"),
    (lambda z: torch.logcumsumexp(z, -1), "aten.logcumsumexp"),
    (lambda z: torch.round(z), "aten.round"),
])
def test_unsupported_ops_name_the_op_and_where(fn, op):
    model = nn.Sequential(nn.Linear(4, 8), Fn(fn), nn.Linear(8, 3)).eval()
    with pytest.raises(UnsupportedOperationError) as err:
        lipbound.output_bounds(model, torch.rand(4), 0.1)
    msg = str(err.value)
    assert op in msg and "module '1'" in msg, msg


def test_domain_refusal_is_an_error_not_a_number():
    """log of an input-dependent value that reaches 0 inside the set: no finite bound."""
    model = nn.Sequential(nn.Linear(2, 2), Fn(lambda z: torch.log(z.abs())),
                          nn.Linear(2, 1)).eval()
    with pytest.raises(lipbound.errors.InputError):
        lipbound.output_bounds(model, torch.zeros(2), 1.0)
