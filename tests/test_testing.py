"""The gradient-check helpers must fail on a wrong backward, not only pass on a right one."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd.gradcheck import GradcheckError

from lamods import testing
from lamods.layers import ManualLinear


class _WrongBackward(torch.autograd.Function):
    """y = 2x with a backward that forgets the factor 2."""

    @staticmethod
    def forward(x):
        return 2 * x

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g


def test_check_gradients_catches_a_wrong_backward():
    with pytest.raises(GradcheckError, match="Jacobian mismatch"):
        testing.check_gradients(_WrongBackward.apply, torch.randn(4), gradgrad=False)


def test_check_gradients_runs_in_float64_on_float32_inputs():
    seen = []

    def fn(x):
        seen.append(x.dtype)
        return x.sin()

    testing.check_gradients(fn, torch.randn(3, dtype=torch.float32))
    assert set(seen) == {torch.float64}


def test_assert_matches_reference_catches_wrong_gradient():
    with pytest.raises(AssertionError, match="gradient of input 0 differs from the reference"):
        testing.assert_matches_reference(_WrongBackward.apply, lambda x: 2 * x, torch.randn(5))


def test_assert_matches_reference_catches_wrong_output():
    with pytest.raises(AssertionError, match="output differs from the reference"):
        testing.assert_matches_reference(lambda x: x * 1.001, lambda x: x, torch.randn(5) + 10)


def test_check_module_gradients_covers_parameters():
    class BrokenWeightGrad(ManualLinear):
        def forward(self, x):
            # the weight enters through a Function whose backward is wrong
            return x @ _WrongBackward.apply(self.weight).T / 2 + self.bias

    layer = BrokenWeightGrad(3, 2, dtype=torch.float64)
    with pytest.raises(GradcheckError):
        testing.check_module_gradients(layer, torch.randn(4, 3, dtype=torch.float64),
                                       gradgrad=False)


def test_battery_fails_on_a_wrong_reference():
    class Wrong(testing.ModuleBattery):
        name = "ManualLinear"
        in_features = 3

        def build(self, *, device, dtype):
            return ManualLinear(3, 2, device=device, dtype=dtype)

        def reference(self, module, params, x):
            return x @ params["weight"].T  # forgets the bias

    with pytest.raises(AssertionError, match="output differs"):
        Wrong().test_matches_reference("cpu", torch.float32, (5,))


def test_tolerances_are_named_for_every_tested_dtype():
    for dtype in testing.DTYPES:
        assert dtype in testing.TOLERANCES
    assert testing.available_devices()[0] == "cpu"
    assert ("cuda" in testing.available_devices()) == torch.cuda.is_available()


def test_module_battery_reference_sees_replaced_parameters():
    seen = {}

    class Probe(testing.ModuleBattery):
        name = "ManualLinear"
        in_features = 2

        def build(self, *, device, dtype):
            return ManualLinear(2, 2, device=device, dtype=dtype)

        def reference(self, module, params, x):
            seen.update(params)
            return x @ params["weight"].T + params["bias"]

    Probe().test_matches_reference("cpu", torch.float64, ())
    assert set(seen) == {"weight", "bias"}
    assert all(isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter)
               for v in seen.values())
