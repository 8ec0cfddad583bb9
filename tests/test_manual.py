"""ManualLinear and ManualMLP: the shared battery plus conversions, errors and torch.func."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lamods.layers import ACTIVATIONS, Activation, ManualLinear, ManualMLP
from lamods.testing import ModuleBattery, assert_close, check_gradients


# ---------------------------------------------------------------------------
# ManualLinear
# ---------------------------------------------------------------------------
class TestManualLinear(ModuleBattery):
    name = "ManualLinear"
    in_features = 7
    bias = True

    def build(self, *, device, dtype):
        return ManualLinear(7, 4, bias=self.bias, device=device, dtype=dtype)

    def reference(self, module, params, x):
        y = x @ params["weight"].T
        return y + params["bias"] if self.bias else y


class TestManualLinearNoBias(TestManualLinear):
    bias = False


def test_linear_initialises_like_nn_linear():
    torch.manual_seed(3)
    ours = ManualLinear(33, 17)
    torch.manual_seed(3)
    theirs = nn.Linear(33, 17)
    assert torch.equal(ours.weight, theirs.weight)
    assert torch.equal(ours.bias, theirs.bias)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_conversions_are_exact(bias):
    lin = nn.Linear(9, 5, bias=bias, dtype=torch.float64)
    ours = ManualLinear.from_linear(lin)
    back = ours.to_linear()
    x = torch.randn(6, 9, dtype=torch.float64)
    assert torch.equal(back.weight, lin.weight)
    assert (back.bias is None) == (not bias)
    assert torch.equal(ours(x), lin(x)) or torch.allclose(ours(x), lin(x), rtol=0, atol=1e-15)
    assert ours.weight.data_ptr() != lin.weight.data_ptr(), "from_linear must copy"


def test_linear_gradients_equal_nn_linear():
    lin = nn.Linear(12, 6)
    ours = ManualLinear.from_linear(lin)
    x = torch.randn(2, 3, 12, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(2, 3, 6)
    ours(x).backward(g)
    lin(x2).backward(g)
    assert_close(x.grad, x2.grad, what="dL/dx")
    assert_close(ours.weight.grad, lin.weight.grad, what="dL/dW")
    assert_close(ours.bias.grad, lin.bias.grad, what="dL/db")


def test_linear_empty_batch():
    layer = ManualLinear(4, 3)
    x = torch.randn(0, 4, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 3)
    y.sum().backward()
    assert torch.equal(layer.weight.grad, torch.zeros(3, 4))
    assert torch.equal(layer.bias.grad, torch.zeros(3))


def test_linear_from_linear_rejects_other_modules():
    with pytest.raises(TypeError, match="ManualLinear.from_linear: expected nn.Linear, got Conv1d"):
        ManualLinear.from_linear(nn.Conv1d(3, 3, 1))


@pytest.mark.parametrize("arg", [0, -2, 2.5, True])
def test_linear_rejects_bad_sizes(arg):
    with pytest.raises(ValueError, match=re.escape(
            f"ManualLinear: expected in_features to be a positive int, got {arg!r}")):
        ManualLinear(arg, 3)


def test_linear_rejects_non_tensor_and_scalar():
    layer = ManualLinear(3, 2)
    with pytest.raises(TypeError, match="ManualLinear: expected a torch.Tensor input, got list"):
        layer([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=re.escape(
            "ManualLinear: expected input of shape (*, 3), got a 0-dimensional tensor")):
        layer(torch.tensor(1.0))


def test_linear_per_sample_gradients_with_vmap():
    layer = ManualLinear(5, 3, dtype=torch.float64)
    params = {n: p.detach() for n, p in layer.named_parameters()}
    x = torch.randn(8, 5, dtype=torch.float64)

    def loss(params, xi):
        return torch.func.functional_call(layer, params, (xi,)).pow(2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    def ref_loss(p, xi):
        return (xi @ p["weight"].T + p["bias"]).pow(2).sum()

    for i in range(x.shape[0]):
        ref = torch.func.grad(ref_loss)(params, x[i])
        assert_close(per_sample["weight"][i], ref["weight"], what="per-sample dL/dW")
        assert_close(per_sample["bias"][i], ref["bias"], what="per-sample dL/db")


# ---------------------------------------------------------------------------
# ManualMLP
# ---------------------------------------------------------------------------
_TORCH_ACT = {
    "identity": lambda z: z,
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
}


class _MLPBattery(ModuleBattery):
    name = "ManualMLP"
    in_features = 6
    sizes = (6, 5, 4, 3)
    activation = "relu"
    output_activation = "identity"
    bias = True

    def build(self, *, device, dtype):
        return ManualMLP(self.sizes, self.activation, self.output_activation, bias=self.bias,
                         device=device, dtype=dtype)

    def reference(self, module, params, x):
        a = x
        n = len(self.sizes) - 1
        for i in range(n):
            z = a @ params[f"layers.{i}.weight"].T
            if self.bias:
                z = z + params[f"layers.{i}.bias"]
            a = _TORCH_ACT[self.activation if i < n - 1 else self.output_activation](z)
        return a


for _act in ACTIVATIONS:
    _name = "TestManualMLP_" + _act
    globals()[_name] = type(_name, (_MLPBattery,), {"activation": _act})


class TestManualMLPSigmoidOutputNoBias(_MLPBattery):
    activation = "tanh"
    output_activation = "sigmoid"
    bias = False


class TestManualMLPSingleLayer(_MLPBattery):
    sizes = (6, 2)
    output_activation = "gelu"


def _sequential(sizes, act):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(Activation(act).to_module())
    return nn.Sequential(*layers)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_mlp_matches_nn_sequential(act):
    seq = _sequential((10, 8, 8, 4), act)
    ours = ManualMLP.from_sequential(seq)
    assert ours.activation.name == act
    x = torch.randn(2, 5, 10, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    g = torch.randn(2, 5, 4)
    y, y2 = ours(x), seq(x2)
    assert_close(y, y2, what="output")
    y.backward(g)
    y2.backward(g)
    assert_close(x.grad, x2.grad, what="dL/dx")
    for mine, theirs in zip(ours.layers, [m for m in seq if isinstance(m, nn.Linear)]):
        assert_close(mine.weight.grad, theirs.weight.grad, what="dL/dW")
        assert_close(mine.bias.grad, theirs.bias.grad, what="dL/db")


def test_mlp_initialises_like_nn_sequential():
    torch.manual_seed(11)
    ours = ManualMLP([20, 16, 3])
    torch.manual_seed(11)
    seq = _sequential((20, 16, 3), "relu")
    x = torch.randn(4, 20)
    assert torch.equal(ours(x), seq(x))


def test_mlp_sequential_round_trip_keeps_output_activation():
    ours = ManualMLP([5, 4, 3], activation="leaky_relu", output_activation="sigmoid",
                     negative_slope=0.2)
    seq = ours.to_sequential()
    assert isinstance(seq[1], nn.LeakyReLU) and seq[1].negative_slope == 0.2
    assert isinstance(seq[-1], nn.Sigmoid)
    back = ManualMLP.from_sequential(seq)
    assert back.sizes == [5, 4, 3]
    assert back.activation == Activation("leaky_relu", 0.2)
    assert back.output_activation.name == "sigmoid"
    x = torch.randn(7, 5)
    assert torch.equal(back(x), ours(x))


def test_mlp_skips_input_gradient_when_not_needed():
    net = ManualMLP([6, 5, 2])
    x = torch.randn(3, 6)
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_mlp_frozen_layer_gets_no_gradient():
    net = ManualMLP([6, 5, 2])
    net.layers[0].weight.requires_grad_(False)
    net(torch.randn(3, 6)).sum().backward()
    assert net.layers[0].weight.grad is None
    assert net.layers[0].bias.grad is not None


def test_mlp_does_not_modify_upstream_gradient():
    net = ManualMLP([4, 3, 2], output_activation="tanh")
    x = torch.randn(5, 4, requires_grad=True)
    g = torch.randn(5, 2)
    g_copy = g.clone()
    net(x).backward(g)
    assert torch.equal(g, g_copy)


def test_mlp_hessian_vector_product_matches_autograd():
    torch.manual_seed(0)
    net = ManualMLP([4, 6, 3], activation="tanh", dtype=torch.float64)
    seq = net.to_sequential()
    x = torch.randn(5, 4, dtype=torch.float64)
    v = [torch.randn_like(p) for p in net.parameters()]

    def hvp(model):
        ps = list(model.parameters())
        loss = model(x).pow(3).sum()
        grads = torch.autograd.grad(loss, ps, create_graph=True)
        dot = sum((g * vi).sum() for g, vi in zip(grads, v))
        return torch.autograd.grad(dot, ps)

    for a, b in zip(hvp(net), hvp(seq)):
        assert_close(a, b, what="Hessian-vector product")


def test_mlp_functional_form_gradcheck():
    from lamods.layers import mlp

    ws = [torch.randn(4, 3), torch.randn(2, 4)]
    bs = [torch.randn(4), None]
    check_gradients(lambda x, w1, b1, w2: mlp(x, [w1, w2], [b1, None], "sigmoid"),
                    torch.randn(5, 3), ws[0], bs[0], ws[1])


def test_mlp_per_sample_gradients_with_vmap():
    net = ManualMLP([5, 4, 2], activation="gelu", dtype=torch.float64)
    seq = net.to_sequential()
    params = {n: p.detach() for n, p in net.named_parameters()}
    seq_params = {k.replace("layers.", "").replace(".", ".", 1): v for k, v in params.items()}
    seq_params = {f"{2 * int(k.split('.')[0])}.{k.split('.')[1]}": v
                  for k, v in seq_params.items()}
    x = torch.randn(6, 5, dtype=torch.float64)

    def loss(model, p, xi):
        return torch.func.functional_call(model, p, (xi,)).pow(2).sum()

    ours = torch.func.vmap(torch.func.grad(lambda p, xi: loss(net, p, xi)), (None, 0))(params, x)
    ref = torch.func.vmap(torch.func.grad(lambda p, xi: loss(seq, p, xi)), (None, 0))(
        seq_params, x)
    for i in range(2):
        assert_close(ours[f"layers.{i}.weight"], ref[f"{2 * i}.weight"], what="per-sample dW")


@pytest.mark.slow
def test_mlp_inside_inductor_compiled_model():
    torch._dynamo.reset()
    model = nn.Sequential(nn.Flatten(), ManualMLP([16, 12, 4]), nn.LogSoftmax(-1))
    compiled = torch.compile(model)
    x = torch.randn(8, 4, 4)
    target = torch.randint(0, 4, (8,))
    loss = F.nll_loss(compiled(x), target)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    F.nll_loss(model(x), target).backward()
    for a, b in zip(grads, [p.grad for p in model.parameters()]):
        assert_close(a, b, what="inductor-compiled gradient")


def test_mlp_errors_name_what_was_expected():
    with pytest.raises(ValueError, match=re.escape(
            "Activation: expected one of identity, relu, leaky_relu, tanh, sigmoid, gelu, "
            "got 'swish'")):
        ManualMLP([3, 2], activation="swish")
    with pytest.raises(ValueError, match=re.escape(
            "ManualMLP: expected at least two sizes [in, ..., out], got [3]")):
        ManualMLP([3])
    with pytest.raises(ValueError, match=re.escape(
            "ManualMLP: expected every size to be a positive int, got 0")):
        ManualMLP([3, 0, 2])
    with pytest.raises(ValueError, match="expected negative_slope >= 0 for leaky_relu"):
        ManualMLP([3, 2], activation="leaky_relu", negative_slope=-0.1)


def test_mlp_from_sequential_errors():
    mixed = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1))
    with pytest.raises(ValueError, match=re.escape(
            "ManualMLP.from_sequential: expected the same activation after every hidden Linear, "
            "got ['relu', 'tanh']")):
        ManualMLP.from_sequential(mixed)
    with pytest.raises(ValueError, match="expected one of nn.Identity, nn.ReLU"):
        ManualMLP.from_sequential(nn.Sequential(nn.Linear(3, 3), nn.Softplus()))
    with pytest.raises(ValueError, match="layer widths do not chain"):
        ManualMLP.from_sequential(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(5, 1)))
    with pytest.raises(ValueError, match=re.escape(
            "expected an nn.Linear before each activation, got Tanh() at position 2")):
        ManualMLP.from_sequential(nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Tanh()))
    with pytest.raises(ValueError, match="expected at least one nn.Linear, got none"):
        ManualMLP.from_sequential(nn.Sequential())


def test_mlp_repr_shows_hyperparameters():
    text = repr(ManualMLP([4, 3, 2], activation="leaky_relu", negative_slope=0.1))
    assert "sizes=[4, 3, 2], activation=leaky_relu(0.1), output_activation=identity" in text
