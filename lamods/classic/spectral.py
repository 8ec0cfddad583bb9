r"""Spectral embedding and spectral clustering on a similarity graph.

Affinity graph :math:`W` on the ``n`` points:

- ``"rbf"``: :math:`W_{ij} = \exp(-\gamma \|x_i - x_j\|^2)` (differentiable in ``X``):
  :class:`lamods.layers.RBFKernel` with :math:`\gamma = 1/(2 l^2)` (scikit-learn's
  parametrisation, which a scikit-learn user passes);
- ``"nearest_neighbors"``: :math:`A_{ij} = 1` if :math:`x_j` is among the
  ``n_neighbors`` nearest points of :math:`x_i` (itself included), then
  :math:`W = (A + A^T)/2` (as scikit-learn's ``kneighbors_graph`` route).

Degrees :math:`d_i = \sum_j W_{ij}`, :math:`D = \operatorname{diag}(d)`, and the graph Laplacian

.. math::
    L = D - W \;(\text{unnormalized}), \qquad
    L_{sym} = I - D^{-1/2} W D^{-1/2} \;(\text{symmetric normalized}).

:math:`L` is positive semi-definite with :math:`f^T L f = \frac12 \sum_{ij} W_{ij}
(f_i - f_j)^2`: eigenvectors of small eigenvalues vary little across heavy
edges, and the multiplicity of the eigenvalue 0 counts the connected
components. The embedding is the ``k`` eigenvectors of the smallest
eigenvalues, computed with lamods' stable :func:`~lamods.decomp.eigh` (so the
embedding is differentiable with respect to an RBF graph's input). With
:math:`L_{sym}` the rows are then scaled to unit length (Ng, Jordan & Weiss, 2001);
clustering the rows with k-means gives spectral clustering (von Luxburg, "A
tutorial on spectral clustering", 2007).

Out-of-sample points (``SpectralClustering.predict``) get the Nystrom
extension of the eigenvectors (Bengio et al., 2004): from :math:`L u = \lambda u`,
:math:`u_i = \sum_j W_{ij} u_j / (d_i - \lambda)` (unnormalized) and
:math:`u_i = \sum_j \frac{W_{ij}}{\sqrt{d_i d_j}} u_j / (1 - \lambda)` (symmetric),
evaluated with the affinities :math:`w(x, x_j)` of the new point to the
training points; for a training point and the RBF graph this reproduces its
embedding row exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamods._precision import compute_dtype
from lamods._random import check_randomness
from lamods._validation import (
    as_float_tensor,
    check_data,
    check_positive,
    check_positive_int,
    check_rank_k,
    check_symmetric_finite,
    is_traced,
)
from lamods.base import Estimator
from lamods.classic.kmeans import KMeans
from lamods.decomp.eigh import eigh
from lamods.distances import ScaledFrame, sq_distances
from lamods.layers.kernels import RBFKernel

__all__ = ["SpectralClustering", "affinity_matrix", "laplacian", "spectral_embedding"]

_AFFINITIES = ("rbf", "nearest_neighbors")
_LAPLACIANS = ("unnormalized", "symmetric")


def _rbf(X: Tensor, Y: Tensor | None, gamma: float) -> Tensor:
    """W_ij = exp(-gamma ||x_i - y_j||^2): the shared RBF kernel, gamma = 1 / (2 l^2)."""
    return RBFKernel(gamma=gamma, device=X.device, dtype=X.dtype)(X, Y)


def _knn(D: Tensor, n_neighbors: int) -> Tensor:
    """Directed kNN connectivity A (rows: query points) from squared distances D."""
    idx = D.topk(n_neighbors, dim=-1, largest=False).indices
    return torch.zeros_like(D).scatter_(-1, idx, 1.0)


def _check_affinity(name: str, W: Tensor) -> None:
    """A precomputed affinity must be symmetric (within :data:`SYMMETRY_RTOL`) and >= 0:
    the Laplacian of anything else is not a graph Laplacian (not PSD, no clusters)."""
    check_symmetric_finite(name, W.detach())
    low = float(W.detach().amin())
    if low < 0:
        raise ValueError(f"{name}: expected non-negative affinities with "
                         f"affinity='precomputed', got a minimum entry of {low:.3g}")


def affinity_matrix(X: Tensor, *, affinity: str = "rbf", gamma: float = 1.0,
                    n_neighbors: int = 10) -> Tensor:
    r"""Affinity :math:`W` ``(n, n)`` of the rows of ``X`` ``(n, d)`` (module docstring).

    Examples::

        >>> X = torch.tensor([[0.0], [1.0], [5.0]])
        >>> affinity_matrix(X, gamma=1.0)[0]
        tensor([1.0000e+00, 3.6788e-01, 1.3888e-11])
        >>> affinity_matrix(X, affinity="nearest_neighbors", n_neighbors=2)
        tensor([[1.0000, 1.0000, 0.0000],
                [1.0000, 1.0000, 0.5000],
                [0.0000, 0.5000, 1.0000]])
    """
    if affinity not in _AFFINITIES:
        raise ValueError(f"affinity_matrix: expected affinity in {_AFFINITIES}, got {affinity!r}")
    if affinity == "rbf":
        # W_ij = exp(-gamma ||x_i - x_j||^2)
        check_positive("affinity_matrix", "gamma", gamma)
        return _rbf(X, None, gamma)
    check_rank_k("affinity_matrix", n_neighbors, X.shape[0], "n_samples", arg="n_neighbors")
    A = _knn(sq_distances(X.detach()), n_neighbors)
    # W = (A + A^T) / 2
    return (A + A.mT) / 2


def laplacian(W: Tensor, kind: str = "symmetric") -> tuple[Tensor, Tensor]:
    r"""Graph Laplacian of the affinity ``W`` ``(n, n)`` and the degrees ``(n,)``.

    ``"unnormalized"``: :math:`L = D - W`; ``"symmetric"``:
    :math:`L_{sym} = I - D^{-1/2} W D^{-1/2}` (an isolated node gets degree
    clamped to the smallest normal number, so no division by zero).

    Examples::

        >>> W = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> laplacian(W, "unnormalized")[0]
        tensor([[ 1., -1.],
                [-1.,  1.]])
    """
    if kind not in _LAPLACIANS:
        raise ValueError(f"laplacian: expected kind in {_LAPLACIANS}, got {kind!r}")
    deg = W.sum(-1)
    if kind == "unnormalized":
        # L = D - W
        return torch.diag_embed(deg) - W, deg
    inv_sqrt = deg.clamp_min(torch.finfo(W.dtype).tiny).rsqrt()
    # L_sym = I - D^{-1/2} W D^{-1/2}
    eye = torch.eye(W.shape[-1], dtype=W.dtype, device=W.device)
    return eye - inv_sqrt.unsqueeze(-1) * W * inv_sqrt.unsqueeze(-2), deg


def _embed(W: Tensor, k: int, kind: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(rows for k-means, eigenvalues (k,), eigenvectors (n, k), degrees (n,), the whole
    spectrum (n,))."""
    L, deg = laplacian(W, kind)
    spectrum, U = eigh(L, validate=False)
    lam, U = spectrum[:k], U[:, :k]
    rows = U
    if kind == "symmetric":
        # Ng-Jordan-Weiss: rows to unit length
        rows = U / torch.linalg.vector_norm(U, dim=-1, keepdim=True).clamp_min(
            torch.finfo(U.dtype).tiny)
    return rows, lam, U, deg, spectrum


def spectral_embedding(X: Tensor, n_components: int, *, affinity: str = "rbf",
                       gamma: float = 1.0, n_neighbors: int = 10,
                       laplacian_kind: str = "symmetric") -> Tensor:
    r"""The ``n_components`` smallest Laplacian eigenvectors of the affinity graph of ``X``.

    Args:
        X: points ``(n, d)``, or with ``affinity="precomputed"`` a symmetric
            non-negative affinity ``(n, n)``.
        n_components: ``k``, the embedding dimension.
        affinity: ``"rbf"``, ``"nearest_neighbors"`` or ``"precomputed"``.
        gamma: RBF width :math:`\gamma`.
        n_neighbors: neighbors of the kNN graph (the point itself included).
        laplacian_kind: ``"symmetric"`` (rows then scaled to unit length) or ``"unnormalized"``.

    Returns:
        ``(n, k)``; differentiable with respect to ``X`` for the RBF and
        precomputed affinities (stable eigh backward).

    Examples::

        >>> X = torch.tensor([[0.0], [0.1], [5.0], [5.1]], dtype=torch.float64)
        >>> E = spectral_embedding(X, 2, gamma=1.0)
        >>> bool(torch.allclose(E[0], E[1], atol=1e-3)), bool(torch.allclose(E[0], E[2]))
        (True, False)
    """
    name = "spectral_embedding"
    if not isinstance(X, Tensor):
        X = as_float_tensor(name, X)
    check_data(name, X)
    if affinity == "precomputed":
        if X.shape[0] != X.shape[1]:
            raise ValueError(f"{name}: expected a square affinity (n, n) with "
                             f"affinity='precomputed', got shape {tuple(X.shape)}")
        _check_affinity(name, X)
        W = X
    elif affinity in _AFFINITIES:
        W = affinity_matrix(X, affinity=affinity, gamma=gamma, n_neighbors=n_neighbors)
    else:
        raise ValueError(f"{name}: expected affinity in {_AFFINITIES + ('precomputed',)}, "
                         f"got {affinity!r}")
    if laplacian_kind not in _LAPLACIANS:
        raise ValueError(f"{name}: expected laplacian_kind in {_LAPLACIANS}, "
                         f"got {laplacian_kind!r}")
    k = check_rank_k(name, n_components, X.shape[0], "n_samples", arg="n_components")
    return _embed(W.to(compute_dtype(W.dtype)), k, laplacian_kind)[0].to(X.dtype)


class SpectralClustering(Estimator):
    r"""Spectral clustering: k-means on the smallest Laplacian eigenvectors of an affinity graph.

    Builds :math:`W` (RBF or kNN), the Laplacian :math:`L = D - W` or
    :math:`L_{sym}`, takes its ``n_clusters`` smallest eigenvectors through
    lamods' :func:`~lamods.decomp.eigh` (rows normalized for :math:`L_{sym}`), and
    clusters them with :class:`KMeans` (module docstring). ``fit`` stores the
    training points, eigenpairs and degrees in buffers; ``forward``/``predict``
    labels new points through the Nystrom extension of the eigenvectors.
    Dense: :math:`O(n^2)` memory and :math:`O(n^3)` time in ``n`` training points.

    Args:
        n_clusters: number of clusters ``k`` (also the embedding dimension).
        affinity: ``"rbf"`` or ``"nearest_neighbors"``.
        gamma: RBF width :math:`\gamma` in :math:`\exp(-\gamma \|x - y\|^2)`.
        n_neighbors: neighbors of the kNN graph (the point itself included).
        laplacian: ``"symmetric"`` or ``"unnormalized"``.
        n_init: k-means runs on the embedding.
        seed: seed of k-means (None: torch's global RNG).
        device, dtype: of the fitted state (None: follow the data, see :mod:`lamods.base`).

    Shape:
        - ``fit(X)``: :math:`(N, d)`.
        - ``forward``/``predict``: :math:`(M, d) \to (M)` int64 labels.

    Attributes:
        labels_: :math:`(N)` training labels.
        embedding_: :math:`(N, k)` rows clustered by k-means.
        eigenvalues_: :math:`(k)` smallest Laplacian eigenvalues.
        eigenvectors_: :math:`(N, k)`.
        degrees_: :math:`(N)`.
        X_fit_: :math:`(N, d)` training points (for ``predict``).
        kmeans: the fitted :class:`KMeans` on the embedding.

    Examples::

        >>> X = torch.tensor([[0.0, 0.0], [0.0, 0.2], [3.0, 3.0], [3.0, 3.2]])
        >>> sc = SpectralClustering(2, gamma=1.0, seed=0).fit(X)
        >>> bool(sc.labels_[0] == sc.labels_[1]), bool(sc.labels_[0] != sc.labels_[2])
        (True, True)
        >>> bool((sc(X) == sc.labels_).all())
        True
    """

    _FITTED = ("embedding_", "eigenvalues_", "eigenvectors_", "degrees_", "X_fit_")
    _FITTED_SHAPES = {"embedding_": ("n", "k"), "eigenvalues_": ("k",),
                      "eigenvectors_": ("n", "k"), "degrees_": ("n",), "X_fit_": ("n", "d"),
                      "labels_": ("n",)}
    _FITTED_MARK = "X_fit_"
    _RESIZED = ("labels_",)

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        affinity: str = "rbf",
        gamma: float = 1.0,
        n_neighbors: int = 10,
        laplacian: str = "symmetric",
        n_init: int = 10,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype)
        name = type(self).__name__
        self.n_clusters = check_positive_int(name, "n_clusters", n_clusters)
        if affinity not in _AFFINITIES:
            raise ValueError(f"{name}: expected affinity in {_AFFINITIES}, got {affinity!r}")
        if laplacian not in _LAPLACIANS:
            raise ValueError(f"{name}: expected laplacian in {_LAPLACIANS}, got {laplacian!r}")
        self.gamma = check_positive(name, "gamma", gamma)
        self.affinity = affinity
        self.n_neighbors = check_positive_int(name, "n_neighbors", n_neighbors)
        self.laplacian = laplacian
        self.n_init = check_positive_int(name, "n_init", n_init)
        check_randomness(name, seed)
        self.seed = seed
        self.register_buffer("labels_", torch.empty(0, dtype=torch.int64, device=device))
        self.kmeans = KMeans(n_clusters, n_init=n_init, seed=seed, device=device, dtype=dtype)

    def _known_dims(self) -> dict[str, int]:
        return {"k": self.n_clusters}

    def _n_features(self) -> int:
        return self.X_fit_.shape[1]

    @torch.no_grad()
    def fit(self, X: object, y: object = None) -> SpectralClustering:
        """Cluster ``X`` ``(n_samples, n_features)``; returns ``self``. ``y`` is ignored."""
        name = f"{type(self).__name__}.fit"
        X = self._fit_input("fit", X)
        n = X.shape[0]
        k = self.n_clusters
        if k > n:
            raise ValueError(f"{name}: expected n_clusters <= n_samples = {n}, got {k}")
        if self.affinity == "nearest_neighbors" and self.n_neighbors > n:
            raise ValueError(f"{name}: expected n_neighbors <= n_samples = {n}, "
                             f"got {self.n_neighbors}")
        # kNN: only the order of distances matters; scaled so that it survives float32 data
        # at 1e30 or 1e-30 (see _knn_frame)
        G = X if self.affinity == "rbf" else self._knn_frame(X)[0]
        W = affinity_matrix(G, affinity=self.affinity, gamma=self.gamma,
                            n_neighbors=self.n_neighbors)
        rows, lam, U, deg, spectrum = _embed(W, k, self.laplacian)
        self._check_eigengap(name, spectrum.detach(), k)
        self.kmeans.fit(rows)
        self.labels_ = self.kmeans.labels_
        self.embedding_ = rows
        self.eigenvalues_ = lam
        self.eigenvectors_ = U
        self.degrees_ = deg
        self.X_fit_ = X.clone()
        return self

    @staticmethod
    def _check_eigengap(name: str, lam: Tensor, k: int) -> None:
        """Note [undetermined embedding]: when the k-th and (k+1)-th smallest Laplacian
        eigenvalues are equal (to ``100 u`` of the spectrum's scale), the k-dimensional
        embedding is any basis of a larger eigenspace and the labels are arbitrary (repeated
        points, or fewer than ``n_clusters`` separable groups): raise instead of guessing."""
        if k >= lam.shape[-1]:
            return
        scale = float(lam.abs().amax()) or 1.0
        gap = float(lam[k] - lam[k - 1])
        if gap <= 100 * torch.finfo(lam.dtype).eps * scale:
            raise ValueError(
                f"{name}: expected a gap between Laplacian eigenvalues {k} and {k + 1} "
                f"(counted from the smallest; n_clusters={k}), got {float(lam[k - 1]):.6g} and "
                f"{float(lam[k]):.6g}: the embedding, and so the clustering, is not determined "
                "(repeated points, or fewer separable groups than n_clusters; check gamma / "
                "n_neighbors against the data's scale)")

    @staticmethod
    def _knn_frame(ref: Tensor, *tensors: Tensor) -> list[Tensor]:
        """``ref`` and ``tensors`` centred on ``ref``'s mean and divided by a power of two
        (exact): the kNN graph depends only on the order of distances, which this keeps,
        while float32 data at ``1e30`` or ``1e-30`` no longer overflow or underflow in the
        squared distances (Note [power-of-two scaling] in :mod:`lamods._precision`)."""
        frame = ScaledFrame.of(ref, *tensors)
        return [frame.apply(t) for t in (ref, *tensors)]

    def transform(self, X: object) -> Tensor:
        r"""Nystrom-extended embedding rows ``(M, k)`` of new points ``X`` ``(M, d)``.

        A row of ``X`` holding NaN or infinity raises (Note [NaN policy] in
        :mod:`lamods.base`), and so does a row with zero affinity to every training point
        (an RBF graph underflows to 0 beyond a distance of about
        :math:`\sqrt{-\ln(\text{tiny}) / \gamma}`): its extension
        :math:`\sum_j w(x, x_j) u_j / d(x)` is 0/0, and a label for it would be arbitrary.
        """
        return self._transform("transform", X)

    def _transform(self, method: str, X: object) -> Tensor:
        X = self._input(method, X)
        flat = X.reshape(-1, X.shape[-1])
        if self.affinity == "rbf":
            w = _rbf(flat, self.X_fit_, self.gamma)
        else:
            ref, q = self._knn_frame(self.X_fit_, flat)
            w = _knn(sq_distances(q, ref), self.n_neighbors)
        lam, U, deg = self.eigenvalues_, self.eigenvectors_, self.degrees_
        d_new = w.sum(-1, keepdim=True)
        tiny = torch.finfo(w.dtype).tiny
        isolated = d_new[:, 0] <= 0
        if not is_traced(flat):
            n_iso = int(isolated.sum())
            if n_iso:
                first = int(isolated.nonzero()[0, 0])
                raise ValueError(
                    f"SpectralClustering.{method}: expected every row of X to have a positive "
                    f"affinity to some training point, got {n_iso} row"
                    f"{'s' if n_iso != 1 else ''} with zero affinity to all of them (first: "
                    f"row {first}); the Nystrom extension is undefined there (use a smaller "
                    f"gamma than {self.gamma:g} for a wider RBF graph)")
        if self.laplacian == "unnormalized":
            # u(x) = sum_j w(x, x_j) u_j / (d(x) - lambda)
            E = (w @ U) / (d_new - lam)
        else:
            # u(x) = sum_j w(x, x_j) / sqrt(d(x) d_j) u_j / (1 - lambda), then unit rows
            E = ((w * deg.clamp_min(tiny).rsqrt()) @ U) / d_new.clamp_min(tiny).sqrt()
            E = E / (1 - lam)
            E = E / torch.linalg.vector_norm(E, dim=-1, keepdim=True).clamp_min(tiny)
        # where the checks cannot run (torch.compile, torch.func): NaN rows, label -1
        E = E.masked_fill(isolated.unsqueeze(-1), float("nan"))
        return E.reshape(*X.shape[:-1], self.n_clusters)

    def predict(self, X: object) -> Tensor:
        """Cluster labels ``(*)`` of new points ``X`` ``(*, d)`` (Nystrom extension + k-means).

        Raises on a non-finite row or one with no affinity to the training points (see
        :meth:`transform`); where those checks cannot run such a row is labelled -1.
        """
        # a NaN row of the embedding (only where the checks cannot run) is labelled -1
        return self.kmeans.predict(self._transform("predict", X))

    def forward(self, X: Tensor) -> Tensor:
        return self.predict(X)

    def fit_predict(self, X: object, y: object = None) -> Tensor:
        """Fit, then return the training labels ``(n_samples,)``."""
        return self.fit(X).labels_

    def extra_repr(self) -> str:
        s = f"n_clusters={self.n_clusters}, affinity={self.affinity!r}, "
        s += (f"gamma={self.gamma}" if self.affinity == "rbf"
              else f"n_neighbors={self.n_neighbors}")
        s += f", laplacian={self.laplacian!r}"
        if self.is_fitted():
            s += f", fitted on {self.X_fit_.shape[0]} points"
        return s
