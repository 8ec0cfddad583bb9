r"""Bayesian matrix factorization by Gibbs sampling, with implicit feedback as side features.

The model (BPMF, Salakhutdinov & Mnih, ICML 2008), with the biases inside the factors:
:math:`x_u = [p_u; b_u]`, :math:`y_i = [q_i; b_i]` (length :math:`d = k + 1`),

.. math::
    r_{ui} \sim \mathcal N\big(\mu + b_u + b_i + p_u^\top q_i,\ \alpha^{-1}\big), \quad
    x_u \sim \mathcal N\big(\mu_U + \beta_U^\top f_u,\ \Lambda_U^{-1}\big), \quad
    y_i \sim \mathcal N\big(\mu_V + \beta_V^\top g_i,\ \Lambda_V^{-1}\big),

:math:`(\mu_U, \Lambda_U)` and :math:`(\mu_V, \Lambda_V)` with Normal-Wishart priors
(:math:`\mu_0 = 0`, :math:`\beta_0 = 2`, :math:`\nu_0 = d`, :math:`W_0 = I`, as BPMF) and
:math:`\alpha \sim \mathrm{Gamma}(a_0, b_0)`; :math:`\mu` is the training mean.

Note [implicit side features]: with ``implicit=True`` the prior mean of a user's vector
moves with the items the user rated, :math:`f_u = |N(u)|^{-1/2}\,\mathbb 1_{N(u)}`, and an
item's with the users who rated it, :math:`g_i = |R(i)|^{-1/2}\,\mathbb 1_{R(i)}`: the
user side is SVD++'s implicit term made Bayesian, the item side its "flipped" twin
(Rendle, *Scaling factorization machines to relational data*, VLDB 2013, whose Bayesian
"SVD++ flipped" is among the best models of Rendle et al., *On the difficulty of
evaluating baselines*, 2019). The link matrices have Macau's prior (Simm et al., *Macau:
scalable Bayesian factorization with high-dimensional side information*, 2017)
:math:`\beta \sim \mathcal{MN}(0, (\lambda_\beta I)^{-1}, \Lambda^{-1})`, so their conditional
is matrix normal with row precision :math:`K = F^\top F + \lambda_\beta I`, drawn exactly by
one solve with :math:`K` (factorised once per fit, in its smaller, dual form
:math:`F F^\top + \lambda_\beta I` when :math:`F` has fewer rows than columns):

.. math::
    \beta = K^{-1}\big(F^\top (X - \mu + E_1 C^\top) + \sqrt{\lambda_\beta}\, E_2 C^\top\big),
    \quad C C^\top = \Lambda^{-1},\ E_1, E_2 \sim \mathcal N(0, I),

and :math:`\Lambda`'s Wishart conditional gains :math:`\lambda_\beta \beta^\top\beta` and
as many degrees of freedom as :math:`\beta` has rows.

Note [Gibbs sweep]: one sweep draws every user's :math:`x_u` from its Gaussian conditional
(precision :math:`\alpha \sum_i z_i z_i^\top + \Lambda_U`, :math:`z_i = [q_i; 1]`: the row
solver of ALS, :func:`lamods.recsys.als._solve`, with a generator), then
:math:`(\mu_U, \Lambda_U)`, then :math:`\beta_U`; the items likewise; then :math:`\alpha`,
whose conditional needs the squared error, read off the item step's normal equations
rather than a pass over the ratings. On MovieLens-100K (``d = 11``) a sweep takes a few
milliseconds, so a hundred draws fit in about a second.

Note [no custom backward]: a fitting procedure; nothing here is differentiated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from lamods._random import make_generator
from lamods._validation import (
    check_finite,
    check_finite_loss,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)
from lamods.recsys._rows import BUDGET, RowIndex, _csr
from lamods.recsys.als import _check_solved, _solve
from lamods.recsys.mf import MatrixFactorization
from lamods.recsys.movielens import Ratings
from lamods.recsys.train import FitHistory, prepare

__all__ = ["GibbsSampler", "fit_gibbs"]

#: Largest min(n_users, n_items) for implicit=True (the dual Gram is that size, dense).
MAX_SIDE_DIM = 10_000


def _gamma(shape: Tensor, rate: Tensor | float, generator: torch.Generator) -> Tensor:
    r"""Gamma(shape, rate) draws through ``generator`` (float64, any shape > 0, elementwise).

    Note [Gamma draws]: Marsaglia & Tsang (ACM TOMS 2000): with :math:`a' = a + [a < 1]`,
    :math:`d = a' - 1/3`, :math:`c = 1/\sqrt{9d}`, draw :math:`x \sim \mathcal N(0,1)`,
    :math:`u \sim U(0,1)`, :math:`v = (1 + cx)^3` and accept :math:`dv` when :math:`v > 0` and
    :math:`\log u < x^2/2 + d - dv + d \log v`; shapes below 1 are boosted by
    :math:`U^{1/a}`. (``torch._standard_gamma`` takes no generator.)
    """
    dev = generator.device
    a = shape.to(dev, torch.float64)
    boosted = a + (a < 1).to(a.dtype)
    d = boosted - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    opts = {"generator": generator, "device": dev, "dtype": torch.float64}
    while bool(todo.any()):
        x = torch.randn(a.shape, **opts)
        u = torch.rand(a.shape, **opts)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp(min=1e-300)))
        take = ok & todo
        out[take] = (d * v)[take]
        todo &= ~ok
    small = a < 1
    if bool(small.any()):
        out[small] *= torch.rand(a.shape, **opts)[small] ** (1.0 / a[small])
    return out / rate


def _wishart(df: float, scale: Tensor, generator: torch.Generator) -> Tensor:
    r"""A draw from :math:`\mathcal W(\nu, S)` by Bartlett's decomposition: :math:`LAA^\top L^\top`.

    :math:`S = LL^\top`; :math:`A` lower triangular, :math:`A_{jj}^2 \sim \chi^2_{\nu - j}`,
    :math:`A_{jl} \sim \mathcal N(0, 1)` below the diagonal. float64, on the generator's
    device.
    """
    d = scale.shape[0]
    dev = generator.device
    L = torch.linalg.cholesky(scale.to(dev))
    # chi^2_n = 2 Gamma(n / 2, 1)
    chi2 = 2 * _gamma((df - torch.arange(d, dtype=torch.float64, device=dev)) / 2, 1.0,
                      generator)
    A = torch.randn(d, d, generator=generator, dtype=torch.float64, device=dev).tril(-1)
    A.diagonal().copy_(chi2.sqrt())
    LA = L @ A
    return LA @ LA.T


def _normal_wishart(X: Tensor, generator: torch.Generator, *, beta0: float = 2.0,
                    extra: tuple[Tensor, int] | None = None) -> tuple[Tensor, Tensor]:
    r"""Draw :math:`(\mu, \Lambda)` from the Normal-Wishart conditional given rows ``X``.

    .. math::
        \Lambda \sim \mathcal W\big(\nu_0 + n [+ m],\ (W_0^{-1} + S + \tfrac{\beta_0 n}{\beta_0 + n}
        \bar x \bar x^\top [+ \lambda_\beta \beta^\top\beta])^{-1}\big), \quad
        \mu \sim \mathcal N\big(\tfrac{n \bar x}{\beta_0 + n}, ((\beta_0 + n)\Lambda)^{-1}\big),

    with :math:`\mu_0 = 0`, :math:`\nu_0 = d`, :math:`W_0 = I`; ``extra`` is
    :math:`(\lambda_\beta \beta^\top\beta, m)` (Note [implicit side features]). float64.
    """
    dev = generator.device
    X = X.to(dev, torch.float64)
    n, d = X.shape
    xbar = X.mean(0)
    centred = X - xbar
    beta_n = beta0 + n
    nu_n = d + n
    w_inv = torch.eye(d, dtype=torch.float64, device=dev) + centred.T @ centred \
        + (beta0 * n / beta_n) * torch.outer(xbar, xbar)
    if extra is not None:
        w_inv = w_inv + extra[0].to(dev, torch.float64)
        nu_n += extra[1]
    w = torch.linalg.inv(w_inv)
    lam = _wishart(nu_n, 0.5 * (w + w.T), generator)
    # mu = mu_n + chol(beta_n Lambda)^{-T} e
    chol = torch.linalg.cholesky(beta_n * lam)
    e = torch.randn(d, 1, generator=generator, dtype=torch.float64, device=dev)
    mu = n * xbar / beta_n + torch.linalg.solve_triangular(chol.T, e, upper=True).squeeze(1)
    return mu, lam


def _gram_of_rows(index: RowIndex, transpose: RowIndex, values: Tensor) -> Tensor:
    r""":math:`M^\top M` (float64, dense ``n_cols x n_cols``) of the sparse matrix ``index``
    holds with ``values`` (input order); ``transpose`` groups the same entries by column.

    Note [sparse Gram]: column block by column block,
    :math:`(M^\top M)_{:, J} = M^\top M_{:, J}`: the sparse :math:`M^\top` (CSR of
    ``transpose``) times the dense columns :math:`J` of :math:`M` (rows :math:`J` of
    :math:`M^\top`, at most ``BUDGET`` floats), so the work is :math:`\mathrm{nnz}(M)` per
    column instead of a dense product over every row (20x fewer flops on MovieLens-100K).
    """
    m, n = index.n_cols, index.n_rows
    vals = values.double()
    mt = transpose.matrix(vals)                               # (m, n) CSR
    vals_t = vals[transpose.order]
    gram = torch.empty(m, m, dtype=torch.float64, device=values.device)
    step = max(1, BUDGET // max(n, 1))
    for a in range(0, m, step):
        e = min(a + step, m)
        lo, hi = int(transpose.crow[a]), int(transpose.crow[e])
        rows_j = _csr(transpose.crow[a:e + 1] - lo, transpose.col[lo:hi], vals_t[lo:hi],
                      (e - a, n)).to_dense()                  # rows J of M^T: (|J|, n)
        gram[:, a:e] = mt @ rows_j.T
    return gram


class _SideFeatures:
    r"""The implicit features :math:`F` of one side and the draw of its link matrix :math:`\beta`.

    ``index`` groups the training ratings by this side's rows; ``transpose`` by the other
    side's. :math:`F_{rj} = |J(r)|^{-1/2}` for each rating (Note [implicit side features]).
    """

    def __init__(self, index: RowIndex, transpose: RowIndex, row_of_entry: Tensor,
                 lam: float, dtype: torch.dtype) -> None:
        self.lam = lam
        n, m = index.n_rows, index.n_cols
        scale = index.counts.clamp(min=1).to(dtype).rsqrt()[row_of_entry]
        self.F = index.matrix(scale)            # (n, m)
        self.FT = transpose.matrix(scale)       # (m, n)
        self.shape = (n, m)
        self.dual = n < m
        # K = F^T F + lam I (m x m) = sum over the rows of F, or its dual F F^T + lam I
        # (n x n) = sum over the rows of F^T; rows taken in dense blocks of bounded size
        small = (_gram_of_rows(index, transpose, scale) if not self.dual
                 else _gram_of_rows(transpose, index, scale))
        small.diagonal().add_(lam)
        self.chol = torch.linalg.cholesky(small).to(dtype)

    def prior_mean(self, beta: Tensor) -> Tensor:
        """:math:`F\\beta`, ``(n, d)``."""
        return self.F @ beta

    def _k_inv(self, x: Tensor) -> Tensor:
        # K^{-1} x; dual: (x - F^T (lam I + F F^T)^{-1} F x) / lam
        if self.dual:
            return (x - self.FT @ torch.cholesky_solve(self.F @ x, self.chol)) / self.lam
        return torch.cholesky_solve(x, self.chol)

    def draw(self, centred: Tensor, cov_chol: Tensor, generator: torch.Generator) -> Tensor:
        r""":math:`\beta = K^{-1}(F^\top(X - \mu + E_1 C^\top) + \sqrt{\lambda} E_2 C^\top)`."""
        n, m = self.shape
        d = centred.shape[1]
        opts = {"generator": generator, "device": centred.device, "dtype": centred.dtype}
        e1 = torch.randn(n, d, **opts) @ cov_chol.T
        e2 = torch.randn(m, d, **opts) @ cov_chol.T
        return self._k_inv(self.FT @ (centred + e1) + math.sqrt(self.lam) * e2)


class GibbsSampler:
    r"""The Markov chain of :func:`fit_gibbs`: its state, and one sweep per :meth:`sweep`.

    The state is the current draw :math:`x_u = [p_u; b_u]`, :math:`y_i = [q_i; b_i]`
    (``x_u``, ``x_i``), the hyperparameters :math:`(\mu_U, \Lambda_U)`,
    :math:`(\mu_V, \Lambda_V)`, the link matrices :math:`\beta_U, \beta_V` (``implicit``),
    the noise precision :math:`\alpha`, the sweep count and the generator's state:
    :meth:`state_dict` holds them all as tensors (a checkpoint of plain tensors), and
    :meth:`load_state_dict` continues the chain exactly where it was (same draws as a chain
    never stopped). The model, priors and one sweep are the module docstring's.

    Args:
        train: training ratings.
        n_factors: :math:`k`.
        implicit, implicit_reg, a0, b0, seed, device, dtype: as in :func:`fit_gibbs`.
        name: the caller named in error messages.

    Examples::

        >>> from lamods.recsys import synthetic_ratings
        >>> syn = synthetic_ratings(30, 20, 2, density=0.5, seed=0)
        >>> chain = GibbsSampler(syn.data, 2, seed=0)
        >>> x_u, x_i = chain.sweep()
        >>> x_u.shape, x_i.shape, chain.sweeps
        (torch.Size([30, 3]), torch.Size([20, 3]), 1)
    """

    def __init__(
        self,
        train: Ratings,
        n_factors: int,
        *,
        implicit: bool = False,
        implicit_reg: float = 1.0,
        a0: float = 1.0,
        b0: float = 1.0,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
        name: str = "GibbsSampler",
    ) -> None:
        self.name = name
        k = check_positive_int(name, "n_factors", n_factors)
        self.a0, self.b0 = check_positive(name, "a0", a0), check_positive(name, "b0", b0)
        self.lam_beta = check_positive(name, "implicit_reg", implicit_reg)
        if not isinstance(train, Ratings):
            raise TypeError(f"{name}: expected train as a Ratings, got {type(train).__name__}")
        if len(train) == 0:
            raise ValueError(f"{name}: expected at least one training rating, got none")
        check_finite(name, train.ratings, "ratings tensor")
        if implicit and min(train.n_users, train.n_items) > MAX_SIDE_DIM:
            raise ValueError(f"{name}: expected min(n_users, n_items) <= {MAX_SIDE_DIM} with "
                             f"implicit=True (a dense Gram of that size is factorised), got "
                             f"{min(train.n_users, train.n_items)}; use implicit=False")
        dev = torch.device(device) if device is not None else train.users.device
        self.k, self.implicit, self.dtype, self.device = k, bool(implicit), dtype, dev
        self.users, self.items = train.users.to(dev), train.items.to(dev)
        self.ratings = train.ratings.to(dev, dtype)
        self.mu = train.global_mean
        self.by_user = RowIndex(self.users, self.items, train.n_users, train.n_items)
        self.by_item = RowIndex(self.items, self.users, train.n_items, train.n_users)
        self.seen_u, self.seen_i = self.by_user.counts > 0, self.by_item.counts > 0
        self.side: dict[str, _SideFeatures | None] = {"u": None, "i": None}
        if implicit:
            self.side["u"] = _SideFeatures(self.by_user, self.by_item, self.users,
                                           self.lam_beta, dtype)
            self.side["i"] = _SideFeatures(self.by_item, self.by_user, self.items,
                                           self.lam_beta, dtype)
        self.generator = make_generator(name, seed, device=dev)
        d = k + 1
        opts = {"device": dev, "dtype": dtype}
        self.x_i = torch.randn(train.n_items, d, generator=self.generator, **opts) * 0.1
        self.x_i[:, k] = 0
        self.x_u = torch.zeros(train.n_users, d, **opts)
        self.hyper = {"u": (torch.zeros(d, **opts), torch.eye(d, **opts) * 10),
                      "i": (torch.zeros(d, **opts), torch.eye(d, **opts) * 10)}
        self.beta = {"u": torch.zeros(train.n_items, d, **opts) if implicit else None,
                     "i": torch.zeros(train.n_users, d, **opts) if implicit else None}
        self.alpha = 1.0
        self.sweeps = 0

    def _half(self, side: str, index: RowIndex, t: Tensor, feats: Tensor, seen: Tensor,
              fit_terms: list[Tensor] | None) -> Tensor:
        """Draw one side's vectors, then its hyperparameters and link matrix."""
        name, d, dev, dtype = self.name, self.k + 1, self.device, self.dtype
        sf, beta = self.side[side], self.beta[side]
        mean_h, lam_h = self.hyper[side]
        lam_w = lam_h.to(dtype)
        offset = sf.prior_mean(beta) if sf is not None and beta is not None else None
        prior = mean_h.to(dtype) + offset if offset is not None else mean_h.to(dtype)
        failed: list[Tensor] = []
        where = f"sweep {self.sweeps + 1} (alpha={self.alpha:g})"
        x = _solve(index, t, feats, precision=lam_w, prior_mean=prior, bias=True,
                   alpha=self.alpha, generator=self.generator, failed=failed,
                   fit_terms=fit_terms)
        _check_solved(name, failed, (x,), where,
                      "the ratings are too large for the dtype: rescale them")
        resid = x - offset if offset is not None else x
        extra = None
        if sf is not None and beta is not None:
            extra = (self.lam_beta * (beta.T @ beta).double(), beta.shape[0])
        new_mean, new_lam = _normal_wishart(resid[seen], self.generator, extra=extra)
        self.hyper[side] = (new_mean, new_lam)
        if sf is not None:
            # C C^T = Lambda^{-1}: C = L^{-T} with Lambda = L L^T
            chol = torch.linalg.cholesky(new_lam)
            eye = torch.eye(d, dtype=torch.float64, device=new_lam.device)
            cov_chol = torch.linalg.solve_triangular(chol.T, eye, upper=True).to(dev, dtype)
            self.beta[side] = sf.draw(x - new_mean.to(dev, dtype), cov_chol, self.generator)
        return x

    def sweep(self) -> tuple[Tensor, Tensor]:
        """One Gibbs sweep (Note [Gibbs sweep]); returns the new draw ``(x_u, x_i)``:
        ``(n_users, k + 1)`` and ``(n_items, k + 1)``, the bias in the last column."""
        k, mu, users, items = self.k, self.mu, self.users, self.items
        # users: t_ui = r_ui - mu - b_i, features [q_i; 1]
        self.x_u = self._half("u", self.by_user, self.ratings - mu - self.x_i[items, k],
                              self.x_i[:, :k], self.seen_u, None)
        # items: t_ui = r_ui - mu - b_u, features [p_u; 1]
        t_i = self.ratings - mu - self.x_u[users, k]
        fit_terms: list[Tensor] = []
        self.x_i = self._half("i", self.by_item, t_i, self.x_u[:, :k], self.seen_i, fit_terms)
        # SSE = sum t^2 + sum_i (y_i^T G_i y_i - 2 y_i^T b_i)
        sse = float(t_i.pow(2).sum() + fit_terms[0])
        where = f"sweep {self.sweeps + 1} (alpha={self.alpha:g})"
        check_finite_loss(self.name, sse, where,
                          "the ratings are too large for the dtype: rescale them")
        self.sse = max(sse, 0.0)
        # alpha ~ Gamma(a0 + N/2, b0 + SSE/2)
        n = self.ratings.shape[0]
        self.alpha = float(_gamma(torch.tensor(self.a0 + n / 2, dtype=torch.float64,
                                               device=self.device),
                                  self.b0 + 0.5 * self.sse, self.generator))
        self.sweeps += 1
        return self.x_u, self.x_i

    def state_dict(self) -> dict[str, Tensor]:
        """The chain's state as tensors (copies): enough to continue it exactly."""
        state = {"x_u": self.x_u, "x_i": self.x_i,
                 "mean_u": self.hyper["u"][0], "lam_u": self.hyper["u"][1],
                 "mean_i": self.hyper["i"][0], "lam_i": self.hyper["i"][1],
                 "alpha": torch.tensor(self.alpha, dtype=torch.float64),
                 "sweeps": torch.tensor(self.sweeps),
                 "generator": self.generator.get_state()}
        if self.implicit:
            state["beta_u"], state["beta_i"] = self.beta["u"], self.beta["i"]
        return {key: value.clone() for key, value in state.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Continue the chain from :meth:`state_dict`; checks the keys and shapes first."""
        keys = {"x_u", "x_i", "mean_u", "lam_u", "mean_i", "lam_i", "alpha", "sweeps",
                "generator"} | ({"beta_u", "beta_i"} if self.implicit else set())
        if set(state) != keys:
            raise ValueError(f"{self.name}.load_state_dict: expected the keys "
                             f"{sorted(keys)}, got {sorted(state)}")
        for key in ("x_u", "x_i", "beta_u", "beta_i"):
            mine = getattr(self, key) if key.startswith("x") else self.beta.get(key[-1])
            if key in state and tuple(state[key].shape) != tuple(mine.shape):
                raise ValueError(f"{self.name}.load_state_dict: expected {key} of shape "
                                 f"{tuple(mine.shape)}, got {tuple(state[key].shape)}")
        opts = {"device": self.device, "dtype": self.dtype}
        self.x_u, self.x_i = state["x_u"].to(**opts), state["x_i"].to(**opts)
        hyper_dev = self.generator.device
        self.hyper = {s: (state[f"mean_{s}"].to(hyper_dev, torch.float64),
                          state[f"lam_{s}"].to(hyper_dev, torch.float64)) for s in ("u", "i")}
        if self.implicit:
            self.beta = {s: state[f"beta_{s}"].to(**opts) for s in ("u", "i")}
        self.alpha = float(state["alpha"])
        self.sweeps = int(state["sweeps"])
        self.generator.set_state(state["generator"].cpu())


def fit_gibbs(
    train: Ratings,
    n_factors: int = 10,
    *,
    samples: int = 100,
    burn_in: int = 10,
    implicit: bool = False,
    implicit_reg: float = 1.0,
    a0: float = 1.0,
    b0: float = 1.0,
    seed: int = 0,
    val: Ratings | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    callback: Callable[[int, FitHistory], None] | None = None,
) -> tuple[MatrixFactorization, FitHistory]:
    r"""Bayesian biased MF (BPMF) by Gibbs sampling; returns the posterior-mean model.

    See the module docstring for the model, Note [Gibbs sweep] for one sweep and Note
    [implicit side features] for ``implicit=True``. The posterior-mean prediction
    :math:`\frac1S\sum_s \hat r^{(s)}_{ui}` of the ``samples`` draws after ``burn_in``
    sweeps is returned as one :class:`MatrixFactorization` with ``n_factors * samples``
    factors: the draws' factors side by side, the user ones scaled by :math:`1/S`, biases
    averaged (its predictions are those averages; :meth:`~MatrixFactorization.predict`
    clips them to the rating scale). The chain is a :class:`GibbsSampler` (one sweep at a
    time, checkpointable).

    Args:
        train: training ratings.
        n_factors: :math:`k` of each draw.
        samples: :math:`S`, draws averaged.
        burn_in: sweeps discarded first.
        implicit: put the implicit feedback (who rated what) in the prior means.
        implicit_reg: :math:`\lambda_\beta`, the prior precision of the link matrices.
        a0, b0: shape and rate of the Gamma prior of the noise precision :math:`\alpha`.
        seed: seed of the sampler (same seed, same model).
        val: ratings on which to report the RMSE of the running average per kept draw
            (``history.val_rmse`` has one entry per kept draw).
        device, dtype: of the computation and the returned model.
        callback: as in :func:`~lamods.recsys.fit_sgd`.

    Examples::

        >>> from lamods.recsys import synthetic_ratings, random_split, evaluate
        >>> syn = synthetic_ratings(80, 60, 2, density=0.4, noise=0.1, seed=0)
        >>> train, test = random_split(syn.data, (0.9, 0.1), seed=0)
        >>> model, hist = fit_gibbs(train, 2, samples=20, burn_in=10, implicit=True)
        >>> model.n_factors, len(hist.epoch_seconds)
        (40, 20)
        >>> evaluate(model, test)["rmse"] < 0.2
        True
    """
    name = "fit_gibbs"
    k = check_positive_int(name, "n_factors", n_factors)
    samples = check_positive_int(name, "samples", samples)
    burn_in = check_nonnegative_int(name, "burn_in", burn_in)
    check_positive(name, "a0", a0), check_positive(name, "b0", b0)
    check_positive(name, "implicit_reg", implicit_reg)
    dev = torch.device(device) if device is not None else train.users.device
    if implicit and min(train.n_users, train.n_items) > MAX_SIDE_DIM:
        raise ValueError(f"{name}: expected min(n_users, n_items) <= {MAX_SIDE_DIM} with "
                         f"implicit=True (a dense Gram of that size is factorised), got "
                         f"{min(train.n_users, train.n_items)}; use implicit=False")
    final = MatrixFactorization(train.n_users, train.n_items, k * samples, biased=True,
                                rating_range=train.rating_range, device=dev, dtype=dtype)
    users, items, _ = prepare(final, train, name)
    chain = GibbsSampler(train, k, implicit=implicit, implicit_reg=implicit_reg, a0=a0, b0=b0,
                         seed=seed, device=dev, dtype=dtype, name=name)
    mu = chain.mu
    opts = {"device": dev, "dtype": dtype}
    kept_p, kept_q = [], []
    sum_bu, sum_bi = torch.zeros(train.n_users, **opts), torch.zeros(train.n_items, **opts)
    if val is not None:
        val_u, val_i = val.users.to(dev), val.items.to(dev)
        val_sum = torch.zeros(val_u.shape[0], **opts)
        target = val.ratings.to(dev, dtype)
        lo, hi = train.rating_range
    history = FitHistory()
    for sweep in range(burn_in + samples):
        start = time.perf_counter()
        x_u, x_i = chain.sweep()
        if sweep >= burn_in:
            p, b_u, q, b_i = x_u[:, :k], x_u[:, k], x_i[:, :k], x_i[:, k]
            kept_p.append(p)
            kept_q.append(q)
            sum_bu += b_u
            sum_bi += b_i
            history.epoch_seconds.append(time.perf_counter() - start)
            if val is not None:
                val_sum += mu + b_u[val_u] + b_i[val_i] + (p[val_u] * q[val_i]).sum(1)
                pred = (val_sum / len(kept_p)).clamp(lo, hi)
                history.val_rmse.append(float((pred - target).pow(2).mean().sqrt()))
                history.val_mae.append(float((pred - target).abs().mean()))
            if callback is not None:
                callback(sweep - burn_in, history)
    with torch.no_grad():
        # (1/S) sum_s p_u^(s)T q_i^(s) = [p^(1) .. p^(S)]/S . [q^(1) .. q^(S)]
        final.user_factors.copy_(torch.cat(kept_p, 1) / samples)
        final.item_factors.copy_(torch.cat(kept_q, 1))
        final.user_bias.copy_(sum_bu / samples)
        final.item_bias.copy_(sum_bi / samples)
    final.zero_unseen(users, items)
    return final, history
