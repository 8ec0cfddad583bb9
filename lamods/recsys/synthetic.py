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

__all__ = ["SyntheticRatings", "synthetic_ratings"]


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
