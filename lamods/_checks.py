"""Input validation shared by every lamods module.

Each check raises with one shape of message: the module's name, what was
expected, and what came, e.g.
``LowRankLinear: expected input with last dimension 784, got 512``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_features(name: str, x: object, in_features: int) -> None:
    """Check that ``x`` is a floating-point tensor of shape ``(*, in_features)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor input, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point input, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError(
            f"{name}: expected input of shape (*, {in_features}), got a 0-dimensional tensor"
        )
    if x.shape[-1] != in_features:
        raise ValueError(
            f"{name}: expected input with last dimension {in_features}, got {x.shape[-1]} "
            f"(input shape {tuple(x.shape)})"
        )


def check_like(name: str, x: Tensor, reference: Tensor, *, what: str = "the layer's") -> None:
    """Check that ``x`` has the device and dtype of ``reference`` (a parameter or buffer).

    Under autocast the dtype check is skipped: autocast decides the compute dtype.
    """
    if x.device != reference.device:
        raise RuntimeError(
            f"{name}: expected input on device {reference.device} ({what} device), "
            f"got {x.device}; move one of them with .to(device)"
        )
    if x.dtype != reference.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{name}: expected input of dtype {reference.dtype} ({what} dtype), got {x.dtype}; "
            f"cast the input or call .to({x.dtype}) on the module"
        )


def check_finite(name: str, x: Tensor, what: str = "input") -> None:
    """Raise if ``x`` holds NaN or infinity (costs a device synchronisation)."""
    if not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: expected a finite {what}, got {n_bad} NaN or infinite entries")


def check_positive_int(name: str, arg: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1, else raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected {arg} to be a positive int, got {value!r}")
    return value
