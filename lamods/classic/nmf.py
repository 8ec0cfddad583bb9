r"""Non-negative matrix factorization :math:`X \approx W H`, :math:`W, H \ge 0`.

For :math:`X \ge 0` of shape ``(n, d)``, find :math:`W` ``(n, k)`` and
:math:`H` ``(k, d)``, both non-negative, minimizing a beta divergence:

.. math::
    \text{frobenius: } \tfrac12 \|X - WH\|_F^2, \qquad
    \text{kullback-leibler: } \sum_{ij} X_{ij} \log\frac{X_{ij}}{(WH)_{ij}} - X_{ij} + (WH)_{ij}.

Solvers:

- ``"mu"``, multiplicative updates (Lee & Seung, 2001): gradient steps with
  per-entry step sizes that turn them into ratios of non-negative terms, so
  non-negativity is kept automatically and the loss never increases:

  .. math::
      \text{frobenius: } W \leftarrow W \circ \frac{X H^T}{W H H^T}, \quad
      H \leftarrow H \circ \frac{W^T X}{W^T W H};
      \qquad
      \text{KL: } W \leftarrow W \circ \frac{(X / WH) H^T}{\mathbf 1 H^T}, \quad
      H \leftarrow H \circ \frac{W^T (X / WH)}{W^T \mathbf 1}.

- ``"hals"``, hierarchical alternating least squares (Cichocki & Phan, 2009;
  scikit-learn's ``"cd"``), Frobenius only: each column of :math:`W` (then each
  row of :math:`H`) is the exact minimizer with the others fixed, projected on
  :math:`\ge 0`:

  .. math::
      W_{:t} \leftarrow \max\Big(0,\; W_{:t} - \frac{(W H H^T - X H^T)_{:t}}{(H H^T)_{tt}}\Big).

  Usually converges in far fewer iterations than MU.

Initialization ``"nndsvda"`` (Boutsidis & Gallopoulos, 2008; scikit-learn's
default): the positive parts of the leading singular triplets (of a
randomized SVD, as scikit-learn; the seed drives its test matrix), zeros filled
with the mean of ``X``; ``"random"``: :math:`|N(0,1)| \sqrt{\bar X / k}`.

Stopping as scikit-learn: MU every 10 iterations stops when the error
decrease relative to the initial error is below ``tol``; HALS when the
projected-gradient norm relative to the first iteration's is below ``tol``.
``reconstruction_err_`` is :math:`\sqrt{2 \cdot \text{divergence}}`
(:math:`\|X - WH\|_F` for Frobenius), as scikit-learn.

Note [NMF scaling]: both losses are scale-covariant (:math:`X \to sX` is solved by
:math:`W \to \sqrt s W, H \to \sqrt s H`, and the updates commute with it). The
:math:`\epsilon` guards and the NNDSVDa fill (:math:`\bar X`) are scikit-learn's, in
absolute units, so they are not; data whose largest entry lies in
:math:`[2^{-10}, 2^{10}]` are used as they are (the same run as scikit-learn's). Outside
that range ``fit`` runs on :math:`X / s`, :math:`s` an even power of two near
:math:`\max X`, and scales :math:`W` and :math:`H` back by :math:`\sqrt s`
(``transform`` solves :math:`X / a = W' (H / b)` with powers of two :math:`a, b` chosen
the same way for :math:`X` and :math:`H`, and returns :math:`W = W' a / b`): exact in
binary floating point (Note [power-of-two scaling] in :mod:`lamods._precision`), so
``NMF`` of :math:`2^{2j} X` is exactly :math:`2^j` times that of :math:`X` there, and
float32 data at ``1e30`` no longer overflow to NaN nor data at ``1e-30`` underflow to a
meaningless fit.

An all-zero ``X`` (or batch) gives all-zero :math:`W` and :math:`H` (as scikit-learn).
A non-finite loss or iterate (checked every 10 iterations and at the end) raises
:class:`~lamods.exceptions.ConvergenceError` naming the iteration.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamods._precision import pow2_scale
from lamods._random import check_randomness, generator_device, make_generator
from lamods._validation import check_choice, check_data, check_nonnegative, check_positive_int
from lamods.base import Estimator
from lamods.decomp.randomized import randomized_svd
from lamods.exceptions import ConvergenceError

__all__ = ["NMF", "beta_divergence"]

_SOLVERS = ("mu", "hals")
_LOSSES = ("frobenius", "kullback-leibler")
_INITS = ("nndsvda", "nndsvd", "random")
#: guard against division by zero, as scikit-learn (float32 machine epsilon)
_EPS = float(torch.finfo(torch.float32).eps)
_EPS64 = float(torch.finfo(torch.float64).eps)
#: iterations between two divergence checks (one synchronisation each)
_CHECK_EVERY = 10
#: data whose largest entry lies within [2^-_RANGE, 2^_RANGE] are not rescaled
_RANGE = 10


def _working_scale(*tensors: Tensor, even: bool = False) -> Tensor:
    """1, or a power of two near the largest entry when it lies outside
    :math:`[2^{-10}, 2^{10}]` (Note [NMF scaling]); an even power with ``even``."""
    s = pow2_scale(*tensors)
    _, e = torch.frexp(s)  # s = 2^(e - 1)
    if even:  # |x| / s < 4 then; never s * 2, which may overflow
        s = torch.where((e - 1) % 2 == 1, s / 2, s)
    inside = ((e - 1).abs() <= _RANGE)
    return torch.where(inside, torch.ones_like(s), s)


def beta_divergence(X: Tensor, W: Tensor, H: Tensor, beta_loss: str) -> Tensor:
    r"""The loss of the module docstring for :math:`X \approx W H` (``0 \log 0 = 0``)."""
    WH = W @ H
    if beta_loss == "frobenius":
        # 1/2 ||X - WH||_F^2
        return (X - WH).square().sum() / 2
    WH = WH.clamp_min(_EPS)
    # sum X log(X / WH) - X + WH, with log(X / WH) = log X - log WH: X / WH underflows to 0
    # (log -> -inf) for a subnormal X, its logarithm does not
    Xs = torch.where(X > 0, X, torch.ones_like(X))
    return torch.where(X > 0, X * (torch.log(Xs) - torch.log(WH)),
                       torch.zeros_like(X)).sum() - X.sum() + WH.sum()


def _initialize(X: Tensor, k: int, init: str, gen: torch.Generator | None) -> tuple[Tensor, ...]:
    n, d = X.shape
    if init == "random":
        avg = (X.mean() / k).sqrt()
        # drawn in float64 on the generator's device: the same seed, the same start in
        # float32 and float64
        opts = {"generator": gen, "device": generator_device(gen), "dtype": torch.float64}
        H = avg * torch.randn(k, d, **opts).abs().to(device=X.device, dtype=X.dtype)
        W = avg * torch.randn(n, k, **opts).abs().to(device=X.device, dtype=X.dtype)
        return W, H
    # rank-k randomized SVD with scikit-learn's settings (10 oversamples, 7 or 4 power its)
    n_iter = 7 if k < 0.1 * min(n, d) else 4
    U, S, Vh = randomized_svd(X, k, 10, n_iter, gen)
    # the leading singular pair of a non-negative matrix is non-negative (Perron-Frobenius)
    W = torch.empty(n, k, dtype=X.dtype, device=X.device)
    H = torch.empty(k, d, dtype=X.dtype, device=X.device)
    W[:, 0] = S[0].sqrt() * U[:, 0].abs()
    H[0] = S[0].sqrt() * Vh[0].abs()
    if k > 1:
        x, y = U[:, 1:], Vh[1:].mT  # (n, k-1), (d, k-1)
        xp, yp, xn, yn = x.clamp_min(0), y.clamp_min(0), (-x).clamp_min(0), (-y).clamp_min(0)
        xpn, ypn = xp.norm(dim=0), yp.norm(dim=0)
        xnn, ynn = xn.norm(dim=0), yn.norm(dim=0)
        mp, mn = xpn * ypn, xnn * ynn
        pos = mp > mn
        # the dominant sign part of each further singular pair, scaled
        u = torch.where(pos, xp / xpn, xn / xnn)
        v = torch.where(pos, yp / ypn, yn / ynn)
        lbd = (S[1:] * torch.where(pos, mp, mn)).sqrt()
        W[:, 1:] = lbd * u
        H[1:] = (lbd * v).mT
    W = torch.nan_to_num(W).masked_fill(W < _EPS, 0)
    H = torch.nan_to_num(H).masked_fill(H < _EPS, 0)
    if init == "nndsvda":
        avg = X.mean()
        W = W.masked_fill(W == 0, float(avg))
        H = H.masked_fill(H == 0, float(avg))
    return W, H


def _mu_w(X: Tensor, W: Tensor, H: Tensor, beta_loss: str) -> Tensor:
    if beta_loss == "frobenius":
        # W <- W * (X H^T) / (W H H^T)    (X H^T formed as (H X^T)^T: faster with MKL here)
        num = (H @ X.mT).mT
        den = W @ (H @ H.mT)
    else:
        # W <- W * ((X / WH) H^T) / (1 H^T)
        num = (X / (W @ H).clamp_min(_EPS)) @ H.mT
        den = H.sum(1).unsqueeze(0)
    return W * (num / den.masked_fill(den == 0, _EPS))


def _mu_h(X: Tensor, W: Tensor, H: Tensor, beta_loss: str) -> Tensor:
    if beta_loss == "frobenius":
        # H <- H * (W^T X) / (W^T W H)
        num = W.mT @ X
        den = (W.mT @ W) @ H
    else:
        # H <- H * (W^T (X / WH)) / (W^T 1)
        num = W.mT @ (X / (W @ H).clamp_min(_EPS))
        den = W.sum(0).unsqueeze(1)
    return H * (num / den.masked_fill(den == 0, _EPS))


def _hals_w(X: Tensor, W: Tensor, H: Tensor, violation: bool) -> tuple[Tensor, Tensor | None]:
    """One HALS sweep over the columns of W; returns (W, projected-gradient l1 norm or None).

    Works on :math:`W^T` (rows contiguous) in place; ``violation`` adds the
    stopping statistic (three more ops per column).
    """
    HHt = H @ H.mT
    XHt_t = H @ X.mT  # (X H^T)^T: (k, n)
    Wt = W.mT.contiguous()  # (k, n), a copy
    # 1 / (H H^T)_tt, 0 where the row of H is 0 (then W_{:t} stays)
    diag = HHt.diagonal()
    inv = torch.where(diag > 0, 1 / diag.clamp_min(torch.finfo(W.dtype).tiny), 0.0).tolist()
    total = W.new_zeros(()) if violation else None
    for t in range(Wt.shape[0]):
        # gradient column: (W H H^T - X H^T)_{:t}
        grad = torch.addmv(XHt_t[t], Wt.mT, HHt[t], beta=-1)
        if total is not None:
            pg = torch.where(Wt[t] == 0, grad.clamp_max(0), grad)
            total = total + pg.abs().sum()
        # W_{:t} <- max(0, W_{:t} - grad / (H H^T)_tt)
        Wt[t].add_(grad, alpha=-inv[t]).clamp_(min=0)
    return Wt.mT, total


class NMF(Estimator):
    r"""Non-negative matrix factorization :math:`X \approx W H` with :math:`W, H \ge 0`.

    Multiplicative updates (Frobenius or Kullback-Leibler) or HALS
    (Frobenius), from NNDSVDa or random initialization (module docstring). At
    the same iterations the reconstruction error is within 1% of
    ``sklearn.decomposition.NMF`` (tests). ``fit`` keeps :math:`H` in
    ``components_``; ``forward``/``transform`` computes :math:`W \ge 0` for new
    rows with :math:`H` fixed.

    Args:
        n_components: ``k``.
        solver: ``"mu"`` or ``"hals"`` (``"cd"`` is accepted as scikit-learn's name for it).
        beta_loss: ``"frobenius"`` or ``"kullback-leibler"`` (mu only).
        init: ``"nndsvda"``, ``"nndsvd"`` or ``"random"``.
        max_iter: most iterations (one update of W and one of H each).
        tol: stopping tolerance (module docstring); 0 runs ``max_iter`` iterations.
        seed: seed of the random initialization (None: torch's global RNG).

    Shape:
        - ``fit(X)``: :math:`(N, d)`, non-negative.
        - ``forward``/``transform``: :math:`(*, d) \to (*, k)`.
        - ``inverse_transform``: :math:`(*, k) \to (*, d)`.

    Attributes:
        components_: :math:`(k, d)` the factor :math:`H`.
        reconstruction_err_: scalar, :math:`\sqrt{2 \cdot \text{divergence}}` at the end of fit.
        n_iter_: scalar int64, iterations run.

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> X = torch.rand(20, 2) @ torch.rand(2, 6)
        >>> model = NMF(2, solver="hals", max_iter=100)
        >>> W = model.fit_transform(X)
        >>> bool((W >= 0).all()), bool((model.components_ >= 0).all())
        (True, True)
        >>> bool(model.reconstruction_err_ < 1e-2 * X.norm())
        True
    """

    _FITTED = ("components_", "reconstruction_err_")
    _FITTED_SHAPES = {"components_": ("k", "d"), "reconstruction_err_": ()}

    def __init__(
        self,
        n_components: int,
        *,
        solver: str = "mu",
        beta_loss: str = "frobenius",
        init: str = "nndsvda",
        max_iter: int = 200,
        tol: float = 1e-4,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(device=device, dtype=dtype)
        name = type(self).__name__
        self.n_components = check_positive_int(name, "n_components", n_components)
        check_choice(name, "solver", solver, (*_SOLVERS, "cd"))
        check_choice(name, "beta_loss", beta_loss, _LOSSES)
        if solver in ("hals", "cd") and beta_loss != "frobenius":
            raise ValueError(f"{name}: expected beta_loss='frobenius' with solver={solver!r}, "
                             f"got {beta_loss!r}; use solver='mu'")
        check_choice(name, "init", init, _INITS)
        self.solver = solver  # as given ("cd" is scikit-learn's name of "hals")
        self.beta_loss = beta_loss
        self.init = init
        self.max_iter = check_positive_int(name, "max_iter", max_iter)
        self.tol = check_nonnegative(name, "tol", tol)
        check_randomness(name, seed)
        self.seed = seed
        self.register_buffer("n_iter_", torch.zeros((), dtype=torch.int64, device=device))

    def _check_nonneg(self, method: str, X: Tensor) -> None:
        low = float(X.min())
        if low < 0:
            n_neg = int((X < 0).sum())
            raise ValueError(f"{type(self).__name__}.{method}: expected a non-negative input, "
                             f"got {n_neg} negative entries (minimum {low:.4g})")

    def _error(self, X: Tensor, W: Tensor, H: Tensor) -> Tensor:
        return (2 * beta_divergence(X, W, H, self.beta_loss)).clamp_min(0).sqrt()

    def _diverged(self, name: str, it: int, what: str) -> ConvergenceError:
        solver = ("multiplicative updates" if self.solver == "mu" else "HALS sweeps")
        return ConvergenceError(f"{name}: the {solver} diverged: non-finite {what} at "
                                f"iteration {it} (checked every {_CHECK_EVERY} iterations "
                                "and at the end)")

    def _check_iterate(self, name: str, it: int, W: Tensor, H: Tensor) -> None:
        if not bool(torch.isfinite(W.sum() + H.sum())):  # a NaN or inf anywhere
            raise self._diverged(name, it, "W or H")

    def _solve(self, name: str, X: Tensor, W: Tensor, H: Tensor,
               update_h: bool) -> tuple[Tensor, ...]:
        it = 0
        if self.solver == "mu":  # else "hals" / "cd"
            err0 = prev = float(self._error(X, W, H)) if self.tol > 0 else 0.0
            if self.tol > 0 and err0 == 0:
                return W, H, it  # X = WH already (e.g. an all-zero X): nothing to improve
            for it in range(1, self.max_iter + 1):
                W = _mu_w(X, W, H, self.beta_loss)
                if update_h:
                    H = _mu_h(X, W, H, self.beta_loss)
                if self.beta_loss == "kullback-leibler" and update_h:
                    # as scikit-learn: tiny entries of H snap to 0 (stability for beta <= 1)
                    H = H.masked_fill(H < _EPS64, 0)
                if it % _CHECK_EVERY == 0:
                    if self.tol > 0:
                        err = float(self._error(X, W, H))
                        if not err < float("inf"):  # NaN or inf
                            raise self._diverged(name, it, "loss")
                        if (prev - err) / err0 < self.tol:
                            break
                        prev = err
                    else:
                        self._check_iterate(name, it, W, H)
        else:
            v0 = None
            for it in range(1, self.max_iter + 1):  # noqa: B007 (it is returned)
                W, v = _hals_w(X, W, H, self.tol > 0)
                if update_h:
                    Ht, vh = _hals_w(X.mT, H.mT, W.mT, self.tol > 0)
                    H = Ht.mT
                    v = v + vh if v is not None else None
                if v is not None:
                    v = float(v)
                    if not v < float("inf"):  # NaN or inf
                        raise self._diverged(name, it, "projected gradient")
                    v0 = v if v0 is None else v0
                    if v0 == 0 or v / v0 <= self.tol:
                        break
                elif it % _CHECK_EVERY == 0:
                    self._check_iterate(name, it, W, H)
        self._check_iterate(name, it, W, H)
        return W, H, it

    @torch.no_grad()
    def fit_transform(self, X: object, y: object = None) -> Tensor:
        """Fit on ``X`` ``(n_samples, n_features)`` and return :math:`W` ``(n_samples, k)``."""
        name = f"{type(self).__name__}.fit"
        X = self._fit_input("fit", X)
        self._check_nonneg("fit", X)
        k = self.n_components
        if self.init != "random" and k > min(X.shape):
            raise ValueError(f"{name}: expected n_components <= min(n_samples, n_features) = "
                             f"{min(X.shape)} with init={self.init!r}, got {k}; use "
                             "init='random'")
        # Note [NMF scaling]: X / s, s = 4^j (exact, and so is sqrt(s) = 2^j)
        s = _working_scale(X, even=True)
        root = s.sqrt()
        work = X / s
        W, H = _initialize(work, k, self.init, make_generator(name, self.seed))
        W, H, it = self._solve(name, work, W, H, update_h=True)
        self.components_ = H * root
        err = self._error(work, W, H)
        # ||X - WH||_F scales with s; sqrt(2 KL) with sqrt(s)
        self.reconstruction_err_ = err * root * (root if self.beta_loss == "frobenius" else 1)
        self.n_iter_ = torch.tensor(it, dtype=torch.int64, device=X.device)
        # an all-zero row of X is exactly fitted by a zero row of W (both losses)
        return (W * root).masked_fill((X == 0).all(1, keepdim=True), 0)

    def fit(self, X: object, y: object = None) -> NMF:
        """Fit on non-negative ``X`` ``(n_samples, n_features)``; returns ``self``."""
        self.fit_transform(X)
        return self

    @torch.no_grad()
    def transform(self, X: object) -> Tensor:
        r""":math:`W \ge 0` for rows ``X`` ``(*, d)`` with :math:`H` fixed: ``(*, k)``.

        Runs the solver's W updates (``max_iter``, ``tol``) from the constant
        :math:`\sqrt{\bar X / k}`, as scikit-learn (on :math:`X / a` and :math:`H / b`
        outside the ordinary range, Note [NMF scaling]); an all-zero row gives an all-zero
        row of :math:`W`.
        """
        name = f"{type(self).__name__}.transform"
        X = self._input("transform", X)
        work = X.reshape(-1, X.shape[-1])
        check_data(name, work)
        self._check_nonneg("transform", work)
        # Note [NMF scaling]: X = W H is solved as X / a = W' (H / b), W = W' a / b
        a, b = _working_scale(work), _working_scale(self.components_)
        Xw, H = work / a, self.components_ / b
        avg = float((Xw.mean() / self.n_components).sqrt())
        W = torch.full((work.shape[0], self.n_components), avg, dtype=work.dtype,
                       device=work.device)
        # an all-zero row is exactly fitted by a zero row of W, which the updates keep
        W = W.masked_fill((work == 0).all(1, keepdim=True), 0)
        W, _, _ = self._solve(name, Xw, W, H, update_h=False)
        W = W * (a / b)
        return W.reshape(*X.shape[:-1], self.n_components)

    def forward(self, X: Tensor) -> Tensor:
        return self.transform(X)

    def inverse_transform(self, W: object) -> Tensor:
        r""":math:`W H`: ``(*, k) -> (*, d)``."""
        W = self._input("inverse_transform", W, what="W", width=self.n_components)
        return W @ self.components_

    def extra_repr(self) -> str:
        s = (f"n_components={self.n_components}, solver={self.solver!r}, "
             f"beta_loss={self.beta_loss!r}, init={self.init!r}, max_iter={self.max_iter}")
        if self.is_fitted():
            s += f", fitted: {self.components_.shape[1]} features"
        return s
