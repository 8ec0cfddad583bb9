r"""Synthetic low-rank ratings with Gaussian noise, for tests and examples (no data file).

.. math::
    r_{ui} = \mu + b_u + b_i + p_u^\top q_i + \varepsilon_{ui}, \qquad
    p_u, q_i \sim \mathcal N(0, I_k / \sqrt{k}),\ \varepsilon_{ui} \sim \mathcal N(0, \sigma^2),

observed at a random subset of the pairs (each pair with probability ``density``).
A model of rank ``k`` fitted to enough of them predicts held-out ratings with
RMSE close to the noise level :math:`\sigma`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lamods._random import make_generator
from lamods.recsys.movielens import Ratings

__all__ = ["SyntheticRatings", "planted_ratings", "synthetic_interactions", "synthetic_ratings"]


class SyntheticRatings(NamedTuple):
    """The observed ratings and the truth that generated them."""

    data: Ratings
    clean: Tensor          # (N,) noise-free ratings at the observed pairs
    user_factors: Tensor   # (n_users, rank)
    item_factors: Tensor   # (n_items, rank)
    user_bias: Tensor      # (n_users,)
    item_bias: Tensor      # (n_items,)
    mean: float


def synthetic_ratings(
    n_users: int,
    n_items: int,
    rank: int,
    *,
    density: float = 0.1,
    noise: float = 0.1,
    mean: float = 3.0,
    bias_std: float = 0.3,
    seed: int = 0,
) -> SyntheticRatings:
    r"""Ratings :math:`\mu + b_u + b_i + p_u^\top q_i + \varepsilon` at random pairs.

    Args:
        n_users, n_items: sizes of the index spaces.
        rank: :math:`k`, the rank of the interaction term.
        density: probability that a pair is observed.
        noise: :math:`\sigma`, the standard deviation of the noise.
        mean: :math:`\mu`.
        bias_std: standard deviation of :math:`b_u` and :math:`b_i` (0: unbiased).
        seed: seed of the generator (same seed, same data).

    Examples::

        >>> syn = synthetic_ratings(50, 40, 3, density=0.5, noise=0.1, seed=0)
        >>> syn.data.n_users, syn.data.n_items, round(len(syn.data) / (50 * 40), 1)
        (50, 40, 0.5)
        >>> float((syn.data.ratings - syn.clean).std()) < 0.12
        True
    """
    if not 0 < density <= 1:
        raise ValueError(f"synthetic_ratings: expected density in (0, 1], got {density!r}")
    g = make_generator("synthetic_ratings", seed)
    p = torch.randn(n_users, rank, generator=g) / rank ** 0.25
    q = torch.randn(n_items, rank, generator=g) / rank ** 0.25
    bu = torch.randn(n_users, generator=g) * bias_std
    bi = torch.randn(n_items, generator=g) * bias_std
    mask = torch.rand(n_users, n_items, generator=g) < density
    users, items = mask.nonzero(as_tuple=True)
    # r_ui = mu + b_u + b_i + p_u^T q_i (+ noise)
    clean = mean + bu[users] + bi[items] + (p[users] * q[items]).sum(1)
    observed = clean + noise * torch.randn(clean.shape, generator=g)
    data = Ratings(users, items, observed, n_users=n_users, n_items=n_items)
    return SyntheticRatings(data, clean, p, q, bu, bi, mean)


def _factors(g: torch.Generator, n: int, rank: int) -> Tensor:
    return torch.randn(n, rank, generator=g) / rank ** 0.25


def synthetic_interactions(
    n_users: int,
    n_items: int,
    n_interactions: int,
    rank: int,
    *,
    temperature: float = 2.0,
    popularity: float = 1.0,
    seed: int = 0,
    block: int = 1024,
) -> Ratings:
    r"""Implicit feedback with a planted low-rank taste: who interacted with what, and when.

    User :math:`u` interacts with :math:`n_u` distinct items drawn without replacement with
    probabilities :math:`\propto \exp(\tau\, p_u^\top q_i + \gamma\, c_i)`, where
    :math:`p_u, q_i \sim \mathcal N(0, I_k/\sqrt k)` (the taste), :math:`c_i \sim
    \mathcal N(0, 1)` (item popularity, weight :math:`\gamma` = ``popularity``) and
    :math:`\tau` = ``temperature``. The :math:`n_u` follow a long tail (log-normal, at
    least 5 and at most ``n_items``) summing to about ``n_interactions``. Draws use the
    Gumbel-top-:math:`n_u` trick, ``block`` users at a time (memory
    :math:`O(\text{block} \times n_{items})`). Timestamps are a random order of each
    user's interactions, so :func:`~lamods.recsys.leave_last_out` holds out a random one.

    Returns a :class:`Ratings` of ones (the interaction strengths).

    Examples::

        >>> data = synthetic_interactions(100, 80, 1500, 3, seed=0)
        >>> data.n_users, data.n_items, abs(len(data) - 1500) < 150
        (100, 80, True)
    """
    name = "synthetic_interactions"
    for arg, v in (("n_users", n_users), ("n_items", n_items), ("rank", rank),
                   ("n_interactions", n_interactions), ("block", block)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected {arg} to be a positive int, got {v!r}")
    g = make_generator(name, seed)
    p, q = _factors(g, n_users, rank), _factors(g, n_items, rank)
    pop = torch.randn(n_items, generator=g)
    # long-tailed activity: log-normal, scaled to the requested total
    act = torch.exp(torch.randn(n_users, generator=g))
    counts = (act / act.sum() * n_interactions).round().long().clamp(min=min(5, n_items),
                                                                     max=n_items)
    users, items = [], []
    for a in range(0, n_users, block):
        e = min(a + block, n_users)
        logits = temperature * p[a:e] @ q.T + popularity * pop
        u01 = torch.rand(logits.shape, generator=g).clamp(min=1e-20)
        keys = logits - torch.log(-torch.log(u01))          # + Gumbel noise
        top = torch.topk(keys, int(counts[a:e].max()), dim=1).indices
        take = torch.arange(top.shape[1]).unsqueeze(0) < counts[a:e].unsqueeze(1)
        users.append(torch.arange(a, e).unsqueeze(1).expand_as(top)[take])
        items.append(top[take])
    users_t, items_t = torch.cat(users), torch.cat(items)
    times = torch.randperm(users_t.shape[0], generator=g)
    return Ratings(users_t, items_t, torch.ones(users_t.shape[0]), times, n_users=n_users,
                   n_items=n_items, rating_range=(1.0, 1.0))


def planted_ratings(
    n_users: int,
    n_items: int,
    n_ratings: int,
    rank: int,
    *,
    noise: float = 0.5,
    mean: float = 3.5,
    bias_std: float = 0.3,
    popularity: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> SyntheticRatings:
    r"""Explicit ratings at a sparse set of pairs, for data sets too large for a dense mask.

    :math:`r_{ui} = \mu + b_u + b_i + p_u^\top q_i + \varepsilon_{ui}` as
    :func:`synthetic_ratings`, at ``n_ratings`` distinct pairs: users drawn with
    log-normal activity, items with log-normal popularity (``popularity`` scales the
    log-spread), duplicates dropped and topped up until exactly ``n_ratings`` remain (so
    ML-25M's shape, 162,541 x 59,047 with 25,000,095 ratings, costs a few hundred MB, not
    a 9.6-billion-entry mask). Pairs come in random order; ``clean`` holds the noise-free
    values. Memory: about 40 bytes per rating while drawing.

    Examples::

        >>> syn = planted_ratings(1000, 500, 20000, 4, seed=0)
        >>> len(syn.data), syn.data.n_users, syn.data.n_items
        (20000, 1000, 500)
    """
    name = "planted_ratings"
    for arg, v in (("n_users", n_users), ("n_items", n_items), ("rank", rank),
                   ("n_ratings", n_ratings)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: expected {arg} to be a positive int, got {v!r}")
    if n_ratings > n_users * n_items:
        raise ValueError(f"{name}: expected n_ratings <= n_users * n_items "
                         f"({n_users * n_items}), got {n_ratings}")
    g = make_generator(name, seed)
    p, q = _factors(g, n_users, rank), _factors(g, n_items, rank)
    bu = torch.randn(n_users, generator=g) * bias_std
    bi = torch.randn(n_items, generator=g) * bias_std
    w_user = torch.exp(torch.randn(n_users, generator=g)).double()
    w_item = torch.exp(popularity * torch.randn(n_items, generator=g)).double()
    keys = torch.empty(0, dtype=torch.long)
    while keys.shape[0] < n_ratings:
        want = int((n_ratings - keys.shape[0]) * 1.1) + 16
        u = torch.multinomial(w_user, want, replacement=True, generator=g)
        i = torch.multinomial(w_item, want, replacement=True, generator=g)
        keys = torch.unique(torch.cat([keys, u * n_items + i]))
    keys = keys[torch.randperm(keys.shape[0], generator=g)[:n_ratings]]
    users, items = keys // n_items, keys % n_items
    del keys
    clean = mean + bu[users] + bi[items]
    for s in range(0, n_ratings, 1 << 22):   # p_u^T q_i in chunks: no (N, rank) temporary
        e = min(s + (1 << 22), n_ratings)
        clean[s:e] += (p[users[s:e]] * q[items[s:e]]).sum(1)
    observed = (clean + noise * torch.randn(n_ratings, generator=g)).to(dtype)
    data = Ratings(users, items, observed, n_users=n_users, n_items=n_items)
    return SyntheticRatings(data, clean, p, q, bu, bi, mean)
