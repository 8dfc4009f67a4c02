"""The ``diabetes-mlp`` regressor: a 10-16-16-1 ReLU MLP on scikit-learn's diabetes data set.

Built for monotonicity audits (``lipbound.audit.monotonicity``). Features are standardised
with the training split's mean and standard deviation, and so is the target (disease
progression one year later): the model predicts ``(y - mean_y) / std_y``. It was trained with
a penalty on partial derivatives below a margin of 0.05 with respect to
``MONOTONE_FEATURES`` (bmi, bp, s5), sampled uniformly in the training box
:func:`diabetes_box`, so those features are meant to be increasing; the other features are
unconstrained. Trained by ``models/train_diabetes_mlp.py`` (seed 0).
"""

from __future__ import annotations

import torch
from torch import nn

from lipbound.models.registry import ModelInfo, register

FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")
MONOTONE_FEATURES = (2, 3, 8)
SPLIT = "train_test_split(X, y, test_size=0.25, random_state=0)"


def _raw_split():
    from sklearn.datasets import load_diabetes
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


def diabetes_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 1))


register(ModelInfo(
    name="diabetes-mlp", factory=diabetes_mlp, weights="diabetes-mlp.pt", input_shape=(10,),
    num_outputs=1, data="sklearn diabetes (features and target standardised on the train split)",
    description="10-16-16-1 ReLU regressor, trained to be increasing in bmi, bp and s5",
    trained_by="models/train_diabetes_mlp.py",
    extra={"split": SPLIT, "features": list(FEATURES),
           "monotone_features": list(MONOTONE_FEATURES), "task": "regression"},
))
