"""ManualConv2d (im2col + one matmul, hand-written backward) against nn.Conv2d / F.conv2d.

The shared battery (:class:`lamods.testing.ModuleBattery`) is written for ``(*, in_features)``
inputs; :class:`ImageBattery` below joins it for ``(*, C, H, W)`` inputs by giving the input
shape (``_input``) and replacing the four bad-input tests whose messages speak of a last
dimension (``test_wrong_last_dimension``, ``test_non_floating_input``,
``test_dtype_mismatch``, ``test_device_mismatch``) with their 4-D equivalents. Every other
battery test (reference outputs and gradients over device x dtype x batch shape, float64
gradcheck and gradgradcheck, state_dict, ``.to``, bf16 autocast, ``torch.compile``,
``torch.func.grad``) runs unchanged.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lamods.layers import ManualConv2d, conv2d
from lamods.layers.conv import conv_output_size
from lamods.testing import ModuleBattery, assert_close, check_gradients


class ImageBattery(ModuleBattery):
    """The battery for a layer whose input is ``(*, C, H, W)``: ``in_features`` is C."""

    in_features = 2
    #: small: gradgradcheck perturbs every input and output entry in turn
    image_size: tuple[int, int] = (4, 3)

    def _input(self, batch_shape, device, dtype):
        return torch.randn(*batch_shape, self.in_features, *self.image_size, device=device,
                           dtype=dtype)

    def test_wrong_last_dimension(self):  # the channel dimension, -3
        module = self.build(device="cpu", dtype=torch.float32)
        bad = self.in_features + 1
        with pytest.raises(ValueError, match=re.escape(
                f"{self.name}: expected input with {self.in_features} channels (dimension -3), "
                f"got {bad} (input shape (2, {bad}, 4, 3))")):
            module(torch.randn(2, bad, *self.image_size))
        with pytest.raises(ValueError, match=re.escape(
                f"{self.name}: expected input of shape (*, {self.in_features}, H, W), got shape "
                "(2, 7)")):
            module(torch.randn(2, 7))

    def test_non_floating_input(self):
        module = self.build(device="cpu", dtype=torch.float32)
        with pytest.raises(TypeError, match=re.escape(
                f"{self.name}: expected a floating-point input, got dtype torch.int64")):
            module(torch.ones(2, self.in_features, *self.image_size, dtype=torch.int64))

    def test_dtype_mismatch(self):
        module = self.build(device="cpu", dtype=torch.float32)
        with pytest.raises(TypeError, match=re.escape(
                f"{self.name}: expected input of dtype torch.float32 (the layer's dtype), "
                "got torch.float64")):
            module(self._input((2,), "cpu", torch.float64))

    @pytest.mark.cuda
    @pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not present")
    def test_device_mismatch(self):
        module = self.build(device="cpu", dtype=torch.float32)
        with pytest.raises(RuntimeError, match=re.escape(
                f"{self.name}: expected input on device cpu (the layer's device), got cuda:0")):
            module(self._input((2,), "cuda", torch.float32))


def _reference(module, params, x):
    """F.conv2d on ``x`` flattened to ``(N, C, H, W)`` (nn.Conv2d takes one batch dim)."""
    lead = x.shape[:-3]
    x4 = x.reshape(-1, *x.shape[-3:])
    if module.padding_mode != "zeros":
        p = module._padding
        x4 = F.pad(x4, (p[1], p[1], p[0], p[0]), mode=module.padding_mode)
        padding = 0
    else:
        padding = module.padding
    y = F.conv2d(x4, params["weight"], params.get("bias"), module.stride, padding,
                 module.dilation, module.groups)
    return y.reshape(*lead, *y.shape[1:])


class TestManualConv2d(ImageBattery):
    name = "ManualConv2d"
    kwargs: dict = {"kernel_size": 3, "stride": 1, "padding": 1}
    out_channels = 2

    def build(self, *, device, dtype):
        return ManualConv2d(self.in_features, self.out_channels, device=device, dtype=dtype,
                            **self.kwargs)

    def reference(self, module, params, x):
        return _reference(module, params, x)


class TestManualConv2dGroupsStridedDilated(TestManualConv2d):
    """Groups, stride, dilation, reflect padding, no bias: one battery (the others are
    checked against nn.Conv2d below and by the functional gradgradcheck)."""

    kwargs = {"kernel_size": (2, 3), "stride": (2, 1), "padding": (1, 2), "dilation": (1, 2),
              "groups": 2, "padding_mode": "reflect", "bias": False}


# --------------------------------------------------------------------------- vs nn.Conv2d
CASES = [
    {},
    {"stride": 2, "padding": 1},
    {"stride": 3},  # strides that skip pixels: their input gradient is zero
    {"dilation": (2, 1), "padding": (2, 0)},
    {"groups": 2, "stride": (1, 2)},
    {"groups": 4},  # depthwise
    {"padding": "same"},
    {"padding": "same", "dilation": (1, 2)},
    {"padding": "valid", "bias": False},
    {"padding": 1, "padding_mode": "replicate"},
    {"padding": (2, 1), "padding_mode": "circular", "stride": 2},
]


@pytest.mark.parametrize("kernel", [3, (2, 4)], ids=str)
@pytest.mark.parametrize("kwargs", CASES, ids=str)
def test_outputs_and_gradients_equal_nn_conv2d(kwargs, kernel):
    ref = nn.Conv2d(4, 8, kernel, dtype=torch.float64, **kwargs)
    ours = ManualConv2d.from_conv2d(ref)
    x = torch.randn(3, 4, 11, 10, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    assert y.shape == y_ref.shape
    assert_close(y, y_ref, what="output")
    g = torch.randn_like(y_ref)
    y.backward(g)
    y_ref.backward(g)
    assert_close(x.grad, x_ref.grad, what="dL/dx")
    assert_close(ours.weight.grad, ref.weight.grad, what="dL/dW")
    if ref.bias is not None:
        assert_close(ours.bias.grad, ref.bias.grad, what="dL/db")


def test_float32_gradients_equal_nn_conv2d():
    ref = nn.Conv2d(3, 16, 5, stride=2, padding=2)
    ours = ManualConv2d.from_conv2d(ref)
    x = torch.randn(8, 3, 28, 28, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    ours(x).square().sum().backward()
    ref(x_ref).square().sum().backward()
    assert_close(x.grad, x_ref.grad, what="dL/dx")
    assert_close(ours.weight.grad, ref.weight.grad, what="dL/dW")


def test_weight_gradient_is_the_unfold_matmul():
    """dL/dW_mat = sum_n G_n X_col,n^T, written out with F.unfold (groups = 1)."""
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    y = conv2d(x, w, stride=(1, 2), padding=1)
    g = torch.randn_like(y)
    y.backward(g)
    cols = F.unfold(x, (3, 2), padding=1, stride=(1, 2))  # (N, C k_h k_w, L)
    expected = torch.einsum("nol,nkl->ok", g.flatten(2), cols).reshape(w.shape)
    assert_close(w.grad, expected, what="dL/dW")


def test_input_gradient_of_skipped_pixels_is_zero():
    # stride 3 with a 2x2 kernel: rows/columns 2, 5, ... lie in no receptive field
    x = torch.randn(1, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    conv2d(x, torch.randn(1, 1, 2, 2, dtype=torch.float64), stride=3).sum().backward()
    assert torch.equal(x.grad[..., 2::3, :], torch.zeros_like(x.grad[..., 2::3, :]))
    assert torch.equal(x.grad[..., :, 2::3], torch.zeros_like(x.grad[..., :, 2::3]))
    assert (x.grad[..., 0::3, 0::3] != 0).all()


@pytest.mark.parametrize("kwargs", [{"stride": 2, "padding": 1, "groups": 2},
                                    {"dilation": 2, "padding": "same"}], ids=str)
def test_functional_gradcheck_and_gradgradcheck(kwargs):
    x = torch.randn(1, 4, 5, 4)
    w = torch.randn(2, 4 // kwargs.get("groups", 1), 3, 3)
    b = torch.randn(2)
    check_gradients(lambda x, w, b: conv2d(x, w, b, **kwargs), x, w, b)


def test_initialises_like_nn_conv2d():
    torch.manual_seed(5)
    ours = ManualConv2d(6, 4, (3, 2), groups=2)
    torch.manual_seed(5)
    theirs = nn.Conv2d(6, 4, (3, 2), groups=2)
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    assert set(ours.state_dict()) == set(theirs.state_dict())


@pytest.mark.parametrize("kwargs", [{}, {"bias": False, "padding": "same", "dilation": 2},
                                    {"padding_mode": "circular", "padding": 1, "groups": 3}],
                         ids=str)
def test_conversions_are_exact(kwargs):
    ref = nn.Conv2d(3, 6, 3, **kwargs)
    ours = ManualConv2d.from_conv2d(ref)
    back = ours.to_conv2d()
    assert torch.equal(back.weight, ref.weight) and ours.weight.data_ptr() != ref.weight.data_ptr()
    for attr in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size"):
        assert getattr(back, attr) == getattr(ref, attr), attr
    x = torch.randn(2, 3, 9, 9)
    assert_close(ours(x), ref(x))
    assert_close(back(x), ref(x))


def test_unbatched_and_empty_inputs():
    conv = ManualConv2d(3, 5, 3, padding=1, dtype=torch.float64)
    x = torch.randn(3, 8, 8, dtype=torch.float64)
    assert_close(conv(x), conv.to_conv2d()(x))
    empty = torch.randn(0, 3, 8, 8, requires_grad=True, dtype=torch.float64)
    y = conv(empty)
    assert y.shape == (0, 5, 8, 8)
    y.sum().backward()
    assert torch.equal(conv.weight.grad, torch.zeros_like(conv.weight))


def test_output_size_formula_matches_torch():
    for h, k, s, p, d in [(8, 3, 1, 1, 1), (28, 5, 2, 2, 1), (11, 2, 3, 0, 2), (7, 7, 1, 0, 1)]:
        expected = F.conv2d(torch.zeros(1, 1, h, h), torch.zeros(1, 1, k, k), stride=s,
                            padding=p, dilation=d).shape[-1]
        assert conv_output_size(h, k, s, p, d) == expected


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"in_channels": 0}, "ManualConv2d: expected in_channels to be a positive int, got 0"),
    ({"groups": 2, "in_channels": 3},
     "ManualConv2d: expected in_channels and out_channels divisible by groups = 2, got 3 and 4"),
    ({"kernel_size": (3, 0)},
     "ManualConv2d: expected kernel_size to be an int >= 1 or a pair of them, got (3, 0)"),
    ({"padding": -1}, "ManualConv2d: expected padding to be an int >= 0 or a pair of them, "
                      "got -1"),
    ({"padding": "full"}, "ManualConv2d: expected padding to be one of 'valid', 'same', got "
                          "'full'"),
    ({"padding": "same", "stride": 2},
     "ManualConv2d: expected stride 1 with padding='same' (as nn.Conv2d), got stride (2, 2)"),
    ({"padding_mode": "wrap"}, "ManualConv2d: expected padding_mode to be one of 'zeros', "
                               "'reflect', 'replicate', 'circular', got 'wrap'"),
])
def test_constructor_rejects_bad_arguments(kwargs, message):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        ManualConv2d(**args)


def test_input_smaller_than_kernel_is_refused():
    conv = ManualConv2d(1, 2, 5, dilation=2)
    with pytest.raises(ValueError, match=re.escape(
            "ManualConv2d: expected a padded input height of at least the dilated kernel size "
            "9, got 8 (input shape (1, 1, 8, 20))")):
        conv(torch.randn(1, 1, 8, 20))


def test_functional_rejects_mismatched_weight():
    with pytest.raises(ValueError, match=re.escape(
            "conv2d: expected input with weight.shape[1] * groups = 4 channels and C_out = 6 "
            "divisible by groups = 2, got input shape (1, 3, 5, 5)")):
        conv2d(torch.randn(1, 3, 5, 5), torch.randn(6, 2, 3, 3), groups=2)
    with pytest.raises(ValueError,
                       match=re.escape("conv2d: expected bias of shape (6,), got (5,)")):
        conv2d(torch.randn(1, 2, 5, 5), torch.randn(6, 2, 3, 3), torch.randn(5))


def test_from_conv2d_rejects_other_modules():
    with pytest.raises(TypeError, match="ManualConv2d.from_conv2d: expected nn.Conv2d, got Conv1d"):
        ManualConv2d.from_conv2d(nn.Conv1d(3, 3, 1))
