"""The rounding model: unit roundoffs, Higham's gamma_n, and outward widening.

What lipbound's bounds contain (stated once here, referenced by the README and the API):

1. **The real-arithmetic function of the stored weights.** Every bound (outputs, Jacobian
   elements, Lipschitz constants) holds for the exact, real-number function that the model's
   stored parameters define. Graph rewrites (BatchNorm folding, input normalisation, merged
   Linear layers) are done in float64 on the exact float32/float64 parameter values.
2. **The forward pass the user runs** (output bounds only): the model's own float32 (or
   float64) forward pass at any point of the input set lies inside the output bounds. Its
   distance from the real function is bounded per node by the standard forward error analysis
   (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3): a sum of ``n`` products
   computed in any order with unit roundoff ``u`` is off by at most
   ``gamma_n |W| |x|``, ``gamma_n = n u / (1 - n u)``; the error of the inputs propagates
   through ``|W|`` (affine ops) or the op's Lipschitz constant (activations; none from a
   stably negative ReLU input), and library functions (tanh, exp, ...) add a few ulps of
   their value. Output bounds take the smaller of that and the same errors followed back from
   the bound's rows with signs (:mod:`lipbound.propagate.error_flow`). Each op states these facts
   (:meth:`lipbound.ops.base.Op.float_error`); :mod:`lipbound.propagate.rounding` walks the
   model's unrewritten graph with them.
3. **The rounding of lipbound's own computation** in ``dtype`` (float64 by default): every
   bound is a sum of products of coefficients whose magnitudes are bounded by the
   absolute-value network (:meth:`lipbound.ops.base.Op.magnitude`); the computed value is off
   by at most ``gamma_N(u) * M`` for ``N`` the number of rounded operations along the
   longest chain. lipbound adds ``SAFETY`` times that first-order allowance, except to
   CROWN / alpha-CROWN bounds in the compute dtype: those carry a tally of their own
   rounding, step by step along the back-substitution with the signed coefficients
   (:mod:`lipbound.propagate.own_rounding`), and need no global allowance.

Results are then rounded outward (``nextafter``) so the final subtraction/addition cannot
move a bound inward. Compute dtypes below float32 are refused (their gamma_n exceeds 1 for
sums of a few hundred terms).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: multiplier on the first-order allowance for lipbound's own float computation (item 3)
SAFETY = 8.0

_UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24,
         torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
#: operand rounding of TensorFloat-32 matrix products/convolutions on CUDA (10-bit mantissa)
TF32_UNIT = 2.0 ** -11


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p for a floating dtype with p significand bits (round to nearest)."""
    return _UNIT[dtype]


def gamma(n: float, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error bound of n rounded operations
    (``inf`` once n u >= 1, where no bound exists)."""
    nu = n * u
    return math.inf if nu >= 1.0 else nu / (1.0 - nu)


@dataclass(frozen=True)
class Precision:
    """How a forward pass rounds: ``u`` per operation; ``u_operand`` for the rounding of the
    operands of matrix products and convolutions before they multiply (0 for IEEE float,
    ``TF32_UNIT`` where CUDA runs float32 products in TensorFloat-32)."""

    u: float
    u_operand: float = 0.0

    @staticmethod
    def of(dtype: torch.dtype, device: torch.device | str = "cpu") -> Precision:
        """The precision of a forward pass in ``dtype`` on ``device``; float32 on CUDA counts
        TensorFloat-32 operands whenever torch allows them for matmuls or cuDNN convolutions."""
        tf32 = (dtype == torch.float32 and torch.device(device).type == "cuda"
                and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32))
        return Precision(unit_roundoff(dtype), TF32_UNIT if tf32 else 0.0)


def outward(lower: Tensor, upper: Tensor, allowance: Tensor | float = 0.0
            ) -> tuple[Tensor, Tensor]:
    """``[lower - allowance, upper + allowance]`` rounded one ulp further outward, so the
    result contains ``[lower, upper]`` widened by ``allowance`` in exact arithmetic."""
    lo = lower - allowance
    up = upper + allowance
    return (torch.nextafter(lo, torch.full_like(lo, -math.inf)),
            torch.nextafter(up, torch.full_like(up, math.inf)))
