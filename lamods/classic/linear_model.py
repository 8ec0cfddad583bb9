r"""Linear and ridge regression as fit-style modules: closed form and gradient descent.

With ``m`` samples, centered data :math:`X_c = X - \mathbf 1 \bar x^T`,
:math:`y_c = y - \bar y` (when ``fit_intercept``; the intercept is not penalised),

.. math::
    J(b) = \frac{1}{2m} \big(\|X_c b - y_c\|^2 + \alpha \|b\|^2\big), \qquad
    \hat b = (X_c^T X_c + \alpha I)^{-1} X_c^T y_c, \qquad
    \hat c = \bar y - \bar x^T \hat b .

``fit`` solves the normal equations in closed form through
:func:`~lamods.classic.lstsq` (``method`` as there). ``fit_gd`` runs full-batch
gradient descent on :math:`J`:

.. math::
    \nabla J(b) = \frac1m \big(X_c^T (X_c b - y_c) + \alpha b\big), \qquad
    b \leftarrow b - \eta \nabla J(b),

with step :math:`\eta = 1/L` by default, :math:`L = \lambda_{\max}(X_c^T X_c + \alpha I)/m`
the Lipschitz constant of :math:`\nabla J` (the largest step that always
decreases :math:`J`); the error then shrinks by :math:`1 - 1/\kappa` per step,
:math:`\kappa` the condition number of :math:`X_c^T X_c + \alpha I`. Centering
first is the same problem as adding a column of ones, with a better-conditioned
Hessian.

In float64 the closed form matches scikit-learn's ``LinearRegression`` /
``Ridge`` coefficients to about 1e-10 (tests).

Note [streamed normal equations]: ``partial_fit`` keeps the row count :math:`n`, the
means :math:`\bar x, \bar y` and the centred scatters
:math:`S_{xx} = \sum (x - \bar x)(x - \bar x)^T`, :math:`S_{xy} = \sum (x - \bar x)(y - \bar y)^T`
(memory :math:`O(d^2 + dk)` however many rows), merging each batch by Chan et al.'s update

.. math:: S = S_a + S_b + \frac{n_a n_b}{n_a + n_b} (\bar x_b - \bar x_a)(\bar y_b - \bar y_a)^T,

and solves :math:`(S_{xx} + \alpha I) b = S_{xy}`: by Cholesky when :math:`\alpha > 0`, and
with :math:`\alpha = 0` by the eigendecomposition of :math:`S_{xx}`, dropping eigenvalues
:math:`\lambda_i \le \text{rcond}^2 \lambda_1` (the singular values :math:`s_i = \sqrt{\lambda_i}`
of the centred data below ``rcond`` :math:`s_1`, Note [rank cutoff] in
:mod:`lamods.classic.lstsq`): the minimum-norm solution, as ``fit(method="svd")``. Working
from the scatter squares the condition number, as ``method="cholesky"`` does: forming
:math:`S_{xx}` rounds its eigenvalues at about :math:`u \max(10, d) \lambda_1` (measured:
exactly collinear float64 columns leave eigenvalues near :math:`10^{-16} \lambda_1`), so
eigenvalues below that are dropped as well, i.e. directions with
:math:`s_i \le \sqrt{u \max(10, d)}\, s_1` (about :math:`5 \cdot 10^{-8} s_1` in float64):
stream float64 data when the features are nearly collinear. Under ``torch.distributed`` each
batch's count and sums are all-reduced, the batch is centred at the global batch mean
and its scatters all-reduced (Note [distributed statistics] in :mod:`lamods._distributed`),
so every rank fits the model of all the ranks' rows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lamods._distributed import all_reduce_sum
from lamods._matmul import at_b
from lamods._validation import (
    check_choice,
    check_nonnegative,
    check_positive_int,
    check_stream_batch,
    check_stream_target,
    check_streamable,
)
from lamods.base import Estimator
from lamods.classic.lstsq import METHODS, default_rcond, lstsq
from lamods.exceptions import ConvergenceError, SingularSystemError

__all__ = ["LinearRegression", "RidgeRegression"]


class _LinearModel(Estimator):
    _FITTED = ("coef_", "intercept_", "loss_curve_", "x_mean_", "y_mean_", "scatter_xx_",
               "scatter_xy_")
    _FITTED_SHAPES = {"coef_": ("...", "d"), "intercept_": ("...",), "loss_curve_": ("t",),
                      "x_mean_": ("d",), "y_mean_": ("k",), "scatter_xx_": ("d", "d"),
                      "scatter_xy_": ("d", "k")}

    def __init__(self, alpha: float, *, fit_intercept: bool, method: str, rcond: float | None,
                 device: torch.device | str | None, dtype: torch.dtype | None) -> None:
        super().__init__(device=device, dtype=dtype)
        name = type(self).__name__
        self.alpha = check_nonnegative(name, "alpha", alpha)
        check_choice(name, "method", method, METHODS)
        if rcond is not None:
            check_nonnegative(name, "rcond", rcond)
        self.fit_intercept = fit_intercept
        self.method = method
        self.rcond = rcond
        self.register_buffer("n_iter_", torch.zeros((), dtype=torch.int64, device=device))
        self.register_buffer("n_samples_seen_", torch.zeros((), dtype=torch.int64,
                                                            device=device))

    def _clear_stream(self, ref: Tensor) -> None:
        """Drop the streaming statistics (a closed-form or gradient-descent fit replaces them)."""
        for buf in ("x_mean_", "y_mean_", "scatter_xx_", "scatter_xy_"):
            setattr(self, buf, ref.new_empty(0))
        self.n_samples_seen_ = torch.zeros((), dtype=torch.int64, device=ref.device)

    # -- fitting ---------------------------------------------------------
    def _prepare(self, method: str, X: object, y: object) -> tuple[Tensor, ...]:
        X = self._fit_input(method, X)
        y = self._fit_target(method, y, X)
        self._vector = y.dim() == 1
        Y = y.unsqueeze(-1) if self._vector else y
        if self.fit_intercept:
            x_mean, y_mean = X.mean(0), Y.mean(0)
        else:
            x_mean = X.new_zeros(X.shape[1])
            y_mean = X.new_zeros(Y.shape[1])
        # X_c = X - 1 xbar^T, y_c = y - ybar
        return X - x_mean, Y - y_mean, x_mean, y_mean

    def _store(self, B: Tensor, x_mean: Tensor, y_mean: Tensor) -> None:
        # c = ybar - xbar^T b
        intercept = y_mean - x_mean @ B
        coef = B.mT
        if self._vector:
            coef, intercept = coef[0], intercept[0]
        self.coef_ = coef
        self.intercept_ = intercept

    @torch.no_grad()
    def fit(self, X: object, y: object) -> _LinearModel:
        """Closed-form fit on ``X`` ``(n_samples, n_features)``, ``y`` ``(n_samples[, k])``."""
        Xc, Yc, x_mean, y_mean = self._prepare("fit", X, y)
        # b = (X_c^T X_c + alpha I)^{-1} X_c^T y_c
        B = lstsq(Xc, Yc, self.alpha, method=self.method, rcond=self.rcond, validate=False)
        self._store(B, x_mean, y_mean)
        self.loss_curve_ = Xc.new_empty(0)
        self.n_iter_ = torch.zeros((), dtype=torch.int64, device=Xc.device)
        self._clear_stream(Xc)
        return self

    @torch.no_grad()
    def partial_fit(self, X: object, y: object) -> _LinearModel:
        r"""Update the fit with one batch ``X`` ``(n_batch, n_features)``, ``y``
        ``(n_batch[, k])``; returns ``self``.

        Keeps :math:`O(d^2 + dk)` statistics and re-solves the normal equations after every
        batch (Note [streamed normal equations]); all-reduced across ranks when
        torch.distributed is initialised, so every rank must call it the same number of
        times. After all the batches the coefficients equal ``fit`` on their concatenation
        up to rounding (``method`` is not used: Cholesky for ``alpha > 0``, the minimum-norm
        eigen-solution for ``alpha = 0``).

        Raises:
            SingularSystemError: ``alpha > 0`` and :math:`S_{xx} + \alpha I` is not
                numerically positive definite (it always is in exact arithmetic).
        """
        name = f"{type(self).__name__}.partial_fit"
        n_a = int(self.n_samples_seen_)
        check_streamable(name, fresh=n_a == 0, fitted=self.coef_.numel() > 0,
                         by="fit or fit_gd")
        X = self._fit_input("partial_fit", X, adopt=n_a == 0)
        y = self._fit_target("partial_fit", y, X)
        Y = y.unsqueeze(-1) if y.dim() == 1 else y
        d, k = X.shape[1], Y.shape[1]
        if n_a > 0:
            check_stream_batch(name, X, self.x_mean_)
            # the earlier batches' y was 1-D when coef_ is
            check_stream_target(name, y, self.y_mean_.shape[0], self.coef_.dim() == 1)
        # this batch's row count and column sums, summed over ranks
        stats = all_reduce_sum(torch.cat([X.sum(0), Y.sum(0), X.new_tensor([X.shape[0]])]))
        n_b = int(stats[-1].round())
        if self.fit_intercept:
            x_mean_b, y_mean_b = stats[:d] / n_b, stats[d:d + k] / n_b
        else:
            x_mean_b, y_mean_b = X.new_zeros(d), X.new_zeros(k)
        Xc = X - x_mean_b
        Yc = Y - y_mean_b
        # [S_xx S_xy] of this batch, about the global batch mean; NaN where its squares leave
        # the dtype's range, so every rank sees that after the all-reduce and raises together
        fin = torch.finfo(X.dtype)
        peaks = torch.stack([Xc.abs().amax(), Yc.abs().amax()]).tolist()
        scatter_b = Xc.mT @ torch.cat([Xc, Yc], 1)
        if any(p > 0 and not fin.tiny / fin.eps <= p * p <= fin.max / X.shape[0]
               for p in peaks):
            scatter_b.fill_(float("nan"))
        scatter_b = all_reduce_sum(scatter_b)
        if not bool(torch.isfinite(scatter_b).all()):
            raise ValueError(f"{name}: expected data whose squared deviations fit in {X.dtype} "
                             f"(streaming keeps the scatter of x - mean), got a batch whose "
                             f"scatter under- or overflows (max |x - mean| {peaks[0]:.3g}, max "
                             f"|y - mean| {peaks[1]:.3g} on this rank); use float64 data, or fit")
        sxx_b, sxy_b = scatter_b[:, :d], scatter_b[:, d:]
        if n_a == 0:
            x_mean, y_mean, sxx, sxy = x_mean_b, y_mean_b, sxx_b, sxy_b
        else:
            n = n_a + n_b
            dx, dy = x_mean_b - self.x_mean_, y_mean_b - self.y_mean_
            # Chan et al.: S = S_a + S_b + n_a n_b / n (xbar_b - xbar_a)(ybar_b - ybar_a)^T
            w = n_a * n_b / n
            sxx = self.scatter_xx_ + sxx_b + w * torch.outer(dx, dx)
            sxy = self.scatter_xy_ + sxy_b + w * torch.outer(dx, dy)
            x_mean = self.x_mean_ + dx * (n_b / n)
            y_mean = self.y_mean_ + dy * (n_b / n)
        sxx = (sxx + sxx.mT) / 2
        n = n_a + n_b
        B = self._solve_scatter(name, sxx, sxy, n)
        self._vector = y.dim() == 1
        self._store(B, x_mean, y_mean)
        self.x_mean_, self.y_mean_, self.scatter_xx_, self.scatter_xy_ = (
            x_mean, y_mean, sxx, sxy)
        self.n_samples_seen_ = torch.tensor(n, dtype=torch.int64, device=X.device)
        self.loss_curve_ = X.new_empty(0)
        self.n_iter_ = torch.zeros((), dtype=torch.int64, device=X.device)
        return self

    def _solve_scatter(self, name: str, sxx: Tensor, sxy: Tensor, n: int) -> Tensor:
        """:math:`b = (S_{xx} + \alpha I)^{-1} S_{xy}` (Note [streamed normal equations])."""
        d = sxx.shape[0]
        if self.alpha > 0:
            eye = torch.eye(d, dtype=sxx.dtype, device=sxx.device)
            L, info = torch.linalg.cholesky_ex(sxx + self.alpha * eye)
            if bool(info):
                raise SingularSystemError(f"{name}: expected S_xx + alpha I positive definite, "
                                          f"got a failed Cholesky factorisation (alpha="
                                          f"{self.alpha:g}); use float64 data")
            return torch.cholesky_solve(sxy, L)
        lam, U = torch.linalg.eigh(sxx)
        rcond = self.rcond if self.rcond is not None else default_rcond(n, d, sxx.dtype)
        # Note [rank cutoff]: s_i = sqrt(lambda_i) > rcond s_1  <=>  lambda_i > rcond^2 lambda_1;
        # and forming S_xx rounds at u max(10, d) lambda_1 (Note [streamed normal equations])
        floor = max(rcond * rcond, torch.finfo(sxx.dtype).eps * max(10, d))
        keep = lam > floor * lam[-1].clamp_min(0)
        inv = torch.where(keep, 1 / torch.where(keep, lam, 1), 0)
        # b = U diag(1 / lambda) U^T S_xy on the kept part: the minimum-norm solution
        return U @ (inv.unsqueeze(1) * (U.mT @ sxy))

    @torch.no_grad()
    def fit_gd(self, X: object, y: object, *, lr: float | None = None, n_iter: int = 1000,
               tol: float = 0.0) -> _LinearModel:
        r"""Fit by full-batch gradient descent on :math:`J` (module docstring); returns ``self``.

        Args:
            X: ``(n_samples, n_features)``; y: ``(n_samples,)`` or ``(n_samples, k)``.
            lr: step :math:`\eta` (None: :math:`1/L`, always convergent).
            n_iter: most steps taken, starting from :math:`b = 0`.
            tol: stop once :math:`\|\nabla J\| \le` ``tol`` :math:`\cdot \|\nabla J(0)\|`
                (checked every step when > 0; one device synchronisation each).

        Records :math:`J(b_t)` for every step in ``loss_curve_`` and the steps
        taken in ``n_iter_``.

        Raises:
            ConvergenceError: the loss (or the iterate) became NaN or infinite: gradient
                descent diverged, typically a step ``lr`` above :math:`2/L`. The message
                names the first bad iteration and the step size; the module keeps its
                previous fitted state.
        """
        name = f"{type(self).__name__}.fit_gd"
        n_iter = check_positive_int(name, "n_iter", n_iter)
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))
                               or not 0 < lr < math.inf):
            raise ValueError(f"{name}: expected lr > 0 or None, got {lr!r}")
        Xc, Yc, x_mean, y_mean = self._prepare("fit_gd", X, y)
        m, d = Xc.shape
        alpha = self.alpha
        if lr is None:
            # L = lambda_max(X_c^T X_c + alpha I) / m
            lipschitz = (torch.linalg.eigvalsh(Xc.mT @ Xc)[-1] + alpha) / m
            lr = 1.0 / float(lipschitz.clamp_min(torch.finfo(Xc.dtype).tiny))
        B = Xc.new_zeros(d, Yc.shape[1])
        losses = []
        g0 = None
        steps = 0
        for t in range(n_iter):
            r = Xc @ B - Yc
            # J(b) = (||X_c b - y_c||^2 + alpha ||b||^2) / (2m)
            losses.append((r.square().sum() + alpha * B.square().sum()) / (2 * m))
            # grad J = (X_c^T (X_c b - y_c) + alpha b) / m
            grad = (at_b(Xc, r) + alpha * B) / m
            if tol > 0:
                gnorm = float(torch.linalg.vector_norm(grad))
                if not math.isfinite(gnorm):
                    self._diverged(name, t, lr)
                g0 = gnorm if g0 is None else g0
                if gnorm <= tol * g0:
                    break
            # b <- b - lr grad J
            B = B - lr * grad
            steps += 1
        curve = torch.stack(losses)
        # one synchronisation: the first non-finite loss, or a non-finite final iterate
        finite = torch.cat([torch.isfinite(curve), torch.isfinite(B).all().reshape(1)])
        if not bool(finite.all()):
            self._diverged(name, int((~finite).nonzero()[0]), lr)
        self._store(B, x_mean, y_mean)
        self._clear_stream(Xc)
        self.loss_curve_ = curve
        self.n_iter_ = torch.tensor(steps, dtype=torch.int64, device=Xc.device)
        return self

    @staticmethod
    def _diverged(name: str, iteration: int, lr: float) -> None:
        raise ConvergenceError(
            f"{name}: expected gradient descent to converge, got a non-finite loss at "
            f"iteration {iteration} with step size lr={lr:.6g} (diverged); use a smaller lr, "
            f"or lr=None for 1/L, the largest step that always converges")

    # -- using -----------------------------------------------------------
    def predict(self, X: object) -> Tensor:
        r""":math:`x^T b + c` for ``X`` ``(*, n_features)``: ``(*)`` or ``(*, k)``."""
        X = self._input("predict", X)
        coef = self.coef_
        return (X @ coef if coef.dim() == 1 else X @ coef.mT) + self.intercept_

    def forward(self, X: Tensor) -> Tensor:
        return self.predict(X)

    @torch.no_grad()
    def score(self, X: object, y: object) -> float:
        r"""Coefficient of determination :math:`R^2 = 1 - \|y - \hat y\|^2 / \|y - \bar y\|^2`
        (averaged over targets, as scikit-learn).

        ``y`` must have the shape of the predictions (``(n,)`` after a fit on 1-D targets).
        """
        name = f"{type(self).__name__}.score"
        pred = self.predict(X)
        y = self._fit_target("score", y, pred.reshape(pred.shape[0], -1))
        if y.shape != pred.shape:
            raise ValueError(f"{name}: expected y of shape {tuple(pred.shape)} (the shape of "
                             f"the predictions), got {tuple(y.shape)}")
        ss_res = (y - pred).square().sum(0)
        ss_tot = (y - y.mean(0)).square().sum(0)
        return float((1 - ss_res / ss_tot).mean())

    def extra_repr(self) -> str:
        s = f"method={self.method!r}"
        if type(self) is not LinearRegression:
            s = f"alpha={self.alpha!r}, " + s
        if self.rcond is not None:
            s += f", rcond={self.rcond!r}"
        if not self.fit_intercept:
            s += ", fit_intercept=False"
        if self.is_fitted():
            s += f", fitted: {self.n_features_in_} features"
        return s


class LinearRegression(_LinearModel):
    r"""Ordinary least squares :math:`\min_{b,c} \|X b + c - y\|^2` as a fit-style module.

    ``fit`` solves it in closed form (``method="svd"`` by default: the
    minimum-norm solution even for collinear features, as scikit-learn's
    ``LinearRegression``; ``"cholesky"`` is the textbook normal equation
    :math:`b = (X^T X)^{-1} X^T y`, fastest, and raises
    :class:`~lamods.classic.SingularSystemError` on collinear features);
    ``fit_gd`` minimises :math:`J = \frac{1}{2m}\|X b - y\|^2` by gradient
    descent. Coefficients live in buffers; ``forward`` predicts.

    Args:
        fit_intercept: fit an unpenalised intercept :math:`c` (by centering).
        method: ``"svd"``, ``"qr"`` or ``"cholesky"`` (see :func:`~lamods.classic.lstsq`).
        rcond: rank cutoff of the ``"svd"`` (and ``"qr"``) method: singular values
            :math:`s_i \le` ``rcond`` :math:`\cdot s_1` of the centered data are dropped.
            None: :func:`~lamods.classic.lstsq`'s default :math:`u \max(10, \min(m, d))`,
            relative to :math:`s_1` and independent of the number of samples (scipy's
            ``lstsq`` uses :math:`u`, scikit-learn's ``LinearRegression`` ``1e-6``).

    Shape:
        - ``fit(X, y)``: :math:`(N, d)` and :math:`(N)` or :math:`(N, k)`.
        - ``forward``/``predict``: :math:`(*, d) \to (*)` or :math:`(*, k)`.

    Attributes:
        coef_: :math:`(d)` or :math:`(k, d)` coefficients :math:`b^T`.
        intercept_: :math:`()` or :math:`(k)`.
        loss_curve_: :math:`J` at every gradient-descent step (empty after ``fit``).
        n_iter_: gradient-descent steps taken (0 after ``fit``).

    Examples::

        >>> _ = torch.manual_seed(0)
        >>> X = torch.randn(100, 3, dtype=torch.float64)
        >>> y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 3.0
        >>> model = LinearRegression(dtype=torch.float64).fit(X, y)
        >>> model.coef_
        tensor([ 1.0000, -2.0000,  0.5000], dtype=torch.float64)
        >>> round(float(model.intercept_), 8)
        3.0
        >>> gd = LinearRegression(dtype=torch.float64).fit_gd(X, y, n_iter=500)
        >>> torch.allclose(gd.coef_, model.coef_, atol=1e-6), bool(gd.loss_curve_[-1] < 1e-10)
        (True, True)
        >>> model(X[:2]).shape
        torch.Size([2])
    """

    def __init__(self, *, fit_intercept: bool = True, method: str = "svd",
                 rcond: float | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(0.0, fit_intercept=fit_intercept, method=method, rcond=rcond,
                         device=device, dtype=dtype)


class RidgeRegression(_LinearModel):
    r"""Ridge regression :math:`\min_{b,c} \|X b + c - y\|^2 + \alpha \|b\|^2`, fit-style.

    Closed form :math:`b = (X_c^T X_c + \alpha I)^{-1} X_c^T y_c` (Cholesky by
    default, as scikit-learn's ``Ridge``), or ``fit_gd`` on
    :math:`J = \frac{1}{2m}(\|X_c b - y_c\|^2 + \alpha\|b\|^2)`. Matches
    ``sklearn.linear_model.Ridge(alpha)`` in float64.

    Args:
        alpha: penalty :math:`\alpha \ge 0`.
        fit_intercept: fit an unpenalised intercept (by centering).
        method: ``"cholesky"``, ``"qr"`` or ``"svd"``.
        rcond: rank cutoff with ``alpha = 0`` (as :class:`LinearRegression`); unused when
            ``alpha > 0``.

    Shape:
        - ``fit(X, y)``: :math:`(N, d)` and :math:`(N)` or :math:`(N, k)`.
        - ``forward``/``predict``: :math:`(*, d) \to (*)` or :math:`(*, k)`.

    Attributes:
        coef_, intercept_, loss_curve_, n_iter_: as :class:`LinearRegression`.

    Examples::

        >>> X = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
        >>> y = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
        >>> RidgeRegression(alpha=2.0, dtype=torch.float64).fit(X, y).coef_
        tensor([0.5000], dtype=torch.float64)
    """

    def __init__(self, alpha: float = 1.0, *, fit_intercept: bool = True,
                 method: str = "cholesky", rcond: float | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(alpha, fit_intercept=fit_intercept, method=method, rcond=rcond,
                         device=device, dtype=dtype)
