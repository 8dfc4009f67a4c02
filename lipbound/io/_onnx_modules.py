"""The torch building blocks of a converted ONNX model (see :mod:`lipbound.io.onnx_loader`).

Every step works on a batch: its inputs and its output are ``[B, *sample]`` tensors, and each
forward uses only plain torch calls (``F.linear``, ``F.conv2d``, ``F.relu``, ``+``, ``reshape`` ...)
so that ``torch.export`` yields standard aten ops. Constants are parameters that do not require
gradients, so ``model.double()`` / ``model.to(device)`` move them with the model and
``torch.export`` lifts them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipbound.errors import ShapeError


def _const(value: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(value, requires_grad=False)


class Step(nn.Module):
    """One ONNX node (or a layout change): reads ``inputs``, writes ``output``."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node  # the ONNX node it came from, for messages and repr
        self.inputs: tuple[str, ...] = ()
        self.output = ""

    def extra_repr(self) -> str:
        return f"node={self.node!r}"


class Linear(Step):
    """``x W^T + b`` over the last axis; with ``left=True``, ``W x`` over the last two axes."""

    def __init__(
        self, node: str, weight: torch.Tensor, bias: torch.Tensor | None, left: bool = False
    ) -> None:
        super().__init__(node)
        self.weight = _const(weight)
        self.bias = None if bias is None else _const(bias)
        self.left = left

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.left:
            return F.linear(x, self.weight, self.bias)
        perm = list(range(x.dim() - 2)) + [x.dim() - 1, x.dim() - 2]
        return F.linear(x.permute(perm), self.weight, self.bias).permute(perm)


class Conv(Step):
    """1-d or 2-d convolution; ``pre_pad`` (F.pad order) is applied first for asymmetric padding."""

    def __init__(
        self,
        node: str,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        groups: int,
        pre_pad: tuple[int, ...] | None,
    ) -> None:
        super().__init__(node)
        self.weight = _const(weight)
        self.bias = None if bias is None else _const(bias)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups = groups
        self.pre_pad = pre_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        conv = F.conv2d if self.weight.dim() == 4 else F.conv1d
        return conv(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class Pool(Step):
    """2-d average or max pooling (``kind`` is ``"avg"`` or ``"max"``)."""

    def __init__(
        self,
        node: str,
        kind: str,
        kernel: tuple[int, ...],
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        ceil_mode: bool,
        count_include_pad: bool,
        pre_pad: tuple[int, ...] | None,
    ) -> None:
        super().__init__(node)
        self.kind = kind
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.pre_pad = pre_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        if self.kind == "max":
            return F.max_pool2d(
                x, self.kernel, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode
            )
        return F.avg_pool2d(
            x,
            self.kernel,
            self.stride,
            self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
        )

    def extra_repr(self) -> str:
        return f"node={self.node!r}, kind={self.kind}, kernel={self.kernel}, stride={self.stride}"


class Pad(Step):
    """Constant padding; ``pad`` in F.pad order (last axis first)."""

    def __init__(self, node: str, pad: tuple[int, ...], value: float) -> None:
        super().__init__(node)
        self.pad, self.value = pad, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pad, mode="constant", value=self.value)


class BatchNorm(Step):
    """Batch normalisation with running statistics (inference)."""

    def __init__(
        self,
        node: str,
        weight: torch.Tensor,
        bias: torch.Tensor,
        mean: torch.Tensor,
        var: torch.Tensor,
        eps: float,
    ) -> None:
        super().__init__(node)
        self.weight, self.bias = _const(weight), _const(bias)
        self.running_mean, self.running_var = _const(mean), _const(var)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


#: element-wise functions by ONNX op type, given the node's attributes (ONNX defaults)
UNARY = {
    "Relu": lambda x, a: F.relu(x),
    "Sigmoid": lambda x, a: torch.sigmoid(x),
    "Tanh": lambda x, a: torch.tanh(x),
    "LeakyRelu": lambda x, a: F.leaky_relu(x, a.get("alpha", 0.01)),
    "Neg": lambda x, a: -x,
    "Abs": lambda x, a: torch.abs(x),
    "Exp": lambda x, a: torch.exp(x),
    "Log": lambda x, a: torch.log(x),
    "Sqrt": lambda x, a: torch.sqrt(x),
    "Reciprocal": lambda x, a: torch.reciprocal(x),
    "Sin": lambda x, a: torch.sin(x),
    "Cos": lambda x, a: torch.cos(x),
    "Erf": lambda x, a: torch.erf(x),
    "Atan": lambda x, a: torch.atan(x),
    "Softplus": lambda x, a: F.softplus(x),
    "Softsign": lambda x, a: F.softsign(x),
    "Elu": lambda x, a: F.elu(x, a.get("alpha", 1.0)),
    "Celu": lambda x, a: F.celu(x, a.get("alpha", 1.0)),
    "Selu": lambda x, a: a.get("gamma", 1.0507009873554805)
    * F.elu(x, a.get("alpha", 1.6732632423543772)),
    "HardSigmoid": lambda x, a: torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda x, a: F.hardswish(x),
    "Mish": lambda x, a: F.mish(x),
    "Gelu": lambda x, a: F.gelu(x, approximate=a.get("approximate", "none")),
}


class Activation(Step):
    """An element-wise function of :data:`UNARY` (``kind``: the ONNX op type) with the
    node's numeric attributes ``attrs``."""

    def __init__(self, node: str, kind: str, attrs: dict | None = None) -> None:
        super().__init__(node)
        self.kind, self.attrs = kind, dict(attrs or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return UNARY[self.kind](x, self.attrs)

    def extra_repr(self) -> str:
        return f"node={self.node!r}, kind={self.kind}"


class Clip(Step):
    """``clamp(x, low, high)`` with constant limits (either may be None)."""

    def __init__(self, node: str, low: float | None, high: float | None) -> None:
        super().__init__(node)
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.low, self.high)


class Softmax(Step):
    """``softmax`` / ``log_softmax`` over torch dim ``dim`` (never the batch)."""

    def __init__(self, node: str, dim: int, log: bool) -> None:
        super().__init__(node)
        self.dim, self.log = dim, log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.log_softmax if self.log else F.softmax)(x, dim=self.dim)


class Binary(Step):
    """``a op b`` for op in add/sub/mul/div/max/min; one operand may be the constant
    ``const``.

    ``const_first`` says whether the constant is the left operand (matters for sub and div).
    """

    def __init__(
        self, node: str, op: str, const: torch.Tensor | None = None, const_first: bool = False
    ) -> None:
        super().__init__(node)
        self.op = op
        self.const = None if const is None else _const(const)
        self.const_first = const_first

    def forward(self, a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if self.const is not None:
            a, b = (self.const, a) if self.const_first else (a, self.const)
        if self.op == "add":
            return a + b
        if self.op == "sub":
            return a - b
        if self.op == "mul":
            return a * b
        if self.op == "max":
            return torch.maximum(a, b)
        if self.op == "min":
            return torch.minimum(a, b)
        return a / b

    def extra_repr(self) -> str:
        return f"node={self.node!r}, op={self.op}"


class Reshape(Step):
    """Reshape each sample to ``shape`` (the batch axis stays first)."""

    def __init__(self, node: str, shape: tuple[int, ...]) -> None:
        super().__init__(node)
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.shape) == 1 and x.dim() >= 2:
            return torch.flatten(x, 1)
        return x.reshape(-1, *self.shape)

    def extra_repr(self) -> str:
        return f"node={self.node!r}, shape={self.shape}"


class Permute(Step):
    def __init__(self, node: str, perm: tuple[int, ...]) -> None:
        super().__init__(node)
        self.perm = perm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.perm)


class Slice(Step):
    """``x[:, s_1, s_2, ...]``: per torch dim a (start, end, step) with step > 0, or None."""

    def __init__(self, node: str, slices: tuple) -> None:
        super().__init__(node)
        self.slices = slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = tuple(slice(None) if s is None else slice(*s) for s in self.slices)
        return x[idx]


class Gather(Step):
    """Elements of torch dim ``dim`` at the constant ``index`` (any shape, which replaces
    that dim)."""

    def __init__(self, node: str, dim: int, index: torch.Tensor) -> None:
        super().__init__(node)
        self.dim = dim
        self.register_buffer("index", index.reshape(-1).long())
        self.shape = tuple(index.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.index_select(self.dim, self.index)
        return y.reshape(*x.shape[:self.dim], *self.shape, *x.shape[self.dim + 1:])


class Concat(Step):
    def __init__(self, node: str, dim: int) -> None:
        super().__init__(node)
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


class OnnxModel(nn.Module):
    """A network converted from ONNX by :func:`lipbound.io.load_onnx`.

    ``forward(x)`` takes ``x`` of shape ``[B, *input_shape]`` for any batch size B and returns
    ``[B, output_size]``. Attributes: ``input_shape`` (tuple, without batch), ``output_size``
    (int), ``onnx_input_shape`` (the shape the ONNX file declares, batch included when it has one),
    ``source`` (the file path) and ``steps`` (one module per converted node, run in order).
    """

    def __init__(
        self,
        steps: list[Step],
        input_key: str,
        output_key: str,
        input_shape: tuple[int, ...],
        output_size: int,
        onnx_input_shape: tuple,
        source: str,
    ) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.input_key, self.output_key = input_key, output_key
        self.input_shape = tuple(input_shape)
        self.output_size = int(output_size)
        self.onnx_input_shape = tuple(onnx_input_shape)
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(
                f"{self.source}: expected input of shape "
                f"[B, {', '.join(map(str, self.input_shape))}]"
                f" (B = batch size), got {list(x.shape)}"
            )
        env = {self.input_key: x}
        for step in self.steps:
            env[step.output] = step(*[env[k] for k in step.inputs])
        return env[self.output_key]

    def extra_repr(self) -> str:
        return (
            f"source={self.source!r}, input_shape={self.input_shape}, "
            f"output_size={self.output_size}"
        )
