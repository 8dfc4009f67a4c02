"""Train the noise-augmented 1-Lipschitz classifiers ``{digits,mnist1d}-lipschitz-smooth-<sigma>``.

Architectures: ``lipbound.models.lipschitz_smooth.lipschitz_mlp`` (Flatten-128-128-10 on
digits, Flatten-256-256-10 on MNIST-1D, ReLU). Every Linear weight is reparametrised as
``W = V / max(1, sigma_max(V))`` (exact SVD at every step, ``_training.SpectralBall``), so each
layer has spectral norm <= 1 throughout training; every batch gets fresh Gaussian noise
N(0, sigma^2 I); the loss is cross-entropy of the logits times ``SCALE`` (a 1-Lipschitz net
needs large-margin training). Adam (lr 3e-3, cosine decay), batch 64, seed 0 (+ index).
The projected matrices are stored in plain ``nn.Linear`` layers, re-projected in float64 to
spectral norm <= 1 - 1e-6 (``_training.project``). Writes
``lipbound/models/weights/<name>.pt`` and prints the accuracies to paste into
``lipbound/models/lipschitz_smooth.py`` (``ACCURACY``). ``--reference`` trains the unconstrained
references ``mnist1d-smooth-<sigma>`` instead (same architecture, data, noise and schedule; no
constraint, plain cross-entropy; seed 100 + index).

    OMP_NUM_THREADS=1 python models/train_lipschitz_smooth.py [--only digits|mnist1d]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _training import SpectralBall, fit_noisy, print_accuracies, project
from torch import nn

from lipbound.models.lipschitz_smooth import SIGMAS, lipschitz_mlp, name_of, reference_name

WEIGHTS = Path(__file__).resolve().parents[1] / "lipbound" / "models" / "weights"
EPOCHS = {"digits": 200, "mnist1d": 100}
SCALE = 8.0


def data(family: str):
    if family == "digits":
        from lipbound.models.digits_smooth import digits_images
        return digits_images()
    from lipbound.models.mnist1d import mnist1d_data
    return mnist1d_data()


def train(family: str, sigma: float, seed: int, xtr, ytr, constrained: bool = True
          ) -> nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = lipschitz_mlp(family)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    if not constrained:  # the unconstrained reference: plain cross-entropy, same noise
        return _fit(model, xtr, ytr, sigma, family, gen, 1.0).eval()
    for lin in linears:
        nn.utils.parametrize.register_parametrization(lin, "weight", SpectralBall())
    _fit(model, xtr, ytr, sigma, family, gen, SCALE)
    plain = lipschitz_mlp(family)
    with torch.no_grad():
        for src, dst in zip(linears, [m for m in plain if isinstance(m, nn.Linear)]):
            dst.weight.copy_(project(src.weight))
            dst.bias.copy_(src.bias)
    return plain.eval()


def _fit(model: nn.Module, xtr, ytr, sigma: float, family: str, gen, scale: float
         ) -> nn.Module:
    return fit_noisy(model, lambda z: scale * model(z), xtr, ytr, sigma, EPOCHS[family], gen)


def accuracy(model, x, y, sigma: float, copies: int = 20) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        noisy = sum((model(x + sigma * torch.randn(x.shape, generator=gen)).argmax(1) == y)
                    .float().mean().item() for _ in range(copies)) / copies
    return round(clean, 4), round(noisy, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("digits", "mnist1d"), default=None)
    ap.add_argument("--reference", action="store_true",
                    help="train only the unconstrained mnist1d-smooth-<sigma> references")
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    for k, family in enumerate(("digits", "mnist1d")):
        if args.only and family != args.only:
            continue
        xtr, ytr, xte, yte = data(family)
        for i, sigma in enumerate(SIGMAS):
            if args.reference:
                if family != "mnist1d":
                    continue
                name = reference_name(sigma)
                model = train(family, sigma, 100 + i, xtr, ytr, constrained=False)
            else:
                name = name_of(family, sigma)
                model = train(family, sigma, 10 * k + i, xtr, ytr)
            torch.save(model.state_dict(), WEIGHTS / f"{name}.pt")
            results[name] = accuracy(model, xte, yte, sigma)
            print(f"{name}: clean / noisy test accuracy {results[name]}", flush=True)
    print_accuracies(results)


if __name__ == "__main__":
    main()
