"""NystromKernelRidge (FALKON): against exact kernel ridge and a dense solve of the Nystrom
normal equations."""

from __future__ import annotations

import warnings

import pytest
import torch

import lamods
from lamods import KernelRidgeHead, NystromKernelRidge
from lamods.layers import RBFKernel

F64 = torch.float64


def data(n: int = 300, d: int = 4, seed: int = 0, k: int | None = None):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.sin(X @ torch.randn(d, generator=g, dtype=F64)) + 0.05 * torch.randn(
        n, generator=g, dtype=F64)
    if k is not None:
        y = torch.stack([y, y.square(), -y][:k], 1)
    return X, y


def test_all_points_as_centres_is_exact_kernel_ridge():
    X, y = data(200)
    exact = KernelRidgeHead("rbf", alpha=0.1, lengthscale=1.5).fit(X, y)
    falkon = NystromKernelRidge("rbf", 0.1, n_centers=200, maxiter=50, rtol=1e-12, seed=0,
                                lengthscale=1.5).fit(X, y)
    Xq, _ = data(50, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(falkon(Xq), exact(Xq), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("k", [None, 3])
def test_matches_dense_nystrom_solve(k):
    X, y = data(300, k=k)
    alpha, m = 0.5, 60
    model = NystromKernelRidge("rbf", alpha, n_centers=m, maxiter=100, rtol=1e-12, seed=3,
                               lengthscale=2.0, block_rows=137).fit(X, y)
    C = model.centers_
    # C is m distinct rows of X
    match = (C[:, None] == X[None]).all(-1)  # (m, n): centre i is row j
    assert C.shape == (m, 4) and bool((match.sum(1) == 1).all())
    assert len(set(match.int().argmax(1).tolist())) == m
    kern = RBFKernel(lengthscale=2.0).double()
    Knm, Kmm = kern(X, C), kern(C, C)
    Y = y if k else y[:, None]
    # (K_nm^T K_nm + alpha K_mm) beta = K_nm^T y, solved densely (jitter: Note [FALKON ...])
    jitter = torch.finfo(F64).eps * m * float(Kmm.diagonal().mean())
    H = Knm.mT @ Knm + alpha * (Kmm + jitter * torch.eye(m, dtype=F64))
    beta = torch.linalg.solve(H, Knm.mT @ Y)
    torch.testing.assert_close(model.coef_, beta, rtol=1e-7, atol=1e-7 * float(beta.abs().max()))
    Xq, _ = data(30, seed=5)
    ref = kern(Xq, C) @ beta
    torch.testing.assert_close(model.predict(Xq), ref if k else ref[:, 0], rtol=1e-7,
                               atol=1e-7)


def test_block_rows_do_not_change_the_result():
    X, y = data(250)
    kw = {"n_centers": 50, "seed": 1, "maxiter": 200, "rtol": 1e-10}
    a = NystromKernelRidge("rbf", 0.3, block_rows=7, **kw).fit(X, y)
    b = NystromKernelRidge("rbf", 0.3, block_rows=1000, **kw).fit(X, y)
    torch.testing.assert_close(a.coef_, b.coef_, rtol=1e-9, atol=1e-9)


def test_preconditioner_needs_few_iterations():
    # a badly conditioned system (kappa(H) ~ 1e11 here): FALKON converges in tens of
    # iterations where plain CG on H does not converge in a thousand
    X, y = data(600)
    model = NystromKernelRidge("rbf", 1e-2, n_centers=100, maxiter=150, rtol=1e-8, seed=0,
                               lengthscale=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X, y)
    assert int(model.n_iter_) < 150
    kern = RBFKernel(lengthscale=2.0).double()
    Knm, Kmm = kern(X, model.centers_), kern(model.centers_, model.centers_)
    H = Knm.mT @ Knm + 1e-2 * Kmm
    with pytest.raises(lamods.ConvergenceError):
        lamods.cg(H, Knm.mT @ y, rtol=1e-8, maxiter=1000)


def test_maxiter_warns():
    X, y = data(300)
    with pytest.warns(lamods.ConvergenceWarning, match=r"^NystromKernelRidge.fit: conjugate "
                      r"gradient stopped at maxiter=1"):
        NystromKernelRidge("rbf", 1e-4, n_centers=80, maxiter=1, rtol=1e-12, seed=0).fit(X, y)


def test_float32_close_to_float64():
    X, y = data(300)
    m64 = NystromKernelRidge("rbf", 0.1, n_centers=50, seed=0, maxiter=200).fit(X, y)
    m32 = NystromKernelRidge("rbf", 0.1, n_centers=50, seed=0, maxiter=200,
                             rtol=1e-5).fit(X.float(), y.float())
    assert m32.coef_.dtype == torch.float32
    p64, p32 = m64.predict(X), m32.predict(X.float()).double()
    assert float((p32 - p64).abs().max()) < 1e-3 * float(p64.abs().max())


def test_state_dict_round_trip():
    X, y = data(100)
    a = NystromKernelRidge("rbf", 0.1, n_centers=20, seed=0).fit(X, y)
    b = NystromKernelRidge("rbf", 0.1, n_centers=20, dtype=F64)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b.predict(X), a.predict(X))


def test_errors():
    X, y = data(30)
    with pytest.raises(ValueError, match=r"^NystromKernelRidge.fit: expected n_centers <= "
                       r"n_samples = 30, got 31"):
        NystromKernelRidge(n_centers=31).fit(X, y)
    with pytest.raises(lamods.NotFittedError, match=r"^NystromKernelRidge.predict: this "
                       r"NystromKernelRidge is not fitted yet"):
        NystromKernelRidge().predict(X)
    with pytest.raises(ValueError, match=r"^NystromKernelRidge: expected alpha > 0, got 0"):
        NystromKernelRidge(alpha=0)
    with pytest.raises(ValueError, match=r"^NystromKernelRidge: expected block_rows to be a "
                       r"positive int, got 0"):
        NystromKernelRidge(block_rows=0)
    bad = X.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^NystromKernelRidge.fit: expected a finite X"):
        NystromKernelRidge(n_centers=5).fit(bad, y)
    model = NystromKernelRidge(n_centers=5, seed=0).fit(X, y)
    with pytest.raises(ValueError, match=r"^NystromKernelRidge.predict: expected finite rows"):
        model.predict(bad)
