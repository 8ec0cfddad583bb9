"""Autocast helpers for modules whose math runs inside a custom autograd.Function.

Autocast does not reach inside a custom ``Function``'s own dispatch the way it
reaches ``F.linear``, so lamods layers cast their inputs to the autocast dtype
*before* calling the Function (the casts are differentiable, so gradients come
back in each parameter's own dtype) and run the Function with autocast off.
Like autocast itself, float64 tensors are left alone.
"""

from __future__ import annotations

import torch
from torch import Tensor


def autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype autocast would compute a matmul on ``x`` in, or None when it would not cast."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type) or x.dtype == torch.float64:
        return None
    return torch.get_autocast_dtype(device_type)


def cast_all(dtype: torch.dtype, *tensors: Tensor | None) -> list[Tensor | None]:
    """Cast every tensor (skipping None) to ``dtype`` with differentiable ``.to``."""
    return [None if t is None else t.to(dtype) for t in tensors]
