r"""Alternating least squares sharded over processes with ``torch.distributed``.

Each ALS half-step is a set of independent ridge problems, one per row (module
docstring of :mod:`lamods.recsys.als`), so rows can be solved anywhere. With
:math:`W` processes, rank :math:`w` owns the contiguous user block
:math:`U_w = [\lfloor wN_U/W \rfloor, \lfloor (w+1)N_U/W \rfloor)` and the item block
:math:`I_w` alike. An epoch is:

1. every rank solves :math:`[p_u; b_u]` for :math:`u \in U_w` from its users' ratings and the
   (replicated) item factors;
2. ``all_gather`` gives every rank all user factors;
3. every rank solves :math:`[q_i; b_i]` for :math:`i \in I_w`, and ``all_gather`` again.

The model every rank ends with is the one :func:`~lamods.recsys.fit_als` computes in one
process (same objective, same order of updates; the tests check it with two gloo
processes). Each rank indexes only its own blocks' ratings, so the per-rank memory of the
normal equations falls as :math:`1/W`; the factor tables are replicated
(:math:`(N_U + N_I)(k+1)` floats, 14M for ML-25M at :math:`k = 64`).

Note [sharded ALS communication]: per epoch two ``all_gather`` calls of
:math:`(N_U + N_I)(k + 1)` floats in all; blocks are padded to the largest so every rank
sends one tensor of one shape (gloo and NCCL both need that).
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
from torch import Tensor

from lamods._distributed import is_distributed
from lamods._validation import check_nonnegative, check_positive_int
from lamods.recsys._rows import RowIndex
from lamods.recsys.als import _check_solved, _solve, _work_dtype
from lamods.recsys.mf import MatrixFactorization
from lamods.recsys.movielens import Ratings
from lamods.recsys.train import FitHistory, prepare, restore, snapshot

__all__ = ["fit_als_sharded", "shard_range"]


def shard_range(n: int, rank: int, world: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` rank ``rank`` of ``world`` owns: ``floor(r n / W)`` bounds.

    Examples::

        >>> [shard_range(10, r, 3) for r in range(3)]
        [(0, 3), (3, 6), (6, 10)]
    """
    return rank * n // world, (rank + 1) * n // world


class _Block:
    """The ratings of one rank's block of rows, indexed from 0 within the block."""

    def __init__(self, rows: Tensor, cols: Tensor, start: int, stop: int, n_cols: int) -> None:
        self.start, self.stop = start, stop
        self.entries = torch.nonzero((rows >= start) & (rows < stop)).squeeze(1)
        self.cols = cols[self.entries]
        self.index = RowIndex(rows[self.entries] - start, self.cols, stop - start, n_cols)


def _gather_rows(local: Tensor, n_rows: int, world: int, group) -> Tensor:
    """All ranks' blocks of rows concatenated in rank order: ``(n_rows, d)`` on every rank."""
    size = max(shard_range(n_rows, r, world)[1] - shard_range(n_rows, r, world)[0]
               for r in range(world))
    padded = local.new_zeros(size, local.shape[1])
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([parts[r][: shard_range(n_rows, r, world)[1]
                               - shard_range(n_rows, r, world)[0]] for r in range(world)])


def fit_als_sharded(
    model: MatrixFactorization,
    train: Ratings,
    *,
    epochs: int = 15,
    reg: float = 0.1,
    reg_bias: float | None = None,
    weighted: bool = True,
    group: dist.ProcessGroup | None = None,
) -> FitHistory:
    r""":func:`~lamods.recsys.fit_als`, with the rows of each half-step split over processes.

    Call it on every rank of an initialised process group (``torch.distributed``, any
    backend whose ``all_gather`` takes the model's device: gloo on CPU, NCCL on CUDA),
    each with the same ``train`` and the same starting ``model`` (build it after seeding
    alike, or broadcast its state). Every rank returns with the full fitted model, equal
    to what :func:`~lamods.recsys.fit_als` gives in one process (module docstring). Without
    an initialised process group it runs as one process.

    Args:
        model, train, epochs, reg, reg_bias, weighted: as in :func:`~lamods.recsys.fit_als`.
        group: the process group (default: the world).

    Returns:
        :class:`FitHistory` with the seconds of each epoch on this rank.
    """
    name = "fit_als_sharded"
    if model.implicit:
        raise ValueError(f"{name}: expected a model with implicit=False, got implicit=True")
    epochs = check_positive_int(name, "epochs", epochs)
    reg = check_nonnegative(name, "reg", reg)
    reg_bias = reg if reg_bias is None else check_nonnegative(name, "reg_bias", reg_bias)
    distributed = is_distributed()
    world = dist.get_world_size(group) if distributed else 1
    rank = dist.get_rank(group) if distributed else 0
    before = snapshot(model)
    users, items, ratings = prepare(model, train, name)
    dt = _work_dtype(model)
    ratings = ratings.to(dt)
    k, biased = model.n_factors, model.biased
    diag = torch.tensor([reg] * k + ([reg_bias] if biased else []), dtype=dt,
                        device=users.device)
    user_block = _Block(users, items, *shard_range(model.n_users, rank, world), model.n_items)
    item_block = _Block(items, users, *shard_range(model.n_items, rank, world), model.n_users)
    mu = model.global_mean.to(dt)
    q = model.item_factors.detach().to(dt)
    b_i = model.item_bias.detach().to(dt) if biased else q.new_zeros(model.n_items)
    hint = ("use reg > 0 (and reg_bias > 0), or give every user and item at least as many "
            "ratings as factors")
    history = FitHistory()

    def half(block: _Block, targets: Tensor, feats: Tensor, n_rows: int, where: str) -> Tensor:
        failed: list[Tensor] = []
        local = _solve(block.index, targets[block.entries], feats, diag=diag,
                       weighted=weighted, bias=biased, failed=failed)
        error: Exception | None = None
        try:
            _check_solved(name, failed, (local,), where, hint, lambda: restore(model, before))
        except (ValueError, RuntimeError) as err:
            error = err
        if world > 1:
            # every rank learns whether any rank failed, so none waits in all_gather forever
            flag = torch.tensor([0 if error is None else 1], device=local.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
            if int(flag) and error is None:
                restore(model, before)
                error = RuntimeError(f"{name}: expected every rank to solve its rows, got a "
                                     f"failure on another rank at {where}; see its error")
        if error is not None:
            raise error
        return _gather_rows(local, n_rows, world, group) if world > 1 else local

    for epoch in range(epochs):
        start = time.perf_counter()
        where = f"epoch {epoch + 1} on rank {rank} (reg={reg}, reg_bias={reg_bias})"
        # users: t_ui = r_ui - mu - b_i
        sol_u = half(user_block, ratings - mu - b_i[items], q, model.n_users, where)
        p, b_u = (sol_u[:, :k], sol_u[:, k]) if biased else (sol_u, q.new_zeros(model.n_users))
        # items: t_ui = r_ui - mu - b_u
        sol_i = half(item_block, ratings - mu - b_u[users], p, model.n_items, where)
        q, b_i = (sol_i[:, :k], sol_i[:, k]) if biased else (sol_i, q.new_zeros(model.n_items))
        with torch.no_grad():
            model.user_factors.copy_(p)
            model.item_factors.copy_(q)
            if biased:
                model.user_bias.copy_(b_u)
                model.item_bias.copy_(b_i)
        history.epoch_seconds.append(time.perf_counter() - start)
    model.zero_unseen(users, items)
    return history
