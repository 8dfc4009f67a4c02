"""Load the inputs named on the command line.

An input source is

- a ``.npy`` file (an array ``[N, *in]``), a ``.npz`` file (arrays ``x`` or ``X``, optional ``y``)
  or a ``.pt`` file (a tensor, or a dict with ``x``/``X`` and optional ``y``), read without
  pickle; labels may also come from ``--labels FILE`` (.npy / .pt);
- a data-set name, optionally with a split: ``digits`` (= ``digits:test``), ``digits:train``,
  ``breast_cancer``, ``diabetes``, ``mnist1d`` (the preprocessing of the shipped models; see
  :data:`DATASETS`).

:func:`select` picks rows (``"0,3,7"``, ``"0:10"``, ``"all"``) and :func:`fit_shape` reshapes
rows to a model's per-sample input shape when only the layout differs ([64] -> [1, 8, 8]).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from lipbound.errors import InputError, ShapeError
from lipbound.models.diabetes import FEATURES, diabetes_data
from lipbound.models.digits import digits_data
from lipbound.models.mnist1d import mnist1d_data


@dataclass(frozen=True)
class Inputs:
    """Rows ``X`` [N, *in] (float32), optional labels ``y`` [N], and what is known about them."""

    X: torch.Tensor
    y: torch.Tensor | None
    name: str
    data_range: tuple[float, float] | None = None
    feature_names: tuple[str, ...] | None = None
    indices: tuple[int, ...] | None = None  # row numbers in the source, after select()


def _digits(split: str):
    return digits_data(), (0.0, 1.0), None


def _diabetes(split: str):
    return diabetes_data(), None, tuple(FEATURES)


def _breast_cancer(split: str):
    """Standardised with the training split's mean/std (split: test_size 0.25, seed 0,
    stratified); labels 0 = malignant, 1 = benign."""
    from sklearn.datasets import load_breast_cancer  # deferred: heavy optional dependency (sklearn)
    from sklearn.model_selection import train_test_split

    d = load_breast_cancer()
    Xtr, Xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.25, random_state=0,
                                          stratify=d.target)
    mu, sd = Xtr.mean(0), Xtr.std(0)
    f = lambda a: torch.tensor((a - mu) / sd, dtype=torch.float32)  # noqa: E731
    g = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return (f(Xtr), g(ytr), f(Xte), g(yte)), None, tuple(map(str, d.feature_names))


def _mnist1d(split: str):
    return mnist1d_data(), None, None


DATASETS: dict[str, Callable] = {"digits": _digits, "diabetes": _diabetes,
                                 "breast_cancer": _breast_cancer, "mnist1d": _mnist1d}


def _dataset(name: str) -> Inputs:
    base, _, split = name.partition(":")
    split = split or "test"
    if split not in ("train", "test"):
        raise InputError(f"data set {name!r}: split must be 'train' or 'test', got {split!r}")
    (Xtr, ytr, Xte, yte), data_range, features = DATASETS[base](split)
    X, y = (Xtr, ytr) if split == "train" else (Xte, yte)
    return Inputs(X.float(), y, f"{base}:{split}", data_range, features)


def _read_array(path: Path, what: str) -> dict[str, torch.Tensor]:
    """``{"x": ..., "y": ...}`` (y optional) from a .npy/.npz/.pt file."""
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    try:
        if path.suffix == ".npy":
            return {"x": torch.from_numpy(np.load(path, allow_pickle=False))}
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k.lower(): torch.from_numpy(z[k]) for k in z.files}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"cannot read {what} file {path}: {type(exc).__name__}: "
                         f"{str(exc)[:200]}") from None
    if isinstance(obj, torch.Tensor):
        return {"x": obj}
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k).lower(): v for k, v in obj.items()}
    raise InputError(f"{path} must hold a tensor or a dict of tensors (x, y)")


def load_inputs(source: str, labels: str | None = None) -> Inputs:
    """Inputs from a file or a data-set name (see the module docstring)."""
    base = source.partition(":")[0]
    if base in DATASETS and not Path(source).exists():
        inputs = _dataset(source)
    else:
        path = Path(source)
        if path.suffix not in (".npy", ".npz", ".pt"):
            raise InputError(f"input source {source!r} is neither a .npy/.npz/.pt file nor a "
                             f"data set ({', '.join(DATASETS)}, optionally :train or :test)")
        arrays = _read_array(path, "input")
        if "x" not in arrays:
            raise InputError(f"{path} has no array named x (found {sorted(arrays)})")
        inputs = Inputs(arrays["x"], arrays.get("y"), path.name)
    if labels is not None:
        inputs = replace(inputs, y=_read_array(Path(labels), "labels")["x"])
    return _checked(inputs)


def _checked(inputs: Inputs) -> Inputs:
    X = inputs.X
    if not (X.is_floating_point() or X.dtype in (torch.int32, torch.int64, torch.uint8)):
        raise InputError(f"inputs of {inputs.name} have dtype {X.dtype}; expected numbers")
    X = X.float()
    if X.dim() < 1 or X.shape[0] == 0:
        raise ShapeError(f"inputs of {inputs.name} must be [N, *in] with N >= 1, got "
                         f"{list(X.shape)}")
    if X.dim() == 1:
        X = X.unsqueeze(0)
    if not torch.isfinite(X).all():
        raise InputError(f"inputs of {inputs.name} contain NaN or inf")
    y = inputs.y
    if y is not None:
        y = y.reshape(-1)
        if y.shape[0] != X.shape[0]:
            raise ShapeError(f"{y.shape[0]} labels for {X.shape[0]} inputs in {inputs.name}")
    return replace(inputs, X=X, y=y)


class DefaultRows(str):
    """A subcommand's default ``--index`` (e.g. ``"0:20"``): its range ``A:B`` stops at the
    last row of smaller inputs, where a range the user gives must lie inside the inputs."""


def parse_indices(spec: str, n: int) -> list[int]:
    """Row numbers from ``"all"``, ``"3"``, ``"0,4,9"`` or ``"a:b"`` (checked against n;
    a :class:`DefaultRows` range is cut at n instead)."""
    clip = isinstance(spec, DefaultRows)
    spec = str(spec).strip()
    stop = 0
    try:
        if spec == "all":
            idx = list(range(n))
        elif ":" in spec:
            a, _, b = spec.partition(":")
            stop = int(b) if b else n
            idx = list(range(int(a or 0), min(stop, n)))
        else:
            idx = [int(t) for t in spec.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--index {spec!r}: expected 'all', N, N,M,... or A:B") from None
    if stop > n and not clip:
        raise InputError(f"--index {spec!r} goes past the last row: the inputs have {n} rows "
                         f"(0..{n - 1})")
    bad = [i for i in idx if not 0 <= i < n]
    if bad or not idx:
        raise InputError(f"--index {spec!r} selects {'no rows' if not idx else bad[:5]}; the "
                         f"inputs have {n} rows (0..{n - 1})")
    return idx


def select(inputs: Inputs, spec: str) -> Inputs:
    """The rows named by ``spec`` (see :func:`parse_indices`)."""
    idx = parse_indices(spec, inputs.X.shape[0])
    t = torch.tensor(idx)
    return replace(inputs, X=inputs.X[t], y=None if inputs.y is None else inputs.y[t],
                   indices=tuple(idx))


def fit_shape(inputs: Inputs, input_shape: tuple[int, ...] | None) -> Inputs:
    """Reshape rows to ``input_shape`` when only the layout differs; ShapeError otherwise."""
    if input_shape is None or tuple(inputs.X.shape[1:]) == tuple(input_shape):
        return inputs
    if inputs.X[0].numel() != math.prod(input_shape):
        raise ShapeError(f"inputs of {inputs.name} have per-sample shape "
                         f"{list(inputs.X.shape[1:])}; the model expects {list(input_shape)}")
    return replace(inputs, X=inputs.X.reshape(-1, *input_shape))
