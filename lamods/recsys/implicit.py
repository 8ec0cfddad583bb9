r"""Implicit-feedback matrix factorization: weighted ALS and BPR.

The data are interactions (clicks, views, plays, or "rated at all"): a pair
:math:`(u, i)` present in the training :class:`~lamods.recsys.Ratings` with a strength
:math:`r_{ui} > 0` (its ``ratings`` value; ones for plain interactions). The model is
:class:`~lamods.recsys.MatrixFactorization` with ``biased=False`` (WALS) or with item
biases (BPR), scored by :math:`\hat x_{ui} = p_u^\top q_i (+ b_i)` and ranked by
:meth:`~lamods.recsys.MatrixFactorization.recommend`.

**Weighted ALS** (Hu, Koren & Volinsky, *Collaborative filtering for implicit feedback
datasets*, ICDM 2008): every pair, observed or not, has a preference
:math:`p_{ui} = [r_{ui} > 0]` and a confidence :math:`c_{ui} = 1 + \alpha r_{ui}`
(1 for unobserved pairs); minimise

.. math::
    \sum_{u, i} c_{ui} (p_{ui} - x_u^\top y_i)^2
    + \sum_u \lambda_u \|x_u\|^2 + \sum_i \lambda_i \|y_i\|^2,
    \qquad \lambda_r = \lambda\, n_r^{e}

(:math:`n_r` the row's interactions; ``reg_exponent`` :math:`e = 0`, the default, is Hu et
al.'s plain :math:`\lambda`; :math:`e = 1` is ALS-WR, Note [frequency-scaled
regularisation]), whose user step is, with :math:`C_u = \mathrm{diag}(c_{u\cdot})`,

.. math::
    x_u = \big(Y^\top Y + Y^\top (C_u - I) Y + \lambda_u I\big)^{-1} Y^\top C_u p_u ,

where :math:`Y^\top Y` is shared by every user and :math:`Y^\top (C_u - I) Y` sums over the
user's observed items only (the "Hu trick": :math:`O(|I(u)|\,k^2)` per user, not
:math:`O(n_{items} k^2)`). The item step swaps the roles.

Note [conjugate gradient ALS]: ``solver="cg"`` (the default, as in Takacs, Pilaszy &
Tikk, *Applications of the conjugate gradient method for implicit feedback collaborative
filtering*, RecSys 2011, and the ``implicit`` library) does not form the :math:`k \times k`
systems: it runs ``cg_steps`` conjugate-gradient steps per row, warm-started from the
current factors, each needing one product
:math:`A_u v = (Y^\top Y + \lambda_u I) v + \sum_{i \in I(u)} (c_{ui} - 1)\, y_i (y_i^\top v)`:
:math:`O(|I(u)|\,k)` instead of :math:`O(|I(u)|\,k^2)`. All rows run at once as two
sparse products per step (:func:`_cg_rows`). ``solver="cholesky"`` solves each system
exactly (the ALS row solver, :mod:`lamods.recsys._rows`). With :math:`\alpha = 0` the Hu
term vanishes and either solver gives way to one exact eigendecomposition per half-step
(Note [equal confidences], :func:`_shared_gram_rows`).

**BPR** (Rendle, Freudenthaler, Gantner & Schmidt-Thieme, *BPR: Bayesian personalized
ranking from implicit feedback*, UAI 2009): for triples :math:`(u, i, j)` with :math:`i`
an item of :math:`u` and :math:`j` drawn uniformly among the items :math:`u` has not
interacted with, minimise by mini-batch gradient descent

.. math::
    -\ln \sigma(\hat x_{ui} - \hat x_{uj})
    + \tfrac{\lambda}{2}\big(\|p_u\|^2 + \|q_i\|^2 + \|q_j\|^2 + b_i^2 + b_j^2\big).

Note [no custom backward]: WALS is a fitting procedure (nothing is differentiated); BPR
steps on the hand-written gradient of :func:`bpr_loss`, :func:`bpr_backward` (Note [BPR
gradient]), checked against autograd by the tests.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lamods._random import make_generator
from lamods._validation import (
    check_choice,
    check_finite_loss,
    check_nonnegative,
    check_positive,
    check_positive_int,
    count_nonfinite,
)
from lamods.recsys._rows import RowIndex, _csr
from lamods.recsys.als import _check_solved, _solve
from lamods.recsys.mf import MatrixFactorization
from lamods.recsys.movielens import Ratings
from lamods.recsys.train import FitHistory, prepare, restore, snapshot

__all__ = ["bpr_backward", "bpr_loss", "fit_bpr", "fit_wals", "wals_loss"]


def _check_model(name: str, model: MatrixFactorization, *, biased_ok: bool) -> None:
    if not isinstance(model, MatrixFactorization):
        raise TypeError(f"{name}: expected a MatrixFactorization, got {type(model).__name__}")
    if model.implicit or (model.biased and not biased_ok):
        raise ValueError(f"{name}: expected a MatrixFactorization with implicit=False"
                         + ("" if biased_ok else " and biased=False")
                         + f", got implicit={model.implicit}, biased={model.biased}")


def _prepare(name: str, model: MatrixFactorization, train: Ratings) -> tuple[Tensor, ...]:
    users, items, strength = prepare(model, train, name)
    if bool((strength <= 0).any()):
        bad = float(strength.min())
        raise ValueError(f"{name}: expected interaction strengths (train.ratings) > 0, got "
                         f"{bad:g}; drop the pairs without an interaction")
    with torch.no_grad():
        model.global_mean.zero_()   # scores are p_u^T q_i (+ b_i): no offset
    return users, items, strength


def _row_reg(counts: Tensor, reg: float, reg_exponent: float, dtype: torch.dtype) -> Tensor:
    r"""Per-row penalty :math:`\lambda_r = \lambda n_r^{e}` (``counts``: :math:`n_r`).

    Note [frequency-scaled regularisation]: ALS-WR (Zhou, Wilkinson, Schreiber & Pan,
    *Large-scale parallel collaborative filtering for the Netflix prize*, AAIM 2008) scales
    each row's penalty by its number of interactions :math:`n_r`; ``reg_exponent`` = e
    interpolates between the plain penalty (e = 0: Hu et al. and the ``implicit`` library)
    and ALS-WR (e = 1). A large model then shrinks the rows with many interactions more,
    where the plain penalty is lost in their :math:`\sum_j c_{rj} y_j y_j^\top`.
    """
    return reg * counts.to(dtype).pow(reg_exponent)


@torch.no_grad()
def wals_loss(model: MatrixFactorization, train: Ratings, *, reg: float, alpha: float,
              reg_exponent: float = 0.0) -> float:
    r"""The weighted-ALS objective over *all* pairs, without visiting the unobserved ones.

    With :math:`\lambda_r = \lambda n_r^{e}` (Note [frequency-scaled regularisation];
    :math:`n_r` the row's interactions in ``train``),

    .. math::
        \sum_{u,i} (x_u^\top y_i)^2 = \mathrm{tr}\big((X^\top X)(Y^\top Y)\big), \quad
        L = \mathrm{tr}\big((X^\top X)(Y^\top Y)\big) + \sum_{(u,i)\ \text{observed}}
            \big(c_{ui}(1 - s_{ui})^2 - s_{ui}^2\big)
            + \sum_u \lambda_u \|x_u\|^2 + \sum_i \lambda_i \|y_i\|^2,

    :math:`s_{ui} = x_u^\top y_i`, :math:`c_{ui} = 1 + \alpha r_{ui}`.
    """
    reg_exponent = check_nonnegative("wals_loss", "reg_exponent", reg_exponent)
    X, Y = model.user_factors.detach(), model.item_factors.detach()
    dev = X.device
    u, i = train.users.to(dev), train.items.to(dev)
    lam_u = _row_reg(torch.bincount(u, minlength=model.n_users), reg, reg_exponent, X.dtype)
    lam_i = _row_reg(torch.bincount(i, minlength=model.n_items), reg, reg_exponent, X.dtype)
    c = 1.0 + alpha * train.ratings.to(dev, X.dtype)
    s = (X[u] * Y[i]).sum(1)
    total = ((X.T @ X) * (Y.T @ Y)).sum() + (c * (1 - s).pow(2) - s.pow(2)).sum()
    penalty = (lam_u * X.pow(2).sum(1)).sum() + (lam_i * Y.pow(2).sum(1)).sum()
    return float(total + penalty)


def _cg_rows(index: RowIndex, X: Tensor, Y: Tensor, weights: Tensor, targets: Tensor,
             gram: Tensor, lam: Tensor, steps: int) -> Tensor:
    r"""``steps`` batched CG steps on :math:`A_r x_r = b_r` for every row, from ``X``.

    :math:`A_r = G + \lambda_r I + \sum_{j} w_{rj} y_j y_j^\top`,
    :math:`b_r = \sum_j t_{rj} y_j`, with ``gram`` :math:`G = Y^\top Y`, ``lam`` the
    ``(n_rows,)`` :math:`\lambda_r`, per-entry ``weights`` :math:`w` (input order) and
    ``targets`` the CSR matrix :math:`T` of the :math:`t_{rj}` (``index.matrix(t)``, built once
    per fit). All rows at once with sparse
    products (Note [conjugate gradient ALS]): :math:`s_{rj} = v_r^\top y_j` on the observed
    pattern (``torch.sparse.sampled_addmm``), then :math:`\sum_j w_{rj} s_{rj} y_j` as one
    CSR times dense product; :math:`Y` is read in place, never gathered per entry. Rows
    without entries go to zero.
    """
    w = weights[index.order]                                  # CSR order
    pattern = index.matrix(torch.ones_like(weights))
    yt = Y.T.contiguous()
    # b = sum_j t_j y_j = T Y
    b = targets @ Y

    def matvec(v: Tensor) -> Tensor:
        # A v = G v + lambda_r v + sum_j w_j y_j (y_j^T v)
        s = torch.sparse.sampled_addmm(pattern, v, yt, beta=0.0).values() * w
        sw = _csr(index.crow, index.col, s, (index.n_rows, index.n_cols))
        return (v @ gram).addcmul_(lam.unsqueeze(1), v).add_(sw @ Y)

    x = X.clone()
    x[index.counts == 0] = 0
    tiny = torch.finfo(Y.dtype).tiny
    r = b - matvec(x)
    p = r.clone()
    rs = (r * r).sum(1)
    for _ in range(steps):
        ap = matvec(p)
        denom = (p * ap).sum(1)
        step = torch.where(denom > 0, rs / denom.clamp(min=tiny), torch.zeros_like(rs))
        x += step.unsqueeze(1) * p
        r -= step.unsqueeze(1) * ap
        rs_new = (r * r).sum(1)
        ratio = torch.where(rs > 0, rs_new / rs.clamp(min=tiny), torch.zeros_like(rs))
        p = r + ratio.unsqueeze(1) * p
        rs = rs_new
    x[index.counts == 0] = 0
    return x


def _shared_gram_rows(index: RowIndex, Y: Tensor, targets: Tensor, gram: Tensor, lam: Tensor,
                      failed: list[Tensor]) -> Tensor:
    r"""Exact :math:`x_r = (G + \lambda_r I)^{-1} b_r` for every row, one eigendecomposition.

    Note [equal confidences]: with :math:`\alpha = 0` every confidence is 1, the Hu term
    :math:`\sum_j (c_{rj} - 1) y_j y_j^\top` vanishes and every row's system shares
    :math:`G = Y^\top Y`: with :math:`G = Q\,\mathrm{diag}(e)\,Q^\top` (one ``eigh`` of a
    :math:`k \times k` matrix),

    .. math::
        x_r = Q \big((Q^\top b_r) \oslash (e + \lambda_r)\big), \qquad
        b_r = \sum_{j \in J(r)} t_{rj} y_j ,

    (``targets``: the CSR matrix of the :math:`t_{rj}`),
    :math:`O(k^3 + n_{rows} k^2 + \mathrm{nnz}\,k)` per half-step, exact (no CG steps, no
    per-row Cholesky), whatever ``solver`` says. A row whose :math:`e_{min} + \lambda_r` is
    not above :math:`k\,\varepsilon\,e_{max}` counts as singular (``failed``, as
    :func:`~lamods.recsys.als._solve`); a non-finite :math:`G` counts as overflow.
    """
    has = index.counts > 0
    if not bool(torch.isfinite(gram).all()):
        failed.append(torch.stack([has.new_zeros((), dtype=torch.long), has.sum()]))
        return torch.full((index.n_rows, Y.shape[1]), math.nan, dtype=Y.dtype, device=Y.device)
    e, Q = torch.linalg.eigh(gram)
    b = targets @ Y                                     # b_r = sum_j t_rj y_j
    denom = e.unsqueeze(0) + lam.unsqueeze(1)           # e + lambda_r
    tol = e.abs().max() * Y.shape[1] * torch.finfo(Y.dtype).eps
    singular = (denom.min(1).values <= tol) & has
    failed.append(torch.stack([singular.sum(), has.new_zeros((), dtype=torch.long)]))
    # x_r = Q ((Q^T b_r) / (e + lambda_r))
    x = ((b @ Q) / denom.clamp(min=torch.finfo(Y.dtype).tiny)) @ Q.T
    x[~has] = 0
    return x


def fit_wals(
    model: MatrixFactorization,
    train: Ratings,
    *,
    epochs: int = 15,
    reg: float = 0.05,
    alpha: float = 1.0,
    reg_exponent: float = 0.0,
    solver: str = "cg",
    cg_steps: int = 3,
    track_loss: bool = False,
    callback: Callable[[int, FitHistory], None] | None = None,
) -> FitHistory:
    r"""Fit ``model`` (``biased=False``) to implicit feedback by weighted ALS; in place.

    See the module docstring for the objective and Note [conjugate gradient ALS]. Starts
    from the model's current factors (its ``init_std`` sets their scale; a small one, e.g.
    0.01, as the ``implicit`` library uses, works well); every interaction of ``train``
    is a positive pair with confidence :math:`1 + \alpha r_{ui}` (``train.ratings`` are the
    strengths :math:`r_{ui} > 0`, e.g. ones). Sets the model's interactions (the items
    :meth:`~MatrixFactorization.recommend` leaves out) to ``train``'s pairs.

    Args:
        model: a :class:`MatrixFactorization` with ``biased=False, implicit=False``.
        train: the interactions.
        epochs: user-then-item sweeps.
        reg: :math:`\lambda`.
        alpha: :math:`\alpha`, confidence per unit of strength. At ``alpha=0`` every
            confidence is 1 and each half-step is solved exactly with one
            :math:`k \times k` eigendecomposition, whatever ``solver`` says (Note [equal
            confidences]; several times faster than CG).
        reg_exponent: :math:`e \ge 0`: row :math:`r` is penalised by
            :math:`\lambda n_r^{e}`, :math:`n_r` its number of interactions (Note
            [frequency-scaled regularisation]); 0 (the default) is Hu et al.'s plain
            :math:`\lambda`, 1 is ALS-WR's weighted-lambda.
        solver: ``"cg"`` (``cg_steps`` conjugate-gradient steps per row and sweep) or
            ``"cholesky"`` (exact solves).
        cg_steps: CG steps per half-sweep.
        track_loss: record :func:`wals_loss` after every epoch in ``history.train_rmse``
            (the objective, not an RMSE; one pass over the interactions).
        callback: called as ``callback(epoch, history)`` after every epoch.

    Raises:
        ConvergenceError: the factors became non-finite (the model is left as it was).

    Examples::

        >>> from lamods.recsys import synthetic_interactions, leave_last_out, ranking_metrics
        >>> data = synthetic_interactions(200, 150, 3000, 4, seed=0)
        >>> train, test = leave_last_out(data)
        >>> model = MatrixFactorization(200, 150, 8, biased=False, init_std=0.01)
        >>> _ = fit_wals(model, train, epochs=10, reg=0.1, alpha=5.0)
        >>> ranking_metrics(model, test, k=10, threshold=None)["recall@10"] > 0.25
        True
    """
    name = "fit_wals"
    _check_model(name, model, biased_ok=False)
    epochs = check_positive_int(name, "epochs", epochs)
    reg = check_nonnegative(name, "reg", reg)
    alpha = check_nonnegative(name, "alpha", alpha)
    check_choice(name, "solver", solver, ("cg", "cholesky"))
    reg_exponent = check_nonnegative(name, "reg_exponent", reg_exponent)
    cg_steps = check_positive_int(name, "cg_steps", cg_steps)
    before = snapshot(model)
    users, items, strength = _prepare(name, model, train)
    dt = model.user_factors.dtype
    work = torch.float32 if dt in (torch.float16, torch.bfloat16) else dt
    by_user = RowIndex(users, items, model.n_users, model.n_items)
    by_item = RowIndex(items, users, model.n_items, model.n_users)
    c = 1.0 + alpha * strength.to(work)                 # confidence per interaction
    w = c - 1.0
    sides = (("users", by_user), ("items", by_item))
    lam = {side: _row_reg(index.counts, reg, reg_exponent, work) for side, index in sides}
    rhs = {side: index.matrix(c) for side, index in sides}   # CSR of c: b_r = sum_j c_rj y_j
    X = model.user_factors.detach().to(work)
    Y = model.item_factors.detach().to(work)
    ones = torch.ones(model.n_factors, dtype=work, device=X.device)
    # Note [equal confidences]
    shared = alpha == 0.0
    history = FitHistory()
    hint = "use reg > 0; the model is left as it was before fit"
    for epoch in range(epochs):
        start = time.perf_counter()
        where = f"epoch {epoch + 1} (reg={reg}, alpha={alpha})"
        for side in ("users", "items"):
            index, fixed, current = (by_user, Y, X) if side == "users" else (by_item, X, Y)
            gram = fixed.T @ fixed                              # Y^T Y
            failed: list[Tensor] = []
            if shared:
                new = _shared_gram_rows(index, fixed, rhs[side], gram, lam[side], failed)
            elif solver == "cg":
                new = _cg_rows(index, current, fixed, w, rhs[side], gram, lam[side], cg_steps)
            else:
                # A = Y^T Y + lambda_r I + sum w y y^T,  b = sum c y
                new = _solve(index, c, fixed, weights=w, base=gram, diag=ones,
                             row_scale=lam[side], failed=failed)
            _check_solved(name, failed, (new,), where, hint, lambda: restore(model, before))
            if side == "users":
                X = new
            else:
                Y = new
        with torch.no_grad():
            model.user_factors.copy_(X)
            model.item_factors.copy_(Y)
        history.epoch_seconds.append(time.perf_counter() - start)
        if track_loss:
            loss = wals_loss(model, train, reg=reg, alpha=alpha, reg_exponent=reg_exponent)
            check_finite_loss(name, loss, where)
            history.train_rmse.append(loss)
        if callback is not None:
            callback(epoch, history)
    return history


def bpr_loss(model: MatrixFactorization, users: Tensor, positives: Tensor, negatives: Tensor,
             *, reg: float = 0.01) -> Tensor:
    r"""Mean BPR loss of a batch of triples (differentiable; autograd gives its gradient).

    .. math::
        \frac1B \sum_{(u,i,j)} -\ln\sigma(\hat x_{ui} - \hat x_{uj})
        + \tfrac{\lambda}{2}\big(\|p_u\|^2 + \|q_i\|^2 + \|q_j\|^2 + b_i^2 + b_j^2\big),

    :math:`\hat x_{ui} = p_u^\top q_i + b_i` (no :math:`b_i` without item biases; user
    biases and :math:`\mu` cancel in the difference).
    """
    p = F.embedding(users, model.user_factors)
    q_i = F.embedding(positives, model.item_factors)
    q_j = F.embedding(negatives, model.item_factors)
    # x_ui - x_uj = p_u^T (q_i - q_j) + b_i - b_j
    diff = (p * (q_i - q_j)).sum(1)
    penalty = p.pow(2).sum(1) + q_i.pow(2).sum(1) + q_j.pow(2).sum(1)
    if model.item_bias is not None:
        b_i, b_j = model.item_bias[positives], model.item_bias[negatives]
        diff = diff + b_i - b_j
        penalty = penalty + b_i.pow(2) + b_j.pow(2)
    return (-F.logsigmoid(diff) + 0.5 * reg * penalty).mean()


@torch.no_grad()
def bpr_backward(model: MatrixFactorization, users: Tensor, positives: Tensor,
                 negatives: Tensor, *, reg: float = 0.01) -> Tensor:
    r"""Write the gradient of ``B * bpr_loss(...)`` (the batch *sum*) into the ``.grad`` fields.

    Note [BPR gradient]: with :math:`d = \hat x_{ui} - \hat x_{uj}` and
    :math:`g = \partial(-\ln\sigma(d))/\partial d = -\sigma(-d)`, per triple

    .. math::
        \nabla_{p_u} = g (q_i - q_j) + \lambda p_u, \quad
        \nabla_{q_i} = g\, p_u + \lambda q_i, \quad
        \nabla_{q_j} = -g\, p_u + \lambda q_j, \quad
        \nabla_{b_i} = g + \lambda b_i, \quad \nabla_{b_j} = -g + \lambda b_j,

    summed over the batch by ``index_add_`` (no autograd graph; the tests compare it with
    autograd's gradient of :func:`bpr_loss`). Parameters outside the BPR model (user biases)
    get no gradient. Returns the batch's summed data term :math:`\sum -\ln\sigma(d)` (0-d,
    no sync; the penalty is left out of the returned value, not of the gradient).
    """
    P, Q = model.user_factors, model.item_factors
    for t in (P, Q, model.item_bias):
        if t is not None:
            if t.grad is None:
                t.grad = torch.zeros_like(t)
            else:
                t.grad.zero_()
    p = P.index_select(0, users)
    q_i, q_j = Q.index_select(0, positives), Q.index_select(0, negatives)
    diff = q_i - q_j
    d = (p * diff).sum(1)
    if model.item_bias is not None:
        b_i, b_j = model.item_bias[positives], model.item_bias[negatives]
        d += b_i - b_j
    # g = -sigma(-d)
    g = torch.sigmoid(d.neg()).neg_()
    loss = -F.logsigmoid(d).sum()
    G = g.unsqueeze(1)
    P.grad.index_add_(0, users, diff.mul_(G).add_(p, alpha=reg))
    gp = p.mul_(G)  # p is not needed after this
    Q.grad.index_add_(0, positives, q_i.mul_(reg).add_(gp))
    Q.grad.index_add_(0, negatives, q_j.mul_(reg).sub_(gp))
    if model.item_bias is not None:
        model.item_bias.grad.index_add_(0, positives, g + reg * b_i)
        model.item_bias.grad.index_add_(0, negatives, reg * b_j - g)
    return loss


#: Largest n_users * n_items for the dense table of interactions behind the negative draws
#: (one byte each); past it the draws are checked by binary search in the sorted keys.
DENSE_SEEN_MAX = 1 << 28


def _seen_table(users: Tensor, items: Tensor, n_users: int, n_items: int) -> Tensor:
    """The sorted ``user * n_items + item`` keys, or a dense ``(n_users * n_items,)`` bool table
    of them when it fits in :data:`DENSE_SEEN_MAX` bytes (Note [negative draws])."""
    keys = users * n_items + items
    if n_users * n_items <= DENSE_SEEN_MAX:
        table = torch.zeros(n_users * n_items, dtype=torch.bool, device=users.device)
        table[keys] = True
        return table
    return torch.unique(keys)


def _negatives(users: Tensor, seen: Tensor, n_items: int, generator: torch.Generator,
               rounds: int = 8) -> Tensor:
    """One item per user, uniform among the items the user has no interaction with.

    Redraws the draws that hit an interaction (``seen``: from :func:`_seen_table`) up to
    ``rounds`` times; a user who interacted with almost every item may keep a hit.

    Note [negative draws]: a hit is found by one gather in a dense bool table of the
    interactions when ``n_users * n_items`` allows (:data:`DENSE_SEEN_MAX`), else by binary
    search in the sorted keys; the draws are the same either way (same generator calls).
    """
    dev = users.device
    neg = torch.randint(0, n_items, users.shape, generator=generator, device=dev)
    todo = torch.arange(users.shape[0], device=dev)
    dense = seen.dtype == torch.bool
    for _ in range(rounds):
        query = users[todo] * n_items + neg[todo]
        if dense:
            hit = seen[query]
        else:
            pos = torch.searchsorted(seen, query).clamp(max=seen.shape[0] - 1)
            hit = seen[pos] == query
        todo = todo[hit]                          # draws that hit an interaction
        if not todo.shape[0]:
            break
        neg[todo] = torch.randint(0, n_items, todo.shape, generator=generator, device=dev)
    return neg


def fit_bpr(
    model: MatrixFactorization,
    train: Ratings,
    *,
    epochs: int = 30,
    batch_size: int = 4096,
    lr: float = 0.01,
    reg: float = 0.01,
    optimizer: str = "adam",
    seed: int = 0,
    callback: Callable[[int, FitHistory], None] | None = None,
) -> FitHistory:
    r"""Fit ``model`` to implicit feedback by BPR; trains ``model`` in place.

    One epoch draws, for every training interaction :math:`(u, i)` in shuffled order, one
    negative :math:`j` uniformly among the items :math:`u` has no interaction with, and
    takes one optimiser step (``"adam"``, ``"adagrad"`` or ``"sgd"``, learning rate ``lr``)
    per batch of ``batch_size`` triples on the batch's summed :func:`bpr_loss`, with the
    hand-written gradient :func:`bpr_backward`. Item biases are learned when the model
    has them (``biased=True``; its user biases are not used and stay zero). Sets the
    model's interactions to ``train``'s pairs (what ``recommend`` leaves out).

    Raises:
        ConvergenceError: the loss became non-finite (names the epoch and ``lr``; the
            model is left as it was).

    Examples::

        >>> from lamods.recsys import synthetic_interactions, leave_last_out, ranking_metrics
        >>> data = synthetic_interactions(200, 150, 3000, 4, seed=0)
        >>> train, test = leave_last_out(data)
        >>> model = MatrixFactorization(200, 150, 8, init_std=0.01)
        >>> _ = fit_bpr(model, train, epochs=30, batch_size=256, lr=0.02, reg=1e-3)
        >>> ranking_metrics(model, test, k=10, threshold=None)["recall@10"] > 0.25
        True
    """
    name = "fit_bpr"
    _check_model(name, model, biased_ok=True)
    epochs = check_positive_int(name, "epochs", epochs)
    batch_size = check_positive_int(name, "batch_size", batch_size)
    lr = check_positive(name, "lr", lr)
    reg = check_nonnegative(name, "reg", reg)
    check_choice(name, "optimizer", optimizer, ("adam", "adagrad", "sgd"))
    before = snapshot(model)
    users, items, _ = _prepare(name, model, train)
    seen = _seen_table(users, items, model.n_users, model.n_items)
    params = [model.user_factors, model.item_factors]
    if model.item_bias is not None:
        params.append(model.item_bias)
    if optimizer == "adam":
        # the fused kernel (CPU and CUDA) is much faster than the per-tensor loop
        opt = torch.optim.Adam(params, lr=lr, fused=True)
    else:
        opt = {"adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}[optimizer](params, lr=lr)
    gen = make_generator(name, seed, device=users.device)
    history = FitHistory()
    n = users.shape[0]
    for epoch in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(n, generator=gen, device=users.device)
        u_all = users[perm]
        i_all = items[perm]
        j_all = _negatives(u_all, seen, model.n_items, gen)
        total = torch.zeros((), device=users.device, dtype=model.user_factors.dtype)
        for s in range(0, n, batch_size):
            e = min(s + batch_size, n)
            total += bpr_backward(model, u_all[s:e], i_all[s:e], j_all[s:e], reg=reg)
            opt.step()
        value = float(total) / n
        if not math.isfinite(value) or bool(
                sum(count_nonfinite(p.detach()) for p in params)):
            restore(model, before)
            value = math.nan
        check_finite_loss(name, value, f"epoch {epoch + 1} (lr={lr:g}, "
                          f"optimizer={optimizer!r})",
                          "lower lr; the model is left as it was before fit")
        history.train_rmse.append(value)   # the epoch's mean -ln sigma(x_ui - x_uj)
        history.epoch_seconds.append(time.perf_counter() - start)
        if callback is not None:
            callback(epoch, history)
    return history
