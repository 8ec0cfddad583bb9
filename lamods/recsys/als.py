r"""Alternating least squares for the biased factorization model.

With the item side fixed, the per-example objective of
:class:`~lamods.recsys.MatrixFactorization` (``implicit=False``) separates
into one ridge regression per user. Writing :math:`x_u = [p_u; b_u]`,
:math:`z_i = [q_i; 1]` and :math:`t_{ui} = r_{ui} - \mu - b_i`,

.. math::
    x_u = \arg\min_x \sum_{i \in I(u)} (t_{ui} - z_i^\top x)^2 + s_u\, x^\top D x
        = (Z_u^\top Z_u + s_u D)^{-1} Z_u^\top t_u,

with :math:`D = \mathrm{diag}(\lambda, \dots, \lambda, \lambda_b)` and
:math:`s_u = |I(u)|` (``weighted=True``: the per-example L2 of Surprise, the
weighted-lambda of ALS-WR, Zhou et al. 2008: a regularisation scaled by each row's
rating frequency) or :math:`s_u = 1`. The item side is the same with the roles swapped.
All users (then all items) are solved at once: the Gram matrices
:math:`Z_u^\top Z_u` come chunk by chunk (Note [row Gram matrices] in
:mod:`lamods.recsys._rows`) and are factorised by batched Cholesky
(``torch.linalg.cholesky_ex`` on CPU or CUDA).

:func:`~lamods.recsys.fit_gibbs` (:mod:`lamods.recsys.bayes`) replaces each ridge solve
by a draw from the Gaussian posterior of the same linear model, with the same solver.

Note [no custom backward]: these are fitting procedures, not layers; nothing
here is differentiated, and there is no hand-written gradient.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor

from lamods._validation import (
    check_nonnegative,
    check_positive_int,
)
from lamods.exceptions import ConvergenceError, SingularSystemError
from lamods.recsys._rows import RowIndex
from lamods.recsys.mf import MatrixFactorization
from lamods.recsys.movielens import Ratings
from lamods.recsys.train import FitHistory, _record, prepare, restore, snapshot

__all__ = ["fit_als", "ridge_rows"]


def _solve(
    index: RowIndex,
    targets: Tensor,
    features: Tensor,
    *,
    diag: Tensor | None = None,
    weighted: bool = False,
    row_scale: Tensor | None = None,
    precision: Tensor | None = None,
    prior_mean: Tensor | None = None,
    base: Tensor | None = None,
    weights: Tensor | None = None,
    bias: bool = False,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
    failed: list[Tensor] | None = None,
    fit_terms: list[Tensor] | None = None,
) -> Tensor:
    r"""Solve (with a generator: sample) every row's regularised least squares; ``(n_rows, d)``.

    For each row :math:`r` with entries (Note [row Gram matrices]):

    .. math::
        A_r = \alpha G_r + P_r, \quad c_r = \alpha b_r + \Lambda m_r, \quad
        x_r = A_r^{-1} c_r \ \big(+\, L_r^{-\top} e,\ e \sim \mathcal N(0, I)
        \text{ with a generator: a draw from } \mathcal N(A_r^{-1} c_r, A_r^{-1})\big),

    where :math:`P_r = s_r\,\mathrm{diag}(` ``diag`` :math:`)` (ALS; :math:`s_r` the row's
    count when ``weighted``, ``row_scale[r]`` when given, else 1), or :math:`\Lambda` =
    ``precision`` (Gibbs), plus
    ``base`` (a ``(d, d)`` term every row shares, :math:`Y^\top Y` in implicit ALS), and
    :math:`m_r` = ``prior_mean`` (``(n_rows, d)`` or ``(d,)``; Gibbs). ``bias`` appends the
    constant feature 1. Rows without entries stay zero.

    ``failed``: the counts ``[singular, overflowed]`` of the rows whose system was not
    numerically positive definite, or not finite, are appended (their solution is garbage;
    the caller raises, :func:`_check_solved`). ``fit_terms``: :math:`\sum_r (x_r^\top G_r
    x_r - 2 x_r^\top b_r)` is appended, so that the squared error is
    :math:`\sum t^2` plus it (for the noise precision of Gibbs; no pass over the ratings).
    """
    if bias:
        features = torch.cat([features, features.new_ones(features.shape[0], 1)], 1)
    d = features.shape[1]
    out = features.new_zeros(index.n_rows, d)
    fit = features.new_zeros(()) if fit_terms is not None else None
    for rows, gram, rhs in index.systems(features, targets, weights):
        A = gram * alpha if alpha != 1.0 else gram.clone()
        c = rhs * alpha if alpha != 1.0 else rhs.clone()
        if diag is not None:
            if row_scale is not None:
                scale = row_scale[rows]
            elif weighted:
                scale = index.counts[rows].to(features.dtype)
            else:
                scale = A.new_ones(rows.shape[0])
            A.diagonal(dim1=1, dim2=2).add_(scale.unsqueeze(1) * diag)
        if precision is not None:
            A += precision
        if base is not None:
            A += base
        if prior_mean is not None:
            m = prior_mean[rows] if prior_mean.dim() == 2 else prior_mean.expand(
                rows.shape[0], d)
            c += m @ precision
        chol, info = torch.linalg.cholesky_ex(A)
        if failed is not None:
            # [systems not positive definite, systems with non-finite entries (overflow)]
            bad = info != 0
            if A.device.type != "cpu" or bool(bad.any()):  # (free on the CPU)
                overflow = ~torch.isfinite(A).all(2).all(1)
                failed.append(torch.stack([(bad & ~overflow).sum(), overflow.sum()]))
        # x = A^{-1} c = L^{-T} (L^{-1} c), A = L L^T
        y = torch.linalg.solve_triangular(chol, c.unsqueeze(2), upper=False)
        if generator is not None:
            # a draw from N(A^{-1} c, A^{-1}): L^{-T} (L^{-1} c + e), e ~ N(0, I)
            y += torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        x = torch.linalg.solve_triangular(chol.transpose(1, 2), y, upper=True).squeeze(2)
        if fit is not None:
            # sum_r x^T G x - 2 x^T b
            fit += ((gram @ x.unsqueeze(2)).squeeze(2) * x).sum() - 2 * (rhs * x).sum()
        out[rows] = x
    if fit_terms is not None:
        fit_terms.append(fit)
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
    index = RowIndex(rows, cols, n_rows, features.shape[0])
    sol = _solve(index, targets, features, diag=diag, weighted=weighted, bias=bias,
                 failed=failed)
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
    by_user = RowIndex(users, items, model.n_users, model.n_items)
    by_item = RowIndex(items, users, model.n_items, model.n_users)
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
        sol_u = _solve(by_user, ratings - mu - b_i[items], q, diag=diag,
                       weighted=weighted, bias=biased, failed=failed)
        _check_solved(name, failed, (sol_u,), where, hint, lambda: restore(model, before))
        p, b_u = (sol_u[:, :k], sol_u[:, k]) if biased else (sol_u, q.new_zeros(model.n_users))
        # items: t_ui = r_ui - mu - b_u
        failed = []
        sol_i = _solve(by_item, ratings - mu - b_u[users], p, diag=diag,
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
