"""CP (ALS) and Tucker (HOSVD, HOOI) against closed forms, exact low-rank tensors and explicit
loops; their gradients; the Tucker- and CP-factorized linear layers (shared battery)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

from lamods.decomp.tensor import (
    cp_als,
    cp_reconstruct,
    fold,
    hooi,
    hosvd,
    mode_product,
    tucker_reconstruct,
    unfold,
)
from lamods.layers import CPLinear, LowRankLinear, TuckerLinear
from lamods.testing import ModuleBattery, assert_close, check_gradients

F64 = torch.float64


def random_orthonormal(n: int, r: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, r, dtype=F64)).Q


def tucker_tensor(shape, ranks) -> torch.Tensor:
    """A tensor of exactly multilinear rank ``ranks``."""
    core = torch.randn(*ranks, dtype=F64)
    return tucker_reconstruct(core, [random_orthonormal(n, r) for n, r in zip(shape, ranks)])


# --------------------------------------------------------------------------- unfold / products
def test_unfold_fold_and_mode_product_against_loops():
    T = torch.randn(3, 4, 5, dtype=F64)
    t = T.numpy()
    # Kolda's mode-1 unfolding up to the column order: row i holds T[:, i, :] (row-major)
    for mode in range(3):
        U = unfold(T, mode).numpy()
        for i in range(T.shape[mode]):
            np.testing.assert_array_equal(U[i], np.take(t, i, axis=mode).ravel())
        assert torch.equal(fold(unfold(T, mode), mode, T.shape), T)
    M = torch.randn(2, 4, dtype=F64)
    expected = np.einsum("ijk,aj->iak", t, M.numpy())
    np.testing.assert_allclose(mode_product(T, M, 1).numpy(), expected, rtol=1e-12)


def test_cp_reconstruct_against_loops():
    w = torch.randn(2, dtype=F64)
    A, B, C = (torch.randn(n, 2, dtype=F64) for n in (3, 4, 2))
    T = cp_reconstruct(w, [A, B, C])
    for i, j, k in np.ndindex(3, 4, 2):
        expected = sum(w[r] * A[i, r] * B[j, r] * C[k, r] for r in range(2))
        assert abs(float(T[i, j, k] - expected)) < 1e-12


# --------------------------------------------------------------------------- CP
def test_cp_recovers_an_exact_low_rank_tensor():
    """Generic unit factors (Kruskal-unique): the SVD start converges to them."""
    w = torch.tensor([5.0, 3.0, 1.5], dtype=F64)
    factors = [torch.randn(n, 3, dtype=F64) for n in (6, 7, 8)]
    factors = [A / A.norm(dim=0) for A in factors]
    T = cp_reconstruct(w, factors)
    res = cp_als(T, 3, n_iter=1000, tol=1e-15)
    assert res.rel_error < 1e-10
    torch.testing.assert_close(res.weights, w, rtol=1e-6, atol=1e-6)
    for A, A_true in zip(res.factors, factors):  # the same columns up to sign
        torch.testing.assert_close((A * A_true).sum(0).abs(), torch.ones(3, dtype=F64),
                                   rtol=1e-6, atol=1e-6)


def test_cp_of_a_matrix_reaches_eckart_young():
    """A (m, n, 1) tensor is a matrix: the best rank-R CP is the truncated SVD,
    ||T - T_R||_F^2 = sum_{i > R} s_i^2, and ALS from a random start reaches it."""
    X = torch.randn(9, 7, dtype=F64)
    s = torch.linalg.svdvals(X)
    for R in (1, 3):
        res = cp_als(X.unsqueeze(-1), R, init="random", seed=0, n_iter=2000, tol=1e-15)
        expected = float(s[R:].square().sum().sqrt() / s.square().sum().sqrt())
        assert res.rel_error == pytest.approx(expected, rel=1e-6)
        # the rank-R matrix is unique, its CP factors are not (any basis of its range):
        U, _, Vh = torch.linalg.svd(X)
        T_R = U[:, :R] @ torch.diag(s[:R]) @ Vh[:R]
        # (ALS converges linearly, at the rate (s_{R+1}/s_R)^2: to about 1e-6 here)
        torch.testing.assert_close(cp_reconstruct(res.weights, res.factors).squeeze(-1), T_R,
                                   rtol=1e-4, atol=1e-5)
        if R == 1:  # rank one: the weight is the top singular value
            assert float(res.weights[0]) == pytest.approx(float(s[0]), rel=1e-8)


def test_cp_als_error_never_increases():
    T = torch.randn(5, 6, 4, dtype=F64)
    errors = [cp_als(T, 3, init="random", seed=2, n_iter=k, tol=0.0).rel_error
              for k in range(1, 12)]
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0]


def test_cp_als_gradcheck_through_the_sweeps():
    T = torch.randn(3, 4, 2, dtype=F64)

    def fn(T):
        w, factors, _, _ = cp_als(T, 2, init="random", seed=0, n_iter=3, tol=0.0)
        return cp_reconstruct(w, factors)

    check_gradients(fn, T, gradgrad=False)


# --------------------------------------------------------------------------- Tucker
def test_hosvd_recovers_an_exact_multilinear_rank():
    T = tucker_tensor((6, 5, 4), (2, 3, 2))
    core, factors, err = hosvd(T, (2, 3, 2))
    assert err < 1e-12
    assert_close(tucker_reconstruct(core, factors), T)
    for U in factors:
        assert_close(U.mT @ U, torch.eye(U.shape[1], dtype=F64))


def test_hosvd_single_mode_truncation_equals_the_discarded_singular_values():
    T = torch.randn(6, 5, 4, dtype=F64)
    s = torch.linalg.svdvals(unfold(T, 0))
    res = hosvd(T, (3, 5, 4))
    expected = float(s[3:].square().sum().sqrt() / T.norm())
    assert res.rel_error == pytest.approx(expected, rel=1e-10)


def test_tucker_error_bounds_and_core_identity():
    T = torch.randn(7, 6, 5, dtype=F64)
    ranks = (3, 2, 4)
    h, o = hosvd(T, ranks), hooi(T, ranks, n_iter=30)
    bound = sum(float(torch.linalg.svdvals(unfold(T, n))[r:].square().sum())
                for n, r in enumerate(ranks))
    norm2 = float(T.square().sum())
    for res in (h, o):
        # ||T - T_hat||^2 = ||T||^2 - ||G||^2 (orthonormal factors)
        assert res.rel_error ** 2 * norm2 == pytest.approx(
            norm2 - float(res.core.square().sum()), rel=1e-9)
    assert h.rel_error ** 2 * norm2 <= bound * (1 + 1e-12)  # quasi-optimality of the HOSVD
    assert o.rel_error <= h.rel_error + 1e-13


def test_hosvd_and_hooi_are_differentiable():
    T = torch.randn(4, 3, 3)

    def project(T):  # T x_n U_n U_n^T: well defined with gaps in every unfolding's spectrum
        core, factors, _ = hosvd(T, (2, 2, 2))
        return tucker_reconstruct(core, factors)

    check_gradients(project, T)
    check_gradients(lambda T: hooi(T, (2, 2, 2), n_iter=2, tol=0.0).core.square().sum(), T,
                    gradgrad=False)


def test_tensor_bad_input_messages():
    T = torch.randn(3, 4, 5)
    with pytest.raises(ValueError, match=re.escape("hosvd: expected ranks[1] <= I_1 = 4, got 5")):
        hosvd(T, (2, 5, 2))
    with pytest.raises(ValueError, match=re.escape(
            "hooi: expected ranks, one per mode of the 3-way tensor (or one int), got (2, 2)")):
        hooi(T, (2, 2))
    with pytest.raises(ValueError,
                       match=re.escape("unfold: expected mode an int in [0, 3), got 3")):
        unfold(T, 3)
    with pytest.raises(ValueError, match="cp_als: expected a finite input, got 1 NaN"):
        cp_als(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match=re.escape(
            "cp_als: expected init to be one of 'svd', 'random', got 'nndsvd'")):
        cp_als(T, 2, init="nndsvd")
    with pytest.raises(TypeError, match="cp_als: expected a floating-point tensor, got dtype"):
        cp_als(torch.ones(2, 2, dtype=torch.int64), 1)
    with pytest.raises(ValueError, match=re.escape(
            "mode_product: expected M of shape (J, 4) for mode 1 of a tensor of shape (3, 4, 5), "
            "got (2, 3)")):
        mode_product(T, torch.randn(2, 3), 1)


# --------------------------------------------------------------------------- layers
class TestTuckerLinear(ModuleBattery):
    name = "TuckerLinear"
    in_features = 6

    def build(self, *, device, dtype):
        return TuckerLinear((2, 3), 3, (2, 2, 2), device=device, dtype=dtype)

    def reference(self, module, params, x):
        W = torch.einsum("pqs,op,aq,bs->oab", params["core"], params["factor0"],
                         params["factor1"], params["factor2"]).reshape(3, 6)
        return x @ W.T + params["bias"]


class TestCPLinear(ModuleBattery):
    name = "CPLinear"
    in_features = 6

    def build(self, *, device, dtype):
        return CPLinear((3, 2), 3, 2, bias=False, device=device, dtype=dtype)

    def reference(self, module, params, x):
        W = torch.einsum("r,or,ar,br->oab", params["weights"], params["factor0"],
                         params["factor1"], params["factor2"]).reshape(3, 6)
        return x @ W.T


def test_tucker_linear_from_linear_error_is_the_hooi_error():
    dense = nn.Linear(36, 10, dtype=F64)
    layer = TuckerLinear.from_linear(dense, (6, 6), (4, 3, 3))
    W = dense.weight.reshape(10, 6, 6)
    expected = hooi(W, (4, 3, 3), n_iter=20).rel_error
    err = float((layer.weight - dense.weight).detach().norm() / dense.weight.detach().norm())
    assert err == pytest.approx(expected, rel=1e-9)
    assert layer.n_weight_params == 10 * 4 + 6 * 3 + 6 * 3 + 4 * 3 * 3
    x = torch.randn(4, 36, dtype=F64)
    assert_close(layer(x), layer.to_linear()(x))
    full = TuckerLinear.from_linear(dense, (6, 6), (10, 6, 6))  # full ranks: exact
    assert_close(full(x), dense(x))


def test_cp_linear_from_linear_of_a_cp_weight_is_exact():
    w = torch.tensor([2.0, 1.0], dtype=F64)
    factors = [random_orthonormal(n, 2) for n in (7, 4, 5)]
    dense = nn.Linear(20, 7, dtype=F64)
    with torch.no_grad():
        dense.weight.copy_(cp_reconstruct(w, factors).reshape(7, 20))
    layer = CPLinear.from_linear(dense, (4, 5), 2, n_iter=500)
    x = torch.randn(3, 20, dtype=F64)
    torch.testing.assert_close(layer(x), dense(x), rtol=1e-7, atol=1e-7)
    assert layer.n_weight_params == 2 * (7 + 4 + 5 + 1)


def test_initial_weights_have_nn_linear_scale():
    torch.manual_seed(0)
    target = 1 / (3 * 64)  # the variance of U(-1/sqrt(64), 1/sqrt(64))
    for layer in (TuckerLinear((8, 8), 64, (16, 8, 8)), CPLinear((8, 8), 64, 32)):
        assert 0.5 * target < float(layer.weight.var()) < 2 * target, type(layer).__name__


def test_factorized_layer_bad_arguments():
    with pytest.raises(ValueError, match=re.escape("TuckerLinear: expected ranks[1] <= 3, got 4")):
        TuckerLinear((3, 4), 5, (2, 4, 2))
    with pytest.raises(ValueError, match=re.escape(
            "CPLinear: expected in_shape to be a pair (I_1, I_2), got (12,)")):
        CPLinear((12,), 5, 2)
    with pytest.raises(ValueError, match=re.escape(
            "TuckerLinear.from_linear: expected in_shape with I_1 * I_2 = in_features = 12, "
            "got (3, 3)")):
        TuckerLinear.from_linear(nn.Linear(12, 4), (3, 3), (2, 2, 2))
    with pytest.raises(TypeError, match="CPLinear.from_linear: expected nn.Linear, got "
                                        "LowRankLinear"):
        CPLinear.from_linear(LowRankLinear(12, 4, 2), (3, 4), 2)
