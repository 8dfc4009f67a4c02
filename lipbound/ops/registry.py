"""The operator registry: op kind -> Op implementation, filled by the op modules at import.

Every op kind lipbound can bound is registered here by the module that holds its relaxation.
Looking for the relaxation of an op? ``lipbound.ops.registry.REGISTRY["tanh"]`` names its class;
affine ops live in ``ops/affine.py``, ``ops/scale_shift.py`` and ``ops/shape.py``, ReLU-like ones
in ``ops/relu_like.py``, smooth activations in ``ops/smooth.py`` (ELU(alpha) and
softplus(threshold) in ``ops/smooth_families.py``, atan, erf, GELU-tanh and Mish in
``ops/special.py``), sin and cos in ``ops/periodic.py``, softshrink, hardshrink and Threshold in
``ops/shrink.py``, activations that lower to other ops at trace time (PReLU, GLU, log1p, expm1) in
``ops/lowerings.py``, pooling in ``ops/pooling.py``,
piecewise-linear functions (hardtanh, relu6, hardsigmoid, steps) and hardswish in
``ops/piecewise.py``, exp, log and powers in ``ops/domain_fns.py``, reductions (sum, mean, max,
centring, broadcasts) in ``ops/reduce.py``, adaptive pooling and upsampling in ``ops/resample.py``,
composite ops that the graph normaliser lowers (softmax, LayerNorm, RMSNorm, GroupNorm) in
``ops/composite.py``, and the ops of Clarke Jacobian graphs in ``ops/jacobian_ops.py`` (switches,
products, |.|, squares; products and |.| serve forward graphs too), ``ops/transpose.py``
(transposed linear ops) and ``ops/pool_grad.py`` (max-pool derivative); interpolation,
reflect/replicate/circular padding and einsum with constants in ``ops/fixed_maps.py``, logsumexp
in ``ops/logsumexp.py``. ATen calls lowered at trace time to these ops (1-d and adaptive max
pooling, instance norm, minimum/maximum and clamps with tensor limits, vector norms,
nn.Bilinear, pixel (un)shuffle, cumsum, prod) are in ``ops/lowered.py``, recurrent layers
(RNN, LSTM, GRU) in ``ops/recurrent.py``, sort / topk in ``ops/sorting.py``; data movement
by a fixed index (roll, repeat, gather, unfold, ...) is one op in ``ops/index_map.py``;
attention (SDPA and nn.MultiheadAttention's traced forward) in ``ops/attention.py``.

Everything generic code needs to know about an op is stated by its class (:mod:`lipbound.ops.base`,
value types in :mod:`lipbound.ops.facts`), never looked up by its name: its Clarke-Jacobian rule
(``jacobian_rule``, ``derivative``), its factor in the naive Lipschitz product (``norm_fact`` for
linear ops, ``naive_factor`` for the others), its kinks (branch-and-bound split points), whether it
is ReLU-like (``relu_like_slope``: the exact solvers' and sign splits' activations), its form as
an MLP layer (``flat_affine``), its map on windowed CROWN coefficients (``window_map``,
``window_rule``) and its exact folds in the graph normaliser (``fold_after``, ``fold_stage``,
``scale_output``, ``absorb_input_scale``, ``flat_view``). The ATen calls an op converts are
registered by its module too (:mod:`lipbound.ops.tracing`). Adding an op is one module here
(:func:`load_all` imports every module of the package) and one row in the test case table
(``tests/ops/test_ops_soundness.py``), which gives it the forward, Jacobian and error tests.
"""

from __future__ import annotations

import importlib
import pkgutil

from lipbound.errors import UnsupportedOperationError
from lipbound.ops.base import Op

REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add an op instance under ``op.kind``."""
    if not op.kind or op.kind in REGISTRY:
        raise ValueError(f"bad or duplicate op kind {op.kind!r}")
    REGISTRY[op.kind] = op
    return op


def get(kind: str, where: str = "<graph>") -> Op:
    """The registered op, or UnsupportedOperationError naming it and the supported kinds."""
    load_all()
    try:
        return REGISTRY[kind]
    except KeyError:
        raise UnsupportedOperationError(kind, where, REGISTRY) from None


def kinds() -> list[str]:
    load_all()
    return sorted(REGISTRY)


_LOADED: list[bool] = []


def load_all() -> None:
    """Import every module of :mod:`lipbound.ops` once: each registers its ops (and their ATen
    converters, :mod:`lipbound.ops.tracing`) at import, so a new op module needs no list."""
    if not _LOADED:
        _LOADED.append(True)
        import lipbound.ops as package

        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
