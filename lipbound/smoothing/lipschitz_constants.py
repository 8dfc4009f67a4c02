"""Certified global l2 Lipschitz constants of logit differences, for the smoothing certificates.

``naive_pair_lipschitz(model, x)``: the engine's certified global bound of the rows
``e_c - e_j`` (:func:`lipbound.jacobian.global_bound.margin_lipschitz`: the product of
certified induced operator norms over the traced graph, the last layer folded with the rows),
so for a ReLU MLP

    Lip_2(f_c - f_j) <= ||(W_L[c] - W_L[j]) ...||_2  prod_{i < L} ||W_i||_2

and the matching product for any model lipbound traces (convolutions, pooling, smooth
activations; each activation contributes its Lipschitz factor). The bound is global; ``x`` is
one input of the model (it fixes the traced shapes, not the value). A model lipbound cannot
trace or bound raises ``UnsupportedModelError`` naming the operator.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from lipbound.errors import TracingError, UnsupportedModelError, UnsupportedOperationError

_INFLATE = 1.0 + 1e-9


def naive_pair_lipschitz(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """``[K, K]`` matrix ``L`` with ``Lip_2(f_c - f_j) <= L[c, j]`` (zero diagonal) everywhere:
    the engine's certified global bound (:func:`lipbound.jacobian.global_bound.margin_lipschitz`;
    whatever tighter global bound the engine computes is used here too); ``x`` [*in]: one
    input of the model (it fixes the traced shapes, not the value)."""
    from lipbound.jacobian.global_bound import margin_lipschitz

    x1 = torch.as_tensor(x).detach()
    try:
        return margin_lipschitz(model, x1, norm=2).numpy().astype(np.float64)
    except (UnsupportedOperationError, TracingError) as exc:
        raise UnsupportedModelError(
            f"the global Lipschitz bound of the logit differences is not available for this "
            f"model: {exc}; pass lipschitz_constant= (a float or a callable) instead") from exc


def lipsdp_pair_lipschitz(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """``[K, K]`` pair constants from LipSDP-Neuron (``lipbound.exact.lipsdp_neuron``, certified
    in float64): ``||grad (f_c - f_j)|| = ||(e_c - e_j)^T J|| <= sqrt(2) ||J||_2 <= sqrt(2) L_f``,
    the element-wise minimum with :func:`naive_pair_lipschitz`. One SDP per model
    (seconds for a 10-50-50-10 net, much longer for wider ones)."""
    from lipbound.exact import lipsdp_neuron  # deferred: heavy optional dependency (cvxpy)

    value = float(lipsdp_neuron(model).value)
    sdp = np.sqrt(2.0) * value * _INFLATE * _INFLATE
    out = np.minimum(sdp, naive_pair_lipschitz(model, x))
    np.fill_diagonal(out, 0.0)
    return out


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(model: nn.Module) -> tuple:
    from lipbound.graph.versions import model_version

    return (model_version(model),)


PAIR_SOURCES = {"naive": naive_pair_lipschitz, "lipsdp": lipsdp_pair_lipschitz}


def cached_pair_lipschitz(model: nn.Module, x: torch.Tensor, source: str = "naive"
                          ) -> np.ndarray:
    """Pair constants (``PAIR_SOURCES[source]``) memoised per model and input shape
    (recomputed if any parameter changed)."""
    sig = _signature(model)
    per_model = _CACHE.setdefault(model, {})
    key = (source, tuple(torch.as_tensor(x).shape))
    hit = per_model.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    value = PAIR_SOURCES[source](model, x)
    per_model[key] = (sig, value)
    return value
