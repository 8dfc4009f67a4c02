"""Lipschitz-enhanced soft certificate.

If every soft output ``s_t(f(.))_c`` is ``L_c``-Lipschitz (l2) into [0, 1], the smoothed score
``H_c`` obeys the value-dependent gradient bound ``G_L`` of DESIGN section 4 and the radius becomes
``psi_L(p_A) = int_{1/2}^{p_A} dq / G_L(q)`` (``lipschitz_radius.py``), together with the
margin form of ``soft.py``. Bounds, alpha split and the choice of map/temperature are those of
``lvm`` (the choice is made on the n0 samples, or alpha is split over the grid).

Where the constant comes from (``lipschitz_constant``):

* ``of="logit-differences"`` (default): a float, a callable ``model -> float``, ``None`` /
  ``"naive"``, or ``"lipsdp"`` (``sqrt(2)`` times lipbound's certified LipSDP-Neuron bound of
  the logit map, element-wise min with the naive pair constants; one SDP per model, cached).
  The number must bound the l2 Lipschitz constant of every logit difference ``f_c - f_j``
  (if you have a bound ``L_f`` of the whole logit map in l2, pass ``sqrt(2) * L_f``; LipSDP gives
  such an ``L_f``). ``None`` computes per-pair constants by lipbound's naive product of
  operator norms over the traced model (``lipschitz_constants.naive_pair_lipschitz``; any model
  lipbound traces, else ``UnsupportedModelError``). Each soft coordinate then gets
  ``L_c = factor(map, t) * max_j L_cj`` with factor ``t/4`` (softmax) or ``t (K-1)/K``
  (sparsemax); see ``simplex.py`` for the proofs. The default grid also holds hardmax (no
  Lipschitz constant: plain LVM with Clopper–Pearson bounds), so the selection on the n0
  samples can fall back to it; ``details["lipschitz"]`` is ``inf`` when it does.
* ``of="soft-outputs"``: the number bounds the l2 Lipschitz constant of each coordinate of the
  soft outputs themselves, for a single fixed (map, t); the default map is then ``identity``
  (the model already outputs probabilities).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from lipbound.errors import InputError
from lipbound.smoothing.certificates.base import Context
from lipbound.smoothing.certificates.soft import DEFAULT_TEMPERATURES, SoftCertificate
from lipbound.smoothing.lipschitz_constants import cached_pair_lipschitz
from lipbound.smoothing.simplex import lipschitz_factor


class Lipschitz(SoftCertificate):
    """Soft smoothed classifier certified with a global Lipschitz constant of the base."""

    name = "lipschitz"
    allowed_maps = ("softmax", "sparsemax", "hardmax", "identity")

    def __init__(
        self,
        lipschitz_constant: float | str | Callable | None = None,
        of: str = "logit-differences",
        maps: Sequence[str] | None = None,
        temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
        selection: str = "n0",
        grid: Sequence[tuple[str, float]] | None = None,
    ) -> None:
        if of not in ("logit-differences", "soft-outputs"):
            raise InputError(
                f"lipschitz: of must be 'logit-differences' or 'soft-outputs', got {of!r}"
            )
        if maps is None:
            maps = (
                ("softmax", "sparsemax", "hardmax") if of == "logit-differences" else ("identity",)
            )
        super().__init__(maps=maps, temperatures=temperatures, selection=selection, grid=grid)
        if of == "soft-outputs" and len(self.grid) != 1:
            raise InputError(
                "lipschitz: a constant of the soft outputs holds for one (map, t) only; give a "
                "single map and temperature (or map 'identity')"
            )
        if of == "logit-differences" and any(m == "identity" for m, _ in self.grid):
            raise InputError("lipschitz: map 'identity' needs of='soft-outputs'")
        if lipschitz_constant == "naive":
            lipschitz_constant = None
        if isinstance(lipschitz_constant, str):
            if lipschitz_constant != "lipsdp":
                raise InputError(
                    "lipschitz_constant must be a number, a callable, 'naive' or 'lipsdp', "
                    f"got {lipschitz_constant!r}"
                )
            if of != "logit-differences":
                raise InputError("lipschitz_constant='lipsdp' needs of='logit-differences'")
        elif lipschitz_constant is not None and not callable(lipschitz_constant):
            lipschitz_constant = float(lipschitz_constant)
            if not (lipschitz_constant > 0) or math.isnan(lipschitz_constant):
                raise InputError(f"lipschitz_constant must be positive, got {lipschitz_constant}")
        if lipschitz_constant is None and of == "soft-outputs":
            raise InputError("lipschitz: of='soft-outputs' needs lipschitz_constant=")
        self.constant = lipschitz_constant
        self.of = of
        self._pairs: np.ndarray | None = None
        self._source = ""

    def prepare(self, ctx: Context) -> dict:
        k = ctx.num_classes
        const = self.constant
        if callable(const):
            value = float(const(ctx.model))
            if not value > 0:
                raise InputError(f"lipschitz_constant callable returned {value}")
            const, self._source = value, "callable"
        if const is None or const == "lipsdp":
            source = "naive" if const is None else "lipsdp"
            self._pairs = cached_pair_lipschitz(ctx.model, ctx.x, source).copy()
            if self._pairs.shape != (k, k):
                raise InputError(
                    f"the model's last layer has {self._pairs.shape[0]} outputs, "
                    f"num_classes is {k}"
                )
            self._source = ("naive product of spectral norms" if const is None
                            else "LipSDP-Neuron (sqrt(2) L_f) and naive product")
        else:
            self._pairs = np.full((k, k), float(const))
            self._source = self._source or "given"
        return {
            "lipschitz_source": self._source,
            "lipschitz_of": self.of,
            "logit_difference_lipschitz_max": float(self._pairs.max()) if k > 1 else 0.0,
        }

    def check(self, ctx: Context) -> str | None:
        """A given constant (number or callable) always applies; otherwise the constants must be
        computable for this model."""
        from lipbound.smoothing.engine import ENGINE_ERRORS, describe_engine_error

        if self.constant is not None and self.constant != "lipsdp":
            return None
        try:
            self.prepare(ctx)
        except ENGINE_ERRORS as exc:
            return f"no global Lipschitz constant: {describe_engine_error(exc)}"
        return None

    def class_constants(self, ctx: Context, map_name: str, t: float) -> np.ndarray:
        assert self._pairs is not None
        if self.of == "soft-outputs":
            return self._pairs[:, 0] if ctx.num_classes > 1 else self._pairs[0]
        factor = lipschitz_factor(map_name, t, ctx.num_classes)
        if math.isinf(factor):  # hardmax: no Lipschitz constant
            return np.full(ctx.num_classes, np.inf)
        return factor * self._pairs.max(axis=1)

    def describe(self) -> dict:
        return {"of": self.of, "grid": [list(c) for c in self.grid], "selection": self.selection}
