"""ATen handlers of composite ops that stay single nodes for the normaliser to lower
(:mod:`lipbound.ops.composite`): softmax and log-softmax, var and std, LayerNorm, RMSNorm,
GroupNorm; and scaled dot-product attention, lowered here to products of activations and a
softmax node.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lipbound.graph.aten_affine import _matmul_vars
from lipbound.graph.aten_builder import (
    Var,
    _as_per_sample,
    _dims,
    _unsupported,
)


def _sdpa(b, fx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    """scaled_dot_product_attention: softmax(q k^T * scale + mask) v, lowered to matrix
    products of activations and a softmax node (float masks only)."""
    if not all(isinstance(t, Var) for t in (q, k, v)):
        raise _unsupported(fx, "attention needs input-dependent queries, keys and values")
    if is_causal or float(dropout_p) != 0.0 or enable_gqa or isinstance(attn_mask, Var) or (
            isinstance(attn_mask, Tensor) and attn_mask.dtype == torch.bool):
        raise _unsupported(fx, "attention is supported without dropout, causal or boolean "
                               "masks (give an additive float mask instead)")
    nd = len(k.shape)
    swap = tuple(range(nd - 2)) + (nd - 1, nd - 2)
    kt = b.aux(fx, "kt", "permute", [k], tuple(k.shape[i] for i in swap), {"dims": swap})
    scores = _matmul_vars(b, fx, q, kt, "scores")
    c = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    shift = None
    if attn_mask is not None:
        shift = _as_per_sample(attn_mask, fx, len(scores.shape)).to(torch.float64)
        if not bool(torch.isfinite(shift).all()):
            raise _unsupported(fx, "attention masks with infinite entries are not supported")
    scaled = b.aux(fx, "scaled", "scale_shift", [scores], scores.shape,
                   {"scale": torch.tensor(c, dtype=torch.float64), "shift": shift})
    att = b.aux(fx, "softmax", "softmax", [scaled], scores.shape,
                {"dim": len(scores.shape) - 1, "log": False})
    _matmul_vars(b, fx, att, v)


def _variance(sqrt: bool) -> Callable:
    def handler(b, fx, x, dims=None, unbiased=None, keepdim=False, *, correction=None):
        if isinstance(dims, bool):  # var(x, unbiased) spelling
            dims, unbiased = None, dims
        corr = correction if correction is not None else (
            0.0 if unbiased is False else 1.0)
        b.add(fx, "var", [x], {"dims": _dims(fx, x, dims), "correction": float(corr),
                               "keepdim": bool(keepdim), "sqrt": sqrt})

    return handler


def _softmax(log: bool) -> Callable:
    def handler(b, fx, x, dim, *_, **__):
        d = _dims(fx, x, dim)
        b.add(fx, "softmax", [x], {"dim": d[0], "log": log})

    return handler


def _const_param(fx, t, what: str):
    if isinstance(t, Var):
        raise _unsupported(fx, f"the {what} depends on the input")
    return None if t is None else t.detach()


def _layer_norm(b, fx, x, normalized_shape, weight=None, bias=None, eps=1e-5,
                cudnn_enable=True):
    b.add(fx, "layer_norm", [x], {"ndim": len(normalized_shape), "eps": float(eps),
                                  "weight": _const_param(fx, weight, "weight"),
                                  "bias": _const_param(fx, bias, "bias")})


def _native_layer_norm(b, fx, x, normalized_shape, weight, bias, eps):
    shape = tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    var = b.add(fx, "layer_norm", [x], {"ndim": len(normalized_shape), "eps": float(eps),
                                        "weight": _const_param(fx, weight, "weight"),
                                        "bias": _const_param(fx, bias, "bias")}, shape=shape)
    b.vars[fx.name] = (var, None, None)


def _rms_norm(b, fx, x, normalized_shape, weight=None, eps=None):
    if eps is None:
        eps = torch.finfo(fx.args[0].meta["val"].dtype).eps
    b.add(fx, "rms_norm", [x], {"ndim": len(normalized_shape), "eps": float(eps),
                                "weight": _const_param(fx, weight, "weight"), "bias": None})


def _channel(t, x: Var):
    return None if t is None else t.reshape(-1, *([1] * (len(x.shape) - 1)))


def _group_norm(b, fx, x, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    b.add(fx, "group_norm", [x], {"groups": int(num_groups), "eps": float(eps),
                                  "weight": _channel(_const_param(fx, weight, "weight"), x),
                                  "bias": _channel(_const_param(fx, bias, "bias"), x)})


def _native_group_norm(b, fx, x, weight, bias, N, C, HxW, group, eps):
    shape = tuple(int(s) for s in fx.meta["val"][0].shape[1:])
    var = b.add(fx, "group_norm", [x], {"groups": int(group), "eps": float(eps),
                                        "weight": _channel(_const_param(fx, weight, "weight"),
                                                           x),
                                        "bias": _channel(_const_param(fx, bias, "bias"), x)},
                shape=shape)
    b.vars[fx.name] = (var, None, None)
