r"""Hyperparameters chosen by validation inside the training data only.

:func:`select_by_validation` holds out a random part of the *training* ratings
(:func:`~lamods.recsys.random_split`, seeded), fits every candidate on the rest, scores
each by RMSE on the held-out part, and returns the best candidate. The test data is never
seen, so a model tuned this way inside each cross-validation fold gives an honest
estimate of its test error.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lamods._validation import check_open_unit
from lamods.recsys.metrics import evaluate
from lamods.recsys.movielens import Ratings
from lamods.recsys.splits import random_split

__all__ = ["Selection", "parameter_grid", "select_by_validation"]


@dataclass
class Selection:
    """What :func:`select_by_validation` found: the best parameters and every score."""

    best: dict
    best_rmse: float
    scores: list[tuple[dict, float, float]]   # (params, validation RMSE, fit seconds)
    seconds: float                           # all the fits together


def parameter_grid(grid: Mapping[str, Sequence] | Sequence[Mapping]) -> list[dict]:
    """Every combination of a ``{name: values}`` grid (or a list of such dicts), as dicts.

    Examples::

        >>> parameter_grid({"k": [5, 10], "reg": [0.1]})
        [{'k': 5, 'reg': 0.1}, {'k': 10, 'reg': 0.1}]
    """
    grids = [grid] if isinstance(grid, Mapping) else list(grid)
    out = []
    for g in grids:
        names = list(g)
        for values in itertools.product(*(g[n] for n in names)):
            out.append(dict(zip(names, values)))
    if not out:
        raise ValueError("parameter_grid: expected at least one candidate, got an empty grid")
    return out


def select_by_validation(
    fit: Callable[..., object],
    train: Ratings,
    grid: Mapping[str, Sequence] | Sequence[Mapping],
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Selection:
    r"""Pick the candidate of lowest RMSE on a held-out part of ``train``.

    ``fit(ratings, **params)`` must return a fitted model (anything
    :func:`~lamods.recsys.evaluate` takes). ``train`` is cut by ``random_split`` into
    ``1 - val_fraction`` and ``val_fraction`` (``seed``); each candidate of ``grid``
    (:func:`parameter_grid`) is fitted on the first part and scored on the second. Ties go
    to the earlier candidate. Refit the winner on all of ``train`` yourself.

    Examples::

        >>> import torch
        >>> from lamods.recsys import MatrixFactorization, fit_als, synthetic_ratings
        >>> data = synthetic_ratings(60, 50, 2, density=0.5, noise=0.1, seed=0).data
        >>> def fit(ratings, reg):
        ...     model = MatrixFactorization(60, 50, 2, dtype=torch.float64)
        ...     fit_als(model, ratings, epochs=10, reg=reg)
        ...     return model
        >>> select_by_validation(fit, data, {"reg": [1e-3, 10.0]}).best
        {'reg': 0.001}
    """
    val_fraction = check_open_unit("select_by_validation", "val_fraction", val_fraction)
    candidates = parameter_grid(grid)
    part, held = random_split(train, (1.0 - val_fraction, val_fraction), seed=seed)
    scores = []
    start = time.perf_counter()
    for params in candidates:
        t = time.perf_counter()
        model = fit(part, **params)
        seconds = time.perf_counter() - t
        scores.append((dict(params), evaluate(model, held)["rmse"], seconds))
    best = min(range(len(scores)), key=lambda n: scores[n][1])
    return Selection(dict(scores[best][0]), scores[best][1], scores,
                     time.perf_counter() - start)
