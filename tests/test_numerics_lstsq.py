"""Least squares done right (issue 13): the rank cutoff, the normal-equations gradient at
repeated / clustered singular values, minimum-norm semantics, bad alpha, divergent fit_gd."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression as SkLinear

from lamods import ConvergenceError
from lamods.classic import LinearRegression, RidgeRegression, lstsq
from lamods.classic.lstsq import default_rcond
from lamods.testing import check_gradients

F64 = torch.float64
METHODS = ("cholesky", "qr", "svd")


def _orthonormal(m: int, n: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(m, n, dtype=F64, generator=g)).Q


def _with_spectrum(m: int, s: list[float], g: torch.Generator) -> torch.Tensor:
    """X = U diag(s) V^T with random orthonormal U (m, n), V (n, n)."""
    n = len(s)
    return _orthonormal(m, n, g) @ torch.diag(torch.tensor(s, dtype=F64)) @ _orthonormal(n, n, g).T


def _reference(X: torch.Tensor, y: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """(X^T X + alpha I)^{-1} X^T y through torch.linalg.solve: smooth, autograd's gradient."""
    eye = torch.eye(X.shape[-1], dtype=X.dtype)
    return torch.linalg.solve(X.mT @ X + alpha * eye, X.mT @ y)


# -- the rank cutoff ------------------------------------------------------------
def _issue_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The issue's example: 100,000 float32 rows, features at scales 1 and 0.005,
    y = x0 + 100 x1."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(100_000, 2, generator=g) * torch.tensor([1.0, 0.005])
    return X, X[:, 0] + 100 * X[:, 1]


@pytest.mark.parametrize("method", ["svd", "qr"])
def test_float32_many_rows_keeps_a_small_scale_feature(method):
    X, y = _issue_data()
    sk = SkLinear().fit(X.numpy(), y.numpy())
    model = LinearRegression(method=method).fit(X, y)
    assert model.coef_.dtype == torch.float32
    # the old cutoff max(m, n) eps = 0.012 > 0.005 dropped x1: coef_[1] was 2.2e-5, R^2 0.80
    torch.testing.assert_close(model.coef_, torch.from_numpy(sk.coef_), rtol=1e-3, atol=0)
    assert abs(float(model.coef_[1]) - 100) < 0.1
    assert model.score(X, y) > 0.9999


def test_lstsq_svd_cutoff_is_relative_and_ignores_the_row_count():
    X, y = _issue_data()
    Xc, yc = X - X.mean(0), y - y.mean()
    b = lstsq(Xc, yc, method="svd")
    ref = np.linalg.lstsq(Xc.double().numpy(), yc.double().numpy(), rcond=None)[0]
    torch.testing.assert_close(b.double(), torch.from_numpy(ref), rtol=1e-3, atol=0)
    eps = torch.finfo(torch.float32).eps
    assert default_rcond(100_000, 2, torch.float32) == default_rcond(20, 2, torch.float32)
    assert default_rcond(100_000, 2, torch.float32) == 10 * eps
    assert default_rcond(50, 300, torch.float64) == 50 * torch.finfo(F64).eps
    assert default_rcond(10, 2, torch.bfloat16) == 10 * eps  # half precision solves in float32


def test_rcond_argument_drops_what_it_says():
    X, y = _issue_data()
    Xc, yc = (X - X.mean(0)).double(), (y - y.mean()).double()
    s = torch.linalg.svdvals(Xc)
    ratio = float(s[1] / s[0])  # about 0.005
    # a cutoff above the ratio drops the second direction: the rank-1 pseudo-inverse
    U, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    rank1 = Vh[0] * (U[:, 0] @ yc) / S[0]
    torch.testing.assert_close(lstsq(Xc, yc, method="svd", rcond=2 * ratio), rank1)
    torch.testing.assert_close(lstsq(Xc, yc, method="svd", rcond=ratio / 2),
                               torch.linalg.pinv(Xc) @ yc)
    model = LinearRegression(rcond=2 * ratio, dtype=F64).fit(X.double(), y.double())
    torch.testing.assert_close(model.coef_, rank1)
    assert "rcond=" in repr(model) and model.get_params()["rcond"] == 2 * ratio
    with pytest.raises(ValueError, match=re.escape("lstsq: expected rcond to be a float >= 0, "
                                                   "got -1.0")):
        lstsq(Xc, yc, method="svd", rcond=-1.0)
    with pytest.raises(ValueError, match=re.escape("LinearRegression: expected rcond to be a "
                                                   "float >= 0, got nan")):
        LinearRegression(rcond=float("nan"))


def test_collinear_float32_gives_the_minimum_norm_solution():
    # exactly collinear float32 columns: the rounding-level singular value must fall
    # below the default cutoff (scipy's cutoff u keeps it: coefficients of size 1/u)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(1000, 3, generator=g)
    X[:, 2] = X[:, 0] + X[:, 1]
    y = X[:, 0] + 2 * X[:, 1] + torch.randn(1000, generator=g)
    model = LinearRegression().fit(X, y)
    Xc, yc = (X - X.mean(0)).double(), (y - y.mean()).double()
    ref = np.linalg.lstsq(Xc.numpy(), yc.numpy(), rcond=1e-6)[0]  # float64 minimum norm
    torch.testing.assert_close(model.coef_.double(), torch.from_numpy(ref), rtol=0, atol=1e-3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_blocked_reduction_matches_torch_on_tall_batches(method, alpha):
    # 9,001 rows: two blocks of 4,096 and a tail, batched, two targets
    g = torch.Generator().manual_seed(2)
    X = torch.randn(2, 9001, 4, dtype=F64, generator=g)
    y = torch.randn(2, 9001, 2, dtype=F64, generator=g)
    torch.testing.assert_close(lstsq(X, y, alpha, method=method), _reference(X, y, alpha),
                               rtol=1e-10, atol=1e-12)


# -- gradients ---------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_gradient_at_repeated_singular_values(method, alpha):
    # X = 2 x orthonormal columns: every singular value is 2. The old svd path was up to
    # 12x off the Cholesky path's gradient here.
    g = torch.Generator().manual_seed(3)
    X = 2 * _orthonormal(6, 3, g)
    y = torch.randn(6, 2, dtype=F64, generator=g)
    check_gradients(lambda X, y: lstsq(X, y, alpha, method=method), X, y)
    Xa, Xr = X.clone().requires_grad_(), X.clone().requires_grad_()
    weights = torch.randn(3, 2, dtype=F64, generator=g)
    (lstsq(Xa, y, alpha, method=method) * weights).sum().backward()
    ref = torch.linalg.lstsq(Xr, y).solution if alpha == 0 else _reference(Xr, y, alpha)
    (ref * weights).sum().backward()
    torch.testing.assert_close(Xa.grad, Xr.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_gradient_at_repeated_singular_values_wrt_tensor_alpha(method):
    g = torch.Generator().manual_seed(4)
    X = 2 * _orthonormal(6, 3, g)
    y = torch.randn(6, dtype=F64, generator=g)
    check_gradients(lambda X, y, a: lstsq(X, y, a, method=method), X, y,
                    torch.tensor(0.5, dtype=F64))


@pytest.mark.parametrize("spectrum", [[1.0, 1.0 + 1e-7, 1.0 + 2e-7, 2.0],
                                      [3.0, 3.0, 1.0, 1.0 + 1e-9]],
                         ids=["clustered", "repeated-pairs"])
def test_gradient_at_clustered_singular_values(spectrum):
    g = torch.Generator().manual_seed(5)
    X = _with_spectrum(6, spectrum, g)
    y = torch.randn(6, dtype=F64, generator=g)
    check_gradients(lambda X, y: lstsq(X, y, method="svd"), X, y)
    Xa, Xr = X.clone().requires_grad_(), X.clone().requires_grad_()
    lstsq(Xa, y, method="svd").square().sum().backward()
    _reference(Xr, y, 0.0).square().sum().backward()
    torch.testing.assert_close(Xa.grad, Xr.grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
def test_second_derivatives_on_near_orthogonal_x(method):
    # torch.linalg.lstsq passes gradgradcheck here; the old svd path did not
    g = torch.Generator().manual_seed(6)
    X = _orthonormal(6, 3, g) + 1e-6 * torch.randn(6, 3, dtype=F64, generator=g)
    y = torch.randn(6, 2, dtype=F64, generator=g)
    check_gradients(lambda X, y: lstsq(X, y, method=method), X, y)


def test_gradients_batched_with_one_degenerate_member():
    g = torch.Generator().manual_seed(7)
    X = torch.stack([2 * _orthonormal(5, 2, g), torch.randn(5, 2, dtype=F64, generator=g)])
    y = torch.randn(2, 5, dtype=F64, generator=g)
    for alpha in (0.0, 0.5):
        check_gradients(lambda X, y, a=alpha: lstsq(X, y, a, method="svd"), X, y)


# -- rank-deficient X: minimum-norm semantics -----------------------------------------
@pytest.mark.parametrize("shape", [(9, 4), (3, 6)], ids=["tall-rank-2", "wide"])
def test_rank_deficient_svd_is_the_pseudo_inverse_value_and_gradient(shape):
    g = torch.Generator().manual_seed(8)
    m, n = shape
    r = 2 if m > n else m
    X = torch.randn(m, r, dtype=F64, generator=g) @ torch.randn(r, n, dtype=F64, generator=g)
    y = torch.randn(m, 2, dtype=F64, generator=g)
    weights = torch.randn(n, 2, dtype=F64, generator=g)
    Xa, ya = X.clone().requires_grad_(), y.clone().requires_grad_()
    Xr, yr = X.clone().requires_grad_(), y.clone().requires_grad_()
    ours = lstsq(Xa, ya, method="svd")
    ref = torch.linalg.pinv(Xr) @ yr
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    # the Golub-Pereyra derivative, as torch.linalg.pinv's backward
    torch.testing.assert_close(Xa.grad, Xr.grad, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(ya.grad, yr.grad, rtol=1e-8, atol=1e-10)


def test_zero_matrix_gives_zero_solution():
    y = torch.randn(5, dtype=F64)
    torch.testing.assert_close(lstsq(torch.zeros(5, 3, dtype=F64), y, method="svd"),
                               torch.zeros(3, dtype=F64))


# -- bad alpha ----------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [torch.tensor(-1.0), torch.tensor(float("nan")),
                                   torch.tensor(float("inf")), float("inf"), float("nan")],
                         ids=["tensor-negative", "tensor-nan", "tensor-inf", "inf", "nan"])
@pytest.mark.parametrize("method", METHODS)
def test_bad_alpha_is_refused(alpha, method):
    X, y = torch.randn(6, 2), torch.randn(6)
    with pytest.raises(ValueError, match=r"^lstsq: expected alpha to be a float >= 0, got "):
        lstsq(X, y, alpha, method=method)


def test_alpha_tensor_shape_and_dtype_refused():
    X, y = torch.randn(6, 2), torch.randn(6)
    with pytest.raises(ValueError, match=re.escape("lstsq: expected a scalar alpha, got shape "
                                                   "(2,)")):
        lstsq(X, y, torch.ones(2))
    with pytest.raises(TypeError, match=re.escape("lstsq: expected a real alpha, got dtype "
                                                  "torch.bool")):
        lstsq(X, y, torch.tensor(True))


def test_tensor_alpha_zero_is_plain_least_squares():
    g = torch.Generator().manual_seed(9)
    X, y = torch.randn(8, 3, dtype=F64, generator=g), torch.randn(8, dtype=F64, generator=g)
    for method in METHODS:
        torch.testing.assert_close(lstsq(X, y, torch.tensor(0.0, dtype=F64), method=method),
                                   torch.linalg.lstsq(X, y.unsqueeze(-1)).solution.squeeze(-1))


# -- LinearRegression: shapes and divergence ------------------------------------------
def test_score_refuses_a_column_y_after_a_vector_fit():
    X, y = torch.randn(20, 3, dtype=F64), torch.randn(20, dtype=F64)
    model = LinearRegression(dtype=F64).fit(X, y)
    with pytest.raises(ValueError, match=re.escape(
            "LinearRegression.score: expected y of shape (20,) (the shape of the predictions), "
            "got (20, 1)")):
        model.score(X, y[:, None])


@pytest.mark.parametrize("tol", [0.0, 1e-12])
def test_fit_gd_divergence_raises_with_iteration_and_step(tol):
    g = torch.Generator().manual_seed(10)
    X, y = torch.randn(50, 3, generator=g), torch.randn(50, generator=g)
    model = LinearRegression().fit(X, y)
    before = model.coef_.clone()
    with pytest.raises(ConvergenceError, match=r"^LinearRegression.fit_gd: expected gradient "
                       r"descent to converge, got a non-finite loss at iteration \d+ with step "
                       r"size lr=1000 \(diverged\)"):
        model.fit_gd(X, y, lr=1e3, n_iter=500, tol=tol)
    torch.testing.assert_close(model.coef_, before)  # the failed fit left the model as it was
    with pytest.raises(ValueError, match=re.escape("RidgeRegression.fit_gd: expected lr > 0 or "
                                                   "None, got inf")):
        RidgeRegression().fit_gd(X, y, lr=float("inf"))


@pytest.mark.parametrize("method", METHODS)
def test_wide_ridge_gradients(method):
    # m < n with alpha > 0: G = X^T X + alpha I is definite though X^T X is not (the svd
    # path's thin V needs the (I - V V^T) / alpha part of G^{-1})
    g = torch.Generator().manual_seed(11)
    X, y = torch.randn(3, 5, dtype=F64, generator=g), torch.randn(3, 2, dtype=F64, generator=g)
    torch.testing.assert_close(lstsq(X, y, 0.4, method=method), _reference(X, y, 0.4))
    check_gradients(lambda X, y, a: lstsq(X, y, a, method=method), X, y,
                    torch.tensor(0.4, dtype=F64))
