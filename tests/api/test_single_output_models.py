"""Models with one output per sample ([B], a binary classifier's ``squeeze(-1)``).

lipbound refused them (output not [B, K]) until session 15; they are now read as [B, 1]. Every
result on such a model must equal the result on the same network that keeps the last
dimension ([B, 1]), and the sampled outputs and gradients must lie inside.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lipbound
from lipbound.audit import monotonicity
from tests.api.sampled import assert_outputs_inside

D = 5


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(D, 12), nn.ReLU(), nn.Linear(12, 8), nn.ReLU(),
                         nn.Linear(8, 1)).eval()
    return nn.Sequential(body, nn.Flatten(0)).eval(), body


X = torch.rand(D, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("call", [
    lambda m: lipbound.output_bounds(m, X, 0.05, method="crown"),
    lambda m: lipbound.output_bounds(m, X, 0.05, method="bab", timeout=5, progress=False),
    lambda m: lipbound.local_lipschitz(m, X, 0.05, method="crown"),
    lambda m: lipbound.local_lipschitz(m, X, 0.05, method="exact"),
    lambda m: lipbound.jacobian_bounds(m, X, 0.05),
    lambda m: lipbound.global_lipschitz(m, X),
], ids=["crown", "bab", "lipschitz", "exact", "jacobian", "global"])
def test_results_equal_those_of_the_b1_twin(call):
    squeezed, twin = _pair()
    got, want = _tensors(call(squeezed)), _tensors(call(twin))
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):  # equal up to the allowance for two more (exact) reshapes
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)


def _tensors(result) -> list[torch.Tensor]:
    if isinstance(result, tuple):
        return [t for t in result if isinstance(t, torch.Tensor)]
    return [t for t in (getattr(result, "lower", None), result.upper)
            if isinstance(t, torch.Tensor)]


def test_sampled_outputs_are_inside():
    squeezed, _ = _pair()
    assert_outputs_inside(squeezed, X)  # outputs [n] against bounds [1]


def test_monotonicity_audit_reads_one_output():
    squeezed, twin = _pair()
    lo, hi = torch.zeros(D), torch.ones(D)
    got = monotonicity(squeezed, lo, hi, features=[0, 1], timeout=5, progress=False)
    want = monotonicity(twin, lo, hi, features=[0, 1], timeout=5, progress=False)
    assert [f.verdict for f in got.features] == [f.verdict for f in want.features]


def test_a_model_that_mixes_the_batch_is_still_refused():
    model = nn.Sequential(nn.Flatten(0), nn.Linear(D, 3)).eval()  # [1, D] -> [D] -> [3]
    with pytest.raises(lipbound.ShapeError, match=r"\[1, K\] or \[1\]"):
        lipbound.output_bounds(model, X, 0.05)
