"""The signed backward flow of forward-pass rounding errors (lipbound.propagate.error_flow).

The flow bounds ``|C (computed - exact output)|`` for a forward pass in which every affine
node adds an error ``delta_n`` of at most its own rounding bound and every other node (ReLU,
LeakyReLU) passes its input's error -- the model of :mod:`lipbound.propagate.error_flow`.
Checked by injecting such errors into a float64 evaluation of the traced graph: at the exact input
point and at sampled points of the box, with ``delta_n`` at its bound with the sign of the
gradient of each spec row (the worst case where nothing crosses a kink) and with random signs,
the output moves by no more than the flow's bound; the flow is never looser than the forward
walk's ``|C| execution_error`` and much tighter on a deep MLP.

Mutation checks (by hand): with the centre's absolute value dropped in ``_dot(c.abs() + r,
...)`` (``c + r``), or with ReLU's stable-positive slope 1 replaced by 0, the injection test
fails.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lipbound.bounds.domains import make_domain
from lipbound.bounds.rounding import Precision
from lipbound.graph.ir import CONST, INPUT
from lipbound.inputs import get_traced
from lipbound.ops import registry
from lipbound.propagate.driver import prepare_state
from lipbound.propagate.error_flow import error_flow
from lipbound.propagate.ibp import evaluate_fixed
from lipbound.propagate.rounding import error_walk
from tests.user_models import residual_family

F32 = Precision.of(torch.float32)


def _mlp(seed: int, act=nn.ReLU) -> tuple[nn.Module, torch.Tensor, float]:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(8, 64), act(), nn.Linear(64, 64), act(),
                      nn.Linear(64, 64), act(), nn.Linear(64, 4)).eval()
    return m, torch.rand(8, generator=torch.Generator().manual_seed(seed)), 0.01


CASES = [(m, x, e) for _, m, x, e in residual_family(3)] + [_mlp(s) for s in range(3)] + [
    _mlp(3, lambda: nn.LeakyReLU(0.1))]


def _setup(model, x, eps):
    x1 = x.unsqueeze(0).double()
    traced = get_traced(model, x1, torch.float64, x.device)
    domain = make_domain(x1, eps, math.inf)
    state = prepare_state(traced.graph, domain, "crown")
    ivs, errs = error_walk(traced.raw, domain.interval(), F32, state.bounds.get)
    return traced.raw, domain, ivs, errs


def _local(raw, ivs, errs) -> dict[str, torch.Tensor]:
    """The own rounding bound of every affine node (the input: its cast)."""
    out = {raw.input: errs[raw.input]}
    for n in raw.nodes:
        if n.op in (INPUT, CONST):
            continue
        op = registry.get(n.op, n.where)
        if op.linear:
            mags = [ivs[s].abs_max() + errs[s] for s in n.inputs]
            out[n.name] = op.float_error(n.params, [torch.zeros_like(errs[s]) for s in n.inputs],
                                         mags, F32)
    return out


def _run(raw, x: torch.Tensor, deltas: dict[str, torch.Tensor]) -> torch.Tensor:
    fixed = evaluate_fixed(raw)
    v: dict[str, torch.Tensor] = {}
    for n in raw.nodes:
        if n.op == INPUT:
            val = x
        elif n.name in fixed:
            val = fixed[n.name]
        else:
            val = registry.get(n.op, n.where).apply(n.params, *[v[s] for s in n.inputs])
        v[n.name] = val + deltas[n.name] if n.name in deltas else val
    return v[raw.output]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_injected_errors_stay_within_the_flow_bound(index: int) -> None:
    model, x, eps = CASES[index]
    raw, domain, ivs, errs = _setup(model, x, eps)
    local = _local(raw, ivs, errs)
    K = raw[raw.output].numel
    C = torch.cat([torch.eye(K), -torch.eye(K)]).double()
    bound = error_flow(raw, F32, C, ivs, errs)[0]
    gen = torch.Generator().manual_seed(index)
    pts = torch.cat([domain.interval().center, domain.sample(8, gen)[:, 0]])
    for p in pts:
        p = p.unsqueeze(0)
        exact = _run(raw, p, {}).flatten()
        for s in range(C.shape[0]):
            probes = {k: torch.zeros_like(t, requires_grad=True) for k, t in local.items()}
            (C[s] @ _run(raw, p, probes).flatten()).backward()
            signs = [{k: torch.sign(t.grad) for k, t in probes.items()},
                     {k: torch.sign(torch.rand(t.shape, generator=gen, dtype=t.dtype) - 0.5)
                      for k, t in probes.items()}]
            for sg in signs:
                moved = C[s] @ (_run(raw, p, {k: local[k] * sg[k] for k in local}).flatten()
                                - exact)
                assert float(moved) <= float(bound[s]), (s, float(moved), float(bound[s]))


@pytest.mark.parametrize("index", range(len(CASES)))
def test_flow_no_looser_than_forward_walk(index: int) -> None:
    model, x, eps = CASES[index]
    raw, _, ivs, errs = _setup(model, x, eps)
    K = raw[raw.output].numel
    C = torch.eye(K, dtype=torch.float64)
    flow = error_flow(raw, F32, C, ivs, errs)
    forward = errs[raw.output].flatten(1) @ C.abs().T
    assert bool((flow <= forward * (1 + 1e-9)).all())
    if index >= 3:  # the deep MLP: |W4| |W3| |W2| against signed products
        assert float(flow.sum()) < 0.7 * float(forward.sum())
