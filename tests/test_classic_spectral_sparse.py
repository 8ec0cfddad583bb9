"""Spectral clustering at size: the sparse kNN affinity and the sparse eigensolver path."""

import pytest
import torch
from scipy.sparse.csgraph import connected_components
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors, kneighbors_graph

from lamods import ConvergenceWarning
from lamods.classic import SpectralClustering, knn_affinity, knn_indices, laplacian, spectral
from lamods.classic.spectral import _sparse_embed

F64 = torch.float64


def _points(n=300, d=3, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _blobs(n=400, centers=4, seed=0):
    X, y = make_blobs(n, centers=centers, n_features=5, cluster_std=0.5, random_state=seed)
    return torch.from_numpy(X), y


@pytest.mark.parametrize("block_elements", [1 << 24, 3 * 64])
@pytest.mark.parametrize("n,k", [(200, 7), (64, 10), (130, 1)])
def test_knn_affinity_equals_sklearn_kneighbors_graph(n, k, block_elements):
    X = _points(n, 5, seed=n)
    A = kneighbors_graph(X.numpy(), k, include_self=True)
    ref = torch.from_numpy((0.5 * (A + A.T)).toarray())
    W = knn_affinity(X, k, block_elements=block_elements)
    assert W.layout == torch.sparse_coo and W.is_coalesced()
    torch.testing.assert_close(W.to_dense(), ref, rtol=0, atol=0)


@pytest.mark.parametrize("data", ["blobs", "uniform", "high-dimensional"])
def test_cell_pruned_knn_is_exact(monkeypatch, data):
    """Note [cell pruning] (used from 4 * _CELL points on): small cells here, so that it
    runs on small data; the neighbours are scikit-learn's exactly."""
    monkeypatch.setattr(spectral, "_CELL", 48)
    stats = []
    monkeypatch.setattr(spectral, "_STATS", stats)
    if data == "blobs":
        X = torch.from_numpy(make_blobs(700, centers=6, n_features=4, random_state=1)[0])
    elif data == "uniform":
        X = _points(700, 6, seed=5)
    else:
        X = _points(700, 200, seed=6)
        knn_indices(X, 8)
        assert not stats  # more than _CELL_MAX_DIM features: not tried
        monkeypatch.setattr(spectral, "_CELL_MAX_DIM", 200)
    idx = knn_indices(X, 8)
    assert stats  # the pruned search ran
    ref = NearestNeighbors(n_neighbors=8).fit(X.numpy()).kneighbors(return_distance=False)
    # scikit-learn's query of the training set leaves each point out: it is ours first
    assert torch.equal(idx[:, 0], torch.arange(700))
    assert torch.equal(idx[:, 1:].sort(1).values, torch.from_numpy(ref[:, :7]).sort(1).values)
    if data == "blobs":
        assert sum(stats) / len(stats) < 0.5  # far cells were skipped
    if data == "high-dimensional":
        # nothing to prune: after a tenth of the queries the rest ran by brute force
        assert len(stats) <= 4 and min(stats) > 0.6
    A = kneighbors_graph(X.numpy(), 8, include_self=True)
    torch.testing.assert_close(knn_affinity(X, 8).to_dense(),
                               torch.from_numpy((0.5 * (A + A.T)).toarray()), rtol=0, atol=0)


def test_knn_indices_of_queries_against_a_reference_set():
    X, Q = _points(150, 4, seed=1), _points(37, 4, seed=2)
    idx = knn_indices(Q, 6, X, block_elements=100)
    ref = torch.cdist(Q, X).topk(6, largest=False).indices
    assert torch.equal(idx.sort(1).values, ref.sort(1).values)


@pytest.mark.parametrize("kind", ["symmetric", "unnormalized"])
def test_sparse_eigensolver_matches_dense_eigh(kind):
    X = _points(300, 3, seed=3)
    W = knn_affinity(X, 10)
    k = 5
    lam, U, deg, spectrum = _sparse_embed("test", W, k, kind, 1e-10, 500,
                                          torch.Generator().manual_seed(0))
    L, deg_ref = laplacian(W.to_dense(), kind)
    ref_lam, ref_U = torch.linalg.eigh(L)
    torch.testing.assert_close(deg, deg_ref, rtol=0, atol=1e-12)
    scale = float(ref_lam[-1])
    torch.testing.assert_close(spectrum[:k + 3], ref_lam[:k + 3], rtol=0, atol=1e-10 * scale)
    assert float(ref_lam[k] - ref_lam[k - 1]) > 1e-3 * scale  # a well-defined subspace
    # principal angles between span(U) and the reference eigenspace: cosines all ~1
    cosines = torch.linalg.svdvals(ref_U[:, :k].mT @ U)
    torch.testing.assert_close(cosines, torch.ones(k, dtype=F64), rtol=0, atol=1e-9)
    torch.testing.assert_close(U.mT @ U, torch.eye(k, dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.filterwarnings("ignore:SpectralClustering.fit. expected a connected kNN graph")
@pytest.mark.parametrize("lap", ["symmetric", "unnormalized"])
def test_sparse_path_labels_equal_dense_path_on_blobs(lap):
    X, y = _blobs()
    kw = {"affinity": "nearest_neighbors", "n_neighbors": 15, "laplacian": lap, "seed": 0}
    dense = SpectralClustering(4, eigen_solver="dense", **kw).fit(X)
    sparse = SpectralClustering(4, eigen_solver="sparse", **kw).fit(X)
    assert adjusted_rand_score(dense.labels_.numpy(), sparse.labels_.numpy()) == 1.0
    assert adjusted_rand_score(y, sparse.labels_.numpy()) == 1.0
    torch.testing.assert_close(sparse.eigenvalues_, dense.eigenvalues_, rtol=0, atol=1e-9)
    torch.testing.assert_close(sparse.degrees_, dense.degrees_, rtol=0, atol=0)
    # Nystrom extension through the neighbour sums: the same labels back, same as dense
    assert torch.equal(sparse.predict(X), sparse.labels_)
    Xq = X[:50] + 0.05
    assert adjusted_rand_score(dense.predict(Xq).numpy(), sparse.predict(Xq).numpy()) == 1.0


def test_auto_picks_the_sparse_path_for_large_knn_graphs():
    knn = SpectralClustering(3, affinity="nearest_neighbors")
    assert knn._sparse(1000) and not knn._sparse(999)
    assert not SpectralClustering(3)._sparse(10**6)  # RBF: dense
    assert not SpectralClustering(3, affinity="nearest_neighbors",
                                  eigen_solver="dense")._sparse(10**6)


def test_sparse_path_errors_and_warnings():
    X, _ = _blobs(60, 2)
    sparse = {"affinity": "nearest_neighbors", "eigen_solver": "sparse", "seed": 0}
    with pytest.raises(ValueError, match=r"^SpectralClustering.fit: expected n_neighbors <= "
                       r"n_samples = 5, got 6"):
        SpectralClustering(2, n_neighbors=6, **sparse).fit(X[:5])
    with pytest.raises(ValueError, match=r"^knn_affinity: expected n_neighbors <= n_samples = 5, "
                       r"got 6"):
        knn_affinity(X[:5], 6)
    with pytest.raises(ValueError, match=r"^knn_indices: expected n_neighbors <= n_samples of Y "
                       r"= 4, got 5"):
        knn_indices(X, 5, X[:4])
    with pytest.raises(ValueError, match=r"^knn_indices: expected X and Y with the same width"):
        knn_indices(X, 2, X[:, :1])
    with pytest.raises(TypeError, match=r"^knn_affinity: expected X as a floating-point "
                       r"torch.Tensor, got dtype torch.int64"):
        knn_affinity(torch.ones(5, 2, dtype=torch.int64), 2)
    bad = X.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^knn_affinity: expected a finite X, got 1 NaN or "
                       r"infinite entries"):
        knn_affinity(bad, 3)
    with pytest.raises(ValueError, match=r"^SpectralClustering.fit: expected a finite X, "
                       r"got 1 NaN or infinite entries"):
        SpectralClustering(2, **sparse).fit(bad)
    with pytest.raises(ValueError, match=r"^SpectralClustering: expected eigen_solver to be one "
                       r"of 'auto', 'dense', 'sparse', got 'arpack'"):
        SpectralClustering(2, eigen_solver="arpack")
    with pytest.raises(ValueError, match=r"^SpectralClustering: expected affinity="
                       r"'nearest_neighbors' with eigen_solver='sparse' \(an RBF graph is "
                       r"dense\), got 'rbf'"):
        SpectralClustering(2, eigen_solver="sparse")
    with pytest.raises(ValueError, match=r"^SpectralClustering: expected eigen_tol > 0, got 0"):
        SpectralClustering(2, eigen_tol=0)
    # far groups and n_neighbors=5: several components (scikit-learn warns the same); the
    # count is scipy's
    two = torch.cat([X[:30] * 0.01, X[:30] * 0.01 + 100.0])
    count = connected_components(kneighbors_graph(two.numpy(), 5, include_self=True),
                                 directed=False)[0]
    assert count >= 2
    for solver in ("sparse", "dense"):
        with pytest.warns(UserWarning, match=r"^SpectralClustering.fit: expected a connected "
                          rf"kNN graph, got {count} connected components \(n_neighbors=5\)"):
            SpectralClustering(count, affinity="nearest_neighbors", n_neighbors=5,
                               eigen_solver=solver, seed=0).fit(two)
    Xc = _points(300, 3, seed=4)
    with pytest.warns(ConvergenceWarning, match=r"^SpectralClustering.fit: the sparse "
                      r"eigensolver stopped at eigen_max_iter=1 with residual"):
        SpectralClustering(4, eigen_max_iter=1, eigen_tol=1e-14, **sparse).fit(Xc)
