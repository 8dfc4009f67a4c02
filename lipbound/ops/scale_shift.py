"""The scale-shift y = x * scale + shift (BatchNorm in eval, input normalisation, products
and quotients with constants, negation), the ATen calls it converts, and its exact folds into
neighbouring affine ops (:mod:`lipbound.graph.normalize`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lipbound.ops.affine import _maybe_abs
from lipbound.ops.base import LinearOp, Params
from lipbound.ops.facts import SCALE, NormFact, WindowMap
from lipbound.ops.registry import register
from lipbound.ops.tracing import Var, as_per_sample, converts, one, per_sample_shape, unsupported


class ScaleShift(LinearOp):
    """y = x * scale + shift, with per-sample tensors broadcastable to x (BatchNorm in eval,
    input normalisation (x - mean) / std, multiplication/division by constants)."""

    kind = "scale_shift"
    exact_sums = True

    def window_map(self, params: Params, forward: bool = False) -> WindowMap:
        """A diagonal map: coefficients are scaled (either direction)."""
        return WindowMap(SCALE, scale=params["scale"])

    def backward_sum_terms(self, params, in_shapes, out_shape) -> int:
        return 1  # each coefficient of an input is one coefficient of the output (scaled)

    def rounded_ops(self, params: Params, in_shapes: Sequence[tuple[int, ...]]) -> int:
        """A multiply and an add; BatchNorm states its own count (``rounded_ops``: the
        kernel's subtraction, rsqrt, products and sums)."""
        return int(params.get("rounded_ops", 2))

    def magnitude(self, params: Params, x: Tensor) -> Tensor:
        """|scale| |x| + the magnitude of the shift's parts (``shift_mag``: BatchNorm's
        |mean scale| + |beta|, which its kernel sums separately), else |shift|."""
        m = self.apply_linear(params, x, absolute=True)
        shift = params.get("shift_mag", params.get("shift"))
        return m if shift is None else m + shift.abs()

    def apply_linear(self, params: Params, x: Tensor, absolute: bool = False) -> Tensor:
        return x * _maybe_abs(params["scale"], absolute)

    def offset(self, params: Params) -> Tensor | None:
        return params.get("shift")

    def vjp(self, params: Params, A: Tensor, in_shapes: Sequence[tuple[int, ...]]):
        return (A * params["scale"],)

    def flat_affine(self, params: Params, n_in: int, out_shape: tuple[int, ...]
                    ) -> tuple[Tensor, Tensor] | None:
        """diag(scale) x + shift on 1-D inputs."""
        if len(out_shape) != 1:
            return None
        scale = params["scale"].detach().double().reshape(-1).expand(n_in)
        shift = params.get("shift")
        b = (torch.zeros(n_in, dtype=torch.float64) if shift is None
             else shift.detach().double().reshape(-1).expand(n_in).clone())
        return torch.diag(scale), b

    def norm_fact(self, params: Params, index: int) -> NormFact:
        """A diagonal map: max |scale| in every norm."""
        return NormFact(every_p=float(params["scale"].double().abs().max()))

    # -- exact rewrites of the graph normaliser (:mod:`lipbound.graph.normalize`)
    #: folds into the op before it run first (before weight-matrix merges)
    fold_stage = 0

    def fold_after(self, params: Params, shape: tuple[int, ...], first: Any,
                   first_params: Params, first_shape: tuple[int, ...]
                   ) -> tuple[str, dict[str, Any]] | None:
        """``self(first(x))`` as one node ``(kind, params)``: two scale-shifts compose; a
        per-channel scale-shift after an op that can scale its output channels
        (``scale_output``: Linear, Conv) becomes that op; else None."""
        if isinstance(first, ScaleShift):
            return self.kind, _compose(first_params, params)
        scale_output = getattr(first, "scale_output", None)
        if scale_output is None:
            return None
        channels, spatial = shape[0], len(shape) - 1
        shift = params.get("shift")
        s_vec = _per_channel(torch.as_tensor(params["scale"]), channels, spatial)
        t_vec = None if shift is None else _per_channel(torch.as_tensor(shift), channels,
                                                        spatial)
        if s_vec is None or (shift is not None and t_vec is None):
            return None
        folded = scale_output(first_params, first_shape, s_vec, t_vec)
        return None if folded is None else (first.kind, folded)

    def diagonal(self, params: Params) -> tuple[Any, Any]:
        """(scale, shift): what an op after it may absorb into its input (a Linear across
        flattens, ``absorb_input_scale``)."""
        return params["scale"], params.get("shift")


def _per_channel(t: Tensor, channels: int, spatial: int) -> Tensor | None:
    """t as a [channels] vector if it broadcasts per channel over [C, *spatial], else None."""
    if t.dim() == 0:
        return t.expand(channels).clone()
    if t.dim() > spatial + 1:
        return None
    shape = (1,) * (spatial + 1 - t.dim()) + tuple(t.shape)
    if any(s != 1 for s in shape[1:]) or shape[0] not in (1, channels):
        return None
    return t.reshape(-1).expand(channels).clone()


def _compose(first: Params, second: Params) -> dict[str, Any]:
    """The params of ``second(first(x))``."""
    s1, s2 = torch.as_tensor(first["scale"]), torch.as_tensor(second["scale"])
    t1, t2 = first.get("shift"), second.get("shift")
    shift = None
    if t1 is not None:
        shift = torch.as_tensor(t1) * s2
    if t2 is not None:
        shift = torch.as_tensor(t2) if shift is None else shift + t2
    return {"scale": s1 * s2, "shift": shift}


register(ScaleShift())


# -- ATen converters (lipbound.ops.tracing)

def _batch_norm_params(fx, x, w, bias, mean, var, eps):
    if any(isinstance(t, Var) for t in (w, bias, mean, var)):
        raise unsupported(fx, "batch-norm statistics depend on the input")
    var, mean = var.double(), mean.double()  # exact: the stored float32 values, in float64
    scale = 1.0 / torch.sqrt(var + eps)
    if w is not None:
        scale = scale * w.double()
    beta = torch.zeros_like(mean) if bias is None else bias.double()
    shift = -mean * scale + beta
    extra = len(x.shape) - 1
    shape = (-1,) + (1,) * extra
    # the kernel's own rounding: rsqrt(var + eps), the products and the sums (8 operations)
    # on |x scale| + |mean scale| + |beta| (float error rule of scale_shift)
    shift_mag = (mean * scale).abs() + beta.abs()
    return {"scale": scale.reshape(shape), "shift": shift.reshape(shape),
            "shift_mag": shift_mag.reshape(shape), "rounded_ops": 8}


@converts("aten.batch_norm.default")
def _batch_norm(b, fx, x, w, bias, mean, var, training=False, momentum=0.1, eps=1e-5,
                cudnn=False):
    if training:
        raise unsupported(fx, "batch norm with the batch's own statistics (training mode, or "
                              "track_running_stats=False); call model.eval()")
    b.add(fx, "scale_shift", [x], _batch_norm_params(fx, x, w, bias, mean, var, eps))


@converts("aten._native_batch_norm_legit_no_training.default")
def _bn_no_training(b, fx, x, w, bias, mean, var, momentum, eps):
    var_ = b.add(fx, "scale_shift", [x], _batch_norm_params(fx, x, w, bias, mean, var, eps),
                 shape=x.shape)
    b.vars[fx.name] = (var_, None, None)


@converts("aten.native_batch_norm.default")
def _native_batch_norm(b, fx, x, w, bias, mean, var, training, momentum, eps):
    """``aten.native_batch_norm``, what ``F.batch_norm`` runs below autograd (recorded
    forward passes): in eval mode the same scale-shift as the exported form."""
    if training:
        raise unsupported(fx, "batch norm with the batch's own statistics (training mode, or "
                              "track_running_stats=False); call model.eval()")
    _bn_no_training(b, fx, x, w, bias, mean, var, momentum, eps)


@converts("aten.neg.default")
def _neg(b, fx, x):
    b.add(fx, "scale_shift", [x], {"scale": torch.tensor(-1.0, dtype=torch.float64),
                                   "shift": None})


@converts("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(b, fx, x, other, alpha=1):
    """other - alpha * x for a constant ``other``."""
    if not isinstance(x, Var) or isinstance(other, Var):
        raise unsupported(fx, "rsub needs an input-dependent tensor and a constant")
    c = as_per_sample(other, fx, len(per_sample_shape(fx)))
    b.add(fx, "scale_shift", [x], {"scale": -float(alpha) * one(c), "shift": c})
