r"""k-means clustering (Lloyd's algorithm with k-means++ seeding) as a fit-style module.

k-means looks for ``k`` centers :math:`c_1..c_k` minimizing the inertia

.. math:: \text{inertia} = \sum_{i=1}^n \min_j \|x_i - c_j\|^2 .

Lloyd's algorithm alternates the two steps that each decrease it:

.. math::
    \ell_i = \arg\min_j \|x_i - c_j\|^2 \;\text{(assign)}, \qquad
    c_j = \frac{1}{|\{i: \ell_i = j\}|} \sum_{i: \ell_i = j} x_i \;\text{(update)},

until no label changes or the centers move less than
:math:`\sum_j \|c_j^{new} - c_j\|^2 \le \text{tol} \cdot \overline{\operatorname{var}}(X)`
(scikit-learn's rule: ``tol`` relative to the mean per-feature variance). The
distances come from one matrix product per step, batched on CPU or CUDA:

.. math:: \|x - c\|^2 = \|x\|^2 - 2 x^T c + \|c\|^2 ,

on data centered first (as scikit-learn does) so the cancellation in this
expansion stays small, and divided by a power of two near its largest entry so that
float32 data at ``1e-30`` or ``1e30`` neither underflow nor overflow in the squares
(Note [k-means scaling] in :mod:`lamods._lloyd`; exact, so ordinary data give the
same digits). Note [blocked assign]: on CPU the assign step runs over
blocks of about :math:`2^{16}/k` rows, so each block's distances, argmin and
per-cluster sums stay in cache (about 1.4x faster than one pass at 100000 x
64, k = 16); on GPU it is one pass. An empty cluster is moved to the point farthest from
its center.

k-means++ seeding (Arthur & Vassilvitskii, 2007), greedy variant (as
scikit-learn): the first center is a uniformly random point; each next one is
the best, by resulting inertia, of :math:`2 + \lfloor \ln k \rfloor` candidates
drawn with probability :math:`D(x)^2 / \sum D^2`, :math:`D(x)` the distance to
the nearest center chosen so far. Its expected inertia is within
:math:`O(\log k)` of the optimum before Lloyd even starts.

Lloyd's algorithm finds a local minimum; ``n_init`` runs from different seeds
keep the one of lowest inertia.

Note [k-means over batches]: both steps are sums over rows, so data that do not fit in
memory (an iterable of batches, a DataLoader) or sit on several processes can be
clustered without gathering them. :meth:`KMeans.fit_batches` runs exact Lloyd: every
iteration is one pass over the batches accumulating the per-cluster sums and counts
(and, once, the row count, the column sums and the sum of squares for ``tol``), then
:math:`c_j = \text{sum}_j / \text{count}_j`; it gives the centres of ``fit`` from the same
initial centres, up to summation order. :meth:`KMeans.partial_fit` is mini-batch
k-means (Sculley, *Web-scale k-means clustering*, WWW 2010): each batch moves every
centre to the running mean of all the points ever assigned to it,

.. math:: N_j \leftarrow N_j + n_j, \qquad
          c_j \leftarrow c_j + \frac{\text{sum}_j - n_j c_j}{N_j},

(:math:`n_j`, :math:`\text{sum}_j` the count and sum of the batch's points nearest to
:math:`c_j`): one pass, no convergence guarantee to Lloyd's fixed point, inertia
typically a few percent above it. Under ``torch.distributed`` both all-reduce the
per-cluster sums and counts (Note [distributed statistics] in :mod:`lamods._distributed`)
and take the initial centres (k-means++ on rank 0's first batch) from rank 0, so every
rank holds the centres of all the ranks' rows. An empty cluster keeps its centre in both
(``fit`` moves it to the farthest point, which needs all the data at once).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

from lamods._distributed import all_reduce_sum, is_distributed
from lamods._lloyd import (
    center_scale,
    chunk_rows,
    estep,
    kmeans_plusplus_index,
    kmeans_plusplus_rows,
    lloyd,
)
from lamods._precision import pow2_at_least
from lamods._random import check_randomness, make_generator
from lamods._validation import (
    as_float_tensor,
    check_data,
    check_features,
    check_finite,
    check_nonnegative,
    check_positive_int,
    check_streamable,
    nonfinite_rows,
)
from lamods.base import Estimator
from lamods.distances import ScaledFrame, partial_sq_distances, row_sq_norms
from lamods.exceptions import ConvergenceError

__all__ = ["KMeans", "kmeans_plusplus"]

_INITS = ("k-means++", "random")


def kmeans_plusplus(X: Tensor, n_clusters: int, *, n_local_trials: int | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
    r"""k-means++ seeds (greedy variant, module docstring): ``(n_clusters, d)`` rows of ``X``.

    Args:
        X: data ``(n, d)``.
        n_clusters: number of centers ``k <= n``.
        n_local_trials: candidates per center (None: :math:`2 + \lfloor \ln k \rfloor`).
        generator: source of the random draws.

    Examples::

        >>> X = torch.tensor([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1]])
        >>> C = kmeans_plusplus(X, 2, generator=torch.Generator().manual_seed(0))
        >>> sorted(int(c[0]) for c in C)
        [0, 5]
    """
    X = check_data("kmeans_plusplus", as_float_tensor("kmeans_plusplus", X))
    n = X.shape[0]
    k = check_positive_int("kmeans_plusplus", "n_clusters", n_clusters)
    if k > n:
        raise ValueError(f"kmeans_plusplus: expected n_clusters <= n_samples = {n}, got {k}")
    Xs, x_sq, _ = center_scale(X)  # Note [k-means scaling]
    return X[kmeans_plusplus_index(Xs, x_sq, k, n_local_trials, generator)]


class KMeans(Estimator):
    r"""k-means clustering: centers minimizing :math:`\sum_i \min_j \|x_i - c_j\|^2`.

    Lloyd's algorithm from k-means++ seeds (module docstring), the distance
    computation one matrix product per step on CPU or CUDA. Same parameters
    and stopping rule as ``sklearn.cluster.KMeans``; inertia agrees with it to
    well within 1% for the same ``n_init`` (tests). The centers live in
    buffers; ``forward`` predicts cluster indices.

    Args:
        n_clusters: number of clusters ``k``.
        init: ``"k-means++"``, ``"random"`` (``k`` distinct random rows) or a
            ``(k, d)`` tensor of initial centers (then one run).
        n_init: runs from different seeds; the lowest inertia is kept.
        max_iter: most Lloyd iterations per run.
        tol: stop when the squared center shift is at most ``tol`` times the
            mean per-feature variance of the data.
        seed: seed of the random draws (None: torch's global RNG).
        device, dtype: of the fitted state (None: follow the data, see :mod:`lamods.base`).

    Shape:
        - ``fit(X)``: :math:`(N, d)`.
        - ``forward``/``predict``: :math:`(*, d) \to (*)` (int64 cluster indices).
        - ``transform``: :math:`(*, d) \to (*, k)` distances to the centers.

    Attributes:
        cluster_centers_: :math:`(k, d)`.
        inertia_: scalar, the sum of squared distances of the training points
            to their nearest center.
        n_iter_: scalar int64, Lloyd iterations of the kept run (``partial_fit``: batches
            seen).
        labels_: :math:`(N)` training labels (a buffer, not in ``state_dict``; empty after
            ``partial_fit`` and ``fit_batches``).
        counts_: :math:`(k)` points assigned to each centre so far by ``partial_fit`` (empty
            otherwise). After ``partial_fit``, ``inertia_`` is the last batch's, to the
            centres before its step.

    Examples::

        >>> X = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
        >>> km = KMeans(2, n_init=3, seed=0).fit(X)
        >>> sorted(km.cluster_centers_.tolist())
        [[0.0, 0.5], [10.0, 0.5]]
        >>> float(km.inertia_)
        1.0
        >>> bool(km(torch.tensor([[9.0, 0.0]])) == km.labels_[2])
        True
    """

    _FITTED = ("cluster_centers_", "inertia_")
    _RESIZED = ("counts_",)
    _FITTED_SHAPES = {"cluster_centers_": ("k", "d"), "inertia_": (), "counts_": ("k",)}

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | Tensor = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype)
        name = type(self).__name__
        self.n_clusters = check_positive_int(name, "n_clusters", n_clusters)
        if isinstance(init, Tensor):
            if init.dim() != 2 or init.shape[0] != n_clusters:
                raise ValueError(f"{name}: expected init centers of shape ({n_clusters}, d), "
                                 f"got {tuple(init.shape)}")
            check_finite(name, init, "init")
        elif not isinstance(init, str) or init not in _INITS:
            raise ValueError(f"{name}: expected init in {_INITS} or a tensor, got {init!r}")
        self.init = init
        self.n_init = check_positive_int(name, "n_init", n_init)
        self.max_iter = check_positive_int(name, "max_iter", max_iter)
        self.tol = check_nonnegative(name, "tol", tol)
        check_randomness(name, seed)
        self.seed = seed
        self.register_buffer("n_iter_", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer("labels_", torch.empty(0, dtype=torch.int64, device=device),
                             persistent=False)
        self.register_buffer("counts_", torch.empty(0, device=device, dtype=dtype))

    def _known_dims(self) -> dict[str, int]:
        return {"k": self.n_clusters}

    @torch.no_grad()
    def fit(self, X: object, y: object = None) -> KMeans:
        """Cluster ``X`` ``(n_samples, n_features)``; returns ``self``. ``y`` is ignored."""
        name = f"{type(self).__name__}.fit"
        X = self._fit_input("fit", X)
        n, d = X.shape
        k = self.n_clusters
        if k > n:
            raise ValueError(f"{name}: expected n_clusters <= n_samples = {n}, got {k}")
        # centered and scaled (Note [k-means scaling]): x = frame.back(x')
        Xc, x_sq, frame = center_scale(X)
        # tol relative to the mean per-feature variance (of centered data: sum x^2 / (n d))
        tol = self.tol * float(x_sq.sum()) / (n * d)
        gen = make_generator(name, self.seed)
        n_runs = 1 if isinstance(self.init, Tensor) else self.n_init
        best = None
        for _ in range(n_runs):
            if isinstance(self.init, Tensor):
                check_features(name, self.init, d)
                C = frame.apply(self.init.to(device=X.device, dtype=X.dtype))
            elif self.init == "k-means++":
                C = kmeans_plusplus_rows(Xc, x_sq, k, None, gen)
            else:
                C = Xc[torch.randperm(n, generator=gen).to(X.device)[:k]]
            run = lloyd(Xc, x_sq, C, self.max_iter, tol, name=name)
            if best is None or float(run[2]) < float(best[2]):
                best = run
        C, labels, inertia, n_iter = best
        self.cluster_centers_ = frame.back(C)
        self.inertia_ = frame.back_sq(inertia).reshape(())
        self.labels_ = labels
        self.n_iter_ = torch.tensor(n_iter, dtype=torch.int64, device=X.device)
        self.counts_ = self.counts_.new_empty(0)
        return self

    # -- batches (Note [k-means over batches]) -----------------------------------
    def _initial_centers(self, name: str, X: Tensor) -> Tensor:
        """Initial centres from the first batch (rank 0's, broadcast under torch.distributed)."""
        k, d = self.n_clusters, X.shape[1]
        if isinstance(self.init, Tensor):
            check_features(name, self.init, d)
            return self.init.to(device=X.device, dtype=X.dtype).clone()
        if X.shape[0] < k:
            raise ValueError(f"{name}: expected a first batch of at least n_clusters = {k} rows "
                             f"(the initial centres are drawn from it), got {X.shape[0]}")
        gen = make_generator(name, self.seed)
        Xs, x_sq, frame = center_scale(X)
        if self.init == "k-means++":
            C = frame.back(kmeans_plusplus_rows(Xs, x_sq, k, None, gen))
        else:
            C = X[torch.randperm(X.shape[0], generator=gen).to(X.device)[:k]].clone()
        if is_distributed():
            dist.broadcast(C, src=0)
        return C

    @staticmethod
    def _batch_stats(X: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-cluster sums ``(k, d)``, counts ``(k,)`` and the inertia of batch ``X`` for
        centres ``C`` (Note [k-means scaling]: distances in a scaled frame)."""
        frame = ScaledFrame.of(C, X)
        Xs, Cs = frame.apply(X), frame.apply(C)
        labels, dpart = estep(Xs, Cs, chunk_rows(X.shape[0], C.shape[0], X.device), sums=False)
        sums = torch.zeros_like(C).index_add_(0, labels, X)
        counts = torch.bincount(labels, minlength=C.shape[0]).to(X.dtype)
        # ||x - c||^2 = s^2 (||x'||^2 + ||c'||^2 - 2 x'^T c')
        inertia = frame.back_sq((dpart + row_sq_norms(Xs)).clamp_min(0).sum())
        return sums, counts, inertia

    def _batch_input(self, name: str, method: str, X: object, ref: Tensor | None, *,
                     finite: bool = True) -> Tensor:
        """A batch (finite unless ``finite`` is False: then the caller checks); after the
        first, of ``ref``'s width and dtype."""
        if finite:
            X = self._fit_input(method, X, adopt=ref is None)
        else:
            X = as_float_tensor(name, X, dtype=self.dtype, device=self.device)
            if X.dim() != 2 or X.shape[0] == 0:
                check_data(name, X)
        if ref is not None:
            if X.shape[1] != ref.shape[1]:
                raise ValueError(f"{name}: expected batches with {ref.shape[1]} features (as "
                                 f"the first), got {X.shape[1]}")
            if X.dtype != ref.dtype:
                raise TypeError(f"{name}: expected batches of the first batch's dtype "
                                f"{ref.dtype}, got {X.dtype}")
        return X

    @torch.no_grad()
    def partial_fit(self, X: object, y: object = None) -> KMeans:
        """Mini-batch k-means step on one batch ``X`` ``(n_batch, n_features)``; returns
        ``self`` (Note [k-means over batches]). The first batch seeds the centres."""
        name = f"{type(self).__name__}.partial_fit"
        fresh = self.counts_.numel() == 0
        check_streamable(name, fresh=fresh, fitted=self.is_fitted(), by="fit or fit_batches")
        X = self._batch_input(name, "partial_fit", X, None if fresh else self.cluster_centers_)
        C = self._initial_centers(name, X) if fresh else self.cluster_centers_
        N = torch.zeros(self.n_clusters, dtype=X.dtype, device=X.device) if fresh \
            else self.counts_
        sums, counts, inertia = self._batch_stats(X, C)
        stats = all_reduce_sum(torch.cat([sums, counts[:, None]], 1))
        sums, counts = stats[:, :-1], stats[:, -1]
        N = N + counts
        # c_j <- c_j + (sum_j - n_j c_j) / N_j (clusters without points keep their centre)
        step = (sums - counts[:, None] * C) / N.clamp_min(1)[:, None]
        C = C + step
        if not bool(torch.isfinite(C).all()):
            raise ValueError(f"{name}: expected the cluster centres to stay finite, got "
                             f"non-finite centres (sums of the batch overflow {X.dtype})")
        self.cluster_centers_, self.counts_ = C, N
        self.inertia_ = all_reduce_sum(inertia.reshape(1)).reshape(())
        self.n_iter_ = self.n_iter_ + 1
        self.labels_ = self.labels_.new_empty(0)
        return self

    @torch.no_grad()
    def fit_batches(self, batches: Iterable[object]) -> KMeans:
        """Exact Lloyd over an iterable of batches ``(n_batch, n_features)`` (a list, or a
        DataLoader yielding tensors or ``(X, ...)`` tuples), iterated once per Lloyd step;
        returns ``self`` (Note [k-means over batches]). One run (``n_init`` is not used);
        ``labels_`` stays empty (use ``predict`` per batch); ``inertia_`` is that of the
        final centres."""
        name = f"{type(self).__name__}.fit_batches"

        def rows() -> Iterable[Tensor]:
            seen = False
            for b in batches:
                b = b[0] if isinstance(b, (tuple, list)) and b and isinstance(b[0], Tensor) \
                    else b
                seen = True
                yield b
            if not seen:
                raise ValueError(f"{name}: expected an iterable of at least one batch, got an "
                                 f"empty one")
        if isinstance(batches, Tensor) or not isinstance(batches, Iterable):
            raise TypeError(f"{name}: expected an iterable of batches (a list or a DataLoader), "
                            f"got {type(batches).__name__}; use fit for one tensor")
        if iter(batches) is batches:  # a generator or iterator: read once, Lloyd reads it often
            raise TypeError(f"{name}: expected a re-iterable of batches (a list, a tuple or a "
                            f"DataLoader; Lloyd reads it once per iteration), got a one-shot "
                            f"{type(batches).__name__}")
        # first pass: initial centres, and the totals for tol and the frame (sum x, sum x^2,
        # n; the largest |x|)
        C: Tensor | None = None
        tot = None
        peak = None
        for X in rows():
            X = self._batch_input(name, "fit_batches", X, C)
            if C is None:
                C = self._initial_centers(name, X)
            t = torch.cat([X.sum(0), X.square().sum().reshape(1), X.new_tensor([X.shape[0]])])
            tot = t if tot is None else tot + t
            p = X.abs().amax()
            peak = p if peak is None else torch.maximum(peak, p)
        assert C is not None and tot is not None and peak is not None
        d = C.shape[1]
        tot = all_reduce_sum(tot)
        n = float(tot[-1])
        # mean per-feature variance: (sum x^2 - n ||mean||^2) / (n d)
        var = float((tot[d] - tot[:d].square().sum() / n).clamp_min(0)) / (n * d)
        tol = self.tol * var
        # Note [k-means over batches]: one frame for the whole fit (centred on the global mean,
        # Note [k-means scaling]), so each batch costs one pass to apply it and one fused
        # assign + sum pass (Note [fused assign] in lamods._lloyd); the finiteness of the later
        # passes' batches is checked on their (k, d) sums, which a NaN or infinity reaches
        mean = (tot[:d] / n).unsqueeze(0)
        frame = ScaledFrame(mean, pow2_at_least(peak + mean.abs().amax()).reshape(1, 1))
        chunk = chunk_rows(0, self.n_clusters, C.device)
        it = 0
        for it in range(1, self.max_iter + 1):  # noqa: B007 (it is kept)
            Cs = frame.apply(C)
            acc = torch.zeros(self.n_clusters, d + 1, dtype=C.dtype, device=C.device)
            for X in rows():
                X = self._batch_input(name, "fit_batches", X, C, finite=False)
                labels, sums = estep(frame.apply(X), Cs, chunk, sums=True)
                counts = torch.bincount(labels, minlength=self.n_clusters).to(X.dtype)
                if not bool(torch.isfinite(sums).all()):
                    check_data(name, X)  # names the non-finite entries
                # sum_j x = s sum_j x' + n_j c (the frame's centre c)
                acc[:, :-1] += torch.addcmul(counts[:, None] * frame.c, sums, frame.s)
                acc[:, -1] += counts
            acc = all_reduce_sum(acc)
            counts = acc[:, -1]
            # c_j = sum_j / count_j; an empty cluster keeps its centre
            C_new = torch.where(counts[:, None] > 0, acc[:, :-1] / counts.clamp_min(1)[:, None],
                                C)
            shift = float((C_new - C).square().sum())
            C = C_new
            if shift != shift or shift == float("inf"):
                raise ConvergenceError(f"{name}: Lloyd's iterations diverged: the cluster "
                                       f"centres became non-finite at iteration {it}")
            if shift <= tol:
                break
        inertia = C.new_zeros(())
        for X in rows():
            inertia = inertia + self._batch_stats(self._batch_input(name, "fit_batches", X, C),
                                                  C)[2]
        self.cluster_centers_ = C
        self.inertia_ = all_reduce_sum(inertia.reshape(1)).reshape(())
        self.n_iter_ = torch.tensor(it, dtype=torch.int64, device=C.device)
        self.labels_ = self.labels_.new_empty(0)
        self.counts_ = self.counts_.new_empty(0)
        return self

    def _frame(self, X: Tensor) -> tuple[Tensor, Tensor, ScaledFrame]:
        """``(X', C', frame)``: rows and centers centred on the centers' mean and scaled
        (Note [k-means scaling]), so ``||x - c|| = frame.back_length(||x' - c'||)``."""
        frame = ScaledFrame.of(self.cluster_centers_, X)
        return frame.apply(X), frame.apply(self.cluster_centers_), frame

    def predict(self, X: object) -> Tensor:
        r"""Index of the nearest center, :math:`\arg\min_j \|x - c_j\|^2`: ``(*, d) -> (*)``.

        A row holding NaN or infinity raises (Note [NaN policy] in :mod:`lamods.base`);
        where that check cannot run (``torch.compile``, ``torch.func``) its label is -1.
        """
        X = self._input("predict", X)
        flat = X.reshape(-1, X.shape[-1])
        Xs, Cs, _ = self._frame(flat)
        labels = partial_sq_distances(Xs, Cs).argmin(1)
        # a non-finite row has no nearest center: -1, never a real cluster
        labels = labels.masked_fill(nonfinite_rows(flat), -1)
        return labels.reshape(X.shape[:-1])

    def forward(self, X: Tensor) -> Tensor:
        return self.predict(X)

    def transform(self, X: object) -> Tensor:
        r"""Distances :math:`\|x - c_j\|` to every center: ``(*, d) -> (*, k)`` (differentiable)."""
        X = self._input("transform", X)
        Xs, Cs, frame = self._frame(X.reshape(-1, X.shape[-1]))
        # ||x - c|| = s ||x' - c'|| (Note [k-means scaling])
        D = frame.back_length(torch.cdist(Xs, Cs))
        return D.reshape(*X.shape[:-1], self.n_clusters)

    def fit_predict(self, X: object, y: object = None) -> Tensor:
        """Fit, then return the training labels ``(n_samples,)``."""
        return self.fit(X).labels_

    def extra_repr(self) -> str:
        init = "tensor" if isinstance(self.init, Tensor) else repr(self.init)
        s = (f"n_clusters={self.n_clusters}, init={init}, n_init={self.n_init}, "
             f"max_iter={self.max_iter}, tol={self.tol}")
        if self.is_fitted():
            s += f", fitted: {self.n_features_in_} features"
        return s
