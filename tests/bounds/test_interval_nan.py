"""Interval.intersect treats a NaN end (an interval computation that lost everything, such
as the midpoint of [-inf, inf]) as unbounded, so it cannot poison a sound bound."""

from __future__ import annotations

import math

import torch

from lipbound.bounds.interval import Interval


def test_intersect_keeps_the_finite_end_against_nan():
    nan = math.nan
    a = Interval(torch.tensor([nan, 0.0, nan]), torch.tensor([nan, 2.0, 5.0]))
    b = Interval(torch.tensor([-1.0, nan, nan]), torch.tensor([3.0, nan, nan]))
    for iv in (a.intersect(b), b.intersect(a)):
        torch.testing.assert_close(iv.lower[:2], torch.tensor([-1.0, 0.0]))
        torch.testing.assert_close(iv.upper, torch.tensor([3.0, 2.0, 5.0]))
        assert math.isnan(iv.lower[2])  # NaN only where both are NaN
