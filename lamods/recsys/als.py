r"""Alternating least squares and Gibbs sampling for the biased factorization model.

With the item side fixed, the per-example objective of
:class:`~lamods.recsys.MatrixFactorization` (``implicit=False``) separates
into one ridge regression per user. Writing :math:`x_u = [p_u; b_u]`,
:math:`z_i = [q_i; 1]` and :math:`t_{ui} = r_{ui} - \mu - b_i`,

.. math::
    x_u = \arg\min_x \sum_{i \in I(u)} (t_{ui} - z_i^\top x)^2 + s_u\, x^\top D x
        = (Z_u^\top Z_u + s_u D)^{-1} Z_u^\top t_u,

with :math:`D = \mathrm{diag}(\lambda, \dots, \lambda, \lambda_b)` and
:math:`s_u = |I(u)|` (``weighted=True``: the per-example L2 of Surprise, the
weighted-lambda of ALS-WR, Zhou et al. 2008) or :math:`s_u = 1`. The item side
is the same with the roles swapped. All users (then all items) are solved at
once: their ratings are padded into chunks of similar length, the Gram
matrices formed by one batched matmul per chunk and factorised by batched
Cholesky (``torch.linalg.cholesky`` on CPU or CUDA).

:func:`fit_gibbs` replaces each ridge solve by a draw from the Gaussian
posterior of the same linear model (Bayesian MF, Salakhutdinov & Mnih 2008,
with a zero-mean diagonal prior whose precisions are learned, as automatic
relevance determination), samples the noise precision, and averages the
predictions of the draws.

Note [no custom backward]: these are fitting procedures, not layers; nothing
here is differentiated, and there is no hand-written gradient.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from lamods._random import make_generator
from lamods._validation import (
    check_finite_loss,
    check_nonnegative,
    check_positive,
    check_positive_int,
)
from lamods.exceptions import ConvergenceError, SingularSystemError
from lamods.recsys.mf import MatrixFactorization
from lamods.recsys.movielens import Ratings
from lamods.recsys.train import FitHistory, _record, prepare, restore, snapshot

__all__ = ["fit_als", "fit_gibbs", "ridge_rows"]


class _Rows:
    """The ratings of each row (user or item), padded into chunks of rows of similar length.

    Rows are sorted by their number of ratings and cut into chunks of at most
    ``budget`` padded entries, so padding wastes little and memory stays bounded.
    """

    def __init__(self, rows: Tensor, n_rows: int, budget: int = 1 << 21) -> None:
        dev = rows.device
        order = torch.argsort(rows, stable=True)
        counts = torch.bincount(rows, minlength=n_rows)
        start = torch.cumsum(counts, 0) - counts
        by_count = torch.argsort(counts, stable=True)
        cs = counts[by_count].cpu().numpy()
        self.counts = counts
        self.chunks: list[tuple[Tensor, Tensor, Tensor]] = []
        s = int(np.searchsorted(cs, 1))  # rows without ratings are skipped
        n = len(cs)
        while s < n:
            # largest e with (e - s) * cs[e - 1] <= budget (at least one row)
            sizes = np.arange(1, n - s + 1) * cs[s:]
            e = s + max(1, int(np.searchsorted(sizes, budget, side="right")))
            chunk_rows = by_count[s:e]
            width = int(cs[e - 1])
            pos = torch.arange(width, device=dev)
            valid = pos.unsqueeze(0) < counts[chunk_rows].unsqueeze(1)
            entry = (start[chunk_rows].unsqueeze(1) + pos).clamp(max=rows.shape[0] - 1)
            self.chunks.append((chunk_rows, order[entry], valid))
            s = e


def _solve(
    groups: _Rows,
    cols: Tensor,
    targets: Tensor,
    features: Tensor,
    diag: Tensor,
    *,
    weighted: bool,
    bias: bool,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    failed: list[Tensor] | None = None,
) -> Tensor:
    """Solve (with a generator: sample) every row's ridge problem; ``(n_rows, k[+1])``.

    ``failed``: a list to which the counts ``[singular, overflowed]`` of the rows whose
    system was not numerically positive definite, or not finite, are appended (their
    solution is garbage; the caller raises, :func:`_check_solved`).
    """
    n_rows = groups.counts.shape[0]
    if bias:
        features = torch.cat([features, features.new_ones(features.shape[0], 1)], 1)
    d = features.shape[1]
    out = features.new_zeros(n_rows, d)
    for chunk_rows, entry, valid in groups.chunks:
        mask = valid.to(features.dtype)
        z = features[cols[entry]] * mask.unsqueeze(2)            # (R, L, d): z_i per rating
        t = targets[entry] * mask                                # (R, L):    t_ui per rating
        # A = alpha Z^T Z + s_u D,  rhs = alpha Z^T t
        gram = alpha * (z.transpose(1, 2) @ z)
        rhs = alpha * (z.transpose(1, 2) @ t.unsqueeze(2))
        scale = groups.counts[chunk_rows].to(features.dtype) if weighted else mask.new_ones(
            chunk_rows.shape[0])
        gram.diagonal(dim1=1, dim2=2).add_(scale.unsqueeze(1) * diag)
        chol, info = torch.linalg.cholesky_ex(gram)
        if failed is not None:
            # [systems not positive definite, systems with non-finite entries (overflow)]
            overflow = ~torch.isfinite(gram).all(2).all(1)
            failed.append(torch.stack([((info != 0) & ~overflow).sum(), overflow.sum()]))
        # x = A^{-1} rhs
        x = torch.cholesky_solve(rhs, chol)
        if generator is not None:
            # a draw from N(A^{-1} rhs, A^{-1}): x + L^{-T} e, e ~ N(0, I)
            e = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + torch.linalg.solve_triangular(chol.transpose(1, 2), e, upper=True)
        out[chunk_rows] = x.squeeze(2)
    return out


def _check_solved(name: str, failed: list[Tensor], solutions: tuple[Tensor, ...], where: str,
                  hint: str, on_failure: Callable[[], None] | None = None) -> None:
    """Raise if a half-step met a singular system or produced non-finite factors.

    One synchronisation. ``on_failure`` runs first: a fit puts the model back as it was
    before it began (Note [divergence] in :mod:`lamods.recsys.train`).
    """
    checks = list(torch.stack(failed).sum(0)) if failed else [torch.zeros((), dtype=torch.long)] * 2
    checks += [(~torch.isfinite(x)).sum().cpu() for x in solutions]
    counts = [int(c) for c in torch.stack([c.cpu() for c in checks]).tolist()]
    n_singular, n_overflow, n_nonfinite = counts[0], counts[1], sum(counts[2:])
    if not (n_singular or n_overflow or n_nonfinite):
        return
    if on_failure is not None:
        on_failure()
    if n_singular and not n_overflow:
        raise SingularSystemError(
            f"{name}: expected positive-definite ridge systems, got {n_singular} singular "
            f"one{'s' * (n_singular != 1)} at {where}; {hint}")
    raise ConvergenceError(f"{name}: expected finite factors, got {n_nonfinite} NaN or "
                           f"infinite entries at {where}; the ratings overflow the dtype: "
                           "rescale them or fit in float64")


def ridge_rows(
    rows: Tensor,
    cols: Tensor,
    targets: Tensor,
    features: Tensor,
    n_rows: int,
    reg: float,
    *,
    reg_bias: float | None = None,
    bias: bool = True,
    weighted: bool = True,
) -> tuple[Tensor, Tensor | None]:
    r"""One ALS half-step, every row :math:`u` at once:
    :math:`[x_u; b_u] = (Z_u^\top Z_u + s_u D)^{-1} Z_u^\top t_u`.

    Args:
        rows: ``(N,)`` row index of each rating (user for the user side).
        cols: ``(N,)`` column index (item).
        targets: ``(N,)`` :math:`t`, e.g. :math:`r_{ui} - \mu - b_i`.
        features: ``(n_cols, k)`` fixed factors of the other side (:math:`q_i`).
        n_rows: number of rows; rows without a rating get zeros.
        reg: :math:`\lambda`; ``reg_bias``: :math:`\lambda_b` (default ``reg``).
        bias: append the constant feature 1 and return the row biases.
        weighted: :math:`s_u = |I(u)|` (per-example L2) rather than 1.

    Returns:
        ``(x, b)``: ``(n_rows, k)`` and ``(n_rows,)`` (``b`` is None without ``bias``).

    Examples::

        >>> z = torch.tensor([[1.0], [2.0]])
        >>> x, b = ridge_rows(torch.tensor([0, 0]), torch.tensor([0, 1]),
        ...                   torch.tensor([1.0, 2.0]), z, 1, 0.0, bias=False)
        >>> x
        tensor([[1.]])
    """
    k = features.shape[1]
    reg_bias = reg if reg_bias is None else reg_bias
    diag = features.new_tensor([reg] * k + ([reg_bias] if bias else []))
    failed: list[Tensor] = []
    sol = _solve(_Rows(rows, n_rows), cols, targets, features, diag, weighted=weighted,
                 bias=bias, failed=failed)
    _check_solved("ridge_rows", failed, (sol,), f"reg={reg}, reg_bias={reg_bias}",
                  "use reg > 0, or give every row at least as many ratings as features")
    return (sol[:, :k], sol[:, k]) if bias else (sol, None)


def _work_dtype(model: MatrixFactorization) -> torch.dtype:
    dt = model.user_factors.dtype
    return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt


def fit_als(
    model: MatrixFactorization,
    train: Ratings,
    *,
    epochs: int = 15,
    reg: float = 0.1,
    reg_bias: float | None = None,
    weighted: bool = True,
    val: Ratings | None = None,
    track_train: bool = False,
    callback: Callable[[int, FitHistory], None] | None = None,
) -> FitHistory:
    r"""Fit a biased (or unbiased) model by alternating least squares; trains ``model`` in place.

    Each epoch solves every user's :math:`[p_u; b_u]` with the items fixed, then
    every item's :math:`[q_i; b_i]` with the users fixed (see the module
    docstring). With ``weighted=True`` this minimises the same objective as
    :func:`~lamods.recsys.fit_sgd` with ``reg_bias=reg``. Starts from the model's
    current item factors; users and items without a training rating end at zero.

    Args:
        model: a :class:`MatrixFactorization` with ``implicit=False``.
        train: training ratings.
        epochs: user-then-item sweeps.
        reg: :math:`\lambda`; ``reg_bias``: :math:`\lambda_b` (default ``reg``).
        weighted: scale each row's ridge by its number of ratings.
        val, track_train, callback: as in :func:`~lamods.recsys.fit_sgd`.

    Examples::

        >>> from lamods.recsys import synthetic_ratings, random_split, evaluate
        >>> syn = synthetic_ratings(60, 50, 2, density=0.5, noise=0.1, seed=0)
        >>> train, test = random_split(syn.data, (0.9, 0.1), seed=0)
        >>> model = MatrixFactorization(60, 50, 2, dtype=torch.float64)
        >>> _ = fit_als(model, train, epochs=20, reg=1e-3)
        >>> evaluate(model, test)["rmse"] < 0.15
        True
    """
    name = "fit_als"
    if model.implicit:
        raise ValueError(f"{name}: expected a model with implicit=False (the implicit term "
                         "couples a user's items), got implicit=True; use fit_sgd")
    epochs = check_positive_int(name, "epochs", epochs)
    reg = check_nonnegative(name, "reg", reg)
    reg_bias = reg if reg_bias is None else check_nonnegative(name, "reg_bias", reg_bias)
    before = snapshot(model)
    users, items, ratings = prepare(model, train, name)
    dt = _work_dtype(model)
    ratings = ratings.to(dt)
    k, biased = model.n_factors, model.biased
    diag = torch.tensor([reg] * k + ([reg_bias] if biased else []), dtype=dt,
                        device=users.device)
    by_user, by_item = _Rows(users, model.n_users), _Rows(items, model.n_items)
    mu = model.global_mean.to(dt)
    q = model.item_factors.detach().to(dt)
    b_i = (model.item_bias.detach().to(dt) if biased
           else q.new_zeros(model.n_items))
    history = FitHistory()
    hint = ("use reg > 0 (and reg_bias > 0), or give every user and item at least as many "
            "ratings as factors")
    for epoch in range(epochs):
        start = time.perf_counter()
        where = f"epoch {epoch + 1} (reg={reg}, reg_bias={reg_bias})"
        failed: list[Tensor] = []
        # users: t_ui = r_ui - mu - b_i
        sol_u = _solve(by_user, items, ratings - mu - b_i[items], q, diag,
                       weighted=weighted, bias=biased, failed=failed)
        _check_solved(name, failed, (sol_u,), where, hint, lambda: restore(model, before))
        p, b_u = (sol_u[:, :k], sol_u[:, k]) if biased else (sol_u, q.new_zeros(model.n_users))
        # items: t_ui = r_ui - mu - b_u
        failed = []
        sol_i = _solve(by_item, users, ratings - mu - b_u[users], p, diag,
                       weighted=weighted, bias=biased, failed=failed)
        _check_solved(name, failed, (sol_i,), where, hint, lambda: restore(model, before))
        q, b_i = (sol_i[:, :k], sol_i[:, k]) if biased else (sol_i, q.new_zeros(model.n_items))
        with torch.no_grad():
            model.user_factors.copy_(p)
            model.item_factors.copy_(q)
            if biased:
                model.user_bias.copy_(b_u)
                model.item_bias.copy_(b_i)
        _record(history, model, train, val, track_train, time.perf_counter() - start)
        if callback is not None:
            callback(epoch, history)
    model.zero_unseen(users, items)
    return history


def _gamma(shape: Tensor, rate: Tensor, generator: torch.Generator) -> Tensor:
    """Gamma(shape, rate) draws through the generator (Marsaglia-Tsang needs none: use torch's)."""
    # torch._standard_gamma takes no generator: draw its seed from ours for reproducibility
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[shape.device] if shape.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return torch._standard_gamma(shape) / rate


def fit_gibbs(
    train: Ratings,
    n_factors: int = 10,
    *,
    samples: int = 100,
    burn_in: int = 10,
    a0: float = 1.0,
    b0: float = 1.0,
    seed: int = 0,
    val: Ratings | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    callback: Callable[[int, FitHistory], None] | None = None,
) -> tuple[MatrixFactorization, FitHistory]:
    r"""Bayesian biased MF by Gibbs sampling; returns the posterior-mean model and its history.

    Model: :math:`r_{ui} \sim \mathcal N(\mu + b_u + b_i + p_u^\top q_i, \alpha^{-1})`,
    :math:`[p_u; b_u] \sim \mathcal N(0, \mathrm{diag}(\lambda^U)^{-1})`, the same for items,
    with Gamma(``a0``, ``b0``) priors on :math:`\alpha` and every :math:`\lambda_d`.
    A sweep draws every user's :math:`[p_u; b_u]` from its Gaussian conditional
    (precision :math:`\alpha Z_u^\top Z_u + \mathrm{diag}(\lambda^U)`, one batched
    Cholesky as in ALS), then :math:`\lambda^U`, the items likewise, then :math:`\alpha`.

    The posterior-mean prediction :math:`\frac1S\sum_s \hat r^{(s)}_{ui}` of the
    ``samples`` draws after ``burn_in`` sweeps is returned as one
    :class:`MatrixFactorization` with ``n_factors * samples`` factors: the draws'
    factors side by side, the user ones scaled by :math:`1/S`, biases averaged.

    Args:
        train: training ratings.
        n_factors: :math:`k` of each draw.
        samples: :math:`S`, draws averaged.
        burn_in: sweeps discarded first.
        a0, b0: shape and rate of the Gamma priors.
        seed: seed of the sampler (same seed, same model).
        val: ratings on which to report the RMSE of the running average per sweep
            (``history.val_rmse`` has one entry per kept draw).
        device, dtype: of the computation and the returned model.
        callback: as in :func:`~lamods.recsys.fit_sgd`.
    """
    name = "fit_gibbs"
    k = check_positive_int(name, "n_factors", n_factors)
    samples = check_positive_int(name, "samples", samples)
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
        raise ValueError(f"{name}: expected burn_in to be an int >= 0, got {burn_in!r}")
    a0, b0 = check_positive(name, "a0", a0), check_positive(name, "b0", b0)
    dev = torch.device(device) if device is not None else train.users.device
    final = MatrixFactorization(train.n_users, train.n_items, k * samples, biased=True,
                                rating_range=train.rating_range, device=dev, dtype=dtype)
    users, items, ratings = prepare(final, train, name)
    gen = make_generator("fit_gibbs", seed, device=dev)
    mu = final.global_mean
    by_user, by_item = _Rows(users, train.n_users), _Rows(items, train.n_items)
    q = torch.randn(train.n_items, k, generator=gen, device=dev, dtype=dtype) * 0.1
    b_i = q.new_zeros(train.n_items)
    b_u = q.new_zeros(train.n_users)
    lam_u = q.new_full((k + 1,), 10.0)
    lam_i = q.new_full((k + 1,), 10.0)
    alpha = 1.0
    shape_u = q.new_full((k + 1,), a0 + train.n_users / 2)
    shape_i = q.new_full((k + 1,), a0 + train.n_items / 2)
    shape_a = q.new_tensor(a0 + users.shape[0] / 2)
    kept_p, kept_q, sum_bu, sum_bi = [], [], q.new_zeros(train.n_users), q.new_zeros(
        train.n_items)
    if val is not None:
        val_u, val_i = val.users.to(dev), val.items.to(dev)
        val_sum = q.new_zeros(val_u.shape[0])
        lo, hi = train.rating_range
    history = FitHistory()
    for sweep in range(burn_in + samples):
        start = time.perf_counter()
        sol = _solve(by_user, items, ratings - mu - b_i[items], q, lam_u, weighted=False,
                     bias=True, alpha=alpha, generator=gen)
        p, b_u = sol[:, :k], sol[:, k]
        # lambda_d ~ Gamma(a0 + n/2, b0 + sum_u x_ud^2 / 2)
        lam_u = _gamma(shape_u, b0 + 0.5 * sol.pow(2).sum(0), gen)
        sol = _solve(by_item, users, ratings - mu - b_u[users], p, lam_i, weighted=False,
                     bias=True, alpha=alpha, generator=gen)
        q, b_i = sol[:, :k], sol[:, k]
        lam_i = _gamma(shape_i, b0 + 0.5 * sol.pow(2).sum(0), gen)
        err = ratings - (mu + b_u[users] + b_i[items] + (p[users] * q[items]).sum(1))
        sse = float(err.pow(2).sum())
        check_finite_loss(name, sse, f"sweep {sweep + 1} (alpha={alpha:g})",
                          "the ratings are too large for the dtype: rescale them")
        # alpha ~ Gamma(a0 + N/2, b0 + SSE/2)
        alpha = float(_gamma(shape_a, b0 + 0.5 * sse, gen))
        if sweep >= burn_in:
            kept_p.append(p)
            kept_q.append(q)
            sum_bu += b_u
            sum_bi += b_i
            history.epoch_seconds.append(time.perf_counter() - start)
            if val is not None:
                val_sum += mu + b_u[val_u] + b_i[val_i] + (p[val_u] * q[val_i]).sum(1)
                pred = (val_sum / len(kept_p)).clamp(lo, hi)
                target = val.ratings.to(dev, dtype)
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
