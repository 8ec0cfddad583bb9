"""Input validation for the decompositions (messages: ``Name: expected X, got Y``).

The shared helpers live in :mod:`lamods._checks`; these add what matrices need.
:func:`check_symmetric_finite` folds the finiteness and symmetry tests into one
device synchronisation.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Largest accepted ``max |A - A^T|`` relative to ``max |A|``, per dtype of the input.
SYMMETRY_RTOL: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.bfloat16: 2e-2,
    torch.float16: 2e-3,
}


def check_matrix(name: str, A: object, what: str = "input") -> Tensor:
    """Check that ``A`` is a floating-point tensor of shape ``(*, m, n)``."""
    if not isinstance(A, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {what}, got {type(A).__name__}")
    if not A.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point {what}, got dtype {A.dtype}")
    if A.dim() < 2:
        raise ValueError(
            f"{name}: expected a matrix or batch of matrices (*, m, n) as {what}, "
            f"got shape {tuple(A.shape)}"
        )
    if A.shape[-1] == 0 or A.shape[-2] == 0:
        raise ValueError(f"{name}: expected a non-empty {what}, got shape {tuple(A.shape)}")
    return A


def check_square(name: str, A: Tensor) -> None:
    """Check that the last two dimensions of ``A`` are equal."""
    if A.shape[-1] != A.shape[-2]:
        raise ValueError(
            f"{name}: expected a square matrix (*, n, n), got shape {tuple(A.shape)}"
        )


def check_symmetric_finite(name: str, A: Tensor, *, symmetric: bool = True) -> None:
    """Raise if ``A`` holds NaN/inf, or (``symmetric``) is not symmetric within tolerance."""
    if not symmetric:
        # One reduction pass: a NaN or inf anywhere makes the sum non-finite. Only then (or
        # when finite entries overflow the sum) is the elementwise check run.
        if bool(torch.isfinite(A.sum())) or bool(torch.isfinite(A).all()):
            return
        n_bad = int((~torch.isfinite(A)).sum())
        raise ValueError(f"{name}: expected a finite input, got {n_bad} NaN or infinite entries")
    finite = torch.isfinite(A).all()
    asym = (A - A.mT).abs().amax()
    scale = A.abs().amax()
    ok, asym_v, scale_v = torch.stack(
        [finite.to(torch.float64), asym.to(torch.float64), scale.to(torch.float64)]
    ).tolist()
    if not ok:
        n_bad = int((~torch.isfinite(A)).sum())
        raise ValueError(f"{name}: expected a finite input, got {n_bad} NaN or infinite entries")
    rtol = SYMMETRY_RTOL.get(A.dtype, 1e-4)
    if asym_v > rtol * scale_v:
        raise ValueError(
            f"{name}: expected a symmetric matrix (max |A - A^T| <= {rtol:g} * max |A|), "
            f"got max |A - A^T| = {asym_v:.3g} with max |A| = {scale_v:.3g}"
        )


def check_rank_k(name: str, k: object, limit: int, limit_text: str, arg: str = "k") -> int:
    """Return ``k`` if it is an int with ``1 <= k <= limit``, else raise naming the limit."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name}: expected {arg} to be a positive int, got {k!r}")
    if k > limit:
        raise ValueError(f"{name}: expected {arg} <= {limit_text} = {limit}, got {k}")
    return k


def check_eps(name: str, eps: object) -> float | None:
    """``None`` or a float >= 0."""
    if eps is None:
        return None
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{name}: expected eps to be a float >= 0 or None, got {eps!r}")
    return float(eps)
