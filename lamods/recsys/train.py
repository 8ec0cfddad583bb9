r"""Mini-batch gradient training of :class:`~lamods.recsys.MatrixFactorization` in plain torch.

Each step draws a shuffled batch :math:`B` of training ratings and descends on

.. math::
    \frac{1}{|B|}\sum_{(u,i)\in B} \ell_{ui}

(:meth:`MatrixFactorization.loss`, Surprise's per-example objective). Large
batches keep the step count small; Adam makes the step size insensitive to
the batch size. ``optimizer="sparse_adam"`` (with ``sparse=True`` on the
model) updates only the rows a batch touches, which pays when a batch touches
a small part of large tables (millions of users or items); on MovieLens-100K
a batch touches nearly every row and dense Adam is as fast (see the benchmark).

Note [hand-written gradient]: for a model without the implicit term, the gradient of
the batch-mean loss has a closed form (:func:`mf_backward`): with
:math:`e_n = \hat r_{u_n i_n} - r_n` over a batch of :math:`B` ratings,

.. math::
    \frac{\partial \ell}{\partial p_u} = \frac1B \sum_{n: u_n = u} (e_n q_{i_n} + \lambda p_u),
    \qquad
    \frac{\partial \ell}{\partial b_u} = \frac1B \sum_{n: u_n = u} (e_n + \lambda_b b_u),

and the same for :math:`q_i`, :math:`b_i` with the roles swapped. It is one gather of the
rows a batch touches, a few elementwise ops and one ``index_add_`` per table, against
autograd's recorded graph and ``embedding`` backward; ``backward="auto"`` uses it
wherever it applies (the result is the same up to rounding, checked against autograd in
float64 by the tests).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lamods._random import make_generator
from lamods._validation import (
    check_choice,
    check_finite,
    check_finite_loss,
    check_nonnegative,
    check_positive,
    check_positive_int,
    count_nonfinite,
)
from lamods.recsys.metrics import evaluate
from lamods.recsys.mf import MatrixFactorization
from lamods.recsys.movielens import Ratings

__all__ = ["FitHistory", "fit_sgd", "mf_backward", "prepare", "restore", "snapshot"]

_OPTIMIZERS = ("adam", "sparse_adam", "adagrad", "sgd")
_BACKWARDS = ("auto", "manual", "autograd")


@dataclass
class FitHistory:
    """Per-epoch record of a fit: RMSE on train / validation data (when asked) and seconds."""

    train_rmse: list[float] = field(default_factory=list)
    val_rmse: list[float] = field(default_factory=list)
    val_mae: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)


class _Both:
    """Two optimisers stepped together (SparseAdam cannot take the dense-gradient biases)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()


def snapshot(model: torch.nn.Module) -> dict:
    """A copy of ``model``'s state (and rating scale), to put back with :func:`restore`."""
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "rating_range": getattr(model, "rating_range", None)}


def restore(model: torch.nn.Module, saved: dict) -> None:
    """Put back a :func:`snapshot` (a failed fit leaves the model as it was)."""
    model.load_state_dict(saved["state"])
    if hasattr(model, "rating_range"):
        model.rating_range = saved["rating_range"]


def prepare(model: MatrixFactorization, train: Ratings,
            name: str = "fit") -> tuple[torch.Tensor, ...]:
    """Check ``train`` against ``model``, set mu and N(u); return its tensors on the device.

    Non-finite ratings are refused here, before anything changes (Ratings checks them when
    built; this catches a tensor changed in place since).
    """
    if not isinstance(train, Ratings):
        raise TypeError(f"{name}: expected train as a Ratings, got {type(train).__name__}")
    if (train.n_users, train.n_items) != (model.n_users, model.n_items):
        raise ValueError(f"{name}: expected ratings over {model.n_users} users and "
                         f"{model.n_items} items (the model's), got {train.n_users} users and "
                         f"{train.n_items} items")
    if len(train) == 0:
        raise ValueError(f"{name}: expected at least one training rating, got none")
    check_finite(name, train.ratings, "ratings tensor")
    dev, dtype = model.user_factors.device, model.user_factors.dtype
    users, items = train.users.to(dev), train.items.to(dev)
    ratings = train.ratings.to(dev, dtype)
    with torch.no_grad():
        model.global_mean.fill_(train.global_mean)
    model.set_interactions(users, items)
    if model.rating_range is None:
        model.rating_range = train.rating_range
    return users, items, ratings


@torch.no_grad()
def mf_backward(
    model: MatrixFactorization,
    user_ids: torch.Tensor,
    item_ids: torch.Tensor,
    ratings: torch.Tensor,
    *,
    reg: float = 0.02,
    reg_bias: float | None = None,
) -> torch.Tensor:
    r"""Write the gradient of ``model.loss(..., reduction="mean")`` into the parameters' ``.grad``.

    The hand-written gradient of Note [hand-written gradient] (module docstring), for a model
    without the implicit term; ``.grad`` is replaced (allocated if ``None``), as
    ``zero_grad(); loss.backward()`` would leave it. ``user_ids``, ``item_ids``,
    ``ratings``: ``(B,)`` on the model's device, ratings in its dtype.

    Returns the batch's squared error :math:`\sum_n e_n^2` (a 0-d tensor, no sync), which
    :func:`fit_sgd` sums to watch for divergence.
    """
    if model.implicit:
        raise ValueError("mf_backward: expected a model without the implicit term "
                         "(implicit=False), got implicit=True; use loss().backward()")
    reg_bias = reg if reg_bias is None else reg_bias
    P, Q = model.user_factors, model.item_factors
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        else:
            p.grad.zero_()
    p_u, q_i = P.index_select(0, user_ids), Q.index_select(0, item_ids)
    scale = 1.0 / user_ids.shape[0]
    # e_n / B = (mu + b_u + b_i + q_i^T p_u - r_n) / B
    err = (p_u * q_i).sum(1).add_(model.global_mean).sub_(ratings)
    if model.user_bias is not None:
        b_u = model.user_bias.index_select(0, user_ids)
        b_i = model.item_bias.index_select(0, item_ids)
        err.add_(b_u).add_(b_i)
    sse = err.pow(2).sum()
    err.mul_(scale)
    e = err.unsqueeze(1)
    # d/dp_u = 1/B sum_n (e_n q_i + lambda p_u); d/dq_i = 1/B sum_n (e_n p_u + lambda q_i)
    P.grad.index_add_(0, user_ids, (q_i * e).add_(p_u, alpha=reg * scale))
    Q.grad.index_add_(0, item_ids, (p_u * e).add_(q_i, alpha=reg * scale))
    if model.user_bias is not None:
        # d/db_u = 1/B sum_n (e_n + lambda_b b_u), the same for b_i
        model.user_bias.grad.index_add_(0, user_ids, b_u.mul_(reg_bias * scale).add_(err))
        model.item_bias.grad.index_add_(0, item_ids, b_i.mul_(reg_bias * scale).add_(err))
    return sse


def _check_diverged(model: torch.nn.Module, before: dict, name: str, loss: float, epoch: int,
                    step: str, hint: str) -> None:
    """Note [divergence]: after every epoch, the summed loss and the parameters must be finite.

    One synchronisation per epoch (the loss is summed on the device as the epoch runs). On
    failure the model gets its state from before the fit back and
    :class:`~lamods.ConvergenceError` names the epoch and the step size.
    """
    bad = sum(count_nonfinite(p.detach()) for p in model.parameters())
    if bad and math.isfinite(loss):
        loss = math.nan  # the last step made the parameters non-finite
    if not math.isfinite(loss):
        restore(model, before)
    check_finite_loss(name, loss, f"epoch {epoch + 1} {step}", hint)


def _record(history: FitHistory, model, train, val, track_train, seconds) -> None:
    history.epoch_seconds.append(seconds)
    if track_train:
        history.train_rmse.append(evaluate(model, train)["rmse"])
    if val is not None:
        metrics = evaluate(model, val)
        history.val_rmse.append(metrics["rmse"])
        history.val_mae.append(metrics["mae"])


def fit_sgd(
    model: MatrixFactorization,
    train: Ratings,
    *,
    epochs: int = 20,
    batch_size: int = 8192,
    lr: float = 0.01,
    reg: float = 0.05,
    reg_bias: float | None = None,
    optimizer: str = "adam",
    lr_decay: float = 1.0,
    backward: str = "auto",
    val: Ratings | None = None,
    track_train: bool = False,
    seed: int = 0,
    callback: Callable[[int, FitHistory], None] | None = None,
) -> FitHistory:
    r"""Fit ``model`` to ``train`` by mini-batch gradient descent on the per-example loss.

    Sets :math:`\mu` to the training mean and :math:`N(u)` to the training
    interactions first, and zeroes the factors and biases of users and items
    without a training rating at the end (they get the baseline prediction).

    Args:
        model: the model to train in place (any device and dtype).
        train: training ratings over the model's users and items.
        epochs: passes over the training data.
        batch_size: ratings per step.
        lr: learning rate of the optimiser.
        reg: :math:`\lambda`, L2 weight of the factors per example.
        reg_bias: :math:`\lambda_b`, L2 weight of the biases (default ``reg``).
        optimizer: ``"adam"``, ``"sparse_adam"`` (needs ``model.sparse``),
            ``"adagrad"`` or ``"sgd"``.
        lr_decay: learning rate multiplied by this after every epoch.
        backward: ``"manual"``: the hand-written gradient (:func:`mf_backward`; models
            without the implicit term, dense optimisers), ``"autograd"``:
            ``loss.backward()``, ``"auto"``: manual wherever it applies.
        val: ratings to report RMSE/MAE on after every epoch (clipped predictions).
        track_train: also report the training RMSE after every epoch.
        seed: seed of the shuffling.
        callback: called as ``callback(epoch, history)`` after every epoch.

    Returns:
        :class:`FitHistory` with one entry per epoch.

    Examples::

        >>> from lamods.recsys import synthetic_ratings, random_split
        >>> syn = synthetic_ratings(60, 50, 2, density=0.5, noise=0.1, seed=0)
        >>> train, val = random_split(syn.data, (0.9, 0.1), seed=0)
        >>> model = MatrixFactorization(60, 50, 2)
        >>> hist = fit_sgd(model, train, epochs=40, batch_size=512, lr=0.05, reg=1e-3,
        ...                val=val)
        >>> hist.val_rmse[-1] < 0.2
        True
    """
    name = "fit_sgd"
    epochs = check_positive_int(name, "epochs", epochs)
    batch_size = check_positive_int(name, "batch_size", batch_size)
    lr = check_positive(name, "lr", lr)
    reg = check_nonnegative(name, "reg", reg)
    reg_bias = reg if reg_bias is None else check_nonnegative(name, "reg_bias", reg_bias)
    check_choice(name, "optimizer", optimizer, _OPTIMIZERS)
    check_choice(name, "backward", backward, _BACKWARDS)
    manual_ok = not model.implicit and optimizer != "sparse_adam"
    if backward == "manual" and not manual_ok:
        raise ValueError(f"{name}: expected implicit=False and a dense optimizer for "
                         f"backward='manual', got implicit={model.implicit}, "
                         f"optimizer={optimizer!r}")
    manual = manual_ok and backward != "autograd"
    if optimizer == "sparse_adam" and not model.sparse:
        raise ValueError(f"{name}: expected a model built with sparse=True for "
                         "optimizer='sparse_adam', got sparse=False")
    before = snapshot(model)
    users, items, ratings = prepare(model, train, name)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif optimizer == "sparse_adam":
        # SparseAdam for the factor tables (sparse gradients), Adam for the bias vectors
        opt = _Both(torch.optim.SparseAdam([p for p in params if p.dim() == 2], lr=lr),
                    torch.optim.Adam([p for p in params if p.dim() == 1] or
                                     [torch.zeros(1, requires_grad=True)], lr=lr))
    elif optimizer == "adagrad":
        opt = torch.optim.Adagrad(params, lr=lr)
    else:
        opt = torch.optim.SGD(params, lr=lr)
    schedulers = [torch.optim.lr_scheduler.ExponentialLR(o, gamma=lr_decay)
                  for o in (opt.optimizers if isinstance(opt, _Both) else [opt])]
    gen = make_generator("fit_sgd", seed, device=users.device)
    history = FitHistory()
    n = users.shape[0]
    was_training = model.training
    model.train()
    for epoch in range(epochs):
        start = time.perf_counter()
        lr_now = [g["lr"] for o in schedulers for g in o.optimizer.param_groups][0]
        perm = torch.randperm(n, generator=gen, device=users.device)
        total = torch.zeros((), device=users.device, dtype=ratings.dtype)
        for s in range(0, n, batch_size):
            b = perm[s:s + batch_size]
            u, i, r = users.index_select(0, b), items.index_select(0, b), ratings.index_select(0, b)
            if manual:
                total += mf_backward(model, u, i, r, reg=reg, reg_bias=reg_bias)
            else:
                loss = model.loss(u, i, r, reg=reg, reg_bias=reg_bias)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                total += loss.detach()
            opt.step()
        for sched in schedulers:
            sched.step()
        _check_diverged(model, before, name, float(total), epoch,
                        f"(lr={lr_now:g}, optimizer={optimizer!r})",
                        "lower lr (or raise reg); the model is left as it was before fit")
        seconds = time.perf_counter() - start
        if val is not None or track_train:
            model.zero_unseen(users, items)
        _record(history, model, train, val, track_train, seconds)
        if callback is not None:
            callback(epoch, history)
    model.zero_unseen(users, items)
    model.train(was_training)
    return history
