"""A frozen description of a ReLU / LeakyReLU multi-layer perceptron.

The network is

    f(x) = W_L h_{L-1} + b_L,   h_i = act_i(z_i),   z_i = W_i h_{i-1} + b_i,   h_0 = x,

with act_i = LeakyReLU(k_i) (k_i = 0 is ReLU).  Its activation *pattern* at a point is, per hidden
layer, a boolean vector ``active`` (True: derivative 1, False: derivative k_i).  The chain-rule
gradient of g = c . f for a pattern is

    W_1^T D_1 W_2^T D_2 ... D_{L-1} W_L^T c,   D_i = diag(delta_i), delta_i = 1 if active else k_i.

A pattern is *consistent* with x (closed semantics, the Clarke superset the exact solvers use) when
every active neuron has z >= 0 and every inactive one z <= 0; at z = 0 both choices are allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lipbound.errors import ShapeError, SpecError, UnsupportedModelError

Pattern = tuple[np.ndarray, ...]
"""One boolean vector per hidden layer: True = active (derivative 1), False = derivative k."""

_SUPPORTED = ("Flatten", "Linear", "ReLU", "LeakyReLU", "Identity", "Sequential")


def _as_f64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    return np.array(a, dtype=np.float64, copy=True)


@dataclass(frozen=True, eq=False)
class MLP:
    """Immutable float64 description of a ReLU/LeakyReLU MLP (see the module docstring).

    ``weights[i]`` has shape [n_{i+1}, n_i], ``biases[i]`` shape [n_{i+1}];
    ``negative_slopes[i]`` is the slope k of the activation after layer i (one per hidden layer,
    so ``len(negative_slopes) == len(weights) - 1``; 0.0 is ReLU).  Arrays are read-only copies.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    negative_slopes: tuple[float, ...]

    def __post_init__(self) -> None:
        ws = tuple(_as_f64(w) for w in self.weights)
        bs = tuple(_as_f64(b) for b in self.biases)
        ks = tuple(float(k) for k in self.negative_slopes)
        if len(ws) == 0:
            raise UnsupportedModelError("an MLP needs at least one Linear layer")
        if len(bs) != len(ws):
            raise ShapeError(f"{len(ws)} weight matrices but {len(bs)} bias vectors")
        if len(ks) != len(ws) - 1:
            raise ShapeError(
                f"{len(ws)} layers need {len(ws) - 1} negative slopes, got {len(ks)}"
            )
        for i, (w, b) in enumerate(zip(ws, bs)):
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ShapeError(f"layer {i}: weight {w.shape} and bias {b.shape} do not match")
            if i > 0 and w.shape[1] != ws[i - 1].shape[0]:
                raise ShapeError(
                    f"layer {i} expects {w.shape[1]} inputs, layer {i - 1} gives "
                    f"{ws[i - 1].shape[0]}"
                )
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise UnsupportedModelError(f"layer {i} has non-finite weights or biases")
        for k in ks:
            if not np.isfinite(k) or k < 0:
                raise UnsupportedModelError(
                    f"LeakyReLU negative_slope must be finite and >= 0 (monotone), got {k}"
                )
        for a in ws + bs:
            a.setflags(write=False)
        object.__setattr__(self, "weights", ws)
        object.__setattr__(self, "biases", bs)
        object.__setattr__(self, "negative_slopes", ks)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sequential(cls, model: nn.Module) -> MLP:
        """Read an ``nn.Sequential`` of Flatten / Linear / ReLU / LeakyReLU (nested Sequentials
        and Identity allowed).  Consecutive Linear layers are folded into one (same function, same
        gradients).  Anything else raises UnsupportedModelError naming the layer."""
        if not isinstance(model, nn.Sequential):
            raise UnsupportedModelError(
                f"expected an nn.Sequential MLP, got {type(model).__name__}; "
                f"supported layers: {', '.join(_SUPPORTED)}"
            )
        layers: list[tuple[str, nn.Module]] = []

        def walk(mod: nn.Sequential, prefix: str) -> None:
            # iterate the container itself: named_children() hides a module instance that is
            # used twice (e.g. one shared nn.ReLU object), which would merge two Linear layers
            for name, child in zip(mod._modules, mod):
                where = f"{prefix}{name}"
                if isinstance(child, nn.Sequential):
                    walk(child, where + ".")
                else:
                    layers.append((where, child))

        walk(model, "")
        weights: list[np.ndarray] = []
        biases: list[np.ndarray] = []
        slopes: list[float] = []
        pending_affine = False  # last thing seen was a Linear (not yet followed by activation)
        for where, layer in layers:
            if isinstance(layer, nn.Identity):
                continue
            if isinstance(layer, nn.Flatten):
                if layer.start_dim != 1 or layer.end_dim != -1:
                    raise UnsupportedModelError(
                        f"layer {where} (Flatten(start_dim={layer.start_dim}, "
                        f"end_dim={layer.end_dim})): only Flatten(1, -1) is supported"
                    )
                continue
            if isinstance(layer, nn.Linear):
                w = _as_f64(layer.weight)
                b = _as_f64(layer.bias) if layer.bias is not None else np.zeros(w.shape[0])
                if pending_affine:  # fold W2 (W1 h + b1) + b2
                    weights[-1] = w @ weights[-1]
                    biases[-1] = w @ biases[-1] + b
                else:
                    weights.append(w)
                    biases.append(b)
                pending_affine = True
                continue
            if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
                if not pending_affine:
                    raise UnsupportedModelError(
                        f"layer {where} ({type(layer).__name__}) must follow a Linear layer"
                    )
                k = 0.0 if isinstance(layer, nn.ReLU) else float(layer.negative_slope)
                slopes.append(k)
                pending_affine = False
                continue
            raise UnsupportedModelError(
                f"layer {where} ({type(layer).__name__}) is not supported by the exact solvers; "
                f"supported layers: {', '.join(_SUPPORTED)}"
            )
        if not weights:
            raise UnsupportedModelError("the model has no Linear layer")
        if not pending_affine:
            raise UnsupportedModelError("the last layer must be Linear (f = W_L h + b_L)")
        return cls(tuple(weights), tuple(biases), tuple(slopes))

    # ------------------------------------------------------------------ shape information
    @property
    def in_features(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weights[-1].shape[0])

    @property
    def num_hidden_layers(self) -> int:
        return len(self.weights) - 1

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return tuple(int(w.shape[0]) for w in self.weights[:-1])

    # ------------------------------------------------------------------ helpers
    def flat_input(self, x) -> np.ndarray:
        """x of any shape with ``in_features`` elements (e.g. [n], [1, n], [1, 8, 8]) -> [n]."""
        a = _as_f64(x).reshape(-1)
        if a.size != self.in_features:
            raise ShapeError(
                f"input has {a.size} elements, the model expects {self.in_features}"
            )
        return a

    def spec_row(self, c) -> np.ndarray:
        """Spec row c of length K ([K] or [1, K]); None is allowed only when K == 1."""
        if c is None:
            if self.out_features != 1:
                raise SpecError(
                    f"the model has {self.out_features} outputs: pass a spec row c of length "
                    f"{self.out_features}"
                )
            return np.ones(1)
        a = _as_f64(c)
        if a.ndim == 2 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 1 or a.shape[0] != self.out_features:
            raise SpecError(
                f"spec row must have shape [{self.out_features}] (one row), got {tuple(a.shape)}"
            )
        if not np.all(np.isfinite(a)):
            raise SpecError("spec row has non-finite entries")
        return a

    def preactivations(self, x) -> list[np.ndarray]:
        """Pre-activations z_1 .. z_{L-1} of the hidden layers at one point x."""
        h = self.flat_input(x)
        zs = []
        for w, b, k in zip(self.weights[:-1], self.biases[:-1], self.negative_slopes):
            z = w @ h + b
            zs.append(z)
            h = np.where(z > 0, z, k * z)
        return zs

    def pattern_at(self, x) -> Pattern:
        """The pattern autograd uses at x: active iff z > 0 (ties z == 0 count as inactive)."""
        return tuple(z > 0 for z in self.preactivations(x))

    def check_pattern(self, pattern: Sequence) -> Pattern:
        if len(pattern) != self.num_hidden_layers:
            raise ShapeError(
                f"pattern needs {self.num_hidden_layers} layers, got {len(pattern)}"
            )
        out = []
        for i, (p, n) in enumerate(zip(pattern, self.hidden_sizes)):
            a = np.asarray(p.detach().cpu().numpy() if isinstance(p, torch.Tensor) else p)
            if a.shape != (n,):
                raise ShapeError(f"pattern layer {i} must have shape [{n}], got {a.shape}")
            out.append(a.astype(bool))
        return tuple(out)

    def pattern_violation(self, x, pattern: Sequence) -> float:
        """Largest amount by which x violates the closed consistency of ``pattern``:
        max over active neurons of -z and over inactive ones of z (<= 0 means consistent)."""
        pattern = self.check_pattern(pattern)
        worst = -np.inf
        h = self.flat_input(x)
        for w, b, k, p in zip(self.weights[:-1], self.biases[:-1], self.negative_slopes, pattern):
            z = w @ h + b
            if z.size:
                worst = max(worst, float(np.max(np.where(p, -z, z))))
            h = np.where(p, z, k * z)  # same as act(z) when the pattern is consistent
        return worst

    def slopes_of(self, pattern: Sequence) -> list[np.ndarray]:
        """delta_i per hidden layer: 1 for active neurons, k_i for inactive ones."""
        pattern = self.check_pattern(pattern)
        return [np.where(p, 1.0, k) for p, k in zip(pattern, self.negative_slopes)]

    def gradient_for_pattern(self, pattern: Sequence, c=None) -> np.ndarray:
        """W_1^T D_1 ... W_L^T c for a given pattern (float64, shape [in_features])."""
        c = self.spec_row(c)
        a = self.weights[-1].T @ c
        for w, d in zip(reversed(self.weights[:-1]), reversed(self.slopes_of(pattern))):
            a = w.T @ (d * a)
        return a

    def gradients_batch(self, X: np.ndarray, c=None) -> np.ndarray:
        """Chain-rule gradients of c . f at the rows of X ([B, n] -> [B, n]), with the pattern
        autograd uses (ties inactive)."""
        c = self.spec_row(c)
        H = np.asarray(X, dtype=np.float64).reshape(-1, self.in_features)
        slopes = []
        for w, b, k in zip(self.weights[:-1], self.biases[:-1], self.negative_slopes):
            Z = H @ w.T + b
            D = np.where(Z > 0, 1.0, k)
            slopes.append(D)
            H = D * Z
        A = np.broadcast_to(self.weights[-1].T @ c, (H.shape[0], H.shape[1]))
        for w, D in zip(reversed(self.weights[:-1]), reversed(slopes)):
            A = (D * A) @ w
        return A

    # ------------------------------------------------------------------ evaluation
    def forward(self, x) -> torch.Tensor:
        """f(x) in float64: x of shape [n] gives [K]; [B, n] or [B, *in] gives [B, K]."""
        t = torch.as_tensor(x, dtype=torch.float64)
        single = t.dim() == 1
        h = t.reshape(1, -1) if single else t.reshape(t.shape[0], -1)
        if h.shape[1] != self.in_features:
            raise ShapeError(f"input rows have {h.shape[1]} elements, expected {self.in_features}")
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ torch.from_numpy(w.copy()).T + torch.from_numpy(b.copy())
            if i < self.num_hidden_layers:
                h = torch.nn.functional.leaky_relu(h, self.negative_slopes[i])
        return h[0] if single else h

    def gradient(self, x, c=None, pattern: Sequence | None = None) -> torch.Tensor:
        """Chain-rule gradient of c . f at x (float64, shape [in_features]).

        Without ``pattern`` it uses the pattern autograd uses (z > 0 active; ties inactive);
        with ``pattern`` it uses that pattern (the caller asserts it is consistent with x; see
        :meth:`pattern_violation`)."""
        if pattern is None:
            pattern = self.pattern_at(x)
        else:
            self.flat_input(x)
        return torch.from_numpy(self.gradient_for_pattern(pattern, c).copy())

    def to_sequential(self, inplace: bool = False) -> nn.Sequential:
        """An equivalent float64 nn.Sequential (handy for autograd cross-checks); with
        ``inplace`` its activations overwrite their inputs (a faster forward pass on large
        batches, e.g. for screening sampled points)."""
        mods: list[nn.Module] = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            lin = nn.Linear(w.shape[1], w.shape[0]).to(torch.float64)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w.copy()))
                lin.bias.copy_(torch.from_numpy(b.copy()))
            mods.append(lin)
            if i < self.num_hidden_layers:
                k = self.negative_slopes[i]
                mods.append(nn.ReLU(inplace) if k == 0.0 else nn.LeakyReLU(k, inplace))
        return nn.Sequential(*mods).eval()


def as_mlp(model) -> MLP:
    """An MLP from an MLP or an nn.Sequential (anything else: UnsupportedModelError)."""
    return model if isinstance(model, MLP) else MLP.from_sequential(model)
