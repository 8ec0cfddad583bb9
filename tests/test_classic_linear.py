"""lstsq, LinearRegression / RidgeRegression, Gram-Schmidt and projections vs references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression as SkLinear
from sklearn.linear_model import Ridge as SkRidge

from lamods.classic import (
    LinearRegression,
    NotFittedError,
    RidgeRegression,
    SingularSystemError,
    gram_schmidt,
    lstsq,
    orthonormalize,
    project,
    projection_matrix,
)
from lamods.testing import assert_close, available_devices, check_gradients

F64 = torch.float64
METHODS = ("cholesky", "qr", "svd")


def _data(n=40, d=5, k=None, batch=()):
    X = torch.randn(*batch, n, d, dtype=F64)
    y = torch.randn(*batch, n, dtype=F64) if k is None else torch.randn(*batch, n, k, dtype=F64)
    return X, y


# -- lstsq -------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("alpha", [0.0, 0.7])
@pytest.mark.parametrize("k", [None, 3])
def test_lstsq_matches_closed_form(method, alpha, k):
    X, y = _data(k=k, batch=(2,))
    Y = y if k else y.unsqueeze(-1)
    eye = torch.eye(X.shape[-1], dtype=F64)
    ref = torch.linalg.solve(X.mT @ X + alpha * eye, X.mT @ Y)
    ref = ref if k else ref.squeeze(-1)
    assert_close(lstsq(X, y, alpha, method=method), ref, tolerance=None)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_lstsq_gradients(method, alpha):
    X, y = _data(n=5, d=2, k=2)
    check_gradients(lambda X, y: lstsq(X, y, alpha, method=method), X, y)


def test_lstsq_gradient_wrt_tensor_alpha():
    X, y = _data(n=7, d=3)
    check_gradients(lambda X, y, a: lstsq(X, y, a, method="cholesky"), X, y,
                    torch.tensor(0.3, dtype=F64))


@pytest.mark.parametrize("method", ["cholesky", "qr"])
def test_lstsq_wide_blocked_gram_and_qr_reduction(method):
    # n >= 256 columns takes the blocked Gram path; QR reduces [X y] without forming Q
    X, y = _data(n=400, d=260, k=2)
    ref = torch.linalg.lstsq(X, y).solution
    torch.testing.assert_close(lstsq(X, y, method=method), ref, rtol=1e-8, atol=1e-10)
    Xg = X.clone().requires_grad_()
    lstsq(Xg, y, method=method).square().sum().backward()
    Xr = X.clone().requires_grad_()
    torch.linalg.solve(Xr.mT @ Xr, Xr.mT @ y).square().sum().backward()
    torch.testing.assert_close(Xg.grad, Xr.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("n", "leaf"), [(37, 4), (255, 128), (513, 256), (777, 256), (1100, 256)])
def test_blocked_gram_equals_the_product(n, leaf):
    # Note [blocked Gram]: recursive blocks, odd widths and batch dimensions included
    from lamods.classic.lstsq import _gram

    X = torch.randn(2, 40, n, generator=torch.Generator().manual_seed(n), dtype=F64)
    torch.testing.assert_close(_gram(X, leaf), X.mT @ X, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(_gram(X[0].float(), leaf), (X[0].mT @ X[0]).float(), rtol=1e-5,
                               atol=1e-4)


def test_lstsq_svd_minimum_norm_on_rank_deficient():
    X, y = _data(n=10, d=3)
    X = torch.cat([X, X[:, :1]], dim=1)  # duplicated column
    ref = torch.from_numpy(np.linalg.lstsq(X.numpy(), y.numpy(), rcond=None)[0])
    assert_close(lstsq(X, y, method="svd"), ref, tolerance=None)


def test_lstsq_singular_normal_equations_raise():
    X, y = _data(n=10, d=3)
    X = torch.cat([X, 2 * X[:, :1]], dim=1)
    with pytest.raises(SingularSystemError, match=r"^lstsq: expected X\^T X to be positive "
                       r"definite \(X of full column rank\) with method='cholesky' and "
                       r"alpha=0, got a singular matrix; use alpha > 0"):
        lstsq(X, y)
    with pytest.raises(SingularSystemError, match="rank-deficient X"):
        lstsq(X, y, method="qr")
    assert torch.isfinite(lstsq(X, y, alpha=1e-3)).all()  # ridge makes it definite


def test_lstsq_bad_input():
    X, y = _data(n=6, d=2)
    with pytest.raises(ValueError, match=r"^lstsq: expected a finite input, got 1 NaN"):
        lstsq(X.index_put((torch.tensor(0), torch.tensor(0)), torch.tensor(float("nan"),
              dtype=F64)), y)
    with pytest.raises(ValueError, match=r"^lstsq: expected a finite y, got 1 NaN"):
        lstsq(X, y.index_put((torch.tensor(1),), torch.tensor(float("nan"), dtype=F64)))
    with pytest.raises(ValueError, match=r"^lstsq: expected y with leading shape \(6,\)"):
        lstsq(X, y[:5])
    with pytest.raises(ValueError, match=r"^lstsq: expected method in"):
        lstsq(X, y, method="lu")
    with pytest.raises(ValueError, match=r"^lstsq: expected alpha to be a float >= 0, got -1"):
        lstsq(X, y, alpha=-1.0)


@pytest.mark.parametrize("device", available_devices())
def test_lstsq_float32_device(device):
    X, y = _data(n=50, d=4)
    ref = lstsq(X, y)
    got = lstsq(X.float().to(device), y.float().to(device))
    assert got.dtype == torch.float32 and got.device.type == device
    torch.testing.assert_close(got.cpu().double(), ref, rtol=1e-4, atol=1e-4)


# -- linear models -------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [None, 2])
def test_linear_regression_matches_sklearn(method, k):
    X, y = _data(n=60, d=6, k=k)
    X = X + 3.0
    sk = SkLinear().fit(X.numpy(), y.numpy())
    ours = LinearRegression(method=method, dtype=F64).fit(X, y)
    assert_close(ours.coef_, torch.from_numpy(sk.coef_), tolerance=None)
    assert_close(ours.intercept_, torch.as_tensor(sk.intercept_, dtype=F64), tolerance=None)
    assert_close(ours(X), torch.from_numpy(sk.predict(X.numpy())), tolerance=None)


@pytest.mark.parametrize("method", METHODS)
def test_ridge_matches_sklearn(method):
    X, y = _data(n=60, d=6, k=3)
    sk = SkRidge(alpha=2.5).fit(X.numpy(), y.numpy())
    ours = RidgeRegression(2.5, method=method, dtype=F64).fit(X, y)
    assert_close(ours.coef_, torch.from_numpy(sk.coef_), tolerance=None)
    assert_close(ours.intercept_, torch.from_numpy(sk.intercept_), tolerance=None)
    assert abs(ours.score(X, y) - sk.score(X.numpy(), y.numpy())) < 1e-10


def test_linear_regression_collinear_matches_sklearn_min_norm():
    X, y = _data(n=30, d=3)
    X = torch.cat([X, X[:, :1] + X[:, 1:2]], dim=1)
    sk = SkLinear().fit(X.numpy(), y.numpy())
    ours = LinearRegression(dtype=F64).fit(X, y)
    torch.testing.assert_close(ours.coef_, torch.from_numpy(sk.coef_), rtol=1e-8, atol=1e-8)
    with pytest.raises(SingularSystemError):
        LinearRegression(method="cholesky", dtype=F64).fit(X, y)


@pytest.mark.parametrize("cls,kw", [(LinearRegression, {}), (RidgeRegression, {"alpha": 3.0})])
def test_fit_gd_converges_to_closed_form(cls, kw):
    X, y = _data(n=80, d=4)
    closed = cls(**kw, dtype=F64).fit(X, y)
    gd = cls(**kw, dtype=F64).fit_gd(X, y, n_iter=2000, tol=1e-12)
    torch.testing.assert_close(gd.coef_, closed.coef_, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(gd.intercept_, closed.intercept_, rtol=1e-8, atol=1e-9)
    curve = gd.loss_curve_
    assert len(curve) == int(gd.n_iter_) + 1 or len(curve) == int(gd.n_iter_)
    assert bool((curve[1:] <= curve[:-1] + 1e-12).all())  # 1/L steps never increase J


def test_linear_model_state_and_errors():
    X, y = _data(n=20, d=3)
    model = LinearRegression(dtype=F64)
    assert not model.is_fitted()
    with pytest.raises(NotFittedError, match=r"^LinearRegression.predict: this LinearRegression "
                       r"is not fitted yet; call fit first"):
        model(X)
    model.fit(X, y)
    assert model.is_fitted() and model.fit(X, y) is model
    fresh = LinearRegression(dtype=F64)
    fresh.load_state_dict(model.state_dict())
    assert_close(fresh(X), model(X))
    bad = X.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^LinearRegression.fit: expected a finite X, "
                       r"got 1 NaN or infinite entries"):
        LinearRegression(dtype=F64).fit(bad, y)
    with pytest.raises(ValueError, match=r"^LinearRegression.fit: expected y with 20 rows"):
        LinearRegression(dtype=F64).fit(X, y[:5])
    with pytest.raises(ValueError, match=r"^LinearRegression.predict: expected input with last "
                       r"dimension 3, got 4"):
        model(torch.randn(2, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"^RidgeRegression: expected alpha to be a float >= 0"):
        RidgeRegression(-1.0)


# -- Gram-Schmidt and projections ---------------------------------------------------
@pytest.mark.parametrize("reorth", [False, True])
@pytest.mark.parametrize("batch", [(), (3,)])
def test_gram_schmidt_matches_qr(reorth, batch):
    A = torch.randn(*batch, 8, 5, dtype=F64)
    Q, R = gram_schmidt(A, reorthogonalize=reorth)
    Qr, Rr = torch.linalg.qr(A)
    signs = torch.sign(Rr.diagonal(dim1=-2, dim2=-1))  # ours: positive diagonal
    torch.testing.assert_close(Q, Qr * signs.unsqueeze(-2), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(R, Rr * signs.unsqueeze(-1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(orthonormalize(A, method="qr"), Q, rtol=1e-10, atol=1e-12)


def test_gram_schmidt_orthogonality_on_ill_conditioned():
    U = torch.linalg.qr(torch.randn(50, 10, dtype=F64)).Q
    V = torch.linalg.qr(torch.randn(10, 10, dtype=F64)).Q
    A = U @ torch.diag(torch.logspace(0, -10, 10, dtype=F64)) @ V.T
    eye = torch.eye(10, dtype=F64)
    loss_mgs = (gram_schmidt(A)[0].T @ gram_schmidt(A)[0] - eye).abs().max()
    Q2 = orthonormalize(A)
    assert float((Q2.T @ Q2 - eye).abs().max()) < 1e-13
    assert float(loss_mgs) < 1e-3  # MGS: about u * kappa = 1e-6


def test_gram_schmidt_gradients():
    A = torch.randn(6, 4, dtype=F64)
    check_gradients(lambda A: gram_schmidt(A), A)
    check_gradients(lambda A: gram_schmidt(A, reorthogonalize=True), A)


def test_projection():
    A = torch.randn(7, 3, dtype=F64)
    x = torch.randn(4, 7, dtype=F64)
    P = projection_matrix(A)
    ref = A @ torch.linalg.solve(A.T @ A, A.T)
    assert_close(P, ref, tolerance=None)
    assert_close(P @ P, P, tolerance=None)
    px = project(x, A)
    assert_close(px, x @ ref.T, tolerance=None)
    assert float(((x - px) @ A).abs().max()) < 1e-12
    check_gradients(lambda x, A: project(x, A), x[:2], A)
    Ab, xb = torch.randn(2, 7, 3, dtype=F64), torch.randn(2, 5, 7, dtype=F64)
    assert_close(project(xb, Ab)[1], project(xb[1], Ab[1]))


def test_orthogonal_bad_input():
    with pytest.raises(ValueError, match=r"^gram_schmidt: expected at most as many columns as "
                       r"rows"):
        gram_schmidt(torch.randn(3, 4))
    A = torch.randn(5, 3, dtype=F64)
    A[:, 2] = A[:, 0] - A[:, 1]
    with pytest.raises(ValueError, match=r"^gram_schmidt: expected linearly independent "
                       r"columns, got column 2"):
        gram_schmidt(A)
    with pytest.raises(ValueError, match=r"^project: expected x with last dimension 5"):
        project(torch.randn(2, 4, dtype=F64), A)
