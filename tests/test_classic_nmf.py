"""NMF vs scikit-learn (float64): reconstruction error at the same iterations, non-negativity."""

from __future__ import annotations

import warnings

import pytest
import torch
from sklearn.decomposition import NMF as SkNMF

from lamods.classic import NMF, NotFittedError, beta_divergence
from lamods.testing import available_devices

F64 = torch.float64


def _data(n=60, d=40, rank=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, rank, generator=g, dtype=F64) @ torch.rand(rank, d, generator=g,
                                                                  dtype=F64)
    X = X + 0.1 * torch.rand(n, d, generator=g, dtype=F64)
    X[torch.rand(n, d, generator=g) < 0.3] = 0.0  # sparse-ish, like ratings
    return X


@pytest.mark.parametrize("solver,loss", [("mu", "frobenius"), ("mu", "kullback-leibler"),
                                         ("hals", "frobenius")])
@pytest.mark.parametrize("init", ["nndsvda", "nndsvd"])
@pytest.mark.parametrize("max_iter", [20, 200])
def test_nmf_error_within_one_percent_of_sklearn(solver, loss, init, max_iter):
    X = _data()
    sk = SkNMF(8, solver="cd" if solver == "hals" else solver, beta_loss=loss, init=init,
               max_iter=max_iter, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W_sk = sk.fit_transform(X.numpy())
    ours = NMF(8, solver=solver, beta_loss=loss, init=init, max_iter=max_iter, tol=0.0,
               dtype=F64)
    W = ours.fit_transform(X)
    assert int(ours.n_iter_) == max_iter
    assert float(ours.reconstruction_err_) <= 1.01 * sk.reconstruction_err_
    assert float(ours.reconstruction_err_) >= 0.99 * sk.reconstruction_err_
    assert bool((W >= 0).all()) and bool((ours.components_ >= 0).all())
    assert W_sk.shape == tuple(W.shape)


def test_nmf_reconstruction_err_is_frobenius_norm():
    X = _data()
    model = NMF(5, dtype=F64)
    W = model.fit_transform(X)
    torch.testing.assert_close(model.reconstruction_err_, (X - W @ model.components_).norm(),
                               rtol=1e-10, atol=1e-12)
    torch.testing.assert_close((2 * beta_divergence(X, W, model.components_, "frobenius"))
                               .sqrt(), model.reconstruction_err_)


def test_nmf_random_init_and_tol_stop():
    X = _data()
    model = NMF(6, init="random", seed=0, max_iter=1000, tol=1e-4, dtype=F64).fit(X)
    assert 10 <= int(model.n_iter_) < 1000
    assert bool((model.components_ >= 0).all())
    hals = NMF(6, solver="hals", init="random", seed=0, max_iter=1000, tol=1e-4,
               dtype=F64).fit(X)
    assert int(hals.n_iter_) < 1000


@pytest.mark.parametrize("solver", ["mu", "hals"])
def test_nmf_transform_matches_sklearn(solver):
    X = _data()
    sk = SkNMF(5, solver="cd" if solver == "hals" else solver, max_iter=300, tol=0.0,
               random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X.numpy())
    ours = NMF(5, solver=solver, max_iter=300, tol=0.0, dtype=F64).fit(X)
    ours.components_ = torch.from_numpy(sk.components_)  # same H: transform must agree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        W_sk = torch.from_numpy(sk.transform(X[:10].numpy()))
    W = ours(X[:10])
    torch.testing.assert_close(W, W_sk, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("device", available_devices())
def test_nmf_state_device_batch(device):
    X = _data().float().to(device)
    model = NMF(4, solver="hals", max_iter=50, device=device).fit(X)
    W = model(X.reshape(3, 20, 40))
    assert W.shape == (3, 20, 4) and bool((W >= 0).all())
    assert model.inverse_transform(W).shape == (3, 20, 40)
    fresh = NMF(4, solver="hals", max_iter=50, device=device)
    fresh.load_state_dict(model.state_dict())
    assert fresh.is_fitted()
    torch.testing.assert_close(fresh(X[:5]), model(X[:5]))


def test_nmf_errors():
    X = _data()
    neg = X.clone()
    neg[0, 0] = -0.5
    with pytest.raises(ValueError, match=r"^NMF.fit: expected a non-negative input, got 1 "
                       r"negative entries \(minimum -0.5\)"):
        NMF(3, dtype=F64).fit(neg)
    nan = X.clone()
    nan[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"^NMF.fit: expected a finite X, got 1 NaN"):
        NMF(3, dtype=F64).fit(nan)
    with pytest.raises(NotFittedError, match=r"^NMF.transform: this NMF is not fitted yet"):
        NMF(3, dtype=F64)(X)
    with pytest.raises(ValueError, match=r"^NMF: expected beta_loss='frobenius' with "
                       r"solver='hals', got 'kullback-leibler'; use solver='mu'"):
        NMF(3, solver="hals", beta_loss="kullback-leibler")
    with pytest.raises(ValueError, match=r"^NMF.fit: expected n_components <= "
                       r"min\(n_samples, n_features\) = 40 with init='nndsvda', got 50"):
        NMF(50, dtype=F64).fit(X)
