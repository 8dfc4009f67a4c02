"""Out-of-memory during a batched bound: the batch is bounded in halves with the same result;
a single domain that does not fit gives a clear ProblemTooLargeError."""

from __future__ import annotations

import pytest
import torch

from lipbound.bab.chunks import bound_in_chunks
from lipbound.errors import ProblemTooLargeError


def _bound(limit: int):
    calls = []

    def fn(lo, parts):
        calls.append(len(lo))
        if len(lo) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return lo * 2, [p + 1 for p in parts], (lo.sum(1),)

    return fn, calls


def test_halves_until_the_batch_fits_and_joins_in_order():
    lo = torch.arange(14.0).reshape(7, 2)
    parts = [torch.arange(7.0), torch.ones(7, 3)]
    full = _bound(100)[0](lo, parts)
    fn, calls = _bound(2)
    got = bound_in_chunks(fn, lo, parts, n=7)
    assert torch.equal(got[0], full[0]) and torch.equal(got[2][0], full[2][0])
    assert all(torch.equal(a, b) for a, b in zip(got[1], full[1]))
    assert max(c for c in calls if c <= 2) <= 2 and calls[0] == 7


def test_a_single_domain_that_does_not_fit_is_a_clear_error():
    fn, _ = _bound(0)
    with pytest.raises(ProblemTooLargeError, match="does not fit in memory"):
        bound_in_chunks(fn, torch.ones(2, 2), [torch.ones(2)], n=2)


def test_other_errors_pass_through():
    def fn(lo):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        bound_in_chunks(fn, torch.ones(4, 2), n=4)
