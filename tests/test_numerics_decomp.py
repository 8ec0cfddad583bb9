"""No silent wrong answers (issue 13) in projections, spectral embedding, top-k eigenpairs,
the inverse square root and PCA at extreme scales: each against an independent reference."""

from __future__ import annotations

import re

import pytest
import torch

from lamods import NotPSDError
from lamods.classic import orthonormalize, project, projection_matrix, spectral_embedding
from lamods.decomp import PCA, inv_sqrtm, pca, topk_eigh

F64 = torch.float64


def _range_projector(A: torch.Tensor) -> torch.Tensor:
    """SVD reference: U_r U_r^T over the singular values above 1e-10 s_1 (0 for A = 0)."""
    U, S, _ = torch.linalg.svd(A, full_matrices=False)
    keep = (S > 1e-10 * S[..., :1]).to(A.dtype)
    return (U * keep.unsqueeze(-2)) @ U.mT


def _rank_deficient(g: torch.Generator) -> torch.Tensor:
    A = torch.randn(7, 4, dtype=F64, generator=g)
    A[:, 2] = A[:, 0] - 2 * A[:, 1]  # dependent column in the middle
    return A


# -- projections onto rank-deficient and zero bases -----------------------------------
@pytest.mark.parametrize("kind", ["dependent", "duplicate-first", "zero-column", "zero"])
def test_project_onto_the_true_column_space(kind):
    g = torch.Generator().manual_seed(0)
    A = _rank_deficient(g)
    if kind == "duplicate-first":
        A[:, 1] = A[:, 0]
    elif kind == "zero-column":
        A[:, 0] = 0
    elif kind == "zero":
        A = torch.zeros(7, 4, dtype=F64)
    x = torch.randn(5, 7, dtype=F64, generator=g)
    P = _range_projector(A)
    torch.testing.assert_close(project(x, A), x @ P, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(projection_matrix(A), P, rtol=1e-10, atol=1e-12)


def test_project_batched_mixes_full_and_deficient_bases():
    g = torch.Generator().manual_seed(1)
    A = torch.stack([torch.randn(7, 4, dtype=F64, generator=g), _rank_deficient(g)])
    x = torch.randn(2, 3, 7, dtype=F64, generator=g)
    torch.testing.assert_close(project(x, A), x @ _range_projector(A), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["qr", "gram_schmidt"])
def test_orthonormalize_refuses_dependent_and_zero_columns(method):
    g = torch.Generator().manual_seed(2)
    name = "orthonormalize" if method == "qr" else "gram_schmidt"
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: expected linearly independent columns, got column 2 (0-based) in the "
            "span of the columns before it")):
        orthonormalize(_rank_deficient(g), method=method)
    with pytest.raises(ValueError, match=re.escape(
            f"{name}: expected linearly independent columns, got column 0")):
        orthonormalize(torch.zeros(5, 3, dtype=F64), method=method)
    A = torch.randn(6, 3, dtype=F64, generator=g)  # independent: unchanged behaviour
    Q = orthonormalize(A, method=method)
    torch.testing.assert_close(Q @ Q.T, _range_projector(A), rtol=1e-10, atol=1e-12)


# -- spectral embedding of a precomputed affinity ----------------------------------------
def test_spectral_embedding_refuses_bad_precomputed_affinities():
    g = torch.Generator().manual_seed(3)
    W = torch.rand(6, 6, dtype=F64, generator=g)
    with pytest.raises(ValueError, match=r"^spectral_embedding: expected a symmetric matrix"):
        spectral_embedding(W, 2, affinity="precomputed")
    S = (W + W.T) / 2
    S[0, 1] = S[1, 0] = -0.25
    with pytest.raises(ValueError, match=re.escape(
            "spectral_embedding: expected non-negative affinities with affinity='precomputed', "
            "got a minimum entry of -0.25")):
        spectral_embedding(S, 2, affinity="precomputed")
    # a valid affinity: the rows are the unit-normalized smallest eigenvectors of L_sym
    W = (W + W.T) / 2
    E = spectral_embedding(W, 2, affinity="precomputed")
    d = W.sum(1).rsqrt()
    L = torch.eye(6, dtype=F64) - d[:, None] * W * d[None, :]
    U = torch.linalg.eigh(L).eigenvectors[:, :2]
    ref = U / U.norm(dim=1, keepdim=True)
    torch.testing.assert_close((E @ E.T).abs(), (ref @ ref.T).abs(), rtol=1e-8, atol=1e-10)


# -- topk_eigh(method="power") on indefinite matrices --------------------------------------
def _symmetric_with(lam: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    Q = torch.linalg.qr(torch.randn(len(lam), len(lam), dtype=F64, generator=g)).Q
    A = (Q * lam) @ Q.T
    return (A + A.T) / 2


def test_topk_power_refuses_when_negative_eigenvalues_dominate():
    g = torch.Generator().manual_seed(4)
    # the 12 largest magnitudes are all negative: the old code returned about -89 as "largest"
    lam = torch.cat([-torch.arange(100.0, 50.0, -1), torch.arange(1.0, 11.0)]).to(F64)
    A = _symmetric_with(lam, g)
    with pytest.raises(NotPSDError, match=r"^topk_eigh: expected a positive semi-definite A "
                       r"with method='power' \(it finds the eigenvalues of largest magnitude\), "
                       r"got negative eigenvalues among them"):
        topk_eigh(A, 3, method="power", generator=g)
    # lanczos (the default) handles it
    top = topk_eigh(A, 3, generator=g, n_iter=20).eigenvalues
    torch.testing.assert_close(top, torch.linalg.eigvalsh(A)[-3:].flip(0), rtol=1e-8, atol=1e-8)


def test_topk_power_on_mildly_indefinite_matches_eigvalsh():
    g = torch.Generator().manual_seed(5)
    lam = torch.cat([-torch.linspace(0.1, 1.0, 10), 2.0 ** -torch.arange(0.0, 30.0)]).to(F64)
    A = _symmetric_with(lam * 100, g)
    got = topk_eigh(A, 4, method="power", n_iter=30, generator=g).eigenvalues
    torch.testing.assert_close(got, torch.linalg.eigvalsh(A)[-4:].flip(0), rtol=1e-8, atol=1e-8)
    # l = k + oversamples >= n: the basis is the whole space, exact for any symmetric A
    B = _symmetric_with(torch.tensor([-9.0, -8.0, -7.0, 1.0, 2.0, 3.0], dtype=F64), g)
    torch.testing.assert_close(topk_eigh(B, 2, method="power", generator=g).eigenvalues,
                               torch.tensor([3.0, 2.0], dtype=F64), rtol=1e-10, atol=1e-10)


# -- inv_sqrtm of singular and indefinite matrices ----------------------------------------
@pytest.mark.parametrize("validate", [True, False])
def test_inv_sqrtm_singular_with_eps_zero_raises(validate):
    g = torch.Generator().manual_seed(6)
    B = torch.randn(5, 3, dtype=F64, generator=g)
    A = B @ B.T  # rank 3 of 5: the old code returned inf/NaN
    with pytest.raises(NotPSDError, match=r"^inv_sqrtm: expected a positive definite matrix "
                       r"with eps=0, got a singular one \(smallest eigenvalue .* <= n u max "
                       r"\|lambda\| = .*\); pass eps > 0 to regularise"):
        inv_sqrtm(A, validate=validate)
    with pytest.raises(NotPSDError, match=r"^inv_sqrtm: expected a positive definite"):
        inv_sqrtm(torch.zeros(2, 3, 3), validate=validate)
    # eps > 0: (A + eps I)^{-1/2}, finite, against an eigendecomposition in float64
    L, U = torch.linalg.eigh(A)
    ref = (U / (L.clamp_min(0) + 0.1).sqrt()) @ U.T
    torch.testing.assert_close(inv_sqrtm(A, 0.1, validate=validate), ref, rtol=1e-10,
                               atol=1e-12)


def test_inv_sqrtm_indefinite_raises_when_validating():
    A = torch.diag(torch.tensor([4.0, 1.0, -0.5], dtype=F64))
    with pytest.raises(NotPSDError, match=re.escape(
            "inv_sqrtm: expected a positive semi-definite matrix, got smallest eigenvalue -0.5 "
            "(largest magnitude 4)")):
        inv_sqrtm(A, 0.1)


# -- PCA at extreme scales ---------------------------------------------------------------
def _pca_data(dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    X = torch.randn(300, 6, dtype=F64, generator=g) @ torch.randn(6, 6, dtype=F64, generator=g)
    return (X + 5.0).to(dtype)


@pytest.mark.parametrize("solver", ["full", "covariance", "randomized"])
@pytest.mark.parametrize("c", [1e-30, 1e30])
def test_pca_float32_components_are_scale_invariant(solver, c):
    # float32 variances at 1e-30 / 1e30 underflow / overflow: the old code gave arbitrary
    # components (covariance), NaN ratios (every solver) or a LAPACK failure
    X = _pca_data()
    ref = PCA(3, solver=solver, whiten=True, seed=0).fit(X)
    got = PCA(3, solver=solver, whiten=True, seed=0).fit(X * c)
    torch.testing.assert_close(got.components_, ref.components_, rtol=0, atol=2e-5)
    torch.testing.assert_close(got.explained_variance_ratio_, ref.explained_variance_ratio_,
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(got.singular_values_ / c, ref.singular_values_, rtol=1e-5, atol=0)
    torch.testing.assert_close(got.mean_ / c, ref.mean_, rtol=1e-5, atol=0)
    # whitened outputs are scale-free: same as the unscaled fit's
    torch.testing.assert_close(got.transform(X[:10] * c), ref.transform(X[:10]), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("solver", ["full", "covariance", "randomized"])
@pytest.mark.parametrize("c", [1e-30, 1e30])
def test_pca_float64_variances_scale_by_c_squared(solver, c):
    X = _pca_data(F64)
    ref = PCA(3, solver=solver, seed=0).fit(X)
    got = PCA(3, solver=solver, seed=0).fit(X * c)
    torch.testing.assert_close(got.components_, ref.components_, rtol=0, atol=1e-10)
    torch.testing.assert_close(got.explained_variance_ / c**2, ref.explained_variance_,
                               rtol=1e-10, atol=0)
    torch.testing.assert_close(got.noise_variance_ / c**2, ref.noise_variance_, rtol=1e-10,
                               atol=0)


@pytest.mark.parametrize("c", [1e-30, 1e30])
def test_pca_function_is_scale_robust(c):
    X = _pca_data()
    ref = pca(X, 3)
    got = pca(X * c, 3)
    torch.testing.assert_close(got.components, ref.components, rtol=0, atol=2e-5)
    torch.testing.assert_close(got.scores / c, ref.scores, rtol=1e-4, atol=1e-4)
    X64 = _pca_data(F64)
    torch.testing.assert_close(pca(X64 * c, 3).explained_variance / c**2,
                               pca(X64, 3).explained_variance, rtol=1e-10, atol=0)


def test_pca_partial_fit_refuses_unrepresentable_scatter_and_streams_in_float64():
    X = _pca_data()
    for c in (1e-30, 1e30):
        with pytest.raises(ValueError, match=r"^PCA.partial_fit: expected data whose squared "
                           r"deviations fit in torch.float32"):
            PCA(3).partial_fit(X * c)
    X64 = _pca_data(F64) * 1e30
    stream = PCA(3)
    for batch in X64.split(100):
        stream.partial_fit(batch)
    full = PCA(3, solver="full").fit(X64)
    torch.testing.assert_close(stream.components_, full.components_, rtol=0, atol=1e-10)
    torch.testing.assert_close(stream.explained_variance_, full.explained_variance_,
                               rtol=1e-10, atol=0)
