"""The ``diabetes-mlp`` regressor: a 10-16-16-1 ReLU MLP on scikit-learn's diabetes data set,
monotone by construction in some features and non-monotone by construction in another.

Built for monotonicity audits (``lipbound.audit.monotonicity``). Features are standardised
with the training split's mean and standard deviation, and so is the target (disease
progression one year later): the model predicts ``(y - mean_y) / std_y``.

Construction (``models/train_diabetes_mlp.py``, seed 0, enforced by a parametrisation during
training, so the shipped weights satisfy it exactly):

* **Increasing in** ``MONOTONE_FEATURES`` (bmi, bp, s5) everywhere: every hidden unit carries a
  sign ``s`` (:func:`unit_signs`), and ``s_i W1[i, j] >= 0`` for j in MONOTONE_FEATURES,
  ``s_i s_k W2[i, k] >= 0`` and ``s_i W3[0, i] >= 0``. Every path from such a feature to the
  output then has a non-negative weight product; ReLU derivatives are in [0, 1], so every
  (Clarke) partial derivative in those features is >= 0.
* **Not monotone in** ``NON_MONOTONE_FEATURE`` (age): age enters only through the last two
  first-layer units, ``relu(x_age - m)`` and ``relu(m - x_age)``, copied unchanged by the last
  two second-layer units into output weights ``c_plus, c_minus >= 0.05``, with ``m`` inside the
  training box. So ``d f / d x_age`` is ``c_plus`` above ``m`` and ``-c_minus`` below it
  (a V-shape in age).
* The other features are unconstrained.
"""

from __future__ import annotations

import torch
from torch import nn

from lipbound.models.registry import ModelInfo, register

FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
MONOTONE_FEATURES = (2, 3, 8)
NON_MONOTONE_FEATURE = 0
HIDDEN = 16  # per layer; the last two units of each layer carry the age V-shape
SPLIT = "train_test_split(X, y, test_size=0.25, random_state=0)"


def _raw_split():
    from sklearn.datasets import load_diabetes  # deferred: heavy optional dependency (sklearn)
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0)


def diabetes_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X_train [331, 10], y_train [331], X_test [111, 10], y_test [111]) as float32, features
    and target standardised with the training split's mean and (population) std."""
    Xtr, Xte, ytr, yte = _raw_split()
    mx, sx = Xtr.mean(0), Xtr.std(0)
    my, sy = ytr.mean(), ytr.std()
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f((Xtr - mx) / sx), f((ytr - my) / sy), f((Xte - mx) / sx), f((yte - my) / sy)


def diabetes_box() -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) [10]: per-feature min and max of the standardised training features."""
    Xtr = diabetes_data()[0]
    return Xtr.min(0).values, Xtr.max(0).values


def unit_signs() -> torch.Tensor:
    """The sign of each hidden unit's dependence on the monotone features ([HIDDEN], the same
    for both layers): alternating +1/-1 for the free units, +1 for the two age units."""
    s = torch.ones(HIDDEN)
    s[1:HIDDEN - 2:2] = -1.0
    return s


def diabetes_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(10, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, 1))


register(ModelInfo(
    name="diabetes-mlp", factory=diabetes_mlp, weights="diabetes-mlp.pt", input_shape=(10,),
    num_outputs=1, data="sklearn diabetes (features and target standardised on the train split)",
    description="10-16-16-1 ReLU regressor, increasing in bmi, bp and s5 by construction "
                "(sign-constrained paths) and V-shaped in age by construction",
    trained_by="models/train_diabetes_mlp.py",
    extra={"split": SPLIT, "features": list(FEATURES),
           "monotone_features": list(MONOTONE_FEATURES),
           "non_monotone_feature": NON_MONOTONE_FEATURE, "task": "regression"},
))
