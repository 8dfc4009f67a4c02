"""The sorting network behind ``sort`` / ``topk`` (:mod:`lipbound.ops.sorting`) sorts every
input: by the 0-1 principle it suffices that it sorts every 0-1 sequence, checked
exhaustively for n <= 12, and on random real inputs up to ``MAX_SORTED``."""

from __future__ import annotations

import itertools

import pytest
import torch

from lipbound.ops.sorting import MAX_SORTED, sorting_network


def _apply(network, v):
    v = list(v)
    for i, j in network:
        assert i < j
        if v[i] > v[j]:
            v[i], v[j] = v[j], v[i]
    return v


@pytest.mark.parametrize("n", range(1, 13))
def test_network_sorts_every_zero_one_sequence(n):
    net = sorting_network(n)
    for bits in itertools.product((0, 1), repeat=n):
        assert _apply(net, bits) == sorted(bits)


@pytest.mark.parametrize("n", [13, 17, 31, 32, 33, MAX_SORTED])
def test_network_sorts_random_reals(n):
    g = torch.Generator().manual_seed(n)
    net = sorting_network(n)
    for _ in range(50):
        v = torch.randn(n, generator=g).tolist()
        assert _apply(net, v) == sorted(v)
