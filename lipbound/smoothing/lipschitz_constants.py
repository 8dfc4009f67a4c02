"""Certified global l2 Lipschitz constants of logit differences, for the smoothing certificates.

``naive_pair_lipschitz(model, x)``: lipbound's naive bound (``method="naive"`` of
:func:`lipbound.api.local_lipschitz`: the product of induced operator norms over the traced
graph, :mod:`lipbound.jacobian.naive`, with exact spectral norms for small matrices) of the
rows ``e_c - e_j``, so

    Lip_2(f_c - f_j) <= ||(W_L[c] - W_L[j]) ...||_2  prod_{i < L} ||W_i||_2

for a ReLU MLP, and the matching product for any model lipbound traces (convolutions, pooling,
smooth activations; each activation contributes its Lipschitz factor). The bound is global;
``x`` is one input of the model (it fixes the traced shapes, not the value). A model lipbound
cannot trace or bound raises ``UnsupportedModelError`` naming the operator.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from lipbound.api import local_lipschitz
from lipbound.errors import TracingError, UnsupportedModelError, UnsupportedOperationError
from lipbound.specs import pair_spec

_INFLATE = 1.0 + 1e-9


def naive_pair_lipschitz(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """``[K, K]`` matrix ``L`` with ``Lip_2(f_c - f_j) <= L[c, j]`` (zero diagonal) everywhere;
    ``x`` [*in]: one input of the model (a batch of one is ``x[None]``)."""
    x1 = torch.as_tensor(x).detach().unsqueeze(0)
    try:
        with torch.no_grad():
            k = int(model(x1).shape[-1])
        if k < 2:  # no pair of classes
            return np.zeros((k, k))
        upper = local_lipschitz(model, x1, 0.0, norm=2, spec=pair_spec(k), method="naive",
                                n_samples=1, progress=False).upper
    except (UnsupportedOperationError, TracingError) as exc:
        raise UnsupportedModelError(
            f"the naive Lipschitz bound of the logit differences is not available for this "
            f"model: {exc}; pass lipschitz_constant= (a float or a callable) instead") from exc
    out = np.zeros((k, k))
    rows = [(c, j) for c in range(k) for j in range(k) if j != c]
    for (c, j), v in zip(rows, upper.detach().cpu().double().tolist()):
        out[c, j] = v
    return out


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
