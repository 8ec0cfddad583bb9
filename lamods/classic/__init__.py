"""The classic algorithms of machine learning's linear algebra, as differentiable torch modules.

Functional (gradients flow to the inputs):

- :func:`lstsq`: least squares / ridge by normal equations (Cholesky), QR or SVD; batched.
- :func:`gram_schmidt`, :func:`orthonormalize`: modified Gram-Schmidt QR.
- :func:`project`, :func:`projection_matrix`: orthogonal projection onto a column space.
- :func:`spectral_embedding`, :func:`affinity_matrix`, :func:`laplacian`: graph spectra;
  :func:`knn_affinity`, :func:`knn_indices`: the sparse kNN graph in row blocks.
- :func:`kmeans_plusplus`, :func:`beta_divergence`.
- :func:`count_matrix`, :func:`tfidf`, :func:`lsa`, :func:`cosine_search`: document-term
  matrices (sparse CSR), TF-IDF and latent semantic analysis (:mod:`lamods.classic.text`).

Fit-style modules (``fit`` returns ``self``, ``is_fitted()``, fitted state in
buffers ending in ``_``, ``forward`` predicts or transforms, unfitted use raises
:class:`NotFittedError`): :class:`LinearRegression`, :class:`RidgeRegression`,
:class:`KMeans`, :class:`SpectralClustering`, :class:`NMF`.
"""

from lamods.classic.kmeans import KMeans, kmeans_plusplus
from lamods.classic.linear_model import LinearRegression, RidgeRegression
from lamods.classic.lstsq import lstsq
from lamods.classic.nmf import NMF, beta_divergence
from lamods.classic.orthogonal import gram_schmidt, orthonormalize, project, projection_matrix
from lamods.classic.spectral import (
    SpectralClustering,
    affinity_matrix,
    knn_affinity,
    knn_indices,
    laplacian,
    spectral_embedding,
)
from lamods.classic.text import (
    LSAResult,
    build_vocabulary,
    cosine_search,
    count_matrix,
    lsa,
    tfidf,
    tokenize,
)
from lamods.exceptions import NotFittedError, SingularSystemError

__all__ = [
    "NMF",
    "KMeans",
    "LSAResult",
    "LinearRegression",
    "NotFittedError",
    "RidgeRegression",
    "SingularSystemError",
    "SpectralClustering",
    "affinity_matrix",
    "beta_divergence",
    "build_vocabulary",
    "cosine_search",
    "count_matrix",
    "gram_schmidt",
    "kmeans_plusplus",
    "knn_affinity",
    "knn_indices",
    "laplacian",
    "lsa",
    "lstsq",
    "orthonormalize",
    "project",
    "projection_matrix",
    "spectral_embedding",
    "tfidf",
    "tokenize",
]
