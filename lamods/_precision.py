"""Compute precision and autocast: where lamods decides which dtype the math runs in.

Decompositions run in at least float32 (half-precision inputs are upcast and the
results cast back). Autocast does not reach inside a custom ``Function``'s own
dispatch the way it reaches ``F.linear``, so lamods layers cast their inputs to
the autocast dtype *before* calling the Function (the casts are differentiable,
so gradients come back in each parameter's own dtype) and run the Function with
autocast off. Like autocast itself, float64 tensors are left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

HALF_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: half precision inputs are decomposed in float32."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def run_upcast(fn: Callable[..., T], A: Tensor, *args: object) -> T:
    """Run ``fn(A_work, *args)`` with ``A`` in at least float32 and autocast off.

    Returns ``fn``'s result unchanged; callers cast outputs back with :func:`cast_back`.
    """
    work = A.to(compute_dtype(A.dtype))
    try:
        ctx = torch.autocast(A.device.type, enabled=False)
    except RuntimeError:  # pragma: no cover - device types without autocast
        return fn(work, *args)
    with ctx:
        return fn(work, *args)


def cast_back(dtype: torch.dtype, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Cast results back to the input's dtype (differentiably; a no-op when equal)."""
    return tuple(t if t.dtype == dtype else t.to(dtype) for t in tensors)


def autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype autocast would compute a matmul on ``x`` in, or None when it would not cast."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type) or x.dtype == torch.float64:
        return None
    return torch.get_autocast_dtype(device_type)


def cast_all(dtype: torch.dtype, *tensors: Tensor | None) -> list[Tensor | None]:
    """Cast every tensor (skipping None) to ``dtype`` with differentiable ``.to``."""
    return [None if t is None else t.to(dtype) for t in tensors]


def pow2_at_least(peak: Tensor) -> Tensor:
    """The power of two ``s = 2^(e-1)`` of ``peak = m 2^e`` (``m`` in ``[0.5, 1)``), so
    ``peak / s`` lies in ``[1, 2)``; 1 where ``peak`` is 0 or not finite. Elementwise."""
    big = torch.finfo(peak.dtype).max
    _, e = torch.frexp(peak.clamp(0, big))
    s = torch.ldexp(torch.ones_like(peak), e - 1)  # 2^e itself may overflow
    return torch.where((peak > 0) & torch.isfinite(peak), s, torch.ones_like(s))


def pow2_scale(*tensors: Tensor, dims: int | None = None) -> Tensor:
    """A power of two ``s >= max |x| / 2`` over the finite entries of ``tensors``
    (detached; 1 when they hold no finite non-zero entry).

    Note [power-of-two scaling]: scale-equivariant methods (k-means, NMF, the RBF
    kernel's distances) run on ``x / s`` and scale the result back. Dividing by a power
    of two is exact in binary floating point, so on data of ordinary magnitude the
    results are bit for bit those of the unscaled computation, while data near the ends
    of the dtype's range (``1e30`` or ``1e-30`` in float32) no longer overflows or
    underflows in the squares and products inside. ``dims``: reduce over the last
    ``dims`` dimensions only (one scale per batch entry, kept as size-1 dimensions);
    None reduces everything to a scalar.
    """
    peak = None
    for t in tensors:
        t = t.detach()
        a = torch.where(torch.isfinite(t), t.abs(), 0)
        a = a.amax() if dims is None else a.amax(dim=tuple(range(-dims, 0)), keepdim=True)
        peak = a if peak is None else torch.maximum(peak, a)
    assert peak is not None
    return pow2_at_least(peak)


def float32_gemm_is_ieee(device: torch.device) -> bool:
    """True when a float32 matmul on ``device`` rounds as IEEE float32 arithmetic does.

    False on CUDA and whenever torch may lower float32 products to TF32 or bfloat16
    (``torch.set_float32_matmul_precision("high" | "medium")`` or the ``fp32_precision``
    backends settings): error bounds derived for float32 (Note [float32 screen] in
    :mod:`lamods._lloyd`) would not hold there.
    """
    if device.type != "cpu" or torch.get_float32_matmul_precision() != "highest":
        return False
    settings = [getattr(torch.backends, "fp32_precision", "none")]
    mkldnn_matmul = getattr(torch.backends.mkldnn, "matmul", None)
    if mkldnn_matmul is not None:
        settings.append(getattr(mkldnn_matmul, "fp32_precision", "none"))
    return all(s in ("none", "ieee") for s in settings)
