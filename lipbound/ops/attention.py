"""Scaled dot-product attention: an ATen call with no op of its own, converted to matrix
products of activations (:func:`lipbound.ops.affine._matmul_vars`: ``mul`` then ``sum``), a
scale-shift and a ``softmax`` node (:mod:`lipbound.ops.composite`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lipbound.ops.affine import _matmul_vars
from lipbound.ops.tracing import Var, as_per_sample, converts, unsupported


@converts("aten.scaled_dot_product_attention.default")
def _sdpa(b, fx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    """scaled_dot_product_attention: softmax(q k^T * scale + mask) v, lowered to matrix
    products of activations and a softmax node (float masks only)."""
    if not all(isinstance(t, Var) for t in (q, k, v)):
        raise unsupported(fx, "attention needs input-dependent queries, keys and values")
    if is_causal or float(dropout_p) != 0.0 or enable_gqa or isinstance(attn_mask, Var) or (
            isinstance(attn_mask, Tensor) and attn_mask.dtype == torch.bool):
        raise unsupported(fx, "attention is supported without dropout, causal or boolean "
                              "masks (give an additive float mask instead)")
    nd = len(k.shape)
    swap = tuple(range(nd - 2)) + (nd - 1, nd - 2)
    kt = b.aux(fx, "kt", "permute", [k], tuple(k.shape[i] for i in swap), {"dims": swap})
    scores = _matmul_vars(b, fx, q, kt, "scores")
    c = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    shift = None
    if attn_mask is not None:
        shift = as_per_sample(attn_mask, fx, len(scores.shape)).to(torch.float64)
        if not bool(torch.isfinite(shift).all()):
            raise unsupported(fx, "attention masks with infinite entries are not supported")
    scaled = b.aux(fx, "scaled", "scale_shift", [scores], scores.shape,
                   {"scale": torch.tensor(c, dtype=torch.float64), "shift": shift})
    att = b.aux(fx, "softmax", "softmax", [scaled], scores.shape,
                {"dim": len(scores.shape) - 1, "log": False})
    _matmul_vars(b, fx, att, v)
