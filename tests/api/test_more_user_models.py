"""Ordinary user models that lipbound refused until session 14, bound end to end.

Recurrent layers (nn.RNN tanh / ReLU, nn.LSTM, nn.GRU: several layers, bidirectional, the
output sequence or the final states, batch-first or in the default time-major layout), data
movement by index (roll, repeat, tile, repeat_interleave, gather / indexing / index_select
with constant indices, Tensor.unfold, nn.Unfold, nn.ChannelShuffle, diagonal, movedim),
composites expanded through torch's decompositions (stack, addcmul, outer,
cosine_similarity), cumsum, prod, clamp with tensor limits, constant padding with a value,
Conv3d, sort / topk values (GroupSort, MaxMin), where / masked_fill with a constant mask,
LocalResponseNorm (3-d average pooling) and per-sample scalars (``x[:, 0] * x[:, 1]``,
``h.sum(1)``). For each model: the traced graph evaluates to the model's own outputs,
``output_bounds`` (ibp, crown, alpha-crown) contain the outputs at sampled points of the ball
(float64 and the model's float32 forward), ``local_lipschitz`` is at least the sampled
gradient norms and ``jacobian_bounds`` contain the sampled gradients. What stays out is
refused with an UnsupportedOperationError that says why.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lipbound
from lipbound.errors import UnsupportedOperationError
from tests.api.sampled import assert_graph_reproduces, model_tests


class Recurrent(nn.Module):
    """A recurrent layer over 3 steps of 4 features; the head reads the last output or the
    last layer's final state (``h_n[-1]``, or ``h_n.squeeze(0)`` with one layer)."""

    def __init__(self, kind="LSTM", layers=1, bidirectional=False, final=False, h0=False,
                 **kw):
        super().__init__()
        self.rnn = getattr(nn, kind)(4, 5, num_layers=layers, bidirectional=bidirectional,
                                     batch_first=True, **kw)
        self.final, self.layers = final, layers
        d = 2 if bidirectional else 1
        self.h0 = nn.Parameter(torch.randn(layers * d, 1, 5) * 0.5) if h0 else None
        self.head = nn.Linear(5 if final else 5 * d, 3)

    def forward(self, x):
        seq = x.view(-1, 3, 4)
        if self.h0 is not None:
            h0 = self.h0.expand(-1, seq.shape[0], -1).contiguous()
            out, h = self.rnn(seq, (h0, torch.zeros_like(h0)) if isinstance(self.rnn, nn.LSTM)
                              else h0)
        else:
            out, h = self.rnn(seq)
        if not self.final:
            return self.head(out[:, -1])
        h = h[0] if isinstance(h, tuple) else h
        return self.head(h.squeeze(0) if self.layers == 1 else h[-1])


class Moves(nn.Module):
    """An MLP whose hidden vector is moved around by index in many ways."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.register_buffer("idx", torch.tensor([0, 3, 5, 5, 7]))
        self.head = nn.Linear(70, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        m = h.view(-1, 2, 4)
        parts = [torch.roll(h, 3, 1), h.repeat(1, 2), h[:, self.idx],
                 h.index_select(1, self.idx[:4]), h.unfold(1, 3, 2).flatten(1),
                 m.repeat_interleave(2, dim=1).flatten(1)[:, :12], m.diagonal(dim1=1, dim2=2),
                 m.movedim(1, 2).flatten(1),
                 torch.gather(h, 1, self.idx[:3].expand(h.shape[0], 3)).repeat(1, 2)]
        return self.head(torch.cat(parts, 1))


class Composites(nn.Module):
    """stack, addcmul, outer, cosine_similarity, cumsum, prod, tensor clamps, a valued pad
    and per-sample scalars."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.register_buffer("lo", torch.linspace(-0.8, 0.1, 8))
        self.head = nn.Linear(74, 3)

    def forward(self, x):
        h = self.fc(x)
        t = torch.tanh(h)
        a, b = t[:, :4], t[:, 4:]
        scalars = torch.stack([h[:, 0] * h[:, 1], torch.tanh(h.sum(1)), t.norm(dim=1)], 1)
        parts = [torch.stack([h, t], 2).flatten(1), torch.addcmul(h, t, h, value=0.5),
                 torch.einsum("bi,bj->bij", a, b).flatten(1),
                 F.cosine_similarity(a + 2, b + 2).unsqueeze(1), torch.cumsum(t, 1),
                 torch.prod(t.view(-1, 4, 2) + 1, 2), torch.clamp(h, min=self.lo, max=self.lo + 1),
                 F.pad(t, (1, 1), value=0.1), scalars]
        return self.head(torch.cat(parts, 1))


class Cumulative(nn.Module):
    """cumprod, cummax and cummin values (session 15)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        h = self.fc(x).view(-1, 2, 4)
        return self.head(torch.cat([torch.cumprod(torch.tanh(h), 2).flatten(1),
                                    torch.cummax(h, 1).values.flatten(1),
                                    torch.cummin(h, 2)[0].flatten(1)], 1))


class Sorts(nn.Module):
    """GroupSort (groups of 4), MaxMin (groups of 2), a descending sort and top-3."""

    def __init__(self):
        super().__init__()
        self.fc, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 8)
        self.head = nn.Linear(8 + 8 + 3, 3)

    def forward(self, x):
        h = torch.sort(self.fc(x).view(-1, 2, 4), dim=-1).values.flatten(1)
        h = torch.sort(self.fc2(h).view(-1, 4, 2), dim=2, descending=True)[0].flatten(1)
        return self.head(torch.cat([h, torch.sort(h, 1, descending=True).values,
                                    torch.topk(h, 3).values], 1))


class Masked(nn.Module):
    """torch.where and masked_fill with a constant mask (a buffer)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.register_buffer("mask", torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool))
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        h = self.fc(x)
        t = torch.tanh(h)
        return self.head(torch.cat([torch.where(self.mask, h, t), torch.where(self.mask, h, 0.5),
                                    h.masked_fill(~self.mask, -1.0)], 1))


class Filled(nn.Module):
    """Constants shaped after activations: zeros_like, ones_like, full_like, new_zeros."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.head = nn.Linear(26, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.head(torch.cat([h + torch.ones_like(h), torch.zeros_like(h),
                                    h * torch.full_like(h, 2.0),
                                    h.new_zeros(h.shape[0], 2) + 1], 1))


class BroadcastConst(nn.Module):
    """Constants that broadcast an activation: h[:, :, None] + C, * C, C / (.)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.register_buffer("C", torch.linspace(-1.0, 1.0, 12).reshape(4, 3))
        self.head = nn.Linear(36, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x))[:, :, None]
        return self.head(torch.cat([(h + self.C).flatten(1), (h * self.C).flatten(1),
                                    (self.C / (h * h + 1)).flatten(1)], 1))


def _cnn_lrn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.LocalResponseNorm(2), nn.ReLU(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3))


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ChannelShuffle(2), nn.ReLU(),
                         nn.Unfold(2, stride=2), nn.Flatten(), nn.Linear(4 * 4 * 9, 3))


def _cnn3d():
    return nn.Sequential(nn.Conv3d(1, 2, 2), nn.ReLU(), nn.Conv3d(2, 2, 2, padding=1),
                         nn.Flatten(), nn.Linear(2 * 4 * 4 * 4, 3))


class TimeMajor(nn.Module):
    """nn.LSTM / GRU / RNN in their default time-major layout (``batch_first=False``) on
    ``x.transpose(0, 1)``; the head reads the last step, the mean over time, the output
    transposed back to batch-first, or the final state."""

    def __init__(self, kind="LSTM", read="last", **kw):
        super().__init__()
        self.rnn, self.read = getattr(nn, kind)(4, 5, **kw), read
        d = 2 if kw.get("bidirectional") else 1
        self.head = nn.Linear(5 * d * (3 if read == "batch_first" else 1), 3)

    def forward(self, x):
        out, h = self.rnn(torch.tanh(x.view(-1, 3, 4)).transpose(0, 1))
        if self.read == "last":
            return self.head(out[-1])
        if self.read == "mean":
            return self.head(out.mean(0))
        if self.read == "batch_first":
            return self.head(out.transpose(0, 1).contiguous().flatten(1))
        return self.head((h[0] if isinstance(h, tuple) else h)[-1])


def _models():
    torch.manual_seed(0)
    return {
        "lstm": (Recurrent("LSTM"), (12,)),
        "lstm_2l_bi_final": (Recurrent("LSTM", 2, True, final=True), (12,)),
        "gru_2l_final_h0": (Recurrent("GRU", 2, final=True, h0=True), (12,)),
        "gru_bi": (Recurrent("GRU", 1, True), (12,)),
        "rnn_tanh_2l": (Recurrent("RNN", 2), (12,)),
        "rnn_relu_final": (Recurrent("RNN", 1, final=True, nonlinearity="relu"), (12,)),
        "lstm_h0": (Recurrent("LSTM", 1, h0=True), (12,)),
        "tm_lstm_last": (TimeMajor("LSTM"), (12,)),
        "tm_gru_mean_2l": (TimeMajor("GRU", "mean", num_layers=2), (12,)),
        "tm_rnn_bi_batch_first": (TimeMajor("RNN", "batch_first", bidirectional=True), (12,)),
        "tm_lstm_final": (TimeMajor("LSTM", "final"), (12,)),
        "moves": (Moves(), (6,)), "sorts": (Sorts(), (6,)), "masked": (Masked(), (6,)),
        "filled": (Filled(), (6,)), "broadcast_const": (BroadcastConst(), (6,)),
        "cnn_lrn": (_cnn_lrn(), (1, 8, 8)), "composites": (Composites(), (6,)),
        "cumulative": (Cumulative(), (6,)),
        "cnn_unfold_shuffle": (_cnn(), (1, 8, 8)), "cnn3d": (_cnn3d(), (1, 4, 4, 4)),
    }


MODELS = {k: (m.eval(), s) for k, (m, s) in _models().items()}
SLOW = {"lstm_2l_bi_final", "gru_2l_final_h0", "tm_gru_mean_2l", "gru_bi", "tm_lstm_final",
        "lstm_h0"}  # 5-25 s each; the others cover their parts (graph = model: all)


test_output_bounds_contain_samples, test_lipschitz_and_jacobian_bounds_contain_sampled_gradients = (
    model_tests(MODELS, SLOW))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_traced_graph_reproduces_the_model(name):
    assert_graph_reproduces(*MODELS[name])


class _Refused(nn.Module):
    def __init__(self, case):
        super().__init__()
        self.case = case
        self.rnn = nn.LSTM(4, 5, proj_size=2 if case == "proj" else 0,
                           batch_first=case in ("layout", "h0"))
        self.head = nn.Linear(2 if case == "proj" else 5, 3)

    def forward(self, x):
        seq = torch.tanh(x.view(-1, 3, 4))
        if self.case == "layout":  # batch_first=True fed a time-major sequence
            return self.head(self.rnn(seq.transpose(0, 1))[0][-1])
        if self.case == "h0":  # an initial state computed from the input
            s = seq[:, 0].sum(1).view(1, -1, 1).expand(1, -1, 5).contiguous()
            return self.head(self.rnn(seq, (s, torch.zeros_like(s)))[0][:, -1])
        out = self.rnn(seq.transpose(0, 1))[0]
        if self.case == "proj":
            return self.head(out[-1])
        return self.head(torch.relu(out)[-1])  # an op on a time-major value


@pytest.mark.parametrize("case, why", [
    ("layout", "batch-first with batch_first=True"),
    ("h0", "batch dimension"),
    ("proj", "proj_size"),
    ("op_on_time_major", "batch dimension second"),
])
def test_unsupported_recurrent_variants_are_refused(case, why):
    with pytest.raises(UnsupportedOperationError, match=why):
        lipbound.output_bounds(_Refused(case).eval(), torch.rand(12), 0.01)


@pytest.mark.parametrize("name", [
    "lstm_h0", pytest.param("gru_2l_final_h0", marks=pytest.mark.slow),
    pytest.param("tm_lstm_last", marks=pytest.mark.slow), "rnn_tanh_2l", "composites",
    "cumulative",
    "sorts", "masked"])
def test_point_bounds_contain_the_models_own_float32_forward(name):
    """At eps = 0 the bounds are the model's value widened only by the rounding allowance:
    the float32 forward (RNN gates summed by torch's kernels, a float32 fill constant) must
    lie inside, with no tolerance."""
    model, shape = MODELS[name]
    for seed in range(3):
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed))
        lo, up = lipbound.output_bounds(model, x, 0.0)
        with torch.no_grad():
            y = model(x[None])[0].double()
        assert (y >= lo).all() and (y <= up).all(), (lo - y, y - up)


class _PadPoint(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return F.pad(self.fc(x), (1, 2), value=0.1)


def test_padding_fill_is_the_models_rounded_constant():
    """F.pad(value=0.1) on a float32 model fills with float32(0.1) != 0.1: the output bounds
    at a point must contain that value (the fill's rounding is part of the allowance)."""
    model = _PadPoint().eval()
    x = torch.rand(3)
    lo, up = lipbound.output_bounds(model, x, 0.0)
    with torch.no_grad():
        y = model(x[None])[0].double()
    assert y[0] != 0.1 and (y >= lo).all() and (y <= up).all()
