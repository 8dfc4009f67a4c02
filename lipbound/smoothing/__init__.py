"""Randomized smoothing certificates that combine Lipschitz constants with Monte-Carlo margins.

``Smooth(model, num_classes, sigma).certify(x, ..., certificate=NAME)`` with NAME one of
``cohen``, ``lvm``, ``lipschitz``, ``local-margins``, ``dual``, ``best`` (see
``certificates/__init__.py``). Output records: ``records.py`` (Cohen et al.'s TSV and JSON).
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
]
