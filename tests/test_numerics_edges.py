"""Edge cases the fuzz battery found after the numerical-policy work, each pinned here."""

from __future__ import annotations

import re

import pytest
import torch

import lamods
from lamods import layers
from lamods.distances import sq_distances

F64 = torch.float64


def test_spectral_clustering_refuses_an_undetermined_embedding():
    """Identical points: the 2nd and 3rd Laplacian eigenvalues are equal, any basis of
    that eigenspace is an embedding, so the labels would be arbitrary."""
    with pytest.raises(ValueError, match=re.escape(
            "SpectralClustering.fit: expected a gap between Laplacian eigenvalues 2 and 3 "
            "(counted from the smallest; n_clusters=2)")):
        lamods.SpectralClustering(2, gamma=0.5, seed=0).fit(torch.zeros(12, 3, dtype=F64))
    # separated groups have a gap: fitted as before
    X = torch.cat([torch.zeros(6, 2), torch.full((6, 2), 5.0)]).double()
    X += 0.01 * torch.randn(12, 2, dtype=F64)
    labels = lamods.SpectralClustering(2, gamma=0.5, seed=0).fit(X).labels_
    assert len(set(labels[:6].tolist())) == 1 and labels[0] != labels[-1]


def test_cosine_kernel_is_scale_invariant_in_float32():
    X = torch.randn(5, 4)
    k = layers.CosineKernel()
    for c in (1e30, 1e-30, 2.0**100):
        torch.testing.assert_close(k(X * c), k(X), rtol=1e-6, atol=1e-6)


def test_laplacian_kernel_in_half_precision_computes_in_float32():
    X = torch.randn(6, 3)
    K = layers.LaplacianKernel(2.0)(X.half())
    assert K.dtype == torch.float16
    torch.testing.assert_close(K.float(), layers.LaplacianKernel(2.0)(X.half().float()),
                               rtol=1e-3, atol=1e-3)


def test_kernels_and_distances_on_empty_and_featureless_inputs():
    assert layers.RBFKernel()(torch.zeros(0, 3)).shape == (0, 0)
    assert layers.RBFKernel()(torch.zeros(0, 3), torch.ones(4, 3)).shape == (0, 4)
    assert sq_distances(torch.zeros(0, 3)).shape == (0, 0)
    torch.testing.assert_close(sq_distances(torch.ones(3, 0)), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"^RBFKernel: expected at least one feature"):
        layers.RBFKernel()(torch.ones(3, 0))
    assert lamods.KMeans(2, seed=0).fit(torch.randn(8, 3)).predict(torch.zeros(0, 3)).shape == (0,)


@pytest.mark.parametrize(("args", "error", "message"), [
    ((None,), TypeError, "sq_distances: expected X as a torch.Tensor, got NoneType"),
    ((torch.ones(3),), ValueError, "sq_distances: expected X of shape (*, n, d), got shape (3,)"),
    ((torch.ones(3, 2, dtype=torch.int64),), TypeError,
     "sq_distances: expected a floating-point X, got dtype torch.int64"),
    ((torch.ones(3, 2), torch.ones(3, 4)), ValueError,
     "sq_distances: expected X and Y with the same width, dtype and device"),
])
def test_sq_distances_refuses_bad_input(args, error, message):
    with pytest.raises(error, match=re.escape(message)):
        sq_distances(*args)


def test_cp_als_is_scale_robust_in_float32():
    from lamods.decomp.tensor import cp_als, cp_reconstruct

    g = torch.Generator().manual_seed(0)
    A, B, C = (torch.randn(n, 2, generator=g) for n in (4, 5, 3))
    T = torch.einsum("ir,jr,kr->ijk", A, B, C)
    for c in (1.0, 1e30, 1e-30):
        res = cp_als(T * c, 2)
        torch.testing.assert_close(cp_reconstruct(res.weights, res.factors) / c, T,
                                   rtol=1e-3, atol=1e-3 * float(T.abs().max()))


def test_build_vocabulary_refuses_what_is_not_text():
    from lamods.classic.text import build_vocabulary

    with pytest.raises(TypeError, match=r"^build_vocabulary: expected docs as a sequence of "
                                        r"strings, got an item of type int"):
        build_vocabulary([1, 2])
    with pytest.raises(TypeError, match=r"^build_vocabulary: expected docs as a sequence of "
                                        r"strings, got str"):
        build_vocabulary("one document")


@pytest.mark.parametrize("eigen_solver", ["dense", "sparse"])
def test_spectral_knn_refuses_fewer_distinct_points_than_clusters(eigen_solver):
    # identical points: the kNN graph comes from tie-breaking, and so would the labels
    sc = lamods.SpectralClustering(2, affinity="nearest_neighbors", n_neighbors=4,
                                   eigen_solver=eigen_solver, seed=0)
    with pytest.raises(ValueError, match=re.escape(
            "SpectralClustering.fit: expected at least n_clusters = 2 distinct points for the "
            "kNN affinity, got 1")):
        sc.fit(torch.zeros(12, 3, dtype=F64))
