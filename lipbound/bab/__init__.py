"""Branch-and-bound over input sub-boxes: anytime certified upper bounds with attained lower
bounds, for local Lipschitz constants (``method="bab"`` of ``local_lipschitz``) and output
bounds (``method="bab"`` of ``output_bounds``).

- ``engine.py``: the generic best-first loop (batched domains, pruning, anytime trace).
- ``lipschitz.py`` / ``outputs.py``: the two bound and attainment functions it maximises.
"""

from lipbound.bab.engine import BabResult, TracePoint, maximize
from lipbound.bab.lipschitz import bab_local_lipschitz
from lipbound.bab.outputs import bab_output_bounds

__all__ = ["BabResult", "TracePoint", "bab_local_lipschitz", "bab_output_bounds", "maximize"]
