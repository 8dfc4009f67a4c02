"""Ordinary models with issue 17's structural operators, bound end to end.

Models: nn.MultiheadAttention (even and odd head counts, attention weights returned,
cross-attention with other key/value widths, a causal mask), nn.TransformerEncoderLayer
(post- and pre-norm), a 1-d CNN (Conv1d, MaxPool1d, AvgPool1d, AdaptiveAvgPool1d), a 2-d CNN
(reflect padding, InstanceNorm2d, bilinear upsampling, uneven AdaptiveMaxPool2d) and an MLP
with maximum/minimum, logsumexp, F.normalize, einsum and nn.Bilinear. For each:
``output_bounds`` (ibp, crown, alpha-crown) contain the outputs at 1000 sampled points of the
ball (float64 and the model's float32 forward), ``local_lipschitz`` is at least the sampled
gradient norms and ``jacobian_bounds`` contain the sampled gradients. The traced forward of
nn.MultiheadAttention equals the module on every configuration it accepts, and refuses the
others clearly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lipbound
from lipbound.errors import UnsupportedOperationError
from lipbound.ops.attention import _mha_forward
from tests.api.sampled import model_tests


class MHAModel(nn.Module):
    def __init__(self, heads=2, weights=False, cross=False, causal=False):
        super().__init__()
        self.emb = nn.Linear(4, 8)
        kv = 6 if cross else None
        self.kv = nn.Linear(4, 6) if cross else None
        self.att = nn.MultiheadAttention(8, heads, batch_first=True, kdim=kv, vdim=kv)
        self.weights, self.causal = weights, causal
        self.head = nn.Linear(8 + (9 if weights else 0), 3)

    def forward(self, x):
        h = self.emb(x.view(-1, 3, 4))
        kv = torch.tanh(self.kv(x.view(-1, 3, 4))) if self.kv is not None else h
        mask = None
        if self.causal:
            mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=h.dtype)
        a, w = self.att(h, kv, kv, need_weights=self.weights, attn_mask=mask)
        z = (h + a).mean(1)
        if self.weights:
            z = torch.cat([z, w.flatten(1)], 1)
        return self.head(z)


class Encoder(nn.Module):
    def __init__(self, norm_first=False):
        super().__init__()
        self.emb = nn.Linear(4, 8)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True,
                                              norm_first=norm_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.enc(self.emb(x.view(-1, 3, 4))).mean(1))


class TimeMajor(nn.Module):
    """nn.MultiheadAttention / nn.TransformerEncoder in their default layout
    (``batch_first=False``), fed ``h.transpose(0, 1)`` and read back the same way."""

    def __init__(self, kind="mha", norm_first=False):
        super().__init__()
        self.emb, self.kind = nn.Linear(4, 8), kind
        if kind == "mha":
            self.mod = nn.MultiheadAttention(8, 2)
        else:
            layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, norm_first=norm_first)
            self.mod = nn.TransformerEncoder(layer, 1, norm=nn.LayerNorm(8),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.emb(x.view(-1, 3, 4)).transpose(0, 1)  # [L, N, E]
        out = self.mod(h, h, h)[0] if self.kind == "mha" else self.mod(h)
        return self.head(out.transpose(0, 1).mean(1))


def _cnn1d():
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 4, 3,
                         padding=1), nn.ReLU(), nn.AvgPool1d(2), nn.AdaptiveAvgPool1d(2),
                         nn.Flatten(), nn.Linear(8, 3))


def _cnn2d():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, padding_mode="reflect"),
                         nn.InstanceNorm2d(3, affine=True), nn.ReLU(),
                         nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(3, 2, 3),
                         nn.ReLU(), nn.AdaptiveMaxPool2d(3), nn.Flatten(), nn.Linear(18, 3))


class MixMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.bil = nn.Bilinear(4, 4, 2)
        self.register_buffer("w", torch.randn(2, 3))
        self.head = nn.Linear(11, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        a, b = h[:, :4], h[:, 4:]
        m = torch.maximum(a, b) - torch.minimum(a, 0.5 * b)
        lse = torch.logsumexp(h.view(-1, 2, 4), 2)
        n = F.normalize(self.fc(x), dim=1)[:, :3]
        e = torch.einsum("bi,ij->bj", lse, self.w)
        return self.head(torch.cat([m[:, :3], n, e, self.bil(a, b)], 1))


def _models():
    torch.manual_seed(0)
    return {
        "mha": (MHAModel(), (12,)), "mha_odd_heads_weights": (MHAModel(1, weights=True), (12,)),
        "mha_cross": (MHAModel(2, cross=True), (12,)),
        "mha_causal": (MHAModel(2, weights=True, causal=True), (12,)),
        "encoder": (Encoder(), (12,)), "encoder_prenorm": (Encoder(True), (12,)),
        "mha_time_major": (TimeMajor(), (12,)),
        "encoder_time_major": (TimeMajor("encoder"), (12,)),
        "encoder_time_major_prenorm": (TimeMajor("encoder", True), (12,)),
        "cnn1d": (_cnn1d(), (1, 14)), "cnn2d": (_cnn2d(), (1, 6, 6)), "mix_mlp": (MixMLP(), (6,)),
    }


MODELS = {k: (m.eval(), s) for k, (m, s) in _models().items()}
SLOW = {"encoder", "encoder_prenorm", "mha_causal", "encoder_time_major",
        "encoder_time_major_prenorm"}


test_output_bounds_contain_samples, test_lipschitz_and_jacobian_bounds_contain_sampled_gradients = (
    model_tests(MODELS, SLOW))


_CONFIGS = [  # (heads, kdim, need_weights, average, mask kind, bias)
    (2, None, False, True, None, True), (3, None, True, True, None, True),
    (1, None, True, False, None, False), (2, 5, True, False, None, True),
    (2, None, True, True, "bool", True), (4, None, False, True, "float", True),
]


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cfg", _CONFIGS)
def test_traced_attention_forward_equals_the_module(cfg, batch_first):
    heads, kdim, need, avg, mask_kind, bias = cfg
    torch.manual_seed(1)
    m = nn.MultiheadAttention(12, heads, batch_first=batch_first, kdim=kdim, vdim=kdim,
                              bias=bias).eval()
    q = torch.randn(2, 4, 12) if batch_first else torch.randn(4, 2, 12)
    kv = torch.randn(2, 5, kdim or 12) if batch_first else torch.randn(5, 2, kdim or 12)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(4, 5) < 0.4
        mask[:, 0] = False
    elif mask_kind == "float":
        mask = torch.randn(4, 5)
        mask[1, 2:] = float("-inf")
    for grad in (False, True):  # with grad off torch may take its fused fast path
        with torch.set_grad_enabled(grad):
            want = m(q, kv, kv, need_weights=need, attn_mask=mask, average_attn_weights=avg)
            got = _mha_forward(m, q, kv, kv, need_weights=need, attn_mask=mask,
                               average_attn_weights=avg)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
        if need:
            torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
        else:
            assert got[1] is None and want[1] is None


@pytest.mark.parametrize("why, kwargs, call", [
    ("add_bias_kv", {"batch_first": True, "add_bias_kv": True}, {}),
    ("key padding", {"batch_first": True}, {"key_padding_mask": torch.zeros(2, 3,
                                                                          dtype=torch.bool)}),
    ("2-d attention masks", {"batch_first": True}, {"attn_mask": torch.zeros(4, 3, 3)}),
])
def test_unsupported_attention_is_refused_clearly(why, kwargs, call):
    m = nn.MultiheadAttention(8, 2, **kwargs).eval()
    x = torch.randn(2, 3, 8)
    with pytest.raises(UnsupportedOperationError, match=why):
        _mha_forward(m, x, x, x, **call)


class Seq2(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(4, 2)  # batch_first=False

    def forward(self, x):
        h = x.view(-1, 3, 4)
        return self.att(h, h, h)[0].flatten(1)


def test_batch_second_attention_model_names_the_reason():
    """A batch-first tensor given to a batch_first=False module attends over the batch."""
    with pytest.raises(UnsupportedOperationError, match="batch dimension second"):
        lipbound.output_bounds(Seq2().eval(), torch.rand(12), 0.01)
