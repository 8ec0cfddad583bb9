"""LowRankLinear and LowRankAdapter: the shared battery, SVD conversions, Eckart-Young, merge."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from lamods.layers.lowrank import LowRankAdapter, LowRankLinear, energy_rank
from lamods.testing import ModuleBattery, assert_close, check_gradients

F64 = torch.float64


# ---------------------------------------------------------------------------
# The battery
# ---------------------------------------------------------------------------
class TestLowRankLinear(ModuleBattery):
    name = "LowRankLinear"
    in_features = 7
    out_features = 5
    rank = 3
    bias = True

    def build(self, *, device, dtype):
        return LowRankLinear(self.in_features, self.out_features, self.rank, bias=self.bias,
                             device=device, dtype=dtype)

    def reference(self, module, params, x):
        # dense W = U diag(s) V^T, then y = x W^T + b
        W = params["U"] @ torch.diag(params["S"]) @ params["V"].T
        y = x @ W.T
        return y + params["bias"] if self.bias else y


class TestLowRankLinearNoBias(TestLowRankLinear):
    bias = False


class TestLowRankLinearFullRank(TestLowRankLinear):
    rank = 5


class TestLowRankLinearOrthonormal(TestLowRankLinear):
    def build(self, *, device, dtype):
        return LowRankLinear(self.in_features, self.out_features, self.rank, orthonormal=True,
                             device=device, dtype=dtype)

    def reference(self, module, params, x):
        # the parametrisations map their 'original' tensors to orthonormal U and V
        U = module.parametrizations.U[0](params["parametrizations.U.original"])
        V = module.parametrizations.V[0](params["parametrizations.V.original"])
        return x @ (U @ torch.diag(params["S"]) @ V.T).T + params["bias"]

    def test_gradcheck(self):
        # torch's Householder map reads sign bits from the diagonal of each 'original'
        # (through .int()), a step function that finite differences cannot cross: check
        # the strictly lower triangle (the reflectors), S, bias and the input. fast_mode
        # (random projections of the Jacobian): householder_product's backward is slow.
        module = self.build(device="cpu", dtype=F64)
        names = ["parametrizations.U.original", "parametrizations.V.original"]
        params = dict(module.named_parameters())
        # the fixed part: diagonal (signs) and the unused upper triangle
        fixed = [params[n].detach() - params[n].detach().tril(-1) for n in names]

        def fn(x, S, bias, Lu, Lv):
            full = {names[0]: Lu.tril(-1) + fixed[0], names[1]: Lv.tril(-1) + fixed[1],
                    "S": S, "bias": bias}
            return torch.func.functional_call(module, full, (x,))

        x = torch.randn(2, 3, self.in_features, dtype=F64)
        Lu, Lv = (0.3 * torch.randn_like(f).tril(-1) for f in fixed)  # away from Q = base
        check_gradients(fn, x, params["S"], params["bias"], Lu, Lv, fast_mode=True)


class TestLowRankAdapter(ModuleBattery):
    name = "LowRankAdapter"
    in_features = 7
    alpha = 6.0
    rank = 3

    def build(self, *, device, dtype):
        adapter = LowRankAdapter(nn.Linear(7, 5, device=device, dtype=dtype), self.rank,
                                 alpha=self.alpha)
        with torch.no_grad():
            adapter.B.normal_()  # B = 0 at initialisation would hide its gradients
        return adapter

    def reference(self, module, params, x):
        y = x @ params["base.weight"].T + params["base.bias"]
        return y + (self.alpha / self.rank) * (x @ params["A"].T) @ params["B"].T


class TestLowRankAdapterSVDInit(TestLowRankAdapter):
    def build(self, *, device, dtype):
        return LowRankAdapter(nn.Linear(7, 5, device=device, dtype=dtype), self.rank,
                              alpha=self.alpha, init="svd")


# ---------------------------------------------------------------------------
# LowRankLinear
# ---------------------------------------------------------------------------
def _linear(n_in, n_out, dtype=F64, bias=True):
    lin = nn.Linear(n_in, n_out, bias=bias, dtype=dtype)
    with torch.no_grad():
        lin.weight.normal_()  # a spread-out spectrum, unlike the uniform default
    return lin


@pytest.mark.parametrize("shape", [(9, 6), (6, 9), (8, 8)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_full_rank_round_trip_float64(shape, bias):
    lin = _linear(*shape, bias=bias)
    low = LowRankLinear.from_linear(lin, rank=min(shape))
    back = low.to_linear()
    torch.testing.assert_close(back.weight, lin.weight, rtol=0, atol=1e-13)
    if bias:
        assert torch.equal(back.bias, lin.bias)
    else:
        assert back.bias is None and low.bias is None
    x = torch.randn(4, shape[0], dtype=F64)
    torch.testing.assert_close(low(x), lin(x), rtol=0, atol=1e-13)


def test_full_rank_round_trip_float32():
    lin = _linear(40, 30, dtype=torch.float32)
    back = LowRankLinear.from_linear(lin, rank=30).to_linear()
    assert back.weight.dtype == torch.float32
    torch.testing.assert_close(back.weight, lin.weight, rtol=0, atol=1e-5)


def test_from_linear_copies_and_leaves_the_layer_alone():
    lin = _linear(6, 4)
    before = lin.weight.detach().clone()
    low = LowRankLinear.from_linear(lin, rank=2)
    low.S.data.mul_(2)
    low.bias.data.add_(1)
    assert torch.equal(lin.weight, before)
    assert not torch.equal(lin.bias, low.bias)
    assert low.U.dtype == F64 and low.U.device == lin.weight.device


@pytest.mark.parametrize("rank", [1, 3, 5, 7])
def test_eckart_young_errors_are_the_tail_singular_values(rank):
    lin = _linear(12, 8)
    W = lin.weight.detach()
    s = torch.linalg.svdvals(W)  # independent of lamods.decomp.svd
    low = LowRankLinear.from_linear(lin, rank=rank)
    E = W - low.dense_weight().detach()
    frob = torch.linalg.matrix_norm(E)
    spectral = torch.linalg.matrix_norm(E, ord=2)
    torch.testing.assert_close(frob, s[rank:].square().sum().sqrt(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(spectral, s[rank], rtol=1e-10, atol=1e-12)
    # and it is optimal: another rank-r matrix (projection on a random subspace) does worse
    Q, _ = torch.linalg.qr(torch.randn(8, rank, dtype=F64))
    assert torch.linalg.matrix_norm(W - Q @ Q.T @ W) > frob


def test_from_linear_keeps_the_singular_values():
    lin = _linear(10, 7)
    low = LowRankLinear.from_linear(lin, rank=4)
    s = torch.linalg.svdvals(lin.weight.detach())
    torch.testing.assert_close(low.S.detach(), s[:4], rtol=1e-12, atol=1e-12)
    eye = torch.eye(4, dtype=F64)
    torch.testing.assert_close(low.U.T @ low.U, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(low.V.T @ low.V, eye, rtol=0, atol=1e-12)


@pytest.mark.parametrize("energy", [0.3, 0.5, 0.8, 0.95, 0.999])
def test_energy_picks_the_smallest_rank(energy):
    lin = _linear(20, 16)
    s2 = torch.linalg.svdvals(lin.weight.detach()).square()
    kept = s2.cumsum(0) / s2.sum()
    low = LowRankLinear.from_linear(lin, energy=energy)
    r = low.rank
    assert kept[r - 1] >= energy
    assert r == 1 or kept[r - 2] < energy


def test_energy_one_gives_the_numerical_rank():
    W = torch.randn(9, 3, dtype=F64) @ torch.randn(3, 7, dtype=F64)
    lin = nn.Linear(7, 9, dtype=F64)
    with torch.no_grad():
        lin.weight.copy_(W)
    low = LowRankLinear.from_linear(lin, energy=1.0)
    assert low.rank == 3
    torch.testing.assert_close(low.dense_weight().detach(), W, rtol=0, atol=1e-12)


def test_energy_rank_edge_cases():
    assert energy_rank(torch.tensor([2.0, 1.0]), 0.8) == 1  # 4/5 >= 0.8
    assert energy_rank(torch.tensor([2.0, 1.0]), 0.81) == 2
    assert energy_rank(torch.zeros(4), 0.5) == 1
    with pytest.raises(ValueError, match=re.escape("energy_rank: expected energy in (0, 1]")):
        energy_rank(torch.ones(3), 0.0)


def test_parameter_count_and_initial_scale():
    layer = LowRankLinear(50, 30, rank=6)
    assert sum(p.numel() for p in layer.parameters()) == 6 * (50 + 30 + 1) + 30
    # Note [initialisation]: ||U diag(s) V^T||_F^2 = out / 3, nn.Linear's expected value
    W = layer.dense_weight().detach()
    torch.testing.assert_close(W.square().sum(), torch.tensor(30 / 3), rtol=1e-5, atol=0)
    eye = torch.eye(6)
    torch.testing.assert_close(layer.U.T @ layer.U, eye, rtol=0, atol=1e-5)
    torch.testing.assert_close(layer.V.T @ layer.V, eye, rtol=0, atol=1e-5)


def test_repr():
    assert repr(LowRankLinear(4, 3, 2, bias=False)) == (
        "LowRankLinear(in_features=4, out_features=3, rank=2, bias=False)")
    assert "orthonormal=True" in repr(LowRankLinear(4, 3, 2, orthonormal=True))


def test_empty_batch():
    layer = LowRankLinear(4, 3, 2)
    x = torch.randn(0, 4, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 3)
    y.sum().backward()
    assert torch.equal(layer.U.grad, torch.zeros(3, 2))


def test_orthonormal_stays_orthonormal_while_training():
    lin = _linear(12, 9, dtype=torch.float32)
    layer = LowRankLinear.from_linear(lin, rank=4, orthonormal=True)
    ref = LowRankLinear.from_linear(lin, rank=4)
    x = torch.randn(5, 12)
    assert_close(layer(x), ref(x), what="orthonormal from_linear output")
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    target = torch.randn(32, 9)
    inputs = torch.randn(32, 12)
    for _ in range(10):
        opt.zero_grad()
        (layer(inputs) - target).square().mean().backward()
        opt.step()
    eye = torch.eye(4)
    U, V = layer.U.detach(), layer.V.detach()
    torch.testing.assert_close(U.T @ U, eye, rtol=0, atol=1e-5)
    torch.testing.assert_close(V.T @ V, eye, rtol=0, atol=1e-5)
    # then |s| are the singular values of the layer's weight
    s = torch.linalg.svdvals(layer.dense_weight().detach())
    torch.testing.assert_close(layer.S.detach().abs().sort(descending=True).values, s[:4],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"rank": 0}, ValueError, "LowRankLinear: expected rank to be a positive int, got 0"),
    ({"rank": 6}, ValueError,
     "LowRankLinear: expected rank <= min(in_features, out_features) = 5, got 6"),
    ({"rank": 2.0}, ValueError, "LowRankLinear: expected rank to be a positive int, got 2.0"),
])
def test_constructor_errors(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        LowRankLinear(7, 5, **kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "LowRankLinear.from_linear: expected exactly one of rank and energy, got neither"),
    ({"rank": 2, "energy": 0.9},
     "LowRankLinear.from_linear: expected exactly one of rank and energy, got both"),
    ({"rank": 0}, "LowRankLinear.from_linear: expected rank to be a positive int, got 0"),
    ({"rank": 6}, "LowRankLinear.from_linear: expected rank <= min(in_features, "
                  "out_features) = 5, got 6"),
    ({"energy": 0.0}, "LowRankLinear.from_linear: expected energy in (0, 1], got 0.0"),
    ({"energy": 1.5}, "LowRankLinear.from_linear: expected energy in (0, 1], got 1.5"),
    ({"energy": True}, "LowRankLinear.from_linear: expected energy in (0, 1], got True"),
])
def test_from_linear_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        LowRankLinear.from_linear(nn.Linear(7, 5), **kwargs)


def test_from_linear_rejects_other_modules_and_non_finite_weights():
    with pytest.raises(TypeError, match=re.escape(
            "LowRankLinear.from_linear: expected an nn.Linear, got Conv1d")):
        LowRankLinear.from_linear(nn.Conv1d(3, 3, 1), rank=1)
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=re.escape(
            "LowRankLinear.from_linear: expected a finite weight, got 1 NaN or infinite")):
        LowRankLinear.from_linear(lin, rank=1)


# ---------------------------------------------------------------------------
# LowRankAdapter
# ---------------------------------------------------------------------------
def test_adapter_starts_equal_to_base_and_trains_only_a_b():
    base = _linear(10, 6)
    adapter = LowRankAdapter(base, rank=2, alpha=4)
    x = torch.randn(3, 10, dtype=F64)
    assert torch.equal(adapter(x), base(x))
    assert adapter.scaling == 2.0
    assert not base.weight.requires_grad and not base.bias.requires_grad
    adapter(x).square().sum().backward()
    assert base.weight.grad is None
    assert adapter.A.grad is not None and adapter.B.grad is not None


def test_adapter_default_alpha_is_rank():
    adapter = LowRankAdapter(nn.Linear(5, 4), rank=3)
    assert adapter.alpha == 3.0 and adapter.scaling == 1.0


@pytest.mark.parametrize("init", ["zero", "svd"])
def test_adapter_merge_unmerge_exact_float64(init):
    base = _linear(12, 9)
    W0 = base.weight.detach().clone()
    adapter = LowRankAdapter(base, rank=3, alpha=5.0, init=init)
    with torch.no_grad():
        adapter.A.add_(torch.randn_like(adapter.A))
        adapter.B.add_(torch.randn_like(adapter.B))
    x = torch.randn(2, 4, 12, dtype=F64)
    y = adapter(x)
    W_before = base.weight.detach().clone()
    adapter.merge()
    assert adapter.merged
    # merged weight is W + (alpha / r) B A, and the forward is the base alone
    expected = W_before + (5.0 / 3) * adapter.B.detach() @ adapter.A.detach()
    torch.testing.assert_close(base.weight.detach(), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(adapter(x), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(adapter.to_linear()(x), y, rtol=0, atol=1e-12)
    adapter.unmerge()
    assert not adapter.merged
    torch.testing.assert_close(base.weight.detach(), W_before, rtol=0, atol=1e-14)
    torch.testing.assert_close(adapter(x), y, rtol=0, atol=1e-12)
    if init == "zero":
        assert torch.equal(W_before, W0)


def test_adapter_merge_twice_and_unmerge_unmerged_raise():
    adapter = LowRankAdapter(nn.Linear(5, 4), rank=2)
    with pytest.raises(RuntimeError, match=re.escape(
            "LowRankAdapter: expected a merged adapter, got an unmerged one")):
        adapter.unmerge()
    adapter.merge()
    with pytest.raises(RuntimeError, match=re.escape(
            "LowRankAdapter: expected an unmerged adapter, got a merged one")):
        adapter.merge()


def test_adapter_merged_flag_travels_in_state_dict():
    adapter = LowRankAdapter(_linear(6, 5), rank=2)
    with torch.no_grad():
        adapter.B.normal_()
    x = torch.randn(3, 6, dtype=F64)
    y = adapter(x)
    adapter.merge()
    fresh = LowRankAdapter(_linear(6, 5), rank=2)
    fresh.load_state_dict(adapter.state_dict())
    assert fresh.merged
    torch.testing.assert_close(fresh(x), y, rtol=0, atol=1e-12)
    fresh.unmerge()
    torch.testing.assert_close(fresh(x), y, rtol=0, atol=1e-12)


def test_adapter_svd_init_is_pissa():
    base = _linear(10, 8)
    W = base.weight.detach().clone()
    s = torch.linalg.svdvals(W)
    x = torch.randn(4, 10, dtype=F64)
    y = base(x)
    adapter = LowRankAdapter(base, rank=3, alpha=2.0, init="svd")
    # output unchanged; the adapter holds the top-3 part, the base the residual
    torch.testing.assert_close(adapter(x), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.svdvals(adapter.delta_weight().detach())[:3], s[:3],
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.linalg.svdvals(base.weight.detach())[:5], s[3:],
                               rtol=1e-10, atol=1e-12)
    # reset folds the update back first: the output still does not move
    with torch.no_grad():
        adapter.B.add_(0.1)
    y2 = adapter(x)
    adapter.reset_parameters()
    torch.testing.assert_close(adapter(x), y2, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), [
    ((nn.Conv1d(3, 3, 1), 1), {}, TypeError,
     "LowRankAdapter: expected base to be an nn.Linear, got Conv1d"),
    ((nn.Linear(7, 5), 0), {}, ValueError,
     "LowRankAdapter: expected rank to be a positive int, got 0"),
    ((nn.Linear(7, 5), 6), {}, ValueError,
     "LowRankAdapter: expected rank <= min(in_features, out_features) = 5, got 6"),
    ((nn.Linear(7, 5), 2), {"alpha": 0.0}, ValueError,
     "LowRankAdapter: expected alpha to be a positive number, got 0.0"),
    ((nn.Linear(7, 5), 2), {"init": "gaussian"}, ValueError,
     "LowRankAdapter: expected init to be one of ('zero', 'svd'), got 'gaussian'"),
])
def test_adapter_errors(args, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        LowRankAdapter(*args, **kwargs)


def test_adapter_repr():
    adapter = LowRankAdapter(nn.Linear(7, 5), rank=2, alpha=4)
    assert "rank=2, alpha=4, init='zero', merged=False" in repr(adapter)
    assert "(base): Linear(in_features=7, out_features=5, bias=True)" in repr(adapter)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not present")
def test_from_linear_and_adapter_on_cuda():
    lin = nn.Linear(64, 32, device="cuda")
    low = LowRankLinear.from_linear(lin, rank=8)
    assert low.U.device.type == "cuda"
    x = torch.randn(4, 64, device="cuda")
    assert low(x).shape == (4, 32)
    y = lin(x)
    adapter = LowRankAdapter(lin, rank=4, init="svd")
    torch.testing.assert_close(adapter(x), y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("values", "message"), [
    (torch.ones(2, 2),
     "expected singular_values as a non-empty 1-D floating tensor, got shape (2, 2)"),
    (torch.zeros(0),
     "expected singular_values as a non-empty 1-D floating tensor, got shape (0,)"),
    (torch.tensor([3.0, float("nan")]), "expected a finite singular_values, got 1 NaN"),
    (torch.tensor([3.0, -1.0]), "expected non-negative singular_values in descending order"),
    (torch.tensor([1.0, 3.0]), "expected non-negative singular_values in descending order"),
])
def test_energy_rank_refuses_what_is_not_a_spectrum(values, message):
    with pytest.raises(ValueError, match=re.escape(f"energy_rank: {message}")):
        energy_rank(values, 0.9)
