r"""Train/test splits of a :class:`~lamods.recsys.Ratings` set.

Every split keeps the full user and item index space, so a user or item can
appear in the test part and not in the training part (a *cold* user or item).
The fitting functions (:func:`~lamods.recsys.fit_sgd`, :func:`~lamods.recsys.fit_als`,
:func:`~lamods.recsys.fit_gibbs`) set the factors and bias of every user and item
without a training rating to zero, so such a pair gets the baseline prediction:

.. math::
    \hat r_{ui} = \mu + b_i \ (\text{user unseen}), \quad
    \mu + b_u \ (\text{item unseen}), \quad \mu \ (\text{both unseen}),

the same rule as Surprise's ``SVD`` for unknown users and items.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamods._random import make_generator
from lamods.recsys.movielens import Ratings

__all__ = ["kfold", "kfold_indices", "leave_last_out", "random_split"]


def _perm(n: int, seed: int) -> Tensor:
    return torch.randperm(n, generator=make_generator("split", seed))


def random_split(data: Ratings, ratios=(0.8, 0.2), *, seed: int = 0) -> list[Ratings]:
    """Shuffle the ratings and cut them into parts of the given ``ratios`` (holdout).

    ``ratios`` are normalised to sum 1; part sizes are rounded down except the last,
    which takes the rest.

    Examples::

        >>> data = Ratings(torch.arange(10) % 3, torch.arange(10) % 4, torch.ones(10))
        >>> [len(p) for p in random_split(data, (0.8, 0.2), seed=0)]
        [8, 2]
    """
    ratios = [float(r) for r in ratios]
    if len(ratios) < 2 or min(ratios) <= 0:
        raise ValueError(f"random_split: expected at least two positive ratios, got {ratios}")
    n = len(data)
    perm = _perm(n, seed).to(data.users.device)
    total = sum(ratios)
    cuts, acc = [0], 0.0
    for r in ratios[:-1]:
        acc += r / total
        cuts.append(int(acc * n))
    cuts.append(n)
    return [data.subset(perm[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


def kfold_indices(n: int, k: int = 5, *, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """``k`` pairs ``(train_index, test_index)`` of a shuffled k-fold over ``n`` ratings.

    The ratings are shuffled once with ``seed`` and cut into ``k`` folds whose
    sizes differ by at most one; fold ``f`` is the test part of pair ``f``. Every
    index is in exactly one test part, and each train part is the complement of
    its test part. Feed the same indices to another library to compare on
    identical folds.

    Examples::

        >>> folds = kfold_indices(10, 3, seed=0)
        >>> [len(test) for _, test in folds]
        [4, 3, 3]
        >>> torch.cat([test for _, test in folds]).sort().values.tolist() == list(range(10))
        True
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2 or k > n:
        raise ValueError(f"kfold: expected k to be an int in [2, {n}] (the number of "
                         f"ratings), got {k!r}")
    perm = _perm(n, seed)
    sizes = [n // k + (1 if f < n % k else 0) for f in range(k)]
    out, start = [], 0
    for size in sizes:
        test = perm[start:start + size]
        train = torch.cat([perm[:start], perm[start + size:]])
        out.append((train, test))
        start += size
    return out


def kfold(data: Ratings, k: int = 5, *, seed: int = 0) -> list[tuple[Ratings, Ratings]]:
    """``k`` pairs ``(train, test)`` of :class:`Ratings`, from :func:`kfold_indices`."""
    dev = data.users.device
    return [(data.subset(tr.to(dev)), data.subset(te.to(dev)))
            for tr, te in kfold_indices(len(data), k, seed=seed)]


def leave_last_out(data: Ratings, n: int = 1) -> tuple[Ratings, Ratings]:
    """Per user, the ``n`` latest ratings (by timestamp) form the test part.

    Ties in time are broken by position in ``data`` (later counts as latest).
    A user with ``n`` ratings or fewer keeps them all in the training part, so
    every test user has training history.

    Examples::

        >>> data = Ratings(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 2, 0]),
        ...                torch.ones(4), torch.tensor([30, 10, 20, 5]))
        >>> train, test = leave_last_out(data)
        >>> test.items.tolist(), train.items.tolist()
        ([0], [1, 2, 0])
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"leave_last_out: expected n to be a positive int, got {n!r}")
    m = len(data)
    pos = torch.arange(m, device=data.users.device)
    # sort by (user, time, position): position breaks ties, then stable sorts keep it
    order = torch.argsort(data.timestamps[pos], stable=True)
    order = order[torch.argsort(data.users[order], stable=True)]
    counts = torch.bincount(data.users, minlength=data.n_users)
    start = torch.cumsum(counts, 0) - counts
    users_sorted = data.users[order]
    rank_from_end = (start[users_sorted] + counts[users_sorted]) - torch.arange(
        m, device=pos.device) - 1  # 0 = latest
    is_test_sorted = (rank_from_end < n) & (counts[users_sorted] > n)
    is_test = torch.zeros(m, dtype=torch.bool, device=pos.device)
    is_test[order] = is_test_sorted
    return data.subset(~is_test), data.subset(is_test)
