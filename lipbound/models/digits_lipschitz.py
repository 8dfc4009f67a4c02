"""The ``digits-lipschitz`` model: a 1-Lipschitz (l_2) ReLU MLP on scikit-learn's 8x8 digits.

Architecture 64-64-64-10 with ReLU, input ``[N, 64]`` (pixels / 16). It was trained with every
weight matrix projected onto the spectral-norm ball (``W <- V / max(1, sigma_max(V))``, exact
SVD at every step) and is exported as plain ``nn.Linear`` layers holding the projected
matrices, so lipbound traces it like any MLP. Every layer has spectral norm <= 1 and ReLU is
1-Lipschitz, so the network is 1-Lipschitz from l_2 to l_2 and every logit margin
``f_i - f_j`` is sqrt(2)-Lipschitz: a margin m at x certifies the l_2 radius m / sqrt(2).
Trained by ``models/train_digits_lipschitz.py`` (seed 0).
"""

from __future__ import annotations

from torch import nn

from lipbound.models.registry import ModelInfo, register

SPLIT = "train_test_split(X / 16, y, test_size=0.25, random_state=0, stratify=y)"


def digits_lipschitz() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))


register(ModelInfo(
    name="digits-lipschitz", factory=digits_lipschitz, weights="digits-lipschitz.pt",
    input_shape=(64,), num_outputs=10, data="sklearn digits (8x8, pixels/16)",
    description="64-64-64-10 ReLU MLP with every weight of spectral norm <= 1 (1-Lipschitz in l_2)",
    trained_by="models/train_digits_lipschitz.py",
    extra={"split": SPLIT, "layer_spectral_norm_max": 1.0, "global_l2_lipschitz_max": 1.0},
))
