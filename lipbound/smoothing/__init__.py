"""Randomized smoothing certificates that combine Lipschitz constants with Monte-Carlo margins.

``Smooth(model, num_classes, sigma).certify(x, ..., certificate=NAME)`` with NAME one of
``cohen``, ``lvm``, ``lipschitz``, ``local-margins``, ``dual``, ``best`` (see
``certificates/__init__.py``). Output records: ``records.py`` (Cohen et al.'s TSV and JSON).
A data set: ``certify_dataset`` (``dataset.py``; per-input seeds from the base seed and the
input's index, so the loop can be distributed).
"""

from lipbound.smoothing.certificates import (
    LVM,
    Best,
    Certificate,
    Certification,
    Cohen,
    Dual,
    DualPair,
    Lipschitz,
    LocalMargins,
)
from lipbound.smoothing.dataset import certify_dataset, certify_one, input_seed
from lipbound.smoothing.local_radius import (
    GlobalLipschitzRadius,
    LocalLipschitzRadius,
    LocalRadius,
    OutputBoundsRadius,
)
from lipbound.smoothing.smooth import Smooth

__all__ = [
    "LVM",
    "Best",
    "Certificate",
    "Certification",
    "Cohen",
    "Dual",
    "DualPair",
    "GlobalLipschitzRadius",
    "Lipschitz",
    "LocalLipschitzRadius",
    "LocalMargins",
    "LocalRadius",
    "OutputBoundsRadius",
    "Smooth",
    "certify_dataset",
    "certify_one",
    "input_seed",
]
