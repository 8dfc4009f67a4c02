"""Branch-and-bound: anytime certified upper bounds with attained lower bounds, for local
Lipschitz constants (``method="bab"`` of ``local_lipschitz``), output bounds and proof goals
(``method="bab"`` of ``output_bounds``, ``prove_outputs``) and the monotonicity audit.

- ``search.py``: the one best-first loop over domains (input box + sign splits) and its
  branchers (input halves, ReLU signs, mixed); ``anytime.py``: the result, trace and stopping
  rules; ``chunks.py``: batches within memory; ``lp.py``: the sign LP; ``milp_stage.py``: the
  MILP stage of method "bab".
- ``relu_split.py`` (domain bounding shared by the objectives, the Lipschitz objective),
  ``lipschitz.py`` / ``outputs.py`` / ``derivative.py``: the objectives and their entry points.
"""

from lipbound.bab.anytime import BabResult, TracePoint
from lipbound.bab.lipschitz import bab_lipschitz, bab_local_lipschitz
from lipbound.bab.outputs import bab_output_bounds

__all__ = ["BabResult", "TracePoint", "bab_lipschitz", "bab_local_lipschitz",
           "bab_output_bounds"]
