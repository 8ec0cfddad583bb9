"""KMeans and SpectralClustering vs scikit-learn (float64), state and bad input."""

from __future__ import annotations

import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.cluster import SpectralClustering as SkSpectral
from sklearn.datasets import make_blobs, make_circles, make_moons
from sklearn.metrics import adjusted_rand_score

from lamods.classic import (
    KMeans,
    NotFittedError,
    SpectralClustering,
    kmeans_plusplus,
    spectral_embedding,
)
from lamods.testing import available_devices, check_gradients

F64 = torch.float64


def _blobs(n=600, d=5, centers=6, std=2.5, seed=0):
    X, y = make_blobs(n, d, centers=centers, cluster_std=std, random_state=seed)
    return torch.from_numpy(X), y


@pytest.mark.parametrize("n_init", [1, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_inertia_within_one_percent_of_sklearn(n_init, seed):
    X, _ = _blobs(seed=seed)
    ours = KMeans(6, n_init=n_init, seed=seed, dtype=F64).fit(X)
    sk = SkKMeans(6, n_init=n_init, random_state=seed).fit(X.numpy())
    assert float(ours.inertia_) <= 1.01 * sk.inertia_
    # inertia_ is the inertia of the final centers and labels
    d = torch.cdist(X, ours.cluster_centers_).square()
    torch.testing.assert_close(ours.inertia_, d.min(1).values.sum(), rtol=1e-10, atol=1e-8)
    assert torch.equal(ours.labels_, d.argmin(1))


def test_kmeans_same_init_same_result_as_sklearn():
    X, _ = _blobs(seed=3)
    init = X[:6].clone()
    ours = KMeans(6, init=init, dtype=F64).fit(X)
    sk = SkKMeans(6, init=init.numpy(), n_init=1).fit(X.numpy())
    torch.testing.assert_close(ours.cluster_centers_, torch.from_numpy(sk.cluster_centers_),
                               rtol=1e-10, atol=1e-10)
    assert int(ours.n_iter_) == sk.n_iter_
    torch.testing.assert_close(float(ours.inertia_), sk.inertia_, rtol=1e-10, atol=0)


def test_kmeans_plusplus_and_random_init():
    X, y = _blobs(n=300, std=0.5)
    C = kmeans_plusplus(X, 6, generator=torch.Generator().manual_seed(0))
    assert C.shape == (6, 5) and len({tuple(c.tolist()) for c in C}) == 6
    ours = KMeans(6, init="random", n_init=10, seed=0, dtype=F64).fit(X)
    assert adjusted_rand_score(y, ours.labels_.numpy()) > 0.99


def test_kmeans_empty_cluster_relocated():
    X = torch.tensor([[0.0], [0.1], [0.2], [10.0]], dtype=F64)
    init = torch.tensor([[0.1], [10.0], [50.0]], dtype=F64)  # the third center attracts nothing
    km = KMeans(3, init=init, dtype=F64).fit(X)
    assert torch.bincount(km.labels_, minlength=3).min() >= 1


@pytest.mark.parametrize("device", available_devices())
def test_kmeans_predict_transform_state(device):
    X, _ = _blobs(n=200)
    X = X.float().to(device)
    km = KMeans(4, n_init=2, seed=0, device=device).fit(X)
    assert torch.equal(km(X), km.labels_)
    assert km.predict(X.reshape(2, 100, 5)).shape == (2, 100)
    dist = km.transform(X[:3])
    assert dist.shape == (3, 4) and torch.equal(dist.argmin(1), km.labels_[:3])
    fresh = KMeans(4, device=device)
    fresh.load_state_dict(km.state_dict())
    assert fresh.is_fitted() and torch.equal(fresh(X), km(X))
    assert "labels_" not in km.state_dict()


def test_kmeans_errors():
    X, _ = _blobs(n=5)
    with pytest.raises(ValueError, match=r"^KMeans.fit: expected n_clusters <= n_samples = 5, "
                       r"got 8"):
        KMeans(8, dtype=F64).fit(X)
    with pytest.raises(NotFittedError, match=r"^KMeans.predict: this KMeans is not fitted yet"):
        KMeans(2, dtype=F64)(X)
    bad = X.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"^KMeans.fit: expected a finite X, got 1 NaN"):
        KMeans(2, dtype=F64).fit(bad)
    # float64 data without an explicit dtype: the fitted state follows the data
    assert KMeans(2, seed=0).fit(X).cluster_centers_.dtype == F64
    with pytest.raises(ValueError, match=r"^KMeans: expected init in \('k-means\+\+', "
                       r"'random'\) or a tensor, got 'kmeans'"):
        KMeans(2, init="kmeans")


# -- spectral -----------------------------------------------------------------
def _two_moons(seed=0):
    X, y = make_moons(300, noise=0.06, random_state=seed)
    return torch.from_numpy(X), y


def _circles(seed=0):
    X, y = make_circles(300, noise=0.04, factor=0.5, random_state=seed)
    return torch.from_numpy(X), y


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
@pytest.mark.filterwarnings("ignore:SpectralClustering.fit. expected a connected kNN graph")
@pytest.mark.parametrize("data", [_two_moons, _circles])
@pytest.mark.parametrize("affinity,kw", [("nearest_neighbors", {"n_neighbors": 10}),
                                         ("rbf", {"gamma": 30.0})])
@pytest.mark.parametrize("lap", ["symmetric", "unnormalized"])
def test_spectral_ari_at_least_sklearn(data, affinity, kw, lap):
    X, y = data()
    sk = SkSpectral(2, affinity=affinity, random_state=0, **kw).fit(X.numpy())
    ours = SpectralClustering(2, affinity=affinity, laplacian=lap, seed=0, dtype=F64,
                              **kw).fit(X)
    ari_sk = adjusted_rand_score(y, sk.labels_)
    ari = adjusted_rand_score(y, ours.labels_.numpy())
    assert ari >= ari_sk - 1e-12, (ari, ari_sk)
    if lap == "symmetric":
        assert ari > 0.95


def test_spectral_predict_reproduces_training_labels_and_state():
    X, _ = _two_moons()
    sc = SpectralClustering(2, gamma=30.0, seed=0, dtype=F64).fit(X)
    assert torch.equal(sc(X), sc.labels_)
    torch.testing.assert_close(sc.transform(X), sc.embedding_, rtol=1e-8, atol=1e-8)
    fresh = SpectralClustering(2, gamma=30.0, dtype=F64)
    fresh.load_state_dict(sc.state_dict())
    assert fresh.is_fitted() and torch.equal(fresh(X[:10]), sc.labels_[:10])
    knn = SpectralClustering(2, affinity="nearest_neighbors", seed=0, dtype=F64).fit(X)
    assert adjusted_rand_score(knn.labels_.numpy(), knn(X).numpy()) > 0.95


def test_spectral_embedding_gradients():
    X = torch.tensor([[0.0, 0.0], [0.1, 0.3], [2.0, 2.0], [2.2, 1.9], [4.0, 0.0]], dtype=F64)

    def loss(X):
        E = spectral_embedding(X, 2, gamma=0.5, laplacian_kind="unnormalized")
        return E @ E.T  # sign-invariant: the projector onto the embedding

    check_gradients(loss, X, gradgrad=False)


def test_spectral_errors():
    X, _ = _two_moons()
    with pytest.raises(ValueError, match=r"^SpectralClustering.fit: expected n_clusters <= "
                       r"n_samples = 3, got 4"):
        SpectralClustering(4, dtype=F64).fit(X[:3])
    with pytest.raises(NotFittedError, match=r"^SpectralClustering.predict: this "
                       r"SpectralClustering is not fitted yet"):
        SpectralClustering(2, dtype=F64).predict(X)
    bad = X.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"^SpectralClustering.fit: expected a finite X, "
                       r"got 1 NaN or infinite entries"):
        SpectralClustering(2, dtype=F64).fit(bad)
    with pytest.raises(ValueError, match=r"^SpectralClustering: expected laplacian in"):
        SpectralClustering(2, laplacian="random_walk")
