r"""Document-term matrices, TF-IDF and latent semantic analysis (LSA), on sparse tensors.

A corpus of :math:`n` documents over a vocabulary of :math:`d` terms is the document-term
matrix :math:`C \in \mathbb{R}^{n \times d}`, :math:`C_{ij}` = count of term :math:`j` in
document :math:`i` (a torch sparse CSR matrix: most entries are zero). TF-IDF reweights it
(scikit-learn's ``TfidfVectorizer`` formula):

.. math::
    \mathrm{idf}_j = \ln\frac{1 + n}{1 + \mathrm{df}_j} + 1, \qquad
    X_{ij} = \frac{\mathrm{tf}_{ij}\, \mathrm{idf}_j}{\|\mathrm{tf}_{i\cdot} \odot
    \mathrm{idf}\|_2},

:math:`\mathrm{df}_j` the number of documents holding term :math:`j`, :math:`\mathrm{tf} = C`
(or :math:`1 + \ln C` with ``sublinear_tf``), rows scaled to unit length.

LSA (Deerwester et al. 1990) keeps the rank-:math:`k` truncated SVD
:math:`X \approx U_k S_k V_k^T` (through :func:`lamods.randomized_svd`, which takes the sparse
matrix as it is): documents become :math:`U_k S_k = X V_k` (:math:`k` "topics"), the rows of
:math:`V_k^T` weigh the terms of each topic, and a new text (a query) is folded in the same
way, :math:`\hat q = q V_k`. Documents are compared by cosine similarity,

.. math:: \cos(a, b) = \frac{a^T b}{\|a\|\, \|b\|},

in the latent space, where documents that share no word can still be close.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from lamods._validation import check_choice, check_positive_int, check_rank_k
from lamods.decomp.randomized import randomized_svd

__all__ = [
    "LSAResult",
    "TOKEN_PATTERN",
    "build_vocabulary",
    "cosine_search",
    "count_matrix",
    "lsa",
    "tfidf",
    "tokenize",
]

#: scikit-learn's default token pattern: words of two or more word characters
TOKEN_PATTERN = r"(?u)\b\w\w+\b"


class LSAResult(NamedTuple):
    """``doc_vectors`` ``(n, k)`` :math:`= U_k S_k`, ``singular_values`` ``(k,)`` descending,
    ``components`` ``(k, d)`` :math:`= V_k^T` (one row of term weights per latent dimension)."""

    doc_vectors: Tensor
    singular_values: Tensor
    components: Tensor


def tokenize(text: str, *, lowercase: bool = True, token_pattern: str = TOKEN_PATTERN,
             stop_words: Iterable[str] | None = None) -> list[str]:
    """The tokens of ``text``: ``token_pattern`` matches (lowercased), minus ``stop_words``.

    Examples::

        >>> tokenize("The SVD of a matrix: A = U S V^T.", stop_words={"the", "of"})
        ['svd', 'matrix']
    """
    tokens = re.findall(token_pattern, text.lower() if lowercase else text)
    if stop_words:
        stop = set(stop_words)
        tokens = [t for t in tokens if t not in stop]
    return tokens


def build_vocabulary(docs: Sequence[str], *, min_df: int = 1, max_df: float = 1.0,
                     max_features: int | None = None,
                     stop_words: Iterable[str] | None = None,
                     token_pattern: str = TOKEN_PATTERN) -> list[str]:
    """The sorted terms found in at least ``min_df`` and at most ``max_df`` (a fraction) of
    the documents; with ``max_features``, the most frequent of them (ties by term).

    Examples::

        >>> build_vocabulary(["linear algebra", "linear maps", "maps of maps"], min_df=2)
        ['linear', 'maps']
    """
    name = "build_vocabulary"
    check_positive_int(name, "min_df", min_df)
    if not isinstance(max_df, (int, float)) or isinstance(max_df, bool) or not 0 < max_df <= 1:
        raise ValueError(f"{name}: expected max_df in (0, 1], got {max_df!r}")
    if max_features is not None:
        check_positive_int(name, "max_features", max_features)
    if isinstance(docs, (str, bytes)) or not all(isinstance(d, str) for d in docs):
        got = type(docs).__name__ if isinstance(docs, (str, bytes)) else \
            f"an item of type {next(type(d).__name__ for d in docs if not isinstance(d, str))}"
        raise TypeError(f"{name}: expected docs as a sequence of strings, got {got}")
    stop = set(stop_words or ())
    df: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for doc in docs:
        tokens = tokenize(doc, token_pattern=token_pattern, stop_words=stop)
        df.update(set(tokens))
        total.update(tokens)
    limit = max_df * len(docs)
    terms = [t for t, c in df.items() if min_df <= c <= limit]
    if max_features is not None and len(terms) > max_features:
        terms = sorted(terms, key=lambda t: (-total[t], t))[:max_features]
    if not terms:
        raise ValueError(f"{name}: expected at least one term after min_df={min_df}, "
                         f"max_df={max_df}, got none from {len(docs)} documents")
    return sorted(terms)


def count_matrix(docs: Sequence[str], vocabulary: Sequence[str], *,
                 token_pattern: str = TOKEN_PATTERN,
                 dtype: torch.dtype = torch.float64) -> Tensor:
    """The document-term matrix :math:`C_{ij}` = count of ``vocabulary[j]`` in ``docs[i]``,
    a sparse CSR tensor ``(len(docs), len(vocabulary))`` (terms outside the vocabulary
    are dropped).

    Examples::

        >>> C = count_matrix(["maps of maps", "linear"], ["linear", "maps"])
        >>> C.layout, C.to_dense().tolist()
        (torch.sparse_csr, [[0.0, 2.0], [1.0, 0.0]])
    """
    index = {t: j for j, t in enumerate(vocabulary)}
    if len(index) != len(vocabulary):
        raise ValueError("count_matrix: expected a vocabulary of distinct terms, got "
                         f"{len(vocabulary) - len(index)} repeated")
    crow, cols, vals = [0], [], []
    for doc in docs:
        counts = Counter(index[t] for t in tokenize(doc, token_pattern=token_pattern)
                         if t in index)
        for j in sorted(counts):
            cols.append(j)
            vals.append(float(counts[j]))
        crow.append(len(cols))
    return _csr(torch.tensor(crow, dtype=torch.int64), torch.tensor(cols, dtype=torch.int64),
                torch.tensor(vals, dtype=dtype), (len(docs), len(vocabulary)))


def _csr(crow: Tensor, cols: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A sparse CSR tensor, without torch's "CSR support is in beta" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, size=size, check_invariants=False)


def _row_ids(X: Tensor) -> Tensor:
    crow = X.crow_indices()
    return torch.repeat_interleave(torch.arange(X.shape[0], device=crow.device), crow.diff())


def tfidf(counts: Tensor, *, smooth_idf: bool = True, sublinear_tf: bool = False,
          norm: str | None = "l2", idf: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""TF-IDF of a sparse CSR count matrix, computed on its stored entries only.

    :math:`\mathrm{idf}_j = \ln((1 + n)/(1 + \mathrm{df}_j)) + 1` (``smooth_idf``; else
    :math:`\ln(n/\mathrm{df}_j) + 1`), :math:`X_{ij} = \mathrm{tf}_{ij} \mathrm{idf}_j`,
    rows scaled to unit :math:`\ell_2` (``norm="l2"``) or :math:`\ell_1` norm.

    Args:
        counts: ``(n, d)`` sparse CSR, non-negative.
        smooth_idf: add one document holding every term (no division by zero).
        sublinear_tf: :math:`\mathrm{tf} = 1 + \ln C` for :math:`C > 0`.
        norm: ``"l2"``, ``"l1"`` or None.
        idf: ``(d,)`` weights learned on another corpus (to transform queries); None
            computes them from ``counts``.

    Returns:
        ``(X, idf)``: the sparse CSR TF-IDF matrix and the idf weights ``(d,)``.

    Examples::

        >>> C = count_matrix(["maps of maps", "linear maps"], ["linear", "maps"])
        >>> X, idf = tfidf(C)
        >>> [round(v, 4) for v in idf.tolist()], [round(v, 4) for v in X.to_dense()[1].tolist()]
        ([1.4055, 1.0], [0.8148, 0.5797])
    """
    name = "tfidf"
    if not isinstance(counts, Tensor) or counts.layout != torch.sparse_csr or counts.dim() != 2:
        raise TypeError(f"{name}: expected a 2-D sparse CSR count matrix, got "
                        f"{getattr(counts, 'layout', type(counts).__name__)}")
    check_choice(name, "norm", norm, ("l2", "l1", None))
    values = counts.values()
    if values.numel() and bool((values < 0).any()):
        raise ValueError(f"{name}: expected non-negative counts, got {int((values < 0).sum())} "
                         "negative entries")
    n, d = counts.shape
    cols = counts.col_indices()
    if idf is None:
        # df_j = number of documents holding term j
        df = torch.zeros(d, dtype=values.dtype, device=values.device)
        df.index_add_(0, cols, (values > 0).to(values.dtype))
        if smooth_idf:
            # idf_j = ln((1 + n) / (1 + df_j)) + 1
            idf = torch.log((1 + n) / (1 + df)) + 1
        else:
            # idf_j = ln(n / df_j) + 1
            idf = torch.log(n / df) + 1
    elif tuple(idf.shape) != (d,):
        raise ValueError(f"{name}: expected idf of shape ({d},), got {tuple(idf.shape)}")
    tf = torch.where(values > 0, 1 + torch.log(values), values) if sublinear_tf else values
    # X_ij = tf_ij idf_j
    x = tf * idf.to(tf)[cols]
    if norm is not None:
        rows = _row_ids(counts)
        size = torch.zeros(n, dtype=x.dtype, device=x.device)
        size.index_add_(0, rows, x.square() if norm == "l2" else x.abs())
        size = size.sqrt() if norm == "l2" else size
        x = x / torch.where(size > 0, size, torch.ones_like(size))[rows]
    X = _csr(counts.crow_indices(), cols, x, (n, d))
    return X, idf


def lsa(X: Tensor, k: int, *, oversamples: int = 10, n_iter: int = 4,
        generator: torch.Generator | None = None) -> LSAResult:
    r"""Latent semantic analysis: the rank-``k`` truncated SVD of a (sparse) TF-IDF matrix.

    :math:`X \approx U_k S_k V_k^T` by :func:`lamods.randomized_svd` (sparse input is never
    densified); documents :math:`U_k S_k`, term weights per dimension :math:`V_k^T`.

    Args:
        X: ``(n, d)`` sparse (CSR, CSC, COO) or dense.
        k: latent dimensions, ``1 <= k <= min(n, d)``.
        oversamples, n_iter, generator: passed to :func:`lamods.randomized_svd`.

    Examples::

        >>> docs = ["matrix rank", "matrix rank svd", "probability density", "density"]
        >>> X, _ = tfidf(count_matrix(docs, build_vocabulary(docs)))
        >>> res = lsa(X, 2, generator=torch.Generator().manual_seed(0))
        >>> scores, idx = cosine_search(res.doc_vectors[:1], res.doc_vectors, 2)
        >>> sorted(idx[0].tolist())   # "matrix rank": itself and "matrix rank svd"
        [0, 1]
    """
    check_rank_k("lsa", k, min(X.shape[-2:]), "min(n, d)")
    U, S, Vh = randomized_svd(X, k, oversamples=oversamples, n_iter=n_iter,
                              generator=generator)
    # document vectors U_k S_k (= X V_k)
    return LSAResult(U * S, S, Vh)


def cosine_search(queries: Tensor, docs: Tensor, top: int) -> tuple[Tensor, Tensor]:
    r"""The ``top`` documents of highest cosine similarity to each query.

    :math:`\cos(q, x) = q^T x / (\|q\| \|x\|)` (zero for a zero vector).

    Args:
        queries: ``(q, k)``.
        docs: ``(n, k)``.
        top: ``1 <= top <= n``.

    Returns:
        ``(scores (q, top), indices (q, top))``, best first.

    Examples::

        >>> docs = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
        >>> scores, idx = cosine_search(torch.tensor([[0.0, 1.0]]), docs, 2)
        >>> idx.tolist(), [round(s, 4) for s in scores[0].tolist()]
        ([[2, 1]], [1.0, 0.7071])
    """
    name = "cosine_search"
    if queries.dim() != 2 or docs.dim() != 2 or queries.shape[1] != docs.shape[1]:
        raise ValueError(f"{name}: expected queries (q, k) and docs (n, k) of the same k, got "
                         f"{tuple(queries.shape)} and {tuple(docs.shape)}")
    check_rank_k(name, top, docs.shape[0], "the number of documents", arg="top")

    def unit(v: Tensor) -> Tensor:
        size = v.norm(dim=1, keepdim=True)
        return v / torch.where(size > 0, size, torch.ones_like(size))

    # cos(q, x) = q^T x / (|q| |x|)
    sims = unit(queries) @ unit(docs).mT
    scores, idx = sims.topk(top, dim=1)
    return scores, idx
