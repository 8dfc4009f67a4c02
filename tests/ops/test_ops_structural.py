"""The structural operators of issue 17's sweep: 1-d and adaptive max pooling, instance norm,
linear/bilinear interpolation, reflect/replicate/circular padding, einsum, minimum/maximum,
logsumexp, vector norms / F.normalize, nn.Bilinear.

- the new op kinds (``interpolate``, ``pad_mode``, ``einsum``, ``logsumexp``) pass the
  table's sampled containment checks on more seeds than the shared hypothesis run draws;
- every trace-time lowering computes the module's function: the traced graph, evaluated in
  float64, equals the float64 model on random inputs (an inexact lowering fails here);
- the traced graph holds the ops the lowering promises (no silent fallback elsewhere).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lipbound.inputs import get_traced
from tests.conftest import evaluate_graph
from tests.ops.test_ops_soundness import check_op_soundness

DT = torch.float64
NEW_KINDS = ["interpolate", "pad_mode", "einsum", "logsumexp"]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kind", NEW_KINDS)
def test_new_kinds_contain_sampled_outputs(kind, seed):
    check_op_soundness(kind, 2000 + seed, (0.05, 1.0, 4.0)[seed % 3])


class Fn(nn.Module):
    def __init__(self, f, *mods: nn.Module):
        super().__init__()
        self.f = f
        self.mods = nn.ModuleList(mods)

    def forward(self, x):
        return self.f(x, *self.mods).flatten(1)  # lipbound bounds [B, K] outputs


def _instance_norm_stats() -> nn.Module:
    m = nn.InstanceNorm1d(3, affine=True, track_running_stats=True)
    m.running_mean.copy_(torch.randn(3))
    m.running_var.copy_(torch.rand(3) + 0.5)
    with torch.no_grad():
        m.weight.copy_(torch.randn(3))
        m.bias.copy_(torch.randn(3))
    return m


def _cases():
    torch.manual_seed(3)
    lin = nn.Linear(6, 8)
    bil = nn.Bilinear(4, 4, 3)
    w = nn.Linear(4, 2)
    return {  # name: (model, per-sample input shape, op kinds its graph must hold)
        "max_pool1d": (Fn(lambda x: F.max_pool1d(x, 3, 2, 1)), (2, 9), {"max_pool"}),
        "max_pool1d_dil": (Fn(lambda x: F.max_pool1d(x, 2, 1, 0, 2)), (2, 7), {"max_pool"}),
        "adaptive_max2d_uneven": (Fn(lambda x: F.adaptive_max_pool2d(x, (3, 2))), (2, 7, 5),
                                  {"reduce_max"}),
        "adaptive_max2d_even": (Fn(lambda x: F.adaptive_max_pool2d(x, 2)), (2, 4, 6),
                                {"max_pool"}),
        "adaptive_max1d": (Fn(lambda x: F.adaptive_max_pool1d(x, 3)), (2, 8), {"reduce_max"}),
        "instance_norm2d": (Fn(lambda x, m: m(x), nn.InstanceNorm2d(3, affine=True)), (3, 4, 5),
                            {"pow", "mul"}),
        "instance_norm1d": (Fn(lambda x, m: m(x), nn.InstanceNorm1d(3)), (3, 6), {"pow", "mul"}),
        "instance_norm_stats": (Fn(lambda x, m: m(x), _instance_norm_stats()), (3, 6),
                                {"scale_shift"}),
        "bilinear_up": (Fn(lambda x: F.interpolate(x, scale_factor=2, mode="bilinear")),
                        (2, 3, 4), {"interpolate"}),
        "bilinear_corners": (Fn(lambda x: F.interpolate(x, size=(5, 7), mode="bilinear",
                                                        align_corners=True)), (2, 3, 4),
                             {"interpolate"}),
        "linear_up": (Fn(lambda x: F.interpolate(x, scale_factor=1.5, mode="linear")), (2, 6),
                      {"interpolate"}),
        "reflect": (Fn(lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect")), (2, 4, 5),
                    {"pad_mode"}),
        "replicate": (Fn(lambda x: F.pad(x, (2, 1), mode="replicate")), (2, 4), {"pad_mode"}),
        "circular": (Fn(lambda x, c: c(x), nn.Conv2d(2, 2, 3, padding=1,
                                                      padding_mode="circular")), (2, 4, 4),
                     {"conv"}),
        "einsum_const": (Fn(lambda x, c: torch.einsum("bij,jk->bik", x, c.weight.t()), w),
                         (3, 4), {"einsum"}),
        "einsum_two": (Fn(lambda x: torch.einsum("...ij,...kj->...ik", x, x * 2)), (3, 4),
                       {"mul", "sum"}),
        "maximum": (Fn(lambda x: torch.maximum(x[:, :3], x[:, 3:])), (6,), {"relu"}),
        "minimum": (Fn(lambda x: torch.minimum(x[:, :1], x[:, 3:])), (6,), {"relu"}),
        "maximum_const": (Fn(lambda x: torch.maximum(x, torch.full((6,), 0.25, dtype=x.dtype))),
                          (6,), {"relu"}),
        "minimum_const": (Fn(lambda x: torch.minimum(torch.arange(6, dtype=x.dtype) / 4 - 0.5,
                                                     x)), (6,), {"relu"}),
        "logsumexp": (Fn(lambda x: torch.logsumexp(x, -1)), (2, 5), {"exp", "log"}),
        "logsumexp_2d": (Fn(lambda x: torch.logsumexp(x, (1, 2), keepdim=True)), (2, 3, 4),
                         {"exp", "log"}),
        "normalize": (Fn(lambda x: F.normalize(x, dim=-1)), (3, 4), {"pow", "square"}),
        "norm_l1": (Fn(lambda x: torch.linalg.vector_norm(x, 1, dim=1)), (3, 4), {"abs"}),
        "norm_inf": (Fn(lambda x: torch.linalg.vector_norm(x, float("inf"), dim=-1)), (3, 4),
                     {"reduce_max"}),
        "bilinear": (Fn(lambda x, a, b: b(torch.tanh(a(x))[:, :4], torch.tanh(a(x))[:, 4:]),
                        lin, bil), (6,), {"mul"}),
        "pixel_shuffle": (Fn(lambda x: F.pixel_shuffle(x, 2)), (8, 3, 2), {"permute"}),
        "pixel_unshuffle": (Fn(lambda x: F.pixel_unshuffle(x, 3)), (2, 6, 3), {"permute"}),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_lowering_computes_the_model(name):
    model, shape, kinds = CASES[name]
    model = model.eval()
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    t = get_traced(model, x, DT, torch.device("cpu"))
    assert kinds <= {n.op for n in t.graph}, {n.op for n in t.graph}
    pts = torch.randn(5, *shape, generator=torch.Generator().manual_seed(2), dtype=DT)
    got = evaluate_graph(t.graph, pts.reshape(5, -1) if len(t.graph[t.graph.input].shape) == 1
                         and len(shape) > 1 else pts)[t.graph.output]
    with torch.no_grad():
        want = copy.deepcopy(model).double()(pts).reshape(5, -1)
    torch.testing.assert_close(got.reshape(5, -1), want, rtol=1e-10, atol=1e-10)
