"""LVM-RS (Delattre et al., ICLR 2024) with a sound choice of map and temperature.

Soft base classifier ``s_t(f(x))`` (softmax, sparsemax or hardmax at inverse temperature t),
empirical-Bernstein bounds per class at ``alpha / K``, radius
``sigma/2 (Phi^-1(p_A) - Phi^-1(p_B))`` (or ``sigma Phi^-1(p_A)`` if larger). The map and t are
chosen on the n0 selection samples, or every candidate is certified at ``alpha / G``
(``selection="split"``); see ``soft.py`` for the alpha bookkeeping. The original code picks the
map and t on the certifying samples without splitting alpha, which is unsound.
"""

from __future__ import annotations

from lipbound.smoothing.certificates.soft import SoftCertificate


class LVM(SoftCertificate):
    """Soft smoothed classifier with empirical-Bernstein margins (no Lipschitz information)."""

    name = "lvm"
