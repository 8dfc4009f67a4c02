"""Memory caps: a problem above the row cap is refused with ProblemTooLargeError (never an
out-of-memory crash), before the bounds are computed, and the model is left as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lipbound
from lipbound.errors import ProblemTooLargeError
from lipbound.propagate import intermediate

pytestmark = pytest.mark.usefixtures("one_thread")


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()


@pytest.mark.parametrize("call", ["local_lipschitz", "output_bounds"])
def test_row_cap_refuses_and_leaves_model_untouched(monkeypatch, call):
    model = _cnn()
    before = copy.deepcopy(model.state_dict())
    grads = [p.requires_grad for p in model.parameters()]
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(intermediate, "MAX_ELEMENTS_PER_ROW", 1000)  # one row: >= 2048 here
    kwargs = {"n_samples": 1} if call == "local_lipschitz" else {}
    with pytest.raises(ProblemTooLargeError, match="MAX_ELEMENTS_PER_ROW"):
        getattr(lipbound, call)(model, x, 0.01, method="crown", **kwargs)
    assert not model.training
    assert [p.requires_grad for p in model.parameters()] == grads
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    monkeypatch.undo()  # the same call under the default cap succeeds
    res = getattr(lipbound, call)(model, x, 0.01, method="crown", **kwargs)
    assert torch.isfinite(res.upper).all()
