"""Exact and SDP methods for ReLU / LeakyReLU MLPs: the ground truth for lipbound's bounds.

- :func:`milp_local_lipschitz`: the same constant by a LipMIP-style MILP with HiGHS (p = inf, 1),
  with a certified bracket on time-out;
- :class:`DerivativeMilp`: the exact least / greatest partial derivative d (c . f) / d x_j over
  a box by a MILP (the monotonicity audit's MILP stage);
- :func:`lipsdp_neuron`: certified global l2 Lipschitz bound by LipSDP-Neuron (SCS);
- :func:`exact_local_lipschitz`: ``method="exact"`` of :func:`lipbound.local_lipschitz` (the MILP
  for any model that traces to a ReLU/LeakyReLU chain, CROWN big-M, a LipschitzResult).

The local constant is the chain-rule (Clarke-superset) one with closed activation patterns; see
:mod:`lipbound.exact.mlp` for the definitions. The test oracle that enumerates activation
patterns (tiny nets) lives with the tests (``tests/oracles.py``).
"""

from lipbound.exact.api import exact_local_lipschitz
from lipbound.exact.bounds import MilpBounds
from lipbound.exact.derivative import DerivativeMilp
from lipbound.exact.lipsdp import certify_multipliers, lipsdp_neuron
from lipbound.exact.milp import DEFAULT_MAX_BINARIES, milp_local_lipschitz
from lipbound.exact.mlp import MLP, as_mlp
from lipbound.exact.result import ExactResult, LipSDPResult

__all__ = [
    "DEFAULT_MAX_BINARIES",
    "DerivativeMilp",
    "MLP",
    "ExactResult",
    "LipSDPResult",
    "MilpBounds",
    "as_mlp",
    "certify_multipliers",
    "exact_local_lipschitz",
    "lipsdp_neuron",
    "milp_local_lipschitz",
]
