"""Certified global l2 Lipschitz constants of logit differences (naive product).

For ``nn.Sequential`` models built from ``Linear``, ``ReLU`` and ``Flatten`` only. The gradient
of ``f_c - f_j`` is ``(e_c - e_j)^T W_L D_{L-1} W_{L-1} ... D_1 W_1`` with Clarke ReLU
derivatives ``D_i`` diagonal in ``[0, 1]``, so

    Lip(f_c - f_j) <= ||W_L[c] - W_L[j]||_2  prod_{i < L} ||W_i||_2 .

Spectral norms are exact singular values from a float64 SVD, inflated by a relative 1e-9 to
cover its rounding. Any other module raises ``UnsupportedModelError``.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn

from lipbound.errors import UnsupportedModelError

_INFLATE = 1.0 + 1e-9
_SUPPORTED = (nn.Linear, nn.ReLU, nn.Flatten)


def _layers(model: nn.Module) -> list[nn.Module]:
    if not isinstance(model, nn.Sequential):
        raise UnsupportedModelError(
            f"the naive Lipschitz product needs an nn.Sequential of Linear/ReLU/Flatten, got "
            f"{type(model).__name__}; pass lipschitz_constant= (a float or a callable) instead"
        )
    layers: list[nn.Module] = []
    for name, mod in model.named_children():
        if isinstance(mod, nn.Sequential):
            layers.extend(_layers(mod))
        elif isinstance(mod, _SUPPORTED):
            layers.append(mod)
        else:
            raise UnsupportedModelError(
                f"the naive Lipschitz product supports Linear, ReLU and Flatten only; layer "
                f"{name!r} is {type(mod).__name__}; pass lipschitz_constant= instead"
            )
    if not any(isinstance(m, nn.Linear) for m in layers):
        raise UnsupportedModelError("the model has no Linear layer")
    return layers


def _spectral_norm(weight: torch.Tensor) -> float:
    w = weight.detach().to("cpu", torch.float64).numpy()
    return float(np.linalg.svd(w, compute_uv=False)[0]) * _INFLATE


def naive_pair_lipschitz(model: nn.Module) -> np.ndarray:
    """``[K, K]`` matrix ``L`` with ``Lip_2(f_c - f_j) <= L[c, j]`` (zero diagonal)."""
    layers = _layers(model)
    last_linear = max(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
    prefix = 1.0
    for m in layers[:last_linear]:
        if isinstance(m, nn.Linear):
            prefix *= _spectral_norm(m.weight)
    w_last = layers[last_linear].weight.detach().to("cpu", torch.float64).numpy()
    if any(isinstance(m, nn.ReLU) for m in layers[last_linear + 1 :]):
        # outputs pass through a ReLU after the last Linear: |d relu(a) - d relu(b)| <= ...
        # use the coarse bound sqrt(2) * Lip_2(f)
        full = prefix * _spectral_norm(layers[last_linear].weight) * np.sqrt(2.0)
        k = w_last.shape[0]
        out = np.full((k, k), full * _INFLATE)
    else:
        diff = w_last[:, None, :] - w_last[None, :, :]
        out = prefix * np.linalg.norm(diff, axis=-1) * _INFLATE * _INFLATE
    np.fill_diagonal(out, 0.0)
    return out


def naive_lipschitz(model: nn.Module) -> float:
    """Certified l2 -> l2 Lipschitz constant of the whole output map (product of spectral norms)."""
    prod = 1.0
    for m in _layers(model):
        if isinstance(m, nn.Linear):
            prod *= _spectral_norm(m.weight)
    return prod


def lipsdp_pair_lipschitz(model: nn.Module) -> np.ndarray:
    """``[K, K]`` pair constants from LipSDP-Neuron (``lipbound.exact.lipsdp_neuron``, certified
    in float64): ``||grad (f_c - f_j)|| = ||(e_c - e_j)^T J|| <= sqrt(2) ||J||_2 <= sqrt(2) L_f``,
    taken element-wise with the naive per-pair product where that applies. One SDP per model
    (seconds for a 10-50-50-10 net, much longer for wider ones)."""
    from lipbound.exact import lipsdp_neuron

    value = float(lipsdp_neuron(model).value)
    sdp = np.sqrt(2.0) * value * _INFLATE * _INFLATE
    try:
        naive = naive_pair_lipschitz(model)
    except UnsupportedModelError:
        naive = None
    k = naive.shape[0] if naive is not None else _num_outputs(model)
    out = np.full((k, k), sdp)
    if naive is not None:
        out = np.minimum(out, naive)
    np.fill_diagonal(out, 0.0)
    return out


def _num_outputs(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        raise UnsupportedModelError("the model has no Linear layer")
    return last[-1].out_features


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(model: nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version, tuple(p.shape)) for p in model.parameters())


PAIR_SOURCES = {"naive": naive_pair_lipschitz, "lipsdp": lipsdp_pair_lipschitz}


def cached_pair_lipschitz(model: nn.Module, source: str = "naive") -> np.ndarray:
    """Pair constants (``PAIR_SOURCES[source]``) memoised per model (recomputed if any
    parameter changed)."""
    sig = _signature(model)
    per_model = _CACHE.setdefault(model, {})
    hit = per_model.get(source)
    if hit is not None and hit[0] == sig:
        return hit[1]
    value = PAIR_SOURCES[source](model)
    per_model[source] = (sig, value)
    return value
