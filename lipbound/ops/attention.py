"""Attention, which has no op of its own: scaled dot-product attention (an ATen call) is
converted to matrix products of activations (:func:`lipbound.ops.affine._matmul_vars`:
``mul`` then ``sum``, McCormick per product), a scale-shift and a ``softmax`` node
(:mod:`lipbound.ops.composite`); ``nn.MultiheadAttention`` (and through it the transformer
layers) is traced through :func:`_mha_forward`, the same function written with ops the table
converts.

Why a forward of our own for nn.MultiheadAttention: torch's slow path transposes the batch
into the middle of every tensor (``[L, N, E]`` and ``[N * H, L, d]``), which a per-sample
graph cannot hold, and its fast path (``_native_multi_head_attention``, and the fused
``_transformer_encoder_layer_fwd`` of nn.TransformerEncoderLayer) is one opaque kernel taken
only for even head counts and self-attention. :func:`_mha_forward` keeps the batch first:
``[N, L, E] -> [N, H, L, d]`` by reshape/permute, scores ``q k^T / sqrt(d)`` (+ an additive
float mask), softmax over keys, ``weights @ v``, heads merged, output projection: exactly
torch's function (checked on a second input by the recorder, and in the tests against the
module for every configuration it accepts). Masked entries (boolean masks, ``-inf``) use a
masked softmax written without infinities: ``y_ij = k_ij / sum_j' k_ij' exp(k_ij' k_ij
(s_ij' - s_ij))`` with ``k`` the 0/1 keep mask, which equals torch's softmax of the
``-inf``-filled scores wherever a row keeps at least one key (where a row keeps none torch
gives NaN, and the graph's reciprocal of a zero sum makes bounding refuse).
Rounding: the graph's facts describe this sequence of ops; torch's fused kernels
compute the same sums in another order and scale ``q`` before the product instead of the
scores (a difference of the order of one rounding of the scores).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lipbound.errors import UnsupportedOperationError
from lipbound.ops.affine import _matmul_vars
from lipbound.ops.tracing import Var, as_per_sample, converts, replaces_forward, unsupported


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


def _refuse(why: str) -> UnsupportedOperationError:
    return UnsupportedOperationError("nn.MultiheadAttention", "a MultiheadAttention module",
                                     ["nn.MultiheadAttention"], hint=why)


def _check_mha(m: nn.MultiheadAttention, query: Tensor, key_padding_mask: Tensor | None
               ) -> None:
    if m.training:
        raise _refuse("the module is in training mode (dropout); call model.eval()")
    if query.dim() != 3:
        raise _refuse("the queries must be batched ([N, L, E], or [L, N, E] with "
                      "batch_first=False)")
    if key_padding_mask is not None:
        raise _refuse("key padding masks are not supported (they differ between samples)")
    if m.bias_k is not None or m.bias_v is not None or m.add_zero_attn:
        raise _refuse("add_bias_kv and add_zero_attn are not supported")


def _projections(m: nn.MultiheadAttention) -> tuple[tuple[Tensor, Tensor | None], ...]:
    """(weight, bias) of the query, key and value projections."""
    E = m.embed_dim
    if m._qkv_same_embed_dim:
        ws = [m.in_proj_weight[i * E:(i + 1) * E] for i in range(3)]
    else:
        ws = [m.q_proj_weight, m.k_proj_weight, m.v_proj_weight]
    bs = [None] * 3 if m.in_proj_bias is None else [m.in_proj_bias[i * E:(i + 1) * E]
                                                    for i in range(3)]
    return tuple(zip(ws, bs))


def _mask(attn_mask: Tensor | None, is_causal: bool, dtype) -> tuple[Tensor | None, Tensor | None]:
    """(additive shift or None, 0/1 keep mask or None), both [L, S]. Computed by tensor ops
    only, never read in Python: under torch.export the mask is a symbolic value (the tracer
    folds these ops on constants)."""
    if attn_mask is None:
        if is_causal:
            raise _refuse("is_causal needs the causal attn_mask too (as torch requires)")
        return None, None
    if attn_mask.dim() != 2:
        raise _refuse("only 2-d attention masks [L, S] (the same for every sample) are "
                      "supported")
    if attn_mask.dtype == torch.bool:  # True: hidden
        return None, (~attn_mask).to(dtype)
    keep = attn_mask != -math.inf
    return torch.where(keep, attn_mask, torch.zeros((), dtype=attn_mask.dtype)).to(dtype), \
        keep.to(dtype)


def _masked_softmax(s: Tensor, keep: Tensor) -> Tensor:
    """softmax over the last dim of ``s`` with the entries where ``keep`` is 0 left out
    (exactly 0 there), without infinities: ``keep_ij / sum_j' keep_ij' exp(keep_ij' keep_ij
    (s_ij' - s_ij))`` (every kept pair's exponent is its true difference; the others are 0)."""
    diff = s.unsqueeze(-2) - s.unsqueeze(-1)  # [..., i, j, j'] = s_ij' - s_ij
    both = keep.unsqueeze(-2) * keep.unsqueeze(-1)
    den = (torch.exp(diff * both) * keep.unsqueeze(-2)).sum(-1)
    return keep * den.reciprocal()


@replaces_forward(nn.MultiheadAttention)
def _mha_forward(m: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
                 key_padding_mask: Tensor | None = None, need_weights: bool = True,
                 attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                 is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
    """nn.MultiheadAttention.forward (eval mode) with the batch kept first; with
    ``batch_first=False`` (the module's default) the time-major inputs are transposed to
    batch-first and the output back, as torch's own forward does."""
    _check_mha(m, query, key_padding_mask)
    if not m.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = _attend(m, query, key, value, need_weights, attn_mask,
                               average_attn_weights, is_causal)
        return out.transpose(0, 1), weights
    return _attend(m, query, key, value, need_weights, attn_mask, average_attn_weights,
                   is_causal)


def _attend(m: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor,
            need_weights: bool, attn_mask: Tensor | None, average_attn_weights: bool,
            is_causal: bool) -> tuple[Tensor, Tensor | None]:
    """Batch-first multi-head attention ([N, L, E] queries, [N, S, E] keys and values)."""
    H, d = m.num_heads, m.head_dim
    N, L, _ = query.shape
    S = key.shape[1]
    (wq, bq), (wk, bk), (wv, bv) = _projections(m)

    def heads(t: Tensor, n: int) -> Tensor:  # [N, n, E] -> [N, H, n, d]
        return t.reshape(N, n, H, d).permute(0, 2, 1, 3)

    q = heads(F.linear(query, wq, bq), L)
    k = heads(F.linear(key, wk, bk), S)
    v = heads(F.linear(value, wv, bv), S)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
    shift, keep = _mask(attn_mask, is_causal, scores.dtype)
    if shift is not None:
        scores = scores + shift
    att = torch.softmax(scores, -1) if keep is None else _masked_softmax(scores, keep)
    out = torch.matmul(att, v).permute(0, 2, 1, 3).reshape(N, L, H * d)
    out = m.out_proj(out)
    if not need_weights:
        return out, None
    return out, (att.mean(1) if average_attn_weights else att)


@replaces_forward(nn.TransformerEncoderLayer)
def _encoder_layer_forward(layer: nn.TransformerEncoderLayer, src: Tensor,
                           src_mask: Tensor | None = None,
                           src_key_padding_mask: Tensor | None = None,
                           is_causal: bool = False) -> Tensor:
    """nn.TransformerEncoderLayer.forward (torch's slow path) with the batch kept first; a
    time-major input (``batch_first=False``, the default) is transposed to batch-first and
    the output back."""
    time_major = not layer.self_attn.batch_first
    x = src.transpose(0, 1) if time_major else src
    x = _encoder_layer(layer, x, src_mask, src_key_padding_mask, is_causal)
    return x.transpose(0, 1) if time_major else x


def _encoder_layer(layer: nn.TransformerEncoderLayer, x: Tensor, mask: Tensor | None,
                   key_padding_mask: Tensor | None, is_causal: bool) -> Tensor:
    """One encoder layer on a batch-first ``x`` [N, L, E]: torch's ``_sa_block`` /
    ``_ff_block`` in pre- or post-norm order."""
    attn = layer.self_attn

    def sa(t: Tensor) -> Tensor:
        _check_mha(attn, t, key_padding_mask)
        return layer.dropout1(_attend(attn, t, t, t, False, mask, True, is_causal)[0])

    def ff(t: Tensor) -> Tensor:
        return layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(t)))))

    if layer.norm_first:
        x = x + sa(layer.norm1(x))
        return x + ff(layer.norm2(x))
    x = layer.norm1(x + sa(x))
    return layer.norm2(x + ff(x))


@replaces_forward(nn.TransformerEncoder)
def _encoder_forward(enc: nn.TransformerEncoder, src: Tensor, mask: Tensor | None = None,
                     src_key_padding_mask: Tensor | None = None,
                     is_causal: bool | None = None) -> Tensor:
    """nn.TransformerEncoder.forward over encoder layers, batch first throughout (a
    time-major input is transposed once, so the final norm sees batch-first values too)."""
    layers = list(enc.layers)
    if not layers or not all(type(m) is nn.TransformerEncoderLayer for m in layers):
        return nn.TransformerEncoder.forward(enc, src, mask, src_key_padding_mask, is_causal)
    time_major = not layers[0].self_attn.batch_first
    x = src.transpose(0, 1) if time_major else src
    for layer in layers:
        x = _encoder_layer(layer, x, mask, src_key_padding_mask, bool(is_causal))
    if enc.norm is not None:
        x = enc.norm(x)
    return x.transpose(0, 1) if time_major else x
