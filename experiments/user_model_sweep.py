"""A sweep of small ordinary user models through the three bound calls (issue 17).

Each case is a model a user might bring (activations, pooling, padding, normalisation,
attention, einsum, min/max, nn.Bilinear, recurrent layers, data movement by index, ...), with
random weights and one input. For every case it prints the result of ``output_bounds``,
``local_lipschitz`` and ``jacobian_bounds`` (eps 0.05): ``ok(<largest upper bound>)`` or the
exception's type and first line, and at the end how many cases each call refused. Session 7
ran the first 67 cases to find operators lipbound refused (30 then; after it, the four left
refuse for a reason); session 14 added the 68 cases from ``hardtanh`` on (the tree before
it refused or crashed on 31 of them); session 15 the 15 cases from ``inplace_*`` on (in-place
writes, ``where`` / ``masked_fill`` on comparisons, parametrised layers). The soundness of the ops they found lives in tests/api/test_user_activations.py,
tests/api/test_structured_models.py and tests/api/test_recurrent_and_moves.py.

    python experiments/user_model_sweep.py [CASE ...]
"""

# ruff: noqa: E501, E731
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

import lipbound

torch.manual_seed(0)


class Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)

def seq(*m): return nn.Sequential(*m).eval()
D = 6
cases = {
 "prelu": (seq(nn.Linear(D,8), nn.PReLU(), nn.Linear(8,3)), torch.rand(D)),
 "prelu_ch": (seq(nn.Linear(D,8), nn.PReLU(8), nn.Linear(8,3)), torch.rand(D)),
 "elu": (seq(nn.Linear(D,8), nn.ELU(), nn.Linear(8,3)), torch.rand(D)),
 "selu": (seq(nn.Linear(D,8), nn.SELU(), nn.Linear(8,3)), torch.rand(D)),
 "celu": (seq(nn.Linear(D,8), nn.CELU(), nn.Linear(8,3)), torch.rand(D)),
 "silu": (seq(nn.Linear(D,8), nn.SiLU(), nn.Linear(8,3)), torch.rand(D)),
 "mish": (seq(nn.Linear(D,8), nn.Mish(), nn.Linear(8,3)), torch.rand(D)),
 "softplus": (seq(nn.Linear(D,8), nn.Softplus(), nn.Linear(8,3)), torch.rand(D)),
 "softplus_beta": (seq(nn.Linear(D,8), nn.Softplus(beta=2.0), nn.Linear(8,3)), torch.rand(D)),
 "logsigmoid": (seq(nn.Linear(D,8), nn.LogSigmoid(), nn.Linear(8,3)), torch.rand(D)),
 "softsign": (seq(nn.Linear(D,8), nn.Softsign(), nn.Linear(8,3)), torch.rand(D)),
 "tanhshrink": (seq(nn.Linear(D,8), nn.Tanhshrink(), nn.Linear(8,3)), torch.rand(D)),
 "hardshrink": (seq(nn.Linear(D,8), nn.Hardshrink(), nn.Linear(8,3)), torch.rand(D)),
 "softshrink": (seq(nn.Linear(D,8), nn.Softshrink(), nn.Linear(8,3)), torch.rand(D)),
 "threshold": (seq(nn.Linear(D,8), nn.Threshold(0.1, 0.0), nn.Linear(8,3)), torch.rand(D)),
 "gelu_tanh": (seq(nn.Linear(D,8), nn.GELU(approximate="tanh"), nn.Linear(8,3)), torch.rand(D)),
 "leaky": (seq(nn.Linear(D,8), nn.LeakyReLU(0.2), nn.Linear(8,3)), torch.rand(D)),
 "dropout_bn1d": (seq(nn.Linear(D,8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8,3)), torch.rand(D)),
 "conv1d_pool": (seq(nn.Conv1d(1,4,3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4,4,3,padding=1), nn.ReLU(), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(4*3,3)), torch.rand(1,14)),
 "convtranspose": (seq(nn.Conv2d(1,4,3,stride=2,padding=1), nn.ReLU(), nn.ConvTranspose2d(4,2,2,stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(2*8*8,3)), torch.rand(1,8,8)),
 "bilinear_up": (seq(nn.Conv2d(1,2,3,padding=1), nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear"), nn.Flatten(), nn.Linear(2*16*16,3)), torch.rand(1,8,8)),
 "instancenorm": (seq(nn.Conv2d(1,4,3,padding=1), nn.InstanceNorm2d(4, affine=True), nn.ReLU(), nn.Flatten(), nn.Linear(4*8*8,3)), torch.rand(1,8,8)),
 "groupnorm": (seq(nn.Conv2d(1,4,3,padding=1), nn.GroupNorm(2,4), nn.ReLU(), nn.Flatten(), nn.Linear(4*8*8,3)), torch.rand(1,8,8)),
 "layernorm_nobias": (seq(nn.Linear(D,8), nn.LayerNorm(8, bias=False), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "rmsnorm": (seq(nn.Linear(D,8), nn.RMSNorm(8), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "maxpool_pad_dil": (seq(nn.Conv2d(1,4,3), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), nn.Linear(4*3*3,3)), torch.rand(1,8,8)),
 "avgpool_ceil": (seq(nn.Conv2d(1,4,3), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(4*3*3,3)), torch.rand(1,8,8)),
 "adaptive_max": (seq(nn.Conv2d(1,4,3), nn.ReLU(), nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(16,3)), torch.rand(1,8,8)),
 "conv_groups_dil": (seq(nn.Conv2d(2,4,3,groups=2,dilation=2), nn.ReLU(), nn.Flatten(), nn.Linear(4*4*4,3)), torch.rand(2,8,8)),
 "conv_reflect": (seq(nn.Conv2d(1,4,3,padding=1,padding_mode="reflect"), nn.ReLU(), nn.Flatten(), nn.Linear(4*8*8,3)), torch.rand(1,8,8)),
 "conv_circular": (seq(nn.Conv2d(1,4,3,padding=1,padding_mode="circular"), nn.ReLU(), nn.Flatten(), nn.Linear(4*8*8,3)), torch.rand(1,8,8)),
 "zeropad": (seq(nn.ZeroPad2d(1), nn.Conv2d(1,4,3), nn.ReLU(), nn.Flatten(), nn.Linear(4*8*8,3)), torch.rand(1,8,8)),
 "pixelshuffle": (seq(nn.Conv2d(1,4,3,padding=1), nn.ReLU(), nn.PixelShuffle(2), nn.Flatten(), nn.Linear(16*16,3)), torch.rand(1,1,8,8)),
 "unflatten": (seq(nn.Linear(D,16), nn.ReLU(), nn.Unflatten(1,(1,4,4)), nn.Conv2d(1,2,3), nn.Flatten(), nn.Linear(8,3)), torch.rand(D)),
 "cat_split": (seq(nn.Linear(D,8), Lambda(lambda h: torch.cat([F.relu(h[:, :4]), torch.tanh(h[:, 4:])], 1)), nn.Linear(8,3)), torch.rand(D)),
 "chunk_mul": (seq(nn.Linear(D,8), Lambda(lambda h: h.chunk(2,1)[0]*torch.sigmoid(h.chunk(2,1)[1])), nn.Linear(4,3)), torch.rand(D)),
 "glu": (seq(nn.Linear(D,8), nn.GLU(), nn.Linear(4,3)), torch.rand(D)),
 "permute_transpose": (seq(nn.Linear(D,12), Lambda(lambda h: h.view(-1,3,4).transpose(1,2).reshape(-1,12)), nn.ReLU(), nn.Linear(12,3)), torch.rand(D)),
 "einsum": (seq(nn.Linear(D,12), Lambda(lambda h: torch.einsum("bij,jk->bik", h.view(-1,3,4), torch.ones(4,2)).flatten(1)), nn.Linear(6,3)), torch.rand(D)),
 "normalize": (seq(nn.Linear(D,8), Lambda(lambda h: F.normalize(h, dim=1)), nn.Linear(8,3)), torch.rand(D)),
 "clamp_min": (seq(nn.Linear(D,8), Lambda(lambda h: h.clamp_min(0.1)), nn.Linear(8,3)), torch.rand(D)),
 "clamp_max": (seq(nn.Linear(D,8), Lambda(lambda h: torch.clamp(h, max=0.5)), nn.Linear(8,3)), torch.rand(D)),
 "minimum": (seq(nn.Linear(D,8), Lambda(lambda h: torch.minimum(h[:, :4], h[:, 4:])), nn.Linear(4,3)), torch.rand(D)),
 "maximum": (seq(nn.Linear(D,8), Lambda(lambda h: torch.maximum(h[:, :4], h[:, 4:])), nn.Linear(4,3)), torch.rand(D)),
 "square_sum": (seq(nn.Linear(D,8), Lambda(lambda h: (h**2).sum(1, keepdim=True) + h[:, :3])), torch.rand(D)),
 "sub_rsub": (seq(nn.Linear(D,8), Lambda(lambda h: 1.0 - torch.sigmoid(h) - h/3), nn.Linear(8,3)), torch.rand(D)),
 "div_const": (seq(nn.Linear(D,8), Lambda(lambda h: h / 2.0 + 1), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "std_norm": (seq(nn.Linear(D,8), Lambda(lambda h: (h - h.mean(1, keepdim=True)) / (h.std(1, keepdim=True)+1e-3)), nn.Linear(8,3)), torch.rand(D)),
 "var": (seq(nn.Linear(D,8), Lambda(lambda h: torch.cat([h, h.var(1, keepdim=True)],1)), nn.Linear(9,3)), torch.rand(D)),
 "logsumexp": (seq(nn.Linear(D,8), Lambda(lambda h: torch.logsumexp(h.view(-1,2,4), 2)), nn.Linear(2,3)), torch.rand(D)),
 "amax": (seq(nn.Linear(D,8), Lambda(lambda h: h.view(-1,2,4).amax(2)), nn.Linear(2,3)), torch.rand(D)),
 "cos_sin": (seq(nn.Linear(D,8), Lambda(lambda h: torch.sin(h) + torch.cos(h)), nn.Linear(8,3)), torch.rand(D)),
 "atan": (seq(nn.Linear(D,8), Lambda(lambda h: torch.atan(h)), nn.Linear(8,3)), torch.rand(D)),
 "erf": (seq(nn.Linear(D,8), Lambda(lambda h: torch.erf(h)), nn.Linear(8,3)), torch.rand(D)),
 "square": (seq(nn.Linear(D,8), Lambda(lambda h: torch.square(h)), nn.Linear(8,3)), torch.rand(D)),
 "log1p_expm1": (seq(nn.Linear(D,8), Lambda(lambda h: torch.log1p(torch.sigmoid(h)) + torch.expm1(h/4)), nn.Linear(8,3)), torch.rand(D)),
 "softmax_temp": (seq(nn.Linear(D,8), Lambda(lambda h: torch.softmax(h/0.5, dim=-1))), torch.rand(D)),
 "log_softmax": (seq(nn.Linear(D,8), nn.ReLU(), nn.Linear(8,3), nn.LogSoftmax(dim=1)), torch.rand(D)),
 "sigmoid_out": (seq(nn.Linear(D,8), nn.ReLU(), nn.Linear(8,1), nn.Sigmoid()), torch.rand(D)),
 "mha": (None, None),
 "embedding_free_transformer": (None, None),
 "double_model": (seq(nn.Linear(D,8), nn.ReLU(), nn.Linear(8,3)).double(), torch.rand(D, dtype=torch.float64)),
 "flatten_start": (seq(nn.Flatten(0), nn.Linear(D,3)), torch.rand(D)),
 "no_batch_out_1d": (seq(nn.Linear(D,8), nn.ReLU(), nn.Linear(8,1), nn.Flatten(0)), torch.rand(D)),
 "bias_free": (seq(nn.Linear(D,8,bias=False), nn.ReLU(), nn.Linear(8,3,bias=False)), torch.rand(D)),
 "identity": (seq(nn.Linear(D,8), nn.Identity(), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "bilinear_layer": (None, None),
}
class MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(4, 8)
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.emb(x.view(-1, 3, 4))
        a, _ = self.att(h, h, h, need_weights=False)
        return self.head((h + a).mean(1))


class Enc(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(4, 8)
        self.enc = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.enc(self.emb(x.view(-1, 3, 4))).mean(1))


class Bil(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(D, 4)
        self.b = nn.Bilinear(4, 4, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h, h)


class RNN2(nn.Module):
    """A recurrent layer over 3 steps of 4 features; the head reads the last output or the
    last layer's final state (``h_n[-1]``; ``h_n.squeeze(0)`` with one layer)."""

    def __init__(self, kind, layers=1, bi=False, use_h=False, **kw):
        super().__init__()
        self.use_h, self.layers = use_h, layers
        self.r = getattr(nn, kind)(4, 5, num_layers=layers, bidirectional=bi, batch_first=True,
                                   **kw)
        self.h = nn.Linear(5 * (2 if bi else 1) if not use_h else 5, 3)

    def forward(self, x):
        o, h = self.r(x.view(-1, 3, 4))
        if self.use_h:
            h = h[0] if isinstance(h, tuple) else h
            return self.h(h.squeeze(0) if self.layers == 1 else h[-1])
        return self.h(o[:, -1])


cases.update({
 "hardtanh": (seq(nn.Linear(D,8), nn.Hardtanh(), nn.Linear(8,3)), torch.rand(D)),
 "relu6": (seq(nn.Linear(D,8), nn.ReLU6(), nn.Linear(8,3)), torch.rand(D)),
 "hardswish": (seq(nn.Linear(D,8), nn.Hardswish(), nn.Linear(8,3)), torch.rand(D)),
 "hardsigmoid": (seq(nn.Linear(D,8), nn.Hardsigmoid(), nn.Linear(8,3)), torch.rand(D)),
 "tanh_sig": (seq(nn.Linear(D,8), nn.Tanh(), nn.Linear(8,8), nn.Sigmoid(), nn.Linear(8,3)), torch.rand(D)),
 "softmin": (seq(nn.Linear(D,8), nn.Softmin(dim=1)), torch.rand(D)),
 "softmax_mod": (seq(nn.Linear(D,8), nn.ReLU(), nn.Linear(8,3), nn.Softmax(dim=-1)), torch.rand(D)),
 "lppool": (seq(nn.Conv1d(1,4,3), nn.ReLU(), nn.LPPool1d(2, 2), nn.Flatten(), nn.Linear(4*6,3)), torch.rand(1,14)),
 "adaptive_avg": (seq(nn.Conv2d(1,4,3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4,3)), torch.rand(1,8,8)),
 "adaptive_avg_3": (seq(nn.Conv2d(1,4,3), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64,3)), torch.rand(1,8,8)),
 "conv3d": (seq(nn.Conv3d(1,2,2), nn.ReLU(), nn.Flatten(), nn.Linear(2*27,3)), torch.rand(1,4,4,4)),
 "bn2d": (seq(nn.Conv2d(1,4,3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4*36,3)), torch.rand(1,8,8)),
 "dropout2d": (seq(nn.Conv2d(1,4,3), nn.Dropout2d(0.2), nn.ReLU(), nn.Flatten(), nn.Linear(4*36,3)), torch.rand(1,8,8)),
 "rnn": (RNN2("RNN").eval(), torch.rand(12)),
 "gru": (RNN2("GRU").eval(), torch.rand(12)),
 "lstm": (RNN2("LSTM").eval(), torch.rand(12)),
 "where": (seq(nn.Linear(D,8), Lambda(lambda h: torch.where(h > 0, h, 0.1*h)), nn.Linear(8,3)), torch.rand(D)),
 "abs": (seq(nn.Linear(D,8), Lambda(torch.abs), nn.Linear(8,3)), torch.rand(D)),
 "pow3": (seq(nn.Linear(D,8), Lambda(lambda h: h.pow(3)), nn.Linear(8,3)), torch.rand(D)),
 "exp": (seq(nn.Linear(D,8), Lambda(torch.exp), nn.Linear(8,3)), torch.rand(D)),
 "log_sp": (seq(nn.Linear(D,8), Lambda(lambda h: torch.log(F.softplus(h)+1)), nn.Linear(8,3)), torch.rand(D)),
 "sqrt": (seq(nn.Linear(D,8), Lambda(lambda h: torch.sqrt(h*h+1)), nn.Linear(8,3)), torch.rand(D)),
 "rsqrt": (seq(nn.Linear(D,8), Lambda(lambda h: torch.rsqrt(h*h+1)), nn.Linear(8,3)), torch.rand(D)),
 "reciprocal": (seq(nn.Linear(D,8), Lambda(lambda h: 1/(h*h+1)), nn.Linear(8,3)), torch.rand(D)),
 "interp_nearest": (seq(nn.Conv2d(1,2,3,padding=1), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Flatten(), nn.Linear(2*16*16,3)), torch.rand(1,8,8)),
 "flip": (seq(nn.Linear(D,8), Lambda(lambda h: torch.flip(h, [1])), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "roll": (seq(nn.Linear(D,8), Lambda(lambda h: torch.roll(h, 2, 1)), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "cumsum": (seq(nn.Linear(D,8), Lambda(lambda h: torch.cumsum(h, 1)), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "prod": (seq(nn.Linear(D,8), Lambda(lambda h: torch.prod(torch.tanh(h).view(-1,4,2), 2)), nn.Linear(4,3)), torch.rand(D)),
 "pad_const": (seq(nn.Linear(D,8), Lambda(lambda h: F.pad(h, (1,1), value=0.5)), nn.ReLU(), nn.Linear(10,3)), torch.rand(D)),
 "stack": (seq(nn.Linear(D,8), Lambda(lambda h: torch.stack([h, -h], 1).flatten(1)), nn.ReLU(), nn.Linear(16,3)), torch.rand(D)),
 "expand": (seq(nn.Linear(D,4), Lambda(lambda h: h[:, :, None].expand(-1, 4, 2).reshape(-1, 8)), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "repeat": (seq(nn.Linear(D,4), Lambda(lambda h: h.repeat(1, 2)), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "gather": (seq(nn.Linear(D,8), Lambda(lambda h: h[:, torch.tensor([0, 3, 5, 5])]), nn.ReLU(), nn.Linear(4,3)), torch.rand(D)),
 "slice_step": (seq(nn.Linear(D,8), Lambda(lambda h: h[..., ::2]), nn.ReLU(), nn.Linear(4,3)), torch.rand(D)),
 "mean_dim": (seq(nn.Linear(D,8), Lambda(lambda h: h.view(-1,2,4).mean(-1)), nn.ReLU(), nn.Linear(2,3)), torch.rand(D)),
 "norm": (seq(nn.Linear(D,8), Lambda(lambda h: torch.cat([h, torch.linalg.vector_norm(h, dim=1, keepdim=True)], 1)), nn.Linear(9,3)), torch.rand(D)),
 "cosine": (seq(nn.Linear(D,8), Lambda(lambda h: F.cosine_similarity(h[:, :4], h[:, 4:]).unsqueeze(1)), nn.Linear(1,3)), torch.rand(D)),
 "max_dim": (seq(nn.Linear(D,8), Lambda(lambda h: h.view(-1,2,4).max(-1).values), nn.Linear(2,3)), torch.rand(D)),
 "min_dim": (seq(nn.Linear(D,8), Lambda(lambda h: torch.min(h.view(-1,2,4), dim=-1)[0]), nn.Linear(2,3)), torch.rand(D)),
 "sort": (seq(nn.Linear(D,8), Lambda(lambda h: torch.sort(h, 1).values), nn.Linear(8,3)), torch.rand(D)),
 "topk": (seq(nn.Linear(D,8), Lambda(lambda h: torch.topk(h, 3, 1).values), nn.Linear(3,3)), torch.rand(D)),
 "neg": (seq(nn.Linear(D,8), Lambda(lambda h: -h), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "lrn": (seq(nn.Conv2d(1,4,3), nn.LocalResponseNorm(2), nn.ReLU(), nn.Flatten(), nn.Linear(4*36,3)), torch.rand(1,8,8)),
 "channelshuffle": (seq(nn.Conv2d(1,4,3), nn.ChannelShuffle(2), nn.ReLU(), nn.Flatten(), nn.Linear(4*36,3)), torch.rand(1,8,8)),
 "unfold": (seq(nn.Unfold(2, stride=2), nn.Flatten(), nn.Linear(4*16,3)), torch.rand(1,8,8)),
 "matmul_param": (seq(nn.Linear(D,8), Lambda(lambda h: h @ torch.ones(8, 3) / 8)), torch.rand(D)),
 "baddbmm": (seq(nn.Linear(D,8), Lambda(lambda h: torch.bmm(h.view(-1,2,4), h.view(-1,4,2)).flatten(1)), nn.Linear(4,3)), torch.rand(D)),
 "addcmul": (seq(nn.Linear(D,8), Lambda(lambda h: torch.addcmul(h, torch.tanh(h), h, value=0.5)), nn.Linear(8,3)), torch.rand(D)),
 "clip_tensor": (seq(nn.Linear(D,8), Lambda(lambda h: torch.clamp(h, min=-torch.ones(8), max=torch.ones(8))), nn.Linear(8,3)), torch.rand(D)),
 "mul_const_tensor": (seq(nn.Linear(D,8), Lambda(lambda h: h * torch.linspace(0.1, 1, 8) + torch.arange(8.)), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "squeeze_unsq": (seq(nn.Linear(D,8), Lambda(lambda h: h.unsqueeze(1).unsqueeze(-1).squeeze(-1).squeeze(1)), nn.ReLU(), nn.Linear(8,3)), torch.rand(D)),
 "silu_fn": (seq(nn.Linear(D,8), Lambda(F.silu), nn.Linear(8,3)), torch.rand(D)),
 "gelu_fn": (seq(nn.Linear(D,8), Lambda(F.gelu), nn.Linear(8,3)), torch.rand(D)),
 "tanh_method": (seq(nn.Linear(D,8), Lambda(lambda h: h.tanh().sigmoid().relu()), nn.Linear(8,3)), torch.rand(D)),
 "float64_input_conv": (seq(nn.Conv1d(1,2,3), nn.ReLU(), nn.Flatten(), nn.Linear(24,3)), torch.rand(1,14)),
 "batch_dim_input": (seq(nn.Linear(D,8), nn.ReLU(), nn.Linear(8,3)), torch.rand(1,D)),
 "scalar_out": (seq(nn.Linear(D,8), nn.ReLU(), nn.Linear(8,1)), torch.rand(D)),
 "sum0d": (seq(nn.Linear(D,5), Lambda(lambda h: torch.stack([h[:, 0]*h[:, 1], torch.tanh(h.sum(1)), h.norm(dim=1)], 1)), nn.Linear(3,3)), torch.rand(D)),
})

for k in ("RNN", "GRU", "LSTM"):
    cases[f"{k.lower()}_2l_bi"] = (RNN2(k, 2, True).eval(), torch.rand(12))
    cases[f"{k.lower()}_hn"] = (RNN2(k, 2, False, True).eval(), torch.rand(12))
cases["rnn_relu"] = (RNN2("RNN", 1, use_h=True, nonlinearity="relu").eval(), torch.rand(12))


class TimeMajor(nn.Module):
    """nn.LSTM in its default layout (batch_first=False) on x.transpose(0, 1)."""

    def __init__(self):
        super().__init__()
        self.r, self.h = nn.LSTM(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        out, _ = self.r(x.view(-1, 3, 4).transpose(0, 1))
        return self.h(out[-1])


cases["lstm_time_major"] = (TimeMajor().eval(), torch.rand(12))
cases["zeros_like"] = (seq(nn.Linear(D, 8), Lambda(lambda h: torch.cat([h, torch.zeros_like(h) + 1], 1)), nn.Linear(16, 3)), torch.rand(D))

cases["mha"] = (MHA().eval(), torch.rand(12))
cases["embedding_free_transformer"] = (Enc().eval(), torch.rand(12))
cases["bilinear_layer"] = (Bil().eval(), torch.rand(D))


# session 15: in-place writes, selections on comparisons, parametrised layers, more layers
class InPlace(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.a, self.b, self.h = kind, nn.Linear(D, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        if self.kind == "view_then_relu_":
            v = h.view(h.shape[0], 8)
            h.relu_()
            return self.h(v)
        if self.kind == "chain":
            return self.h(h.relu_().mul_(2.0).add_(0.5))
        if self.kind == "residual":
            out = self.b(torch.relu(h))
            out += h
            return self.h(F.relu(out, inplace=True))
        h = self.b(torch.relu(h))  # slice_assign
        h[:, :2] *= 0.5
        return self.h(h)


for k in ("view_then_relu_", "chain", "residual", "slice_assign"):
    cases[f"inplace_{k}"] = (InPlace(k).eval(), torch.rand(D))
cases["silu_inplace"] = (seq(nn.Linear(D, 8), nn.SiLU(inplace=True), nn.Linear(8, 3)), torch.rand(D))
cases["where_cmp"] = (seq(nn.Linear(D, 8), Lambda(lambda h: torch.where(h > 0, h, 0.1 * h)), nn.Linear(8, 3)), torch.rand(D))
cases["masked_fill_cmp"] = (seq(nn.Linear(D, 8), Lambda(lambda h: h.masked_fill(h < 0.1, -1.0)), nn.Linear(8, 3)), torch.rand(D))
cases["spectral_norm"] = (seq(nn.utils.parametrizations.spectral_norm(nn.Linear(D, 8)), nn.ReLU(), nn.Linear(8, 3)), torch.rand(D))
cases["weight_norm"] = (seq(nn.utils.parametrizations.weight_norm(nn.Linear(D, 8)), nn.ReLU(), nn.Linear(8, 3)), torch.rand(D))
cases["orthogonal"] = (seq(nn.utils.parametrizations.orthogonal(nn.Linear(D, D)), nn.ReLU(), nn.Linear(D, 3)), torch.rand(D))
cases["pixel_unshuffle"] = (seq(nn.PixelUnshuffle(2), nn.Conv2d(4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)), torch.rand(1, 8, 8))
cases["softmax2d"] = (seq(nn.Conv2d(1, 3, 3), nn.Softmax2d(), nn.Flatten(), nn.Linear(108, 3)), torch.rand(1, 8, 8))
cases["replicate_pad"] = (seq(nn.ReplicationPad2d(1), nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(128, 3)), torch.rand(1, 8, 8))
cases["upsample_align"] = (seq(nn.Conv2d(1, 2, 3), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), nn.Flatten(), nn.Linear(288, 3)), torch.rand(1, 8, 8))


def main(only: list[str]) -> None:
    refused = dict.fromkeys(("output_bounds", "local_lipschitz", "jacobian_bounds"), 0)
    for name, (m, x) in cases.items():
        if only and name not in only:
            continue
        res = []
        for f in ("output_bounds", "local_lipschitz", "jacobian_bounds"):
            try:
                r = getattr(lipbound, f)(m, x, 0.05)
                v = r.upper if hasattr(r, "upper") else r[1]
                res.append(f"{f}:ok({float(v.max()):.3g})")
            except Exception as e:  # noqa: BLE001 - the sweep reports every failure
                res.append(f"{f}:{type(e).__name__}: {str(e).splitlines()[0][:150]}")
                refused[f] += 1
        print(name, " | ".join(res), flush=True)
    print("refused or failed:", refused)


if __name__ == "__main__":
    main(sys.argv[1:])
