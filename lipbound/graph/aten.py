"""The ATen -> lipbound op table used by the tracer.

Each handler turns one exported ATen call whose value depends on the input into lipbound
nodes. Calls on constants only are evaluated right away. Activation spellings are
canonicalised here: ``relu``, ``clamp(min=0)``, ``clamp_min(0)`` and ``leaky_relu(0)`` all
become the op kind ``relu``; ``hardtanh``, ``relu6`` and ``clamp`` with both limits become one
piecewise-linear ``pwl`` node, a clamp with one limit a shifted ReLU; ``sqrt``, ``rsqrt``,
``reciprocal`` and ``pow`` with a constant exponent become ``pow`` (``x ** 2`` and ``x * x``:
``square``); ``neg`` is a ``scale_shift``; min is ``-max(-x)``; products and quotients of two
input-dependent tensors become ``mul`` (with ``pow(-1)`` for a divisor) after explicit
broadcasts, and a matrix product of two of them ``mul`` then ``sum`` over the inner dimension;
softmax, log-softmax, LayerNorm, RMSNorm, GroupNorm, var and std stay single composite nodes
that the normaliser lowers (:mod:`lipbound.ops.composite`).

This module holds the table (:data:`HANDLERS`) and :func:`convert_node`; the handlers live by
family in ``aten_affine`` (linear, conv, batch norm, arithmetic), ``aten_activations``,
``aten_shape`` (shapes, pooling, reductions) and ``aten_composite`` (softmax, norms, var,
attention), the conversion state and shared helpers in ``aten_builder``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lipbound.errors import UnsupportedOperationError
from lipbound.graph.aten_activations import (
    _clamp,
    _clamp_max,
    _clamp_min,
    _elu,
    _gelu,
    _hardsigmoid,
    _hardtanh,
    _leaky_relu,
    _pow,
    _power,
    _relu,
    _relu6,
    _softplus,
    _unary,
)
from lipbound.graph.aten_affine import (
    _addmm,
    _batch_norm,
    _binary,
    _bn_no_training,
    _conv_transpose,
    _convnd,
    _convolution,
    _linear,
    _matmul,
    _native_batch_norm,
    _neg,
    _rsub,
)
from lipbound.graph.aten_builder import SUPPORTED, Builder, Var, where_of
from lipbound.graph.aten_composite import (
    _group_norm,
    _layer_norm,
    _native_group_norm,
    _native_layer_norm,
    _rms_norm,
    _sdpa,
    _softmax,
    _variance,
)
from lipbound.graph.aten_shape import (
    _adaptive_avg_pool1d,
    _adaptive_avg_pool2d,
    _amax,
    _amin,
    _avg_pool1d,
    _avg_pool2d,
    _cat,
    _chunk,
    _constant_pad,
    _dropout,
    _expand,
    _flip,
    _identity,
    _max_dim,
    _max_pool2d,
    _max_pool2d_with_indices,
    _mean,
    _min_dim,
    _pad,
    _permute,
    _reshape,
    _select,
    _slice,
    _split,
    _split_sizes,
    _sum,
    _transpose,
    _upsample_nearest,
    _upsample_nearest2d,
)


def convert_node(b: Builder, fx: torch.fx.Node) -> None:
    """Convert one exported call: fold it if constant, else dispatch to its handler."""
    args, kwargs = b.resolve(fx.args), b.resolve(fx.kwargs)
    flat = list(args) + list(kwargs.values())
    flat = [v for a in flat for v in (a if isinstance(a, (list, tuple)) else [a])]
    if not any(isinstance(a, Var) for a in flat):
        b.consts[fx.name] = fx.target(*args, **kwargs)
        return
    if fx.target is operator.getitem:
        src, idx = args
        if isinstance(src, tuple):
            b.alias(fx, src[idx])
            return
    handler = HANDLERS.get(str(fx.target))
    if handler is None:
        raise UnsupportedOperationError(
            str(fx.target), where_of(fx), SUPPORTED,
            hint="Rewrite the model with supported operators or open an issue.")
    # constants made in forward (torch.ones, torch.eye, ...) come in the model's dtype; the
    # graph's parameters are float64 (exact widening), so that rewrites round in float64
    handler(b, fx, *_float64(args), **_float64(kwargs))


def _float64(a: Any) -> Any:
    """Floating constant tensors in ``a`` (nested lists/tuples/dicts) widened to float64."""
    if isinstance(a, Tensor):
        return a.double() if a.is_floating_point() else a
    if isinstance(a, (list, tuple)):
        return type(a)(_float64(v) for v in a)
    if isinstance(a, dict):
        return {k: _float64(v) for k, v in a.items()}
    return a


HANDLERS: dict[str, Callable] = {
    "aten.linear.default": _linear,
    "aten.addmm.default": _addmm,
    "aten.mm.default": _matmul,
    "aten.matmul.default": _matmul,
    "aten.conv1d.default": _convnd,
    "aten.conv2d.default": _convnd,
    "aten.convolution.default": _convolution,
    "aten.conv_transpose2d.input": _conv_transpose,
    "aten.batch_norm.default": _batch_norm,
    "aten._native_batch_norm_legit_no_training.default": _bn_no_training,
    "aten.native_batch_norm.default": _native_batch_norm,
    "aten.add.Tensor": _binary("add"),
    "aten.sub.Tensor": _binary("sub"),
    "aten.mul.Tensor": _binary("mul"),
    "aten.div.Tensor": _binary("div"),
    "aten.relu.default": _relu,
    "aten.relu_.default": _relu,
    "aten.clamp.default": _clamp,
    "aten.clamp_min.default": _clamp_min,
    "aten.leaky_relu.default": _leaky_relu,
    "aten.sigmoid.default": _unary("sigmoid"),
    "aten.tanh.default": _unary("tanh"),
    "aten.silu.default": _unary("silu"),
    "aten.gelu.default": _gelu,
    "aten.softplus.default": _softplus,
    "aten.elu.default": _elu,
    "aten.view.default": _reshape,
    "aten.reshape.default": _reshape,
    "aten._unsafe_view.default": _reshape,
    "aten.flatten.using_ints": _reshape,
    "aten.unsqueeze.default": _reshape,
    "aten.squeeze.dim": _reshape,
    "aten.squeeze.dims": _reshape,
    "aten.contiguous.default": _identity,
    "aten.clone.default": _identity,
    "aten.alias.default": _identity,
    "aten.detach.default": _identity,
    "aten.dropout.default": _dropout,
    "aten.permute.default": _permute,
    "aten.transpose.int": _transpose,
    "aten.cat.default": _cat,
    "aten.slice.Tensor": _slice,
    "aten.select.int": _select,
    "aten.pad.default": _pad,
    "aten.constant_pad_nd.default": _constant_pad,
    "aten.avg_pool2d.default": _avg_pool2d,
    "aten.avg_pool1d.default": _avg_pool1d,
    "aten.adaptive_avg_pool2d.default": _adaptive_avg_pool2d,
    "aten.mean.dim": _mean,
    "aten.max_pool2d.default": _max_pool2d,
    "aten.max_pool2d_with_indices.default": _max_pool2d_with_indices,
    "aten.bmm.default": _matmul,
    "aten.neg.default": _neg,
    "aten.abs.default": _unary("abs"),
    "aten.clamp_max.default": _clamp_max,
    "aten.hardtanh.default": _hardtanh,
    "aten.relu6.default": _relu6,
    "aten.hardsigmoid.default": _hardsigmoid,
    "aten.hardswish.default": _unary("hardswish"),
    "aten.exp.default": _unary("exp"),
    "aten.log.default": _unary("log"),
    "aten.sqrt.default": _power(0.5),
    "aten.rsqrt.default": _power(-0.5),
    "aten.reciprocal.default": _power(-1.0),
    "aten.pow.Tensor_Scalar": _pow,
    "aten.square.default": _unary("square"),
    "aten.sum.dim_IntList": _sum,
    "aten.amax.default": _amax,
    "aten.amin.default": _amin,
    "aten.max.dim": _max_dim,
    "aten.min.dim": _min_dim,
    "aten.expand.default": _expand,
    "aten.flip.default": _flip,
    "aten.var.dim": _variance(False),
    "aten.var.correction": _variance(False),
    "aten.std.dim": _variance(True),
    "aten.std.correction": _variance(True),
    "aten.rsub.Scalar": _rsub,
    "aten.rsub.Tensor": _rsub,
    "aten.chunk.default": _chunk,
    "aten.scaled_dot_product_attention.default": _sdpa,
    "aten.split.Tensor": _split,
    "aten.split_with_sizes.default": _split_sizes,
    "aten.softmax.int": _softmax(False),
    "aten._softmax.default": _softmax(False),
    "aten.log_softmax.int": _softmax(True),
    "aten._log_softmax.default": _softmax(True),
    "aten.layer_norm.default": _layer_norm,
    "aten.native_layer_norm.default": _native_layer_norm,
    "aten.rms_norm.default": _rms_norm,
    "aten.group_norm.default": _group_norm,
    "aten.native_group_norm.default": _native_group_norm,
    "aten.adaptive_avg_pool1d.default": _adaptive_avg_pool1d,
    "aten._adaptive_avg_pool2d.default": _adaptive_avg_pool2d,
    "aten.upsample_nearest2d.vec": _upsample_nearest,
    "aten.upsample_nearest1d.vec": _upsample_nearest,
    "aten.upsample_nearest2d.default": _upsample_nearest2d,
}


SUPPORTED.extend(sorted(HANDLERS))
