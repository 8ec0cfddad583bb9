"""Input checks for the recommender modules (message shape: ``Name: expected X, got Y``)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_ids(name: str, what: str, ids: object, n: int) -> Tensor:
    """``ids`` must be an integer tensor with values in ``[0, n)``."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name}: expected {what} as a torch.Tensor, got {type(ids).__name__}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name}: expected {what} of an integer dtype, got dtype {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise IndexError(f"{name}: expected {what} in [0, {n}), got {bad}")
    return ids


def check_choice(name: str, arg: str, value: object, choices) -> None:
    """``value`` must be one of ``choices``; the message lists them."""
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected {arg} to be one of {valid}, got {value!r}")


def check_nonnegative(name: str, arg: str, value: object) -> float:
    """``value`` must be a real number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name}: expected {arg} to be a number >= 0, got {value!r}")
    return float(value)


def check_positive(name: str, arg: str, value: object) -> float:
    """``value`` must be a real number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected {arg} to be a number > 0, got {value!r}")
    return float(value)
