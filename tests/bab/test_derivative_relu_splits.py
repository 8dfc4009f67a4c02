"""The monotonicity audit's search with ReLU sign splits is sound on sampled points: every
domain it bounds (a sub-box with signs of hidden neurons in force) encloses the autograd
derivative of every sampled point of its box that has those signs."""

import math

import pytest
import torch

from lipbound.bab.anytime import Anytime
from lipbound.bab.derivative import DerivativeSearch
from lipbound.bab.lipschitz import make_brancher
from lipbound.bab.search import search
from lipbound.graph.trace import trace
from tests.oracles import random_sequential

DT = torch.float64


def _preacts(net, x):
    """Pre-activations of each hidden layer of an nn.Sequential ReLU MLP at x [N, n]."""
    zs, h = [], x
    for layer in net:
        h = layer(h)
        if isinstance(layer, torch.nn.Linear) and layer is not net[-1]:
            zs.append(h)
    return zs


@pytest.mark.parametrize("split", ["relu"])  # the audit's brancher on MLPs
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_bounded_domain_encloses_its_sampled_derivatives(seed, split, monkeypatch):
    net = random_sequential((3, 8, 8, 1), seed).double()
    lo, hi = -torch.ones(3, dtype=DT), torch.ones(3, dtype=DT)
    graph = trace(net, lo[None])
    c = torch.ones(1, 1, dtype=DT)
    seen = []
    original = DerivativeSearch.bound

    def recording(self, signs, parent_ub=None, threshold=None, boxes=None, parent=None):
        out = original(self, signs, parent_ub, threshold, boxes, parent)
        seen.append(([s.clone() for s in signs], boxes[0].clone(), boxes[1].clone(),
                     out[0].clone()))
        return out

    monkeypatch.setattr(DerivativeSearch, "bound", recording)
    j = seed % 3
    # the audit's objective and brancher without proof goals: it splits until max_domains
    srch = DerivativeSearch(net, graph, c, lo, hi, j)
    srch.forward_iterations = 0
    centre = srch.domain.center
    res = search(srch, make_brancher(split, graph, c, srch.domain), lo, hi,
                 srch.attain(centre)[0], centre.expand(2, 3).clone(),
                 Anytime(60.0, 0.0, 0.0, 160), batch=8, progress=False)
    assert res.domains_bounded >= 100
    gen = torch.Generator().manual_seed(seed)
    checked = with_signs = 0
    for signs, blo, bhi, ub in seen:
        for d in range(ub.shape[0]):
            if not bool(torch.isfinite(ub[d]).all()):
                continue  # shown empty: nothing to check
            x = blo[d] + torch.rand(3000, 3, generator=gen, dtype=DT) * (bhi[d] - blo[d])
            with torch.no_grad():
                zs = _preacts(net, x)
            keep = torch.ones(len(x), dtype=torch.bool)
            for s, z in zip(signs, zs):
                keep &= (s[d] * z >= 0).all(1)
            if not keep.any():
                continue
            xs = x[keep].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(net(xs).sum(), xs)
            slack = 1e-9 * (1 + float(ub[d].abs().max()))
            assert bool((g[:, j] >= -ub[d, 0] - slack).all()), (d, float(g[:, j].min()))
            assert bool((g[:, j] <= ub[d, 1] + slack).all()), (d, float(g[:, j].max()))
            checked += 1
            with_signs += int(any(bool((s[d] != 0).any()) for s in signs))
    assert checked >= 50 and with_signs >= 20
    assert math.isfinite(float(res.upper.max()))
