"""Branch-and-bound over input sub-boxes: anytime certified upper bounds with attained lower
bounds, for local Lipschitz constants (``method="bab"`` of ``local_lipschitz``) and output
bounds (``method="bab"`` of ``output_bounds``).

- ``input_split.py``: the best-first loop over input sub-boxes (batched domains, pruning);
  ``anytime.py``: the result, trace and stopping rules every search shares;
  ``relu_split.py``: the search over activation signs.
- ``lipschitz.py`` / ``outputs.py``: the two bound and attainment functions it maximises.
"""

from lipbound.bab.anytime import BabResult, TracePoint
from lipbound.bab.input_split import maximize
from lipbound.bab.lipschitz import bab_local_lipschitz
from lipbound.bab.outputs import bab_output_bounds

__all__ = ["BabResult", "TracePoint", "bab_local_lipschitz", "bab_output_bounds", "maximize"]
