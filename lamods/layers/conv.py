r"""Convolution as matrix multiplication: im2col (unfold), one matmul, col2im (fold).

A 2-D convolution (a cross-correlation, as :class:`torch.nn.Conv2d` computes it) of
:math:`x \in \mathbb{R}^{N \times C_{in} \times H \times W}` with
:math:`W \in \mathbb{R}^{C_{out} \times C_{in}/g \times k_h \times k_w}` (``g`` groups),
stride :math:`s`, padding :math:`p` and dilation :math:`d`:

.. math::
    y_{n,o,i,j} = b_o + \sum_{c,u,v} W_{o,c,u,v}\,
        x_{n,\,c + C_{in}/g \lfloor o g / C_{out} \rfloor,\; s_h i + d_h u - p_h,\;
        s_w j + d_w v - p_w},

:math:`H_{out} = \lfloor (H + 2 p_h - d_h (k_h - 1) - 1)/s_h \rfloor + 1` (same for
:math:`W_{out}`). Every output pixel is a dot product of the kernel with one receptive
field, so the whole layer is one matrix product:

- **im2col**: :math:`X_{col} = \operatorname{unfold}(x) \in
  \mathbb{R}^{N \times C_{in} k_h k_w \times L}`, :math:`L = H_{out} W_{out}`, one column
  per receptive field (``F.unfold``);
- **matmul**: :math:`Y = W_{mat} X_{col}`, :math:`W_{mat} \in
  \mathbb{R}^{C_{out} \times C_{in} k_h k_w}` (per group, block-diagonal over groups);
- reshape :math:`Y` to :math:`(N, C_{out}, H_{out}, W_{out})` and add :math:`b`.

Backward, with :math:`G = \partial L / \partial Y \in \mathbb{R}^{N \times C_{out} \times L}`:

.. math::
    \frac{\partial L}{\partial W_{mat}} = \sum_n G_n X_{col,n}^T, \qquad
    \frac{\partial L}{\partial X_{col}} = W_{mat}^T G, \qquad
    \frac{\partial L}{\partial x} = \operatorname{fold}(W_{mat}^T G), \qquad
    \frac{\partial L}{\partial b_o} = \sum_{n, l} G_{n,o,l}.

**col2im** (``F.fold``) is the adjoint of im2col: it adds every column back onto the
pixels of its receptive field, so a pixel that lies in several overlapping fields
receives the sum of their gradients, and a pixel in none (a stride that skips it)
receives zero.

Note [double backward]: the backward is written in differentiable ops (``unfold``,
``matmul``, ``fold``) and recomputes :math:`X_{col}` from the saved input, so autograd
differentiates it again (``gradgradcheck``); only the input and the weight are saved.

Note [padding modes]: ``padding="same"`` with an even effective kernel and the
``reflect``/``replicate``/``circular`` modes pad with ``F.pad`` before the Function
(as :class:`torch.nn.Conv2d` does), so the Function itself only sees zero padding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lamods._precision import autocast_dtype, cast_all
from lamods._validation import check_choice, check_like, check_positive_int

__all__ = ["ManualConv2d", "conv2d", "conv_output_size"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_Pair = tuple[int, int]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                     dilation: int = 1) -> int:
    r"""Output length of a convolution along one axis.

    :math:`\lfloor (n + 2p - d (k - 1) - 1)/s \rfloor + 1`.

    Examples::

        >>> conv_output_size(8, 3, padding=1), conv_output_size(8, 3, stride=2, padding=1)
        (8, 4)
        >>> conv_output_size(28, 5, dilation=2)
        20
    """
    # H_out = floor((H + 2 p - d (k - 1) - 1) / s) + 1
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ---------------------------------------------------------------------------
# The Function: im2col, one matmul; hand-written backward
# ---------------------------------------------------------------------------
def _im2col(x: Tensor, kernel: _Pair, stride: _Pair, padding: _Pair, dilation: _Pair,
            groups: int) -> Tensor:
    """``unfold(x)`` as ``(N, groups, C_in/g k_h k_w, L)`` (receptive fields as columns)."""
    n = x.shape[0]
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return cols.reshape(n, groups, cols.shape[1] // groups, cols.shape[2])


class _Conv2dFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, stride: _Pair,
                padding: _Pair, dilation: _Pair, groups: int) -> Tensor:
        # x: (N, C_in, H, W), weight: (C_out, C_in/g, k_h, k_w) -> (N, C_out, H_out, W_out)
        n, _, h, w = x.shape
        c_out, _, kh, kw = weight.shape
        h_out = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
        w_out = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
        # im2col: X_col (N, g, C_in/g k_h k_w, L)
        cols = _im2col(x, (kh, kw), stride, padding, dilation, groups)
        # Y = W_mat X_col, one (batched) matmul; W_mat (g, C_out/g, C_in/g k_h k_w)
        w_mat = weight.reshape(groups, c_out // groups, cols.shape[2])
        y = (w_mat @ cols).reshape(n, c_out, h_out, w_out)
        if bias is not None:
            y = y + bias.reshape(1, c_out, 1, 1)
        return y

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, weight, bias, stride, padding, dilation, groups = inputs
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        n, c_in, h, w = x.shape
        c_out, _, kh, kw = weight.shape
        # G: (N, g, C_out/g, L)
        L = grad.shape[2] * grad.shape[3]
        g = grad.reshape(n, groups, c_out // groups, L)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # dL/dX_col = W_mat^T G: (N, g, C_in/g k_h k_w, L)
            w_mat = weight.reshape(groups, c_out // groups, (c_in // groups) * kh * kw)
            d_cols = (w_mat.mT @ g).reshape(n, c_in * kh * kw, L)
            # col2im: dL/dx = fold(dL/dX_col), overlapping fields summed
            grad_x = F.fold(d_cols, (h, w), (kh, kw), dilation=dilation, padding=padding,
                            stride=stride)
        if ctx.needs_input_grad[1]:
            cols = _im2col(x, (kh, kw), stride, padding, dilation, groups)
            # dL/dW_mat = sum_n G_n X_col,n^T: a batched matmul over n with X_col read
            # transposed in place (no copy of the large unfolded input), then the sum
            grad_w = (g @ cols.mT).sum(0).reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            # dL/db_o = sum_{n, l} G_{n, o, l}
            grad_b = grad.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None


# ---------------------------------------------------------------------------
# Argument handling shared by the functional form and the module
# ---------------------------------------------------------------------------
def _pair(name: str, arg: str, value: object, *, minimum: int = 1) -> _Pair:
    """An int or a pair of ints, each ``>= minimum``, as a pair."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    ok = len(items) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                 and v >= minimum for v in items)
    if not ok:
        raise ValueError(f"{name}: expected {arg} to be an int >= {minimum} or a pair of them, "
                         f"got {value!r}")
    return int(items[0]), int(items[1])


def _same_padding(kernel: _Pair, dilation: _Pair) -> tuple[int, int, int, int]:
    """``F.pad`` widths (left, right, top, bottom) keeping the size: d (k - 1) split,
    the extra pixel on the right/bottom, as :class:`torch.nn.Conv2d` does."""
    pads = []
    for k, d in zip(kernel[::-1], dilation[::-1]):
        total = d * (k - 1)
        pads += [total // 2, total - total // 2]
    return tuple(pads)  # type: ignore[return-value]


def _check_input(name: str, x: object, in_channels: int | None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor input, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point input, got dtype {x.dtype}")
    channels = "C" if in_channels is None else str(in_channels)
    if x.dim() < 3:
        raise ValueError(f"{name}: expected input of shape (*, {channels}, H, W), got shape "
                         f"{tuple(x.shape)}")
    if in_channels is not None and x.shape[-3] != in_channels:
        raise ValueError(f"{name}: expected input with {in_channels} channels (dimension -3), "
                         f"got {x.shape[-3]} (input shape {tuple(x.shape)})")
    return x


def _conv(name: str, x: Tensor, weight: Tensor, bias: Tensor | None, stride: _Pair,
          padding: _Pair | tuple[int, int, int, int], dilation: _Pair, groups: int,
          padding_mode: str) -> Tensor:
    """Flatten ``(*, C, H, W)`` to ``(N, C, H, W)``, pad (Note [padding modes]), run the
    Function (under autocast in the autocast dtype, as ``nn.Conv2d``), restore the shape."""
    lead = x.shape[:-3]
    x4 = x.reshape(-1, *x.shape[-3:])
    if len(padding) == 4 or padding_mode != "zeros":
        widths = padding if len(padding) == 4 else (
            padding[1], padding[1], padding[0], padding[0])
        mode = "constant" if padding_mode == "zeros" else padding_mode
        x4 = F.pad(x4, widths, mode=mode)
        padding = (0, 0)
    kernel = (weight.shape[2], weight.shape[3])
    for axis, size, k, p, d in (("height", x4.shape[2], kernel[0], padding[0], dilation[0]),
                                ("width", x4.shape[3], kernel[1], padding[1], dilation[1])):
        if d * (k - 1) + 1 > size + 2 * p:
            raise ValueError(
                f"{name}: expected a padded input {axis} of at least the dilated kernel size "
                f"{d * (k - 1) + 1}, got {size + 2 * p} (input shape {tuple(x.shape)})")
    dtype = autocast_dtype(x4)
    if dtype is None:
        y = _Conv2dFn.apply(x4, weight, bias, stride, padding, dilation, groups)
    else:
        x4, weight, bias = cast_all(dtype, x4, weight, bias)
        with torch.autocast(x4.device.type, enabled=False):
            y = _Conv2dFn.apply(x4, weight, bias, stride, padding, dilation, groups)
    return y.reshape(*lead, *y.shape[1:])


def _resolve_padding(name: str, padding: object, kernel: _Pair, stride: _Pair,
                     dilation: _Pair) -> _Pair | tuple[int, int, int, int]:
    """int / pair -> pair; ``"valid"`` -> (0, 0); ``"same"`` -> a pair when symmetric,
    else the four ``F.pad`` widths."""
    if isinstance(padding, str):
        check_choice(name, "padding", padding, ("valid", "same"))
        if padding == "valid":
            return (0, 0)
        if stride != (1, 1):
            raise ValueError(f"{name}: expected stride 1 with padding='same' (as nn.Conv2d), "
                             f"got stride {stride}")
        left, right, top, bottom = _same_padding(kernel, dilation)
        return (top, left) if (left, top) == (right, bottom) else (left, right, top, bottom)
    return _pair(name, "padding", padding, minimum=0)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int | _Pair = 1,
           padding: int | _Pair | str = 0, dilation: int | _Pair = 1,
           groups: int = 1) -> Tensor:
    r"""Functional form of :class:`ManualConv2d` (the arguments of ``F.conv2d``).

    :math:`y = \operatorname{reshape}(W_{mat} \operatorname{unfold}(x)) + b`, backward by
    hand (module docstring).

    Args:
        x: ``(*, C_in, H, W)``, any number of leading dimensions (``(C_in, H, W)`` too).
        weight: ``(C_out, C_in / groups, k_h, k_w)``.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation, groups: as ``F.conv2d`` (``padding``: int, pair,
            ``"valid"`` or ``"same"``).

    Shape:
        - Output: ``(*, C_out, H_out, W_out)``.

    Examples::

        >>> x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
        >>> torch.allclose(conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    name = "conv2d"
    _check_input(name, x, None)
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        raise ValueError(f"{name}: expected weight of shape (C_out, C_in/groups, k_h, k_w), "
                         f"got {getattr(weight, 'shape', type(weight).__name__)}")
    groups = check_positive_int(name, "groups", groups)
    if weight.shape[0] % groups or x.shape[-3] != weight.shape[1] * groups:
        raise ValueError(f"{name}: expected input with weight.shape[1] * groups = "
                         f"{weight.shape[1] * groups} channels and C_out = {weight.shape[0]} "
                         f"divisible by groups = {groups}, got input shape {tuple(x.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{name}: expected bias of shape ({weight.shape[0]},), got "
                         f"{tuple(bias.shape)}")
    stride_p = _pair(name, "stride", stride)
    dilation_p = _pair(name, "dilation", dilation)
    kernel = (weight.shape[2], weight.shape[3])
    pad = _resolve_padding(name, padding, kernel, stride_p, dilation_p)
    return _conv(name, x, weight, bias, stride_p, pad, dilation_p, groups, "zeros")


class ManualConv2d(nn.Module):
    r"""2-D convolution computed as im2col + one matmul, with a hand-written backward.

    :math:`Y = W_{mat} \operatorname{unfold}(x) + b`, reshaped to
    :math:`(N, C_{out}, H_{out}, W_{out})`; backward :math:`\partial L/\partial W_{mat} =
    \sum_n G_n X_{col,n}^T`, :math:`\partial L/\partial x = \operatorname{fold}(W_{mat}^T G)`
    (module docstring). A drop-in for :class:`torch.nn.Conv2d`: the same arguments, the
    same parameters, ``state_dict`` keys and initialisation (same draws for the same
    seed), outputs and gradients equal to its own up to rounding.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: int or ``(k_h, k_w)``.
        stride: int or pair (default 1).
        padding: int, pair, ``"valid"`` or ``"same"`` (default 0).
        dilation: int or pair (default 1).
        groups: blocked connections; ``in_channels`` and ``out_channels`` divisible by it.
        bias: learn an additive bias (default True).
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.

    Shape:
        - Input: :math:`(*, C_{in}, H, W)`, any number of leading dimensions (a single
          image :math:`(C_{in}, H, W)` too; ``nn.Conv2d`` takes at most one).
        - Output: :math:`(*, C_{out}, H_{out}, W_{out})`,
          :math:`H_{out} = \lfloor (H + 2p - d(k - 1) - 1)/s \rfloor + 1`.

    Attributes:
        weight: :math:`(C_{out}, C_{in}/g, k_h, k_w)`, from
            :math:`\mathcal{U}(-\sqrt{k}, \sqrt{k})`, :math:`k = g/(C_{in} k_h k_w)`.
        bias: :math:`(C_{out})`, same distribution.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> conv = ManualConv2d(3, 8, 3, padding=1, stride=2)
        >>> x = torch.randn(4, 3, 16, 16)
        >>> conv(x).shape
        torch.Size([4, 8, 8, 8])
        >>> ref = conv.to_conv2d()
        >>> torch.allclose(conv(x), ref(x), atol=1e-5)
        True
    """

    __constants__ = ["in_channels", "out_channels", "kernel_size", "stride", "padding",
                     "dilation", "groups", "padding_mode"]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | _Pair,
        stride: int | _Pair = 1,
        padding: int | _Pair | str = 0,
        dilation: int | _Pair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        name = "ManualConv2d"
        self.in_channels = check_positive_int(name, "in_channels", in_channels)
        self.out_channels = check_positive_int(name, "out_channels", out_channels)
        self.groups = check_positive_int(name, "groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: expected in_channels and out_channels divisible by "
                             f"groups = {groups}, got {in_channels} and {out_channels}")
        self.kernel_size = _pair(name, "kernel_size", kernel_size)
        self.stride = _pair(name, "stride", stride)
        self.dilation = _pair(name, "dilation", dilation)
        check_choice(name, "padding_mode", padding_mode, PADDING_MODES)
        self.padding_mode = padding_mode
        self._padding = _resolve_padding(name, padding, self.kernel_size, self.stride,
                                         self.dilation)
        self.padding: str | _Pair = padding if isinstance(padding, str) else (
            self._padding)  # type: ignore[assignment]
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups,
                                               *self.kernel_size, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise exactly as ``nn.Conv2d`` does (same draws for the same seed)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        name = "ManualConv2d"
        _check_input(name, x, self.in_channels)
        check_like(name, x, self.weight)
        return _conv(name, x, self.weight, self.bias, self.stride, self._padding,
                     self.dilation, self.groups, self.padding_mode)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) \
                else f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s

    @classmethod
    def from_conv2d(cls, layer: nn.Conv2d) -> ManualConv2d:
        """A ManualConv2d with ``layer``'s settings and copies of its weight and bias."""
        if not isinstance(layer, nn.Conv2d):
            raise TypeError(
                f"ManualConv2d.from_conv2d: expected nn.Conv2d, got {type(layer).__name__}")
        w = layer.weight
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                  layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                  layer.padding_mode, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def to_conv2d(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with this layer's settings and copies of its weight and bias."""
        w = self.weight
        new = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                        self.padding, self.dilation, self.groups, self.bias is not None,
                        self.padding_mode, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if self.bias is not None:
                new.bias.copy_(self.bias)
        return new
