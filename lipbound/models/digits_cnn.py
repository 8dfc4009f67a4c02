"""The ``digits-cnn`` model: a small ReLU convolutional net on scikit-learn's 8x8 digits.

Input ``[N, 1, 8, 8]`` (pixels / 16, in [0, 1]); output 10 logits. Architecture:
Conv(1->8, 3x3, pad 1) - ReLU - Conv(8->16, 3x3, stride 2, pad 1) - ReLU - Flatten -
Linear(256->32) - ReLU - Linear(32->10). Data: :func:`digits_images` (the split of
``lipbound.models.digits.digits_data``). Trained by ``models/train_digits_cnn.py`` (seed 0).
"""

from __future__ import annotations

from torch import nn

from lipbound.models.registry import ModelInfo, register

SPLIT = "train_test_split(X / 16, y, test_size=0.25, random_state=0, stratify=y)"


def digits_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10),
    )


register(ModelInfo(
    name="digits-cnn", factory=digits_cnn, weights="digits-cnn.pt", input_shape=(1, 8, 8),
    num_outputs=10, data="sklearn digits (8x8 images, pixels/16)",
    description="Conv8-Conv16(stride 2)-FC32-10 ReLU CNN",
    trained_by="models/train_digits_cnn.py", extra={"split": SPLIT},
))
