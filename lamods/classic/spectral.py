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

import contextlib
import math
import warnings

import torch
from torch import Tensor

from lamods._precision import compute_dtype
from lamods._random import check_randomness, make_generator
from lamods._threads import one_thread
from lamods._validation import (
    as_float_tensor,
    check_choice,
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
from lamods.distances import ScaledFrame, partial_sq_distances, sq_distances
from lamods.exceptions import ConvergenceError, ConvergenceWarning
from lamods.layers.kernels import RBFKernel

__all__ = ["SpectralClustering", "affinity_matrix", "knn_affinity", "knn_indices", "laplacian",
           "spectral_embedding"]

_AFFINITIES = ("rbf", "nearest_neighbors")
_LAPLACIANS = ("unnormalized", "symmetric")


def _rbf(X: Tensor, Y: Tensor | None, gamma: float) -> Tensor:
    """W_ij = exp(-gamma ||x_i - y_j||^2): the shared RBF kernel, gamma = 1 / (2 l^2)."""
    return RBFKernel(gamma=gamma, device=X.device, dtype=X.dtype)(X, Y)


def _knn(D: Tensor, n_neighbors: int) -> Tensor:
    """Directed kNN connectivity A (rows: query points) from squared distances D."""
    idx = D.topk(n_neighbors, dim=-1, largest=False).indices
    return torch.zeros_like(D).scatter_(-1, idx, 1.0)


def _knn_frame(ref: Tensor, *tensors: Tensor) -> list[Tensor]:
    """``ref`` and ``tensors`` centred on ``ref``'s mean and divided by a power of two
    (exact): the kNN graph depends only on the order of distances, which this keeps,
    while float32 data at ``1e30`` or ``1e-30`` no longer overflow or underflow in the
    squared distances (Note [power-of-two scaling] in :mod:`lamods._precision`)."""
    frame = ScaledFrame.of(ref, *tensors)
    return [frame.apply(t) for t in (ref, *tensors)]


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


# -- sparse kNN graph and sparse eigensolver (large n) ---------------------------------------
_SPARSE_MIN_SAMPLES = 1000
_EIGEN_SOLVERS = ("auto", "dense", "sparse")
_GROUP = 64  # columns per group of Note [grouped top-k]


def _padded(Ys: Tensor) -> tuple[Tensor, Tensor]:
    """Note [grouped top-k]: ``Ys`` padded with zero rows to whole groups of columns, and
    :math:`\\|y_j\\|^2` ``(1, m')`` with ``+inf`` for the padding (never a neighbour)."""
    pad = -Ys.shape[0] % _GROUP
    Yp = torch.cat([Ys, Ys.new_zeros(pad, Ys.shape[1])])
    y_sq = torch.cat([Ys.square().sum(1), Ys.new_full((pad,), float("inf"))]).unsqueeze(0)
    return Yp, y_sq


def _block_topk(Xb: Tensor, Yp: Tensor, y_sq: Tensor, k: int,
                self_pos: Tensor | None) -> Tensor:
    r"""Columns ``(b, k)`` of the ``k`` nearest padded rows ``Yp`` to each row of ``Xb``;
    ``self_pos`` ``(b,)``: the column of each query itself, forced first.

    Note [grouped top-k]: the columns fall into groups of :data:`_GROUP`; the ``k`` nearest
    columns lie in the ``k`` groups with the smallest minima (were one of them in another
    group, ``k`` groups with smaller minima would hold ``k`` nearer columns). So one
    vectorised ``amin`` pass over the block, a top-k over ``m / 64`` group minima and a
    top-k over ``64 k`` candidates replace a top-k over all ``m`` columns (several times
    slower on CPU).
    """
    b, groups = Xb.shape[0], Yp.shape[0] // _GROUP
    # ||y_j||^2 - 2 <x_i, y_j>: the squared distance less ||x_i||^2 (same order in j)
    P = partial_sq_distances(Xb, Yp, y_sq)
    if self_pos is not None:  # each point is its own nearest neighbour (include_self)
        P.scatter_(1, self_pos.unsqueeze(1), -float("inf"))
    g_k = min(k, groups)
    Pg = P.view(b, groups, _GROUP)
    best = Pg.amin(-1).topk(g_k, dim=1, largest=False).indices  # (b, g_k) groups
    cand = Pg.gather(1, best.unsqueeze(-1).expand(b, g_k, _GROUP)).reshape(b, -1)
    cols = (best.unsqueeze(-1) * _GROUP + torch.arange(_GROUP, device=Xb.device)).reshape(b, -1)
    return cols.gather(1, cand.topk(k, dim=1, largest=False).indices)


def knn_indices(X: Tensor, n_neighbors: int, Y: Tensor | None = None, *,
                block_elements: int = 1 << 24) -> Tensor:
    r"""Indices ``(n, n_neighbors)`` of the nearest rows of ``Y`` (default ``X``) to each row
    of ``X``, exactly, in row blocks: never an ``n x m`` matrix, at most about
    ``block_elements`` entries at a time. With ``Y`` omitted each point is its own first
    neighbour (scikit-learn's ``include_self=True``).

    Per block the part of :math:`\|x_i - y_j\|^2` that depends on ``j``,
    :math:`\|y_j\|^2 - 2\langle x_i, y_j\rangle` (:func:`~lamods.distances.partial_sq_distances`,
    one ``addmm``; both sets first centred and scaled, Note [centring trick]), is reduced by
    Note [grouped top-k]. From ``4 * _CELL`` points with at most ``_CELL_MAX_DIM`` features
    on, the self-kNN search skips far cells (Note [cell pruning]). Ties between equal
    distances are broken arbitrarily. No gradient.

    Examples::

        >>> knn_indices(torch.tensor([[0.0], [1.0], [5.0]]), 2)
        tensor([[0, 1],
                [1, 0],
                [2, 1]])
    """
    name = "knn_indices"
    X = _check_points(name, X, "X")
    m = X.shape[0]
    if Y is not None:
        Y = _check_points(name, Y, "Y")
        if Y.shape[1] != X.shape[1] or Y.dtype != X.dtype or Y.device != X.device:
            raise ValueError(f"{name}: expected X and Y with the same width, dtype and device, "
                             f"got {tuple(X.shape)} {X.dtype} {X.device} and "
                             f"{tuple(Y.shape)} {Y.dtype} {Y.device}")
        m = Y.shape[0]
    check_rank_k(name, n_neighbors, m, "n_samples of Y" if Y is not None else "n_samples",
                 arg="n_neighbors")
    check_positive_int(name, "block_elements", block_elements)
    return _knn_indices(X, n_neighbors, Y, block_elements)


def _check_points(name: str, X: object, what: str) -> Tensor:
    """A finite floating tensor ``(n, d)`` with ``n, d >= 1``."""
    if not isinstance(X, Tensor):
        raise TypeError(f"{name}: expected {what} as a floating-point torch.Tensor, got "
                        f"{type(X).__name__}")
    if not X.is_floating_point():
        raise TypeError(f"{name}: expected {what} as a floating-point torch.Tensor, got "
                        f"dtype {X.dtype}")
    return check_data(name, X, what=what)


def _knn_indices(X: Tensor, n_neighbors: int, Y: Tensor | None = None,
                 block_elements: int = 1 << 24) -> Tensor:
    """:func:`knn_indices` without the checks (the callers made them)."""
    if Y is not None:
        Ys, Xs = _knn_frame(Y.detach(), X.detach())
        Yp, y_sq = _padded(Ys)
        rows = max(1, block_elements // Yp.shape[0])
        out = [_block_topk(Xs[s:s + rows], Yp, y_sq, n_neighbors, None)
               for s in range(0, Xs.shape[0], rows)]
        return torch.cat(out) if out else X.new_zeros(0, n_neighbors, dtype=torch.int64)
    Xs = _knn_frame(X.detach())[0]
    n = Xs.shape[0]
    if n >= 4 * _CELL and Xs.shape[1] <= _CELL_MAX_DIM:
        with one_thread():  # Note [one thread for small ops]: blocks of 256 queries
            return _knn_cells(Xs, n_neighbors, block_elements)
    Yp, y_sq = _padded(Xs)
    rows = max(1, block_elements // Yp.shape[0])
    ar = torch.arange(n, device=X.device)
    return torch.cat([_block_topk(Xs[s:s + rows], Yp, y_sq, n_neighbors, ar[s:s + rows])
                      for s in range(0, n, rows)])


_STATS: list[float] | None = None  # benchmarks: fraction of the points searched per cell
_CELL = 512  # mean points per cell of Note [cell pruning]
_SUB = 256  # queries sharing one candidate set
_CELL_MAX_DIM = 64  # more features: Note [cell pruning] is not tried
_GIVE_UP = 0.6  # searched fraction above which Note [cell pruning] falls back to brute force


def _knn_cells(Xs: Tensor, k: int, block_elements: int) -> Tensor:
    r"""Exact self-kNN with Note [cell pruning]: ``(n, k)`` indices of the rows of ``Xs``.

    Note [cell pruning]: a few Lloyd iterations split the points into about ``n / _CELL``
    cells with centres :math:`c_b` and radii :math:`r_b = \max_{y \in b} \|y - c_b\|`. For a
    query cell ``a`` a first pass over the cells nearest to :math:`c_a` (at least ``k``
    points) bounds each query's ``k``-th neighbour distance, :math:`\tau_x`; by the triangle
    inequality no point of a cell ``b`` with :math:`\|x - c_b\| - r_b > \tau_x` for every
    ``x`` of ``a`` can be a neighbour, so the exact search runs over the other cells only
    (the "cluster pruning" of exact k-NN search, e.g. Fukunaga & Narendra, IEEE Trans.
    Computers C-24, 1975). The bounds carry a rounding slack, so a cell is kept whenever in
    doubt: the result is the brute-force one. Clustered low-dimensional data prune most
    cells; high-dimensional data (MNIST's 784 pixels) prune almost none: with more than
    :data:`_CELL_MAX_DIM` features this is not tried (measured on the MNIST subset: the
    attempt doubled the graph's time), and once a tenth of the queries searched more than
    :data:`_GIVE_UP` of the points on average, the rest run by brute force (the attempt
    costs the few Lloyd iterations and a tenth of an extra pass).
    """
    n, device = Xs.shape[0], Xs.device
    m = max(2, n // _CELL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km = KMeans(m, max_iter=10, seed=0).fit(Xs)
    lab, C = km.labels_, km.cluster_centers_.to(Xs.dtype)
    order = lab.argsort(stable=True)
    counts = torch.bincount(lab, minlength=m)
    starts = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).tolist()
    Xw = Xs.double()
    rad = torch.zeros(m, dtype=torch.float64, device=device).scatter_reduce(
        0, lab, torch.linalg.vector_norm(Xw - C.double()[lab], dim=1), reduce="amax")
    rad = rad * (1 + 1e-6)
    # rounding slack of a squared distance computed from its expansion (scaled data, |x| < 1)
    slack = 64 * torch.finfo(Xs.dtype).eps * (1 + float(Xs.square().sum(1).amax()))
    cc = sq_distances(C.double(), center=False)  # (m, m) centre distances
    members = [order[starts[b]:starts[b + 1]] for b in range(m)]
    pos = torch.empty(n, dtype=torch.int64, device=device)
    out = torch.empty(n, k, dtype=torch.int64, device=device)
    searched, done = 0.0, 0  # point pairs searched / n^2, queries done
    for a in range(m):
        qa = members[a]
        if qa.numel() == 0:
            continue
        if done >= n // 10 and searched > _GIVE_UP * done * n:
            # Note [cell pruning]: the bounds prune too little (high-dimensional data): the
            # remaining queries by brute force, without the bounds' extra passes
            rest = torch.cat(members[a:])
            Yp, y_sq = _padded(Xs)
            rows = max(1, block_elements // Yp.shape[0])
            for t in range(0, rest.numel(), rows):
                q = rest[t:t + rows]
                out[q] = _block_topk(Xs[q], Yp, y_sq, k, q)
            break
        Q = Xs[qa]
        rows = max(1, block_elements // (len(qa) + _GROUP))
        done += len(qa)
        # pass 1: the nearest cells to c_a until they hold k points bound tau_x
        near, total = [], 0
        for b in cc[a].argsort().tolist():
            near.append(b)
            total += len(members[b])
            if total >= k:
                break
        first = Xs[torch.cat([members[b] for b in near])]
        Yp, y_sq = _padded(first)
        found = torch.cat([_block_topk(Q[s:s + rows], Yp, y_sq, k, None)
                           for s in range(0, Q.shape[0], rows)])  # (s_a, k)
        # tau_x = max of ||x - y|| over the k points found (exact differences): at least the
        # true k-th neighbour distance; plus a rounding slack
        tau = ((Q.unsqueeze(1) - first[found]).double().square().sum(-1).amax(1)
               + slack).sqrt()  # (s_a,)
        # keep cell b if some query x of the sub-block has ||x - c_b|| - r_b <= tau_x
        lb = sq_distances(Q.double(), C.double(), center=False).sqrt() - rad
        for s in range(0, len(qa), _SUB):
            keep = (lb[s:s + _SUB] <= tau[s:s + _SUB].unsqueeze(1)).any(0)
            keep[a] = True
            cand = torch.cat([members[b] for b in keep.nonzero()[:, 0].tolist()])
            pos[cand] = torch.arange(cand.numel(), device=device)
            Yp, y_sq = _padded(Xs[cand])
            if _STATS is not None:
                _STATS.append(cand.numel() / n)
            searched += cand.numel() * min(_SUB, len(qa) - s)
            rows = max(1, block_elements // Yp.shape[0])
            for t in range(s, min(s + _SUB, len(qa)), rows):
                q = qa[t:min(t + rows, s + _SUB)]
                out[q] = cand[_block_topk(Xs[q], Yp, y_sq, k, pos[q])]
    return out


def knn_affinity(X: Tensor, n_neighbors: int, *, block_elements: int = 1 << 24) -> Tensor:
    r"""Sparse kNN affinity :math:`W = (A + A^T)/2` ``(n, n)`` (COO, coalesced, float64), with
    :math:`A_{ij} = 1` if :math:`x_j` is among the ``n_neighbors`` nearest points of
    :math:`x_i` (itself included): scikit-learn's ``affinity="nearest_neighbors"``
    (``0.5 * (A + A.T)`` of ``kneighbors_graph(X, n_neighbors, include_self=True)``) without
    an ``n x n`` matrix (:func:`knn_indices`). ``n * n_neighbors`` to twice that entries.

    Examples::

        >>> knn_affinity(torch.tensor([[0.0], [1.0], [5.0]]), 2).to_dense()
        tensor([[1.0000, 1.0000, 0.0000],
                [1.0000, 1.0000, 0.5000],
                [0.0000, 0.5000, 1.0000]], dtype=torch.float64)
    """
    name = "knn_affinity"
    X = _check_points(name, X, "X")
    n = X.shape[0]
    check_rank_k(name, n_neighbors, n, "n_samples", arg="n_neighbors")
    check_positive_int(name, "block_elements", block_elements)
    return _knn_affinity(X, n_neighbors, block_elements)


def _knn_affinity(X: Tensor, n_neighbors: int, block_elements: int = 1 << 24) -> Tensor:
    """:func:`knn_affinity` without the checks (the callers made them)."""
    n = X.shape[0]
    cols = _knn_indices(X, n_neighbors, block_elements=block_elements).reshape(-1)
    rows = torch.arange(n, device=X.device).repeat_interleave(n_neighbors)
    # W = (A + A^T) / 2: both orientations at 1/2, duplicates summed by coalesce
    idx = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    half = torch.full((idx.shape[1],), 0.5, dtype=torch.float64, device=X.device)
    return torch.sparse_coo_tensor(idx, half, (n, n), check_invariants=False).coalesce()


def _n_components(n: int, rows: Tensor, cols: Tensor) -> int:
    """Connected components of the graph with edges ``rows[e] -- cols[e]`` (both directions
    listed): min-label propagation with pointer jumping; ``O(edges)`` per round."""
    label = torch.arange(n, device=rows.device)
    while True:
        new = label.scatter_reduce(0, rows, label[cols], reduce="amin")
        new = new[new]  # pointer jumping: the label of my label is in my component
        if torch.equal(new, label):
            return int((label == torch.arange(n, device=rows.device)).sum())
        label = new


def _sparse_top_eigh(name: str, M: Tensor, size: int, k: int, lo: float, hi: float,
                     tol: float, max_iter: int,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    r"""The ``size`` largest Ritz pairs ``(theta (size,) descending, Q (n, size))`` of the
    symmetric sparse ``M`` with spectrum in ``[lo, hi]``, the first ``k`` converged to
    :math:`\|M q_i - \theta_i q_i\| \le` ``tol * max(|lo|, |hi|)``.

    Note [Chebyshev-filtered subspace iteration] (Zhou & Saad, "A Chebyshev-Davidson
    algorithm for large symmetric eigenproblems", SIAM J. Matrix Anal. Appl. 29, 2007;
    Zhou, Saad, Tiago & Chelikowsky, J. Comput. Phys. 219, 2006): the degree-``m``
    Chebyshev polynomial of :math:`(M - c)/e` with :math:`[c - e, c + e] = [lo, \theta_{size}]`
    stays within ``[-1, 1]`` on the unwanted part of the spectrum and grows like
    :math:`e^{m \operatorname{arccosh}|x|}` above it, so ``Q <- qr(T_m((M - c)/e) Q)``
    followed by Rayleigh-Ritz (:math:`Q^T M Q = W \Theta W^T`, ``Q <- Q W``) converges much
    faster than plain subspace iteration, with ``m`` sparse products per step and no
    factorisation (scikit-learn's ARPACK runs a sparse LU for shift-invert instead).
    """
    n = M.shape[0]
    scale = max(abs(lo), abs(hi))
    Q = torch.randn(n, size, generator=generator, dtype=torch.float64,
                    device=generator.device if generator is not None else "cpu").to(M.device)
    Q = _orthonormalize(Q)
    res = float("inf")
    for it in range(max_iter + 1):
        MQ = M @ Q
        # Rayleigh-Ritz: T = Q^T M Q = W diag(theta) W^T, Q <- Q W (descending theta)
        theta, W = torch.linalg.eigh(Q.mT @ MQ)
        theta, W = theta.flip(0), W.flip(1)
        Q, MQ = Q @ W, MQ @ W
        # residuals ||M q_i - theta_i q_i|| of the wanted pairs
        res = float(torch.linalg.vector_norm(MQ[:, :k] - Q[:, :k] * theta[:k], dim=0).amax())
        if not math.isfinite(res):
            raise ConvergenceError(f"{name}: the sparse eigensolver produced a non-finite "
                                   f"residual at iteration {it}")
        if res <= tol * scale or it == max_iter or size >= n:
            break
        cut = float(theta[-1])
        c, e = (cut + lo) / 2, max((cut - lo) / 2, 1e-12 * scale)
        # three-term recurrence T_{j+1}(x) = 2 x T_j(x) - T_{j-1}(x), x = (M - c) / e
        Y0, Y1 = Q, (MQ - c * Q) / e
        for _ in range(_CHEB_DEGREE - 1):
            Y0, Y1 = Y1, 2 * (M @ Y1 - c * Y1) / e - Y0
        Q = _orthonormalize(Y1)
    if res > tol * scale and size < n:
        warnings.warn(f"{name}: the sparse eigensolver stopped at eigen_max_iter={max_iter} "
                      f"with residual {res:.3g} > eigen_tol={tol:g} (relative); the embedding "
                      f"may be inaccurate (raise eigen_max_iter or eigen_tol)",
                      ConvergenceWarning, stacklevel=5)
    return theta, Q


_CHEB_DEGREE = 8


def _orthonormalize(Y: Tensor) -> Tensor:
    r"""Orthonormal basis of the columns of tall ``Y`` ``(n, l)``.

    Note [Cholesky QR]: twice :math:`G = Y^T Y = R^T R`, :math:`Y \leftarrow Y R^{-1}`
    ("CholeskyQR2", Fukaya, Nakatsukasa, Yanagisawa & Yamamoto, 2014): two ``l x l`` Gram
    products and triangular solves, several times faster than Householder QR on a tall,
    narrow block on CPU, and orthonormal to rounding when :math:`\kappa(Y) \lesssim
    u^{-1/2}`. A filtered block more ill-conditioned than that (the Cholesky factorisation
    fails) falls back to Householder QR.
    """
    for _ in range(2):
        R, info = torch.linalg.cholesky_ex(Y.mT @ Y, upper=True)
        if int(info) != 0:
            return torch.linalg.qr(Y).Q
        Y = torch.linalg.solve_triangular(R, Y, upper=True, left=False)
    return Y


def _embed(W: Tensor, k: int, kind: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(rows for k-means, eigenvalues (k,), eigenvectors (n, k), degrees (n,), the whole
    spectrum (n,))."""
    L, deg = laplacian(W, kind)
    spectrum, U = eigh(L, validate=False)
    lam, U = spectrum[:k], U[:, :k]
    return _rows(U, kind), lam, U, deg, spectrum


def _rows(U: Tensor, kind: str) -> Tensor:
    """The rows k-means clusters: with :math:`L_{sym}` scaled to unit length (Ng-Jordan-Weiss)."""
    if kind != "symmetric":
        return U
    # Ng-Jordan-Weiss: rows to unit length
    return U / torch.linalg.vector_norm(U, dim=-1, keepdim=True).clamp_min(
        torch.finfo(U.dtype).tiny)


def _sparse_embed(name: str, W: Tensor, k: int, kind: str, tol: float, max_iter: int,
                  generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""(eigenvalues (k,), eigenvectors (n, k), degrees (n,), the ``l`` smallest Laplacian
    eigenvalues) of the sparse affinity ``W`` (float64), without a dense ``n x n`` matrix.

    The smallest eigenpairs of :math:`L_{sym} = I - D^{-1/2} W D^{-1/2}` are the largest
    of :math:`M = D^{-1/2} W D^{-1/2}` (spectrum in ``[-1, 1]``), :math:`\lambda = 1 - \theta`;
    those of :math:`L = D - W` the largest of :math:`M = cI - L`, :math:`c = 2 \max_i d_i
    \ge \lambda_{max}(L)` (Gershgorin; spectrum in ``[0, c]``), :math:`\lambda = c - \theta`.
    Both by :func:`_sparse_top_eigh` on ``l = min(k + 10, n)`` columns.
    """
    n = W.shape[0]
    idx, val = W.indices(), W.values()
    deg = torch.zeros(n, dtype=val.dtype, device=val.device).index_add_(0, idx[0], val)
    if kind == "symmetric":
        inv_sqrt = deg.clamp_min(torch.finfo(val.dtype).tiny).rsqrt()
        # M = D^{-1/2} W D^{-1/2}
        vals, shift, lo, hi = val * inv_sqrt[idx[0]] * inv_sqrt[idx[1]], 1.0, -1.0, 1.0
    else:
        c = 2 * float(deg.amax())
        # M = c I - L = (c I - D) + W
        diag = torch.arange(n, device=val.device)
        idx = torch.cat([idx, diag.expand(2, n)], 1)
        vals, shift, lo, hi = torch.cat([val, c - deg]), c, 0.0, c
    M = torch.sparse_coo_tensor(idx, vals, (n, n), check_invariants=False).coalesce()
    size = min(k + 10, n)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        M = M.to_sparse_csr()  # CSR: the fastest sparse x dense product on CPU
    with one_thread():  # Note [one thread for small ops]: (n, l) blocks, l x l problems
        theta, Q = _sparse_top_eigh(name, M, size, k, lo, hi, tol, max_iter, generator)
    lam = shift - theta  # ascending Laplacian eigenvalues
    return lam[:k], Q[:, :k], deg, lam


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

    Note [sparse path]: with ``affinity="nearest_neighbors"`` the graph has at most
    ``2 n n_neighbors`` edges. :func:`knn_affinity` builds it as a sparse tensor in row
    blocks (:math:`O(n^2 d)` time, :math:`O(n \cdot` ``n_neighbors`` :math:`)` memory) and
    :func:`_sparse_top_eigh` finds the ``k`` smallest Laplacian eigenpairs with sparse
    products only (Note [Chebyshev-filtered subspace iteration]), in float64 whatever the
    data's dtype. ``eigen_solver="auto"`` takes this path from 1,000 points on (measured on
    scikit-learn's digits, float64, a loaded 2-core machine: the whole sparse fit took 0.29 s
    at 500 points and 0.62 s at 1,000, the dense 7.7 s and 9.8 s); below that the dense path
    (the exact whole spectrum) costs little. A kNN graph that falls into several
    connected components warns (as scikit-learn does). The sparse path is not
    differentiable (``fit`` never is); :func:`spectral_embedding` keeps the dense,
    differentiable path for small ``n`` and precomputed affinities.

    Args:
        n_clusters: number of clusters ``k`` (also the embedding dimension).
        affinity: ``"rbf"`` or ``"nearest_neighbors"``.
        gamma: RBF width :math:`\gamma` in :math:`\exp(-\gamma \|x - y\|^2)`.
        n_neighbors: neighbors of the kNN graph (the point itself included).
        laplacian: ``"symmetric"`` or ``"unnormalized"``.
        n_init: k-means runs on the embedding.
        eigen_solver: ``"dense"`` (the whole spectrum by :func:`~lamods.decomp.eigh`),
            ``"sparse"`` (``affinity="nearest_neighbors"`` only) or ``"auto"``: sparse for
            the kNN graph from ``n_samples >= 1000`` on, dense otherwise (Note [sparse path]).
        eigen_tol: sparse path: relative residual :math:`\|Mq - \theta q\| / \|M\|` at
            which the eigensolver stops.
        eigen_max_iter: sparse path: most filter steps before a
            :class:`~lamods.ConvergenceWarning`.
        seed: seed of k-means and of the sparse eigensolver's start (None: torch's global RNG).
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
        eigen_solver: str = "auto",
        eigen_tol: float = 1e-8,
        eigen_max_iter: int = 500,
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
        check_choice(name, "eigen_solver", eigen_solver, _EIGEN_SOLVERS)
        if eigen_solver == "sparse" and affinity != "nearest_neighbors":
            raise ValueError(f"{name}: expected affinity='nearest_neighbors' with "
                             f"eigen_solver='sparse' (an RBF graph is dense), got {affinity!r}")
        self.eigen_solver = eigen_solver
        self.eigen_tol = check_positive(name, "eigen_tol", eigen_tol)
        self.eigen_max_iter = check_positive_int(name, "eigen_max_iter", eigen_max_iter)
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
        if self.affinity == "nearest_neighbors":
            # Note [undetermined embedding]: with fewer distinct points than clusters the kNN
            # graph is made by tie-breaking among equal distances, and so are the labels
            distinct = torch.unique(X, dim=0).shape[0]
            if distinct < k:
                raise ValueError(f"{name}: expected at least n_clusters = {k} distinct points "
                                 f"for the kNN affinity, got {distinct}")
        sparse = self._sparse(n)
        if sparse:
            W = _knn_affinity(X, self.n_neighbors)
            self._check_connected(name, n, W.indices())
            gen = make_generator(name, self.seed)
            lam, U, deg, spectrum = (t.to(X.dtype) for t in _sparse_embed(
                name, W, k, self.laplacian, self.eigen_tol, self.eigen_max_iter, gen))
            rows = _rows(U, self.laplacian)
        else:
            # kNN: only the order of distances matters; scaled so that it survives float32
            # data at 1e30 or 1e-30 (see _knn_frame)
            G = X if self.affinity == "rbf" else self._knn_frame(X)[0]
            W = affinity_matrix(G, affinity=self.affinity, gamma=self.gamma,
                                n_neighbors=self.n_neighbors)
            if self.affinity == "nearest_neighbors":
                self._check_connected(name, n, W.nonzero().mT)
            rows, lam, U, deg, spectrum = _embed(W, k, self.laplacian)
        self._check_eigengap(name, spectrum.detach(), k)
        # Note [one thread for small ops]: k-means on the (n, k) rows of the sparse path
        with one_thread() if sparse else contextlib.nullcontext():
            self.kmeans.fit(rows)
        self.labels_ = self.kmeans.labels_
        self.embedding_ = rows
        self.eigenvalues_ = lam
        self.eigenvectors_ = U
        self.degrees_ = deg
        self.X_fit_ = X.clone()
        return self

    def _sparse(self, n: int) -> bool:
        """Whether ``fit`` takes the sparse path (Note [sparse path])."""
        if self.eigen_solver == "auto":
            return self.affinity == "nearest_neighbors" and n >= _SPARSE_MIN_SAMPLES
        return self.eigen_solver == "sparse"

    def _check_connected(self, name: str, n: int, edges: Tensor) -> None:
        """Warn, as scikit-learn does, when the kNN graph falls apart: each connected
        component is a zero eigenvalue of the Laplacian, so the embedding separates
        components before clusters."""
        count = _n_components(n, edges[0], edges[1])
        if count > 1:
            warnings.warn(f"{name}: expected a connected kNN graph, got {count} connected "
                          f"components (n_neighbors={self.n_neighbors}); the spectral embedding "
                          "may not work as expected (raise n_neighbors)", UserWarning,
                          stacklevel=4)

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

    _knn_frame = staticmethod(_knn_frame)

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
        lam, U, deg = self.eigenvalues_, self.eigenvectors_, self.degrees_
        if self.affinity == "nearest_neighbors":
            return self._transform_knn(flat).reshape(*X.shape[:-1], self.n_clusters)
        w = _rbf(flat, self.X_fit_, self.gamma)
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

    def _transform_knn(self, flat: Tensor) -> Tensor:
        """The Nystrom extension below with the kNN graph's 0/1 row ``w(x, .)`` (ones at the
        ``n_neighbors`` nearest training points ``N(x)``, :func:`knn_indices`): sums over
        ``N(x)`` instead of an ``(M, N)`` product, so ``predict`` scales like ``fit``."""
        lam, U, deg = self.eigenvalues_, self.eigenvectors_, self.degrees_
        idx = _knn_indices(flat, self.n_neighbors, self.X_fit_)  # (M, n_neighbors)
        d_new = float(self.n_neighbors)  # d(x) = sum_j w(x, x_j)
        # a non-finite row (only where the checks cannot run) stays NaN in its own row
        nan = flat.sum(-1, keepdim=True) * 0
        if self.laplacian == "unnormalized":
            # u(x) = sum_{j in N(x)} u_j / (d(x) - lambda)
            return U[idx].sum(1) / (d_new - lam) + nan
        tiny = torch.finfo(U.dtype).tiny
        # u(x) = sum_{j in N(x)} u_j / sqrt(d(x) d_j) / (1 - lambda), then unit rows
        E = (U * deg.clamp_min(tiny).rsqrt().unsqueeze(-1))[idx].sum(1) / math.sqrt(d_new)
        E = E / (1 - lam)
        return E / torch.linalg.vector_norm(E, dim=-1, keepdim=True).clamp_min(tiny) + nan

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
