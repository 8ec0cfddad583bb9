"""Document-term matrices, TF-IDF and LSA (lamods.classic.text) against scikit-learn, and
randomized_svd on sparse matrices (never densified) against closed forms and the dense path."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from lamods import randomized_svd
from lamods.classic import build_vocabulary, cosine_search, count_matrix, lsa, tfidf

DOCS = [
    "The singular value decomposition factors a matrix into rotations and a scaling.",
    "Eigenvalues of a symmetric matrix are real; eigenvectors are orthogonal.",
    "Gradient descent minimises a loss by stepping against the gradient.",
    "A sparse matrix stores only its nonzero entries, row by row in CSR.",
    "Least squares solves the normal equations, or better a QR factorization of the matrix.",
    "Stochastic gradient descent estimates the gradient from a mini batch of the loss.",
    "Principal component analysis keeps the leading singular vectors of centred data.",
    "Cosine similarity compares the direction of two vectors, not their length.",
    "",  # an empty document: a zero row
]


def csr_to_numpy(X: torch.Tensor) -> np.ndarray:
    return X.to_dense().numpy()


def test_vocabulary_and_counts_match_count_vectorizer():
    # max_features cut where no two terms tie in total count (scikit-learn breaks ties by an
    # unstable argsort): every term seen twice or more
    counts = np.asarray(CountVectorizer().fit_transform(DOCS).sum(0)).ravel()
    twice = int((counts >= 2).sum())
    for kwargs in ({}, {"min_df": 2}, {"max_df": 0.25}, {"max_features": twice}):
        ours = build_vocabulary(DOCS, **kwargs)
        ref = CountVectorizer(**kwargs).fit(DOCS)
        assert ours == list(ref.get_feature_names_out()), kwargs
        C = count_matrix(DOCS, ours)
        assert C.layout == torch.sparse_csr
        np.testing.assert_array_equal(csr_to_numpy(C), ref.transform(DOCS).toarray())


@pytest.mark.parametrize("kwargs", [{}, {"smooth_idf": False}, {"sublinear_tf": True},
                                    {"norm": "l1"}, {"norm": None}], ids=str)
def test_tfidf_matches_tfidf_vectorizer(kwargs):
    ref = TfidfVectorizer(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # smooth_idf=False: df = 0 nowhere here
        expected = ref.fit_transform(DOCS).toarray()
    vocab = list(ref.get_feature_names_out())
    X, idf = tfidf(count_matrix(DOCS, vocab), **kwargs)
    assert X.layout == torch.sparse_csr
    np.testing.assert_allclose(idf.numpy(), ref.idf_, rtol=1e-12)
    np.testing.assert_allclose(csr_to_numpy(X), expected, rtol=1e-12, atol=1e-15)
    # a query transformed with the corpus' idf, as TfidfVectorizer.transform does
    q = ["gradient of the loss matrix"]
    Xq, _ = tfidf(count_matrix(q, vocab), idf=idf, **kwargs)
    np.testing.assert_allclose(csr_to_numpy(Xq), ref.transform(q).toarray(), rtol=1e-12)


def test_lsa_singular_values_match_truncated_svd():
    vocab = build_vocabulary(DOCS)
    X, _ = tfidf(count_matrix(DOCS, vocab))
    res = lsa(X, 4, n_iter=10, generator=torch.Generator().manual_seed(0))
    ref = TruncatedSVD(4, algorithm="arpack").fit(csr_to_numpy(X))
    np.testing.assert_allclose(res.singular_values.numpy(), ref.singular_values_, rtol=1e-8)
    # documents U_k S_k = X V_k
    np.testing.assert_allclose(res.doc_vectors.numpy(), csr_to_numpy(X) @ res.components.T.numpy(),
                               atol=1e-10)


def test_cosine_search_against_brute_force():
    docs, queries = torch.randn(30, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    docs[3] = 0  # a zero vector scores 0
    scores, idx = cosine_search(queries, docs, 6)
    d, q = docs.numpy(), queries.numpy()
    norms = np.linalg.norm(d, axis=1)
    sims = (q @ d.T) / np.linalg.norm(q, axis=1)[:, None] / np.where(norms > 0, norms, 1)
    np.testing.assert_array_equal(idx.numpy(), np.argsort(-sims, axis=1)[:, :6])
    np.testing.assert_allclose(scores.numpy(), np.sort(sims, axis=1)[:, ::-1][:, :6],
                               rtol=1e-12)


# --------------------------------------------------------------------------- sparse SVD
def huge_sparse(layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A 60,000 x 20,000 matrix with 40 nonzeros d_i at distinct rows and columns: its
    singular values are |d_i| (a dense copy would take 9.6 GB)."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randperm(60_000, generator=g)[:40]
    cols = torch.randperm(20_000, generator=g)[:40]
    d = torch.cat([torch.tensor([10.0, 9.0, 8.0, 7.0, 6.0]), torch.linspace(1.0, 0.1, 35)])
    d = d.double() * torch.where(torch.arange(40) % 3 == 0, -1.0, 1.0).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sparse invariants, CSR in beta
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), d, (60_000, 20_000),
                                      check_invariants=False).coalesce()
        A = {"coo": coo, "csr": coo.to_sparse_csr(), "csc": coo.to_sparse_csc()}[layout]
    return A, d.abs().sort(descending=True).values


@pytest.mark.parametrize(("layout", "wide"), [("csr", False), ("csc", True), ("coo", False)],
                         ids=["tall-csr", "wide-csc", "tall-coo"])
def test_randomized_svd_on_a_huge_sparse_matrix_without_densifying(layout, wide):
    A, s = huge_sparse(layout)
    if wide:
        A = A.t() if layout == "coo" else A.mT
    U, S, Vh = randomized_svd(A, 5, oversamples=5, n_iter=6,
                              generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(S, s[:5], rtol=1e-10, atol=0)
    m, n = A.shape
    assert U.shape == (m, 5) and Vh.shape == (5, n) and U.layout == torch.strided
    torch.testing.assert_close(U.mT @ U, torch.eye(5, dtype=torch.float64))
    # A v_i = s_i u_i, computed sparse x dense (to the power iterations' convergence)
    torch.testing.assert_close(A @ Vh.mT, U * S, rtol=1e-8, atol=1e-9)


def test_sparse_and_dense_inputs_give_the_same_result():
    A = torch.randn(60, 40, dtype=torch.float64)
    A[A.abs() < 1] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        S = A.to_sparse_csr()
    ours = randomized_svd(S, 6, generator=torch.Generator().manual_seed(3))
    dense = randomized_svd(A, 6, generator=torch.Generator().manual_seed(3))
    for a, b in zip(ours, dense):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_sparse_input_errors():
    A = torch.eye(4, dtype=torch.float64).to_sparse_csr()
    with pytest.raises(ValueError, match=re.escape(
            "randomized_svd: expected a sparse A that does not require grad")):
        randomized_svd(A.clone().requires_grad_(), 2)
    bad = torch.sparse_coo_tensor(torch.tensor([[0, 1], [0, 1]]),
                                  torch.tensor([1.0, float("inf")]), (3, 3))
    with pytest.raises(ValueError, match=re.escape(
            "randomized_svd: expected a finite sparse A's values, got 1 NaN or infinite entries")):
        randomized_svd(bad, 1)
    batched = torch.stack([torch.eye(3)] * 2).to_sparse(sparse_dim=3)
    with pytest.raises(ValueError, match=re.escape(
            "randomized_svd: expected a sparse A of shape (m, n) (no batch or dense dimensions), "
            "got shape (2, 3, 3)")):
        randomized_svd(batched, 1)


def test_text_bad_input_messages():
    with pytest.raises(TypeError, match="tfidf: expected a 2-D sparse CSR count matrix, got "
                                        "torch.strided"):
        tfidf(torch.ones(2, 2))
    with pytest.raises(ValueError, match=re.escape("build_vocabulary: expected max_df in (0, 1], "
                                                   "got 1.5")):
        build_vocabulary(DOCS, max_df=1.5)
    with pytest.raises(ValueError, match="build_vocabulary: expected at least one term after "
                                         "min_df=50"):
        build_vocabulary(DOCS, min_df=50)
    with pytest.raises(ValueError, match=re.escape(
            "cosine_search: expected top <= the number of documents = 3, got 4")):
        cosine_search(torch.randn(1, 2), torch.randn(3, 2), 4)
