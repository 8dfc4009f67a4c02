"""Noise-trained 1-Lipschitz (l_2) classifiers for randomized smoothing.

For each sigma in 0.25, 0.5:

* ``digits-lipschitz-smooth-<sigma>``: Flatten-128-128-10 ReLU MLP on 8x8 digits images
  ``[N, 1, 8, 8]`` (pixels/16; the data and split of ``lipbound.models.digits``);
* ``mnist1d-lipschitz-smooth-<sigma>``: Flatten-256-256-10 ReLU MLP on MNIST-1D signals
  ``[N, 1, 40]`` (``lipbound.models.mnist1d.mnist1d_data``).

and, as their unconstrained reference, ``mnist1d-smooth-<sigma>``: the same MNIST-1D architecture,
noise and schedule without any constraint (plain cross-entropy).

In the constrained models every weight matrix was held to spectral norm <= 1 throughout
training (``W = V / max(1, sigma_max(V))``, exact SVD at every step); every model's batches got
fresh Gaussian noise N(0, sigma^2 I). The stored layers are plain ``nn.Linear`` holding the
projected matrices, re-projected in float64 to spectral norm <= 1 - 1e-6, so lipbound traces
them like any MLP and its naive global bound (product of certified spectral norms, last layer
folded with the margin rows) certifies each logit margin ``f_c - f_j`` to be at most
``||W_3[c] - W_3[j]||_2``-Lipschitz (<= sqrt(2)). ReLU is the 1-Lipschitz activation: a
GroupSort/MaxMin pair would be gradient-norm preserving, but lipbound traces it only as
ReLU rewrites (max(a, b) = b + relu(a - b)) whose naive product is far above 1.
Trained by ``models/train_lipschitz_smooth.py`` (seed 0); ``extra`` records the accuracies it
printed (clean, and of the base model under N(0, sigma^2 I)).
"""

from __future__ import annotations

from torch import nn

from lipbound.models.registry import ModelInfo, register

SIGMAS = (0.25, 0.5)

# test-set accuracies printed by models/train_lipschitz_smooth.py (clean / under N(0, sigma^2))
ACCURACY: dict[str, tuple[float, float]] = {
    "digits-lipschitz-smooth-0.25": (0.9822, 0.9469),
    "digits-lipschitz-smooth-0.5": (0.9822, 0.7818),
    "mnist1d-lipschitz-smooth-0.25": (0.663, 0.6359),
    "mnist1d-lipschitz-smooth-0.5": (0.652, 0.5819),
    "mnist1d-smooth-0.25": (0.726, 0.6926),
    "mnist1d-smooth-0.5": (0.72, 0.6166),
}

FAMILIES = {
    # family -> (input shape, hidden widths, data description)
    "digits": ((1, 8, 8), (128, 128), "sklearn digits (8x8 images, pixels/16)"),
    "mnist1d": ((1, 40), (256, 256), "MNIST-1D, mnist1d.make_dataset(get_dataset_args())"),
}


def lipschitz_mlp(family: str) -> nn.Module:
    """Flatten-[hidden]-10 ReLU MLP of a family (untrained)."""
    shape, hidden, _ = FAMILIES[family]
    width = 1
    for s in shape:
        width *= s
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def name_of(family: str, sigma: float) -> str:
    return f"{family}-lipschitz-smooth-{sigma:g}"


def reference_name(sigma: float) -> str:
    return f"mnist1d-smooth-{sigma:g}"


def _register() -> None:
    for family, (shape, hidden, data) in FAMILIES.items():
        for sigma in SIGMAS:
            name = name_of(family, sigma)
            acc = ACCURACY.get(name)
            widths = "-".join(str(h) for h in hidden)
            register(ModelInfo(
                name=name, factory=lambda f=family: lipschitz_mlp(f), weights=f"{name}.pt",
                input_shape=shape, num_outputs=10, data=data,
                description=(f"Flatten-{widths}-10 ReLU MLP, every layer of spectral norm <= 1 "
                             f"(1-Lipschitz in l_2), trained with Gaussian noise "
                             f"sigma={sigma:g}"),
                trained_by="models/train_lipschitz_smooth.py",
                extra={
                    "sigma": sigma,
                    "layer_spectral_norm_max": 1.0,
                    "global_l2_lipschitz_max": 1.0,
                    "test_accuracy_clean": acc[0] if acc else None,
                    "test_accuracy_noisy": acc[1] if acc else None,
                },
            ))
    shape, hidden, data = FAMILIES["mnist1d"]
    for sigma in SIGMAS:
        name = reference_name(sigma)
        acc = ACCURACY.get(name)
        register(ModelInfo(
            name=name, factory=lambda: lipschitz_mlp("mnist1d"), weights=f"{name}.pt",
            input_shape=shape, num_outputs=10, data=data,
            description=(f"Flatten-256-256-10 ReLU MLP (unconstrained reference of "
                         f"{name_of('mnist1d', sigma)}), trained with Gaussian noise "
                         f"sigma={sigma:g}"),
            trained_by="models/train_lipschitz_smooth.py --reference",
            extra={"sigma": sigma,
                   "test_accuracy_clean": acc[0] if acc else None,
                   "test_accuracy_noisy": acc[1] if acc else None},
        ))


_register()
