r"""Principal component analysis: a fit-style ``PCA`` module and a differentiable ``pca()``.

With centered data :math:`X_c = X - \mathbf{1}\mu^T` (``n`` rows, ``d`` features),

.. math::
    X_c = U S V^T, \qquad
    \text{components} = V_k^T, \qquad
    \text{explained variance}_i = \frac{s_i^2}{n - 1}, \qquad
    \text{transform}(x) = (x - \mu) V_k
    \;[\operatorname{diag}(s_k^2/(n-1))^{-1/2} \text{ if whiten}].

Equivalently :math:`C = X_c^T X_c / (n-1) = V \operatorname{diag}(s^2/(n-1)) V^T`.

Solvers:

- ``"full"``: thin SVD of :math:`X_c`, :math:`O(n d \min(n, d))`. The accurate
  one: it never squares the condition number.
- ``"covariance"``: eigh of the scatter :math:`X_c^T X_c`, :math:`O(n d^2 + d^3)`.
  Fastest when :math:`n \gg d`; small eigenvalues lose accuracy relative to
  :math:`\lambda_{\max}` (condition number squared).
- ``"randomized"``: :func:`~lamods.decomp.randomized_svd` of :math:`X_c`,
  ``n_iter`` power iterations (``None``: 7 if :math:`k < 0.1 \min(n, d)`, else 4,
  as scikit-learn).
- ``"auto"``: scikit-learn's rule: covariance if :math:`d \le 1000` and
  :math:`n \ge 10 d`; else full if :math:`\max(n, d) \le 500`; else randomized
  if ``n_components`` is an int below :math:`0.8 \min(n, d)`; else full.

Signs follow scikit-learn (``svd_flip(u_based_decision=False)``): the entry of
largest absolute value of every component is positive.

Streaming (``partial_fit``) keeps the running mean and the centered scatter
:math:`M = \sum (x - \mu)(x - \mu)^T` (memory :math:`O(d^2)` however many rows)
and merges each batch with Chan et al.'s update

.. math:: M = M_a + M_b + \frac{n_a n_b}{n_a + n_b} (\mu_b - \mu_a)(\mu_b - \mu_a)^T .

Note [scale-robust PCA]: PCA is scale-equivariant: for data :math:`cX` the
components are those of :math:`X` and the variances are :math:`c^2` times
theirs. The squares are what leave the floating range first (float32 data at
1e-30 has variances of 1e-60, which underflow to 0, and at 1e30 of 1e60,
which overflow; either way the components came out arbitrary or the solver
failed). So every solver decomposes :math:`(X - \mathbf 1\mu^T)/c`, with
:math:`c = 2^e` the power of two nearest above :math:`\max |x - \mu|` (exact:
scaling by a power of two changes no mantissa), and scales back: singular
values by :math:`c`, variances by :math:`c^2`. Components, variance ratios and
transforms (whitened too: divided by :math:`s_i / \sqrt{n-1}`) are then right
for any finite data. ``explained_variance_`` and ``noise_variance_`` are
:math:`c^2` times a number of order one: when that product leaves the dtype's
range (float32 data beyond about 1e19 or below 1e-19) they overflow to inf or
underflow to 0, the correctly rounded value of a variance the dtype cannot
hold. Streaming keeps the unscaled scatter :math:`M` for the next batch, so
``partial_fit`` raises on data whose squares the dtype cannot hold (use float64
or ``fit``), and a covariance-solver ``fit`` then keeps no ``scatter_``.

Note [distributed PCA]: when ``torch.distributed`` is initialized,
``partial_fit`` all-reduces each batch's row count and sum, centers at the
global batch mean, and all-reduces the scatter: every rank then holds the
statistics of the union of the ranks' batches, and the fit equals a fit on all
the data (up to summation order). ``fit`` is local.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from lamods._distributed import all_reduce_sum
from lamods._precision import cast_back, compute_dtype
from lamods._random import check_randomness, make_generator
from lamods._validation import check_matrix, check_rank_k, check_symmetric_finite
from lamods.base import Estimator
from lamods.decomp._common import column_signs
from lamods.decomp.eigh import eigh
from lamods.decomp.randomized import randomized_svd

__all__ = ["PCA", "PCAResult", "pca"]

_SOLVERS = ("auto", "full", "randomized", "covariance")

#: Rows centered at a time by :func:`centered_scatter` (a block stays in cache).
_SCATTER_ROWS = 4096
#: Column blocks of :func:`centered_scatter`: only the nb (nb + 1) / 2 upper blocks are computed.
_SCATTER_BLOCKS = 4


def centered_scatter(X: Tensor, mean: Tensor, scale: Tensor | float = 1.0) -> Tensor:
    r"""The centered scatter :math:`M = (X - 1\mu^T)^T (X - 1\mu^T)`, without a centered copy of X.

    With ``scale`` :math:`c`, the scatter of :math:`(X - 1\mu^T)/c` (Note [scale-robust PCA]).

    Note [blocked scatter]: rows are centered a block at a time (the block stays
    in cache; no full-size centered copy is written), and the columns are split
    into ``_SCATTER_BLOCKS`` groups of which only the upper blocks
    :math:`M_{ab} = X_{c,a}^T X_{c,b}`, :math:`a \le b`, are multiplied (the lower
    ones are their transposes): 10/16 of the flops of the full product for 4
    groups. Centering before multiplying keeps float32 accurate: the shortcut
    :math:`X^T X - n \mu\mu^T` cancels catastrophically when :math:`|\mu|` is
    large against the spread (scikit-learn's ``covariance_eigh`` takes it).

    Args:
        X: ``(n, d)``; mean: ``(d,)``; scale: a scalar divisor of the centered rows.

    Examples::

        >>> X = torch.randn(100, 6, dtype=torch.float64)
        >>> m = X.mean(0)
        >>> torch.allclose(centered_scatter(X, m), (X - m).T @ (X - m))
        True
    """
    n, d = X.shape
    nb = max(1, min(_SCATTER_BLOCKS, d // 64))
    edges = [d * i // nb for i in range(nb + 1)]
    blocks = {(a, b): torch.zeros(edges[a + 1] - edges[a], edges[b + 1] - edges[b],
                                  dtype=X.dtype, device=X.device)
              for a in range(nb) for b in range(a, nb)}
    for r in range(0, n, _SCATTER_ROWS):
        Bc = (X[r:r + _SCATTER_ROWS] - mean) / scale
        cols = [Bc[:, edges[a]:edges[a + 1]] for a in range(nb)]
        for (a, b), M_ab in blocks.items():
            # M_ab += Xc_a^T Xc_b over this block of rows
            M_ab.addmm_(cols[a].mT, cols[b])
    M = torch.empty(d, d, dtype=X.dtype, device=X.device)
    for (a, b), M_ab in blocks.items():
        M[edges[a]:edges[a + 1], edges[b]:edges[b + 1]] = M_ab
        if a != b:
            M[edges[b]:edges[b + 1], edges[a]:edges[a + 1]] = M_ab.mT
    return M


def _pow2_above(top: Tensor) -> Tensor:
    r"""Note [scale-robust PCA]: :math:`c = 2^e` with ``top`` :math:`= m 2^e`,
    :math:`m \in [0.5, 1)`, so :math:`c \ge` ``top`` (1 for ``top = 0``)."""
    _, e = torch.frexp(top.detach())
    return torch.ldexp(torch.ones_like(top.detach()), e)


def _pow2_scale(X: Tensor, mean: Tensor) -> Tensor:
    r""":math:`c = 2^e \ge \max |x - \mu|` for ``X`` ``(n, d)``, without a centered copy."""
    low, high = torch.aminmax(X, dim=0)
    return _pow2_above(torch.maximum(high - mean, mean - low).amax())


def _rescaled_square(M_s: Tensor, scale: Tensor) -> Tensor | None:
    """:math:`c^2 M_s`, or None when it leaves the dtype's normal range
    (Note [scale-robust PCA])."""
    c2 = scale * scale
    M = M_s * c2
    fits = (c2 >= torch.finfo(M_s.dtype).tiny) & torch.isfinite(M).all()
    return M if bool(fits) else None


# ---------------------------------------------------------------------------
# Functional, differentiable
# ---------------------------------------------------------------------------
class PCAResult(NamedTuple):
    """``scores`` ``(*, n, k)``, ``components`` ``(*, k, d)``, ``explained_variance`` ``(*, k)``,
    ``mean`` ``(*, d)``."""

    scores: Tensor
    components: Tensor
    explained_variance: Tensor
    mean: Tensor


def pca(X: Tensor, k: int, *, center: bool = True, eps: float | None = None) -> PCAResult:
    r"""Top-``k`` principal components of ``X`` ``(*, n, d)``, differentiable with respect to ``X``.

    Computes :math:`C = X_c^T X_c/(n-1)` (of :math:`X_c / c`, Note [scale-robust
    PCA], then scaled back) and its top-k eigenpairs with the
    stable :func:`~lamods.decomp.eigh`, so gradients stay finite when variances
    repeat and are exact for quantities that depend on the top-k subspace
    (scores' Gram matrix, reconstructions, explained variances) when
    :math:`\lambda_k > \lambda_{k+1}`. Batched over leading dimensions.

    Args:
        X: data ``(*, n, d)``, ``n >= 2``.
        k: number of components, ``1 <= k <= min(n, d)``.
        center: subtract the column mean first.
        eps: broadening of the eigh backward.

    Returns:
        :class:`PCAResult`: ``scores = (X - mean) components^T`` ``(*, n, k)``,
        ``components`` ``(*, k, d)`` (rows, largest-|entry| positive),
        ``explained_variance`` ``(*, k)`` descending, ``mean`` ``(*, d)``.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> X = torch.randn(50, 4, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0, 0.5])
        >>> res = pca(X, 2)
        >>> res.scores.shape, res.components.shape
        (torch.Size([50, 2]), torch.Size([2, 4]))
        >>> torch.allclose(res.scores.var(0), res.explained_variance)
        True
    """
    check_matrix("pca", X)
    n, d = X.shape[-2], X.shape[-1]
    if n < 2:
        raise ValueError(f"pca: expected at least 2 samples (rows), got {n}")
    check_rank_k("pca", k, min(n, d), "min(n_samples, n_features)")
    check_symmetric_finite("pca", X, symmetric=False)
    dtype = X.dtype
    work = X.to(compute_dtype(dtype))
    with torch.autocast(X.device.type, enabled=False):
        mean = work.mean(-2) if center else torch.zeros_like(work[..., 0, :])
        Xc = work - mean.unsqueeze(-2)
        # Note [scale-robust PCA]: C_s = (Xc / c)^T (Xc / c) / (n - 1), C = c^2 C_s
        scale = _pow2_above(Xc.abs().amax(dim=(-2, -1), keepdim=True))
        Xs = Xc / scale
        C = Xs.mT @ Xs / (n - 1)
        C = (C + C.mT) / 2
        L, V = eigh(C, eps=eps, validate=False)
        ev, V = L[..., -k:].flip(-1) * scale.squeeze(-1).square(), V[..., :, -k:].flip(-1)
        components = V.mT
        scores = Xc @ V
    return PCAResult(*cast_back(dtype, scores, components, ev, mean))


# ---------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------
class PCA(Estimator):
    r"""Principal component analysis as an ``nn.Module``: :math:`y = (x - \mu) V_k`.

    Fit with :meth:`fit` (one tensor) or :meth:`partial_fit` (a stream of
    batches, all-reduced under ``torch.distributed``); :meth:`forward` /
    :meth:`transform` project, :meth:`inverse_transform` maps back. Fitted
    state lives in buffers, so ``state_dict``, ``.to()`` and checkpoints carry
    it (an unfitted module can load a fitted ``state_dict``). In float64 it
    matches ``sklearn.decomposition.PCA`` (components, explained variance,
    transform) to about 1e-10. See the module docstring for the formulas and solvers.

    Args:
        n_components: int ``k``; a float in (0, 1) for the fewest components
            explaining at least that fraction of the variance (needs the full
            spectrum: solver full or covariance); None for ``min(n, d)``.
        solver: ``"auto"``, ``"full"``, ``"randomized"`` or ``"covariance"``.
        whiten: divide the projections by :math:`\sqrt{\text{explained variance}}`.
        center: subtract the mean (False: decompose the raw second moments; ``mean_`` is 0).
        oversamples: randomized solver's oversampling.
        n_iter: randomized solver's power iterations (None: scikit-learn's rule).
        seed: seed of the randomized solver's test matrix (None: torch's global RNG).
        device, dtype: of the fitted state (None: follow the data, see :mod:`lamods.base`).

    Shape:
        - Input of ``fit``/``partial_fit``: :math:`(N, d)`.
        - Input of ``forward``/``transform``: :math:`(*, d)`; output :math:`(*, k)`.
        - ``inverse_transform``: :math:`(*, k) \to (*, d)`.

    Attributes:
        components_: :math:`(k, d)` principal axes (rows), by decreasing variance.
        explained_variance_: :math:`(k)` variances :math:`s_i^2/(n-1)`.
        explained_variance_ratio_: :math:`(k)` fractions of the total variance.
        singular_values_: :math:`(k)` singular values of the centered data.
        mean_: :math:`(d)` feature means.
        noise_variance_: scalar, mean of the discarded variances (probabilistic PCA).
        n_samples_seen_: scalar int64, rows seen.
        scatter_: :math:`(d, d)` centered scatter kept by ``partial_fit`` and
            the covariance solver (empty after the other solvers).

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> X = torch.randn(200, 5) @ torch.randn(5, 5)
        >>> model = PCA(2).fit(X)
        >>> model(X).shape
        torch.Size([200, 2])
        >>> model.inverse_transform(model(X)).shape
        torch.Size([200, 5])
        >>> stream = PCA(2)
        >>> for batch in X.split(50):
        ...     _ = stream.partial_fit(batch)
        >>> torch.allclose(stream.explained_variance_, model.explained_variance_, rtol=1e-4)
        True
    """

    _FITTED = ("components_", "explained_variance_", "explained_variance_ratio_",
               "singular_values_", "mean_", "scatter_")
    _FITTED_SHAPES = {"components_": ("k", "d"), "explained_variance_": ("k",),
                      "explained_variance_ratio_": ("k",), "singular_values_": ("k",),
                      "mean_": ("d",), "scatter_": ("d", "d")}
    _FIT_CALL = "fit(X) or partial_fit(X)"

    def __init__(
        self,
        n_components: int | float | None = None,
        *,
        solver: str = "auto",
        whiten: bool = False,
        center: bool = True,
        oversamples: int = 10,
        n_iter: int | None = None,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype)
        name = type(self).__name__
        if n_components is not None:
            if isinstance(n_components, bool) or not isinstance(n_components, (int, float)):
                raise ValueError(f"{name}: expected n_components to be an int >= 1, a float in "
                                 f"(0, 1) or None, got {n_components!r}")
            if isinstance(n_components, float) and not 0 < n_components < 1:
                raise ValueError(f"{name}: expected a float n_components in (0, 1), "
                                 f"got {n_components!r}")
            if isinstance(n_components, int) and n_components < 1:
                raise ValueError(f"{name}: expected n_components to be an int >= 1, a float in "
                                 f"(0, 1) or None, got {n_components!r}")
        if solver not in _SOLVERS:
            raise ValueError(f"{name}: expected solver in {_SOLVERS}, got {solver!r}")
        if solver == "randomized" and isinstance(n_components, float):
            raise ValueError(f"{name}: expected an int n_components with solver='randomized', "
                             f"got {n_components!r} (a variance fraction needs the full spectrum)")
        self.n_components = n_components
        self.solver = solver
        self.whiten = whiten
        self.center = center
        self.oversamples = oversamples
        self.n_iter = n_iter
        check_randomness(name, seed)
        self.seed = seed
        self.register_buffer("noise_variance_", torch.zeros((), device=device, dtype=dtype))
        self.register_buffer("n_samples_seen_",
                             torch.zeros((), dtype=torch.int64, device=device))

    # -- state -----------------------------------------------------------
    @property
    def n_components_(self) -> int:
        """Number of fitted components (0 before fitting)."""
        return self.components_.shape[0]

    def _check_stream_width(self, X: Tensor) -> None:
        if self.mean_.numel() and X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"{type(self).__name__}.partial_fit: expected input with last "
                             f"dimension {self.mean_.shape[0]}, got {X.shape[1]}")

    def _resolve_k(self, method: str, n: int, d: int) -> int | float:
        name = f"{type(self).__name__}.{method}"
        k = self.n_components
        if k is None:
            return min(n, d)
        if isinstance(k, int):
            return check_rank_k(name, k, min(n, d), "min(n_samples, n_features)",
                                arg="n_components")
        return k

    def _choose_solver(self, n: int, d: int, k: int | float) -> str:
        if self.solver != "auto":
            return self.solver
        if d <= 1000 and n >= 10 * d:
            return "covariance"
        if max(n, d) <= 500:
            return "full"
        if isinstance(k, int) and 1 <= k < 0.8 * min(n, d):
            return "randomized"
        return "full"

    # -- fitting ---------------------------------------------------------
    @torch.no_grad()
    def fit(self, X: object, y: object = None) -> PCA:
        """Fit on ``X`` ``(n_samples, n_features)``; returns ``self``. ``y`` is ignored."""
        X = self._fit_input("fit", X, min_samples=2)
        n, d = X.shape
        k = self._resolve_k("fit", n, d)
        solver = self._choose_solver(n, d, k)
        work = X.to(compute_dtype(X.dtype))
        mean = work.mean(0) if self.center else torch.zeros_like(work[0])
        # Note [scale-robust PCA]: decompose (X - mu) / c, c = 2^e ~ max |x - mu|
        scale = _pow2_scale(work, mean)
        scatter = torch.empty(0, dtype=work.dtype, device=work.device)
        if solver == "covariance":
            # scatter M_s = Xs^T Xs (symmetric by construction), eigenvalues = s^2 / c^2
            scatter_s = centered_scatter(work, mean, scale)
            S2, Vt = self._eig_scatter(scatter_s)
            total_var = S2.sum() / (n - 1)
            kept = _rescaled_square(scatter_s, scale)
            if kept is not None:
                scatter = kept
        elif solver == "full":
            Xc = (work - mean) / scale
            _, S, Vt = torch.linalg.svd(Xc, full_matrices=False)
            S2 = S.square()
            total_var = S2.sum() / (n - 1)
        else:
            n_iter = self.n_iter
            if n_iter is None:
                n_iter = 7 if k < 0.1 * min(n, d) else 4
            gen = make_generator("PCA.fit", self.seed)
            Xc = (work - mean) / scale
            _, S, Vt = randomized_svd(Xc, k, self.oversamples, n_iter, gen)
            S2 = S.square()
            total_var = Xc.square().sum() / (n - 1)
        self._set_components(S2, Vt, total_var, n, min(n, d), k, mean, X.dtype, scale)
        self.scatter_ = scatter.to(X.dtype)
        self.n_samples_seen_ = torch.tensor(n, dtype=torch.int64, device=X.device)
        return self

    @staticmethod
    def _eig_scatter(scatter: Tensor) -> tuple[Tensor, Tensor]:
        L, V = torch.linalg.eigh(scatter)
        return L.flip(-1).clamp_min(0), V.flip(-1).mT

    def _set_components(self, S2: Tensor, Vt: Tensor, total_var: Tensor, n: int, rank: int,
                        k: int | float, mean: Tensor, dtype: torch.dtype,
                        scale: Tensor) -> None:
        """``S2``, ``total_var``: of the data divided by ``scale`` (Note [scale-robust PCA])."""
        ev = S2 / (n - 1)
        ratio = ev / total_var
        if isinstance(k, float):
            # fewest components whose cumulative ratio reaches k (scikit-learn's rule)
            k = int(torch.searchsorted(ratio.cumsum(0), torch.tensor(k, dtype=ratio.dtype,
                                       device=ratio.device), right=True)) + 1
            k = min(k, rank)
        Vt = Vt[:k]
        # svd_flip(u_based_decision=False): largest |entry| of each component positive
        Vt = Vt * column_signs(Vt.mT).mT
        if k < rank:
            noise = (total_var - ev[:k].sum()) / (rank - k)
        else:
            noise = torch.zeros((), dtype=ev.dtype, device=ev.device)
        # variances scale by c^2, singular values by c
        c2 = scale * scale
        self.components_ = Vt.to(dtype)
        self.explained_variance_ = (ev[:k] * c2).to(dtype)
        self.explained_variance_ratio_ = ratio[:k].to(dtype)
        self.singular_values_ = (S2[:k].sqrt() * scale).to(dtype)
        self.mean_ = mean.to(dtype)
        self.noise_variance_ = (noise * c2).to(dtype)

    @torch.no_grad()
    def partial_fit(self, X: object, y: object = None) -> PCA:
        """Update the fit with one batch ``X`` ``(n_batch, n_features)``; returns ``self``.

        Keeps O(d^2) statistics; all-reduced across ranks when torch.distributed
        is initialized (Note [distributed PCA]). Components are (re)computed once
        at least ``max(2, n_components)`` rows have been seen; until then the
        module stays unfitted.
        """
        name = f"{type(self).__name__}.partial_fit"
        X = self._fit_input("partial_fit", X)
        self._check_stream_width(X)
        n_a = int(self.n_samples_seen_)
        if n_a > 0 and self.scatter_.numel() == 0:
            raise RuntimeError(f"{name}: expected streaming statistics (scatter_), got a model "
                               "fitted by the full or randomized solver; refit with "
                               "partial_fit from a fresh module or with solver='covariance'")
        work = X.to(compute_dtype(X.dtype))
        d = work.shape[1]
        # row count and column sums of this batch, summed over ranks
        stats = all_reduce_sum(torch.cat([work.sum(0), work.new_tensor([work.shape[0]])]))
        n_b = int(stats[-1].round())
        if self.center:
            mean_b = stats[:d] / n_b
        else:
            mean_b = torch.zeros(d, dtype=work.dtype, device=work.device)
        # Note [scale-robust PCA]: this rank's batch scatter as c^2 M_s; NaN where c^2 M_s does
        # not fit, so that every rank sees it after the all-reduce and raises together
        scale_b = _pow2_scale(work, mean_b)
        scatter_b = _rescaled_square(centered_scatter(work, mean_b, scale_b), scale_b)
        if scatter_b is None:
            scatter_b = torch.full((d, d), math.nan, dtype=work.dtype, device=work.device)
        scatter_b = all_reduce_sum(scatter_b)
        if not bool(torch.isfinite(scatter_b).all()):
            raise ValueError(
                f"{name}: expected data whose squared deviations fit in {work.dtype} (streaming "
                f"keeps the scatter of x - mean), got a batch whose scatter under- or "
                f"overflows (max |x - mean| of about {float(scale_b):.3g} on this rank); use "
                f"float64 data, or fit, which is scale-robust")
        if n_a == 0:
            mean, scatter = mean_b, scatter_b
        else:
            mean_a = self.mean_.to(work.dtype)
            delta = mean_b - mean_a
            n = n_a + n_b
            # Chan et al.: M = M_a + M_b + n_a n_b / n (mu_b - mu_a)(mu_b - mu_a)^T
            scatter = (self.scatter_.to(work.dtype) + scatter_b
                       + torch.outer(delta, delta) * (n_a * n_b / n))
            mean = mean_a + delta * (n_b / n)
        scatter = (scatter + scatter.mT) / 2
        n = n_a + n_b
        self.scatter_ = scatter.to(X.dtype)
        self.mean_ = mean.to(X.dtype)
        self.n_samples_seen_ = torch.tensor(n, dtype=torch.int64, device=X.device)
        k_req = self.n_components
        if isinstance(k_req, int) and k_req > d:
            raise ValueError(f"{name}: expected n_components <= n_features = {d}, got {k_req}")
        if n < 2 or (isinstance(k_req, int) and k_req > n):
            return self  # not enough rows yet: keep the statistics, fit components later
        k = self._resolve_k("partial_fit", n, d)
        # Note [scale-robust PCA]: eigh of M / c^2, c = 2^e ~ sqrt(max |M|)
        _, e = torch.frexp(scatter.abs().amax())
        scale = torch.ldexp(torch.ones_like(scatter[0, 0]), torch.div(e + 1, 2,
                                                                      rounding_mode="floor"))
        S2, Vt = self._eig_scatter(scatter / (scale * scale))
        self._set_components(S2, Vt, S2.sum() / (n - 1), n, min(n, d), k, mean, X.dtype, scale)
        return self

    # -- using -----------------------------------------------------------
    def _scale(self) -> Tensor:
        # sqrt(explained variance), or s / sqrt(n - 1) where the variance left the dtype's
        # range (Note [scale-robust PCA]); clamped relative to the largest, so a zero-variance
        # component divides by eps * max, not by 0 or by an absolute eps
        ev = self.explained_variance_
        n = max(int(self.n_samples_seen_), 2)
        from_s = self.singular_values_ / math.sqrt(n - 1)
        fits = torch.isfinite(ev) & (ev >= torch.finfo(ev.dtype).tiny)
        scale = torch.where(fits, ev.sqrt(), from_s)
        floor = torch.finfo(scale.dtype).eps * scale.amax()
        return scale.clamp_min(floor.clamp_min(torch.finfo(scale.dtype).tiny))

    def transform(self, X: object) -> Tensor:
        r""":math:`(x - \mu) V_k`, divided by :math:`\sqrt{\text{explained var.}}` if whiten."""
        X = self._input("transform", X)
        Y = (X - self.mean_) @ self.components_.mT
        return Y / self._scale().to(Y.dtype) if self.whiten else Y

    def forward(self, X: Tensor) -> Tensor:
        return self.transform(X)

    def inverse_transform(self, Y: object) -> Tensor:
        r""":math:`y V_k^T + \mu` (whitened ``y`` is first scaled back)."""
        Y = self._input("inverse_transform", Y, what="Y", width=self.n_components_)
        if self.whiten:
            Y = Y * self._scale().to(Y.dtype)
        return Y @ self.components_ + self.mean_

    def fit_transform(self, X: object, y: object = None) -> Tensor:
        return self.fit(X).transform(X)

    def extra_repr(self) -> str:
        s = f"n_components={self.n_components!r}, solver={self.solver!r}"
        if self.whiten:
            s += ", whiten=True"
        if not self.center:
            s += ", center=False"
        if self.is_fitted():
            s += f", fitted: {self.n_features_in_} -> {self.n_components_}"
        return s
