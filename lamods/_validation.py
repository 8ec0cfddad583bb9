"""The one place lamods checks inputs and parameters.

Every check raises with one shape of message: the module (and method), what was
expected, and what came, e.g.
``LowRankLinear: expected input with last dimension 784, got 512``.
Errors are builtins (``TypeError`` for a wrong kind, ``ValueError`` for a wrong
value, ``RuntimeError`` for a wrong device, ``IndexError`` for an id out of range)
or the typed errors of :mod:`lamods.exceptions`.

Array-likes: :func:`as_float_tensor` is how fit-style modules accept NumPy
arrays and lists as well as tensors (see :mod:`lamods.base` for the dtype rule).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from lamods._precision import HALF_DTYPES
from lamods.exceptions import ConvergenceError

#: Largest accepted ``max |A - A^T|`` relative to ``max |A|``, per dtype of the input.
SYMMETRY_RTOL: dict[torch.dtype, float] = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.bfloat16: 2e-2,
    torch.float16: 2e-3,
}


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------
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
    check_device(name, x, reference, what=what)
    if x.dtype != reference.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{name}: expected input of dtype {reference.dtype} ({what} dtype), got {x.dtype}; "
            f"cast the input or call .to({x.dtype}) on the module"
        )


def check_device(name: str, x: Tensor, reference: Tensor, *, what: str = "the layer's") -> None:
    """Check that ``x`` lives on ``reference``'s device."""
    if x.device != reference.device:
        raise RuntimeError(
            f"{name}: expected input on device {reference.device} ({what} device), "
            f"got {x.device}; move one of them with .to(device)"
        )


def count_nonfinite(x: Tensor) -> int:
    """Number of NaN or infinite entries of ``x`` (0 for a finite tensor; one sync)."""
    # one reduction pass: a NaN or inf anywhere makes the sum non-finite; only then
    # (or when finite entries overflow the sum) is the elementwise test run
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return 0
    return int((~torch.isfinite(x)).sum())


def check_finite(name: str, x: Tensor, what: str = "input") -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity (costs a device synchronisation)."""
    n_bad = count_nonfinite(x)
    if n_bad:
        raise ValueError(f"{name}: expected a finite {what}, got {n_bad} NaN or infinite entries")


def is_traced(x: Tensor) -> bool:
    """Whether ``x`` flows through ``torch.compile`` tracing or a ``torch.func`` transform,
    where a data-dependent branch (a finiteness check) cannot run."""
    if torch.compiler.is_compiling():
        return True
    functorch = getattr(torch._C, "_functorch", None)
    wrapped = getattr(functorch, "is_functorch_wrapped_tensor", None)
    return bool(wrapped is not None and wrapped(x))


def nonfinite_rows(x: Tensor) -> Tensor:
    """Boolean ``(*)`` mask of the rows (vectors along the last dimension) of ``x`` ``(*, d)``
    that hold a NaN or an infinity; no synchronisation."""
    return ~torch.isfinite(x).all(-1)


def check_finite_rows(name: str, x: Tensor, what: str = "X", *, hint: str = "") -> None:
    """Raise ``ValueError`` naming how many rows of ``x`` ``(*, d)`` hold NaN or infinity
    and the first of them (Note [NaN policy] in :mod:`lamods.base`).

    Costs one reduction and one device synchronisation when ``x`` is finite. Skipped
    while ``torch.compile`` traces and inside ``torch.func`` transforms (a data-dependent
    branch cannot run there); callers keep such rows local to their own output rows.
    ``hint`` is appended to the message.
    """
    if x.dim() == 0 or x.numel() == 0 or is_traced(x) or not count_nonfinite(x):
        return
    bad = nonfinite_rows(x)
    n_rows = int(bad.sum())
    first = int(bad.reshape(-1).nonzero()[0, 0])
    lead = x.shape[:-1]
    if len(lead) == 0:
        raise ValueError(f"{name}: expected a finite {what}, got NaN or infinite entries{hint}")
    if len(lead) == 1:
        where = f"row {first}"
    else:
        where = f"index {tuple(int(i) for i in torch.unravel_index(torch.tensor(first), lead))}"
    raise ValueError(f"{name}: expected finite rows in {what}, got {n_rows} "
                     f"row{'s' if n_rows != 1 else ''} with NaN or infinite entries "
                     f"(first: {where}){hint}")


def check_finite_loss(name: str, loss: float, where: str, hint: str = "") -> None:
    """Raise :class:`~lamods.exceptions.ConvergenceError` if an iterative fit's loss is not finite.

    ``where`` names the iteration and the step size (``"epoch 3 (lr=0.5)"``); ``hint`` says
    what to change. The message: ``fit_sgd: expected a finite training loss, got nan at
    epoch 3 (lr=0.5); lower lr``.
    """
    if not math.isfinite(loss):
        raise ConvergenceError(f"{name}: expected a finite training loss, got {loss} at {where}"
                               + (f"; {hint}" if hint else ""))


def check_matrix(name: str, A: object, what: str = "input") -> Tensor:
    """Check that ``A`` is a non-empty floating-point tensor of shape ``(*, m, n)``."""
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
        check_finite(name, A)
        return
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


# ---------------------------------------------------------------------------
# Array-likes -> tensors
# ---------------------------------------------------------------------------
def float_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """The floating dtype data of ``dtype`` is fitted in: float32/64 kept, half -> float32,
    integer and bool -> torch's default float dtype."""
    if dtype in (torch.float32, torch.float64):
        return dtype
    if dtype in HALF_DTYPES:
        return torch.float32
    return torch.get_default_dtype()


def as_float_tensor(name: str, X: object, *, what: str = "X",
                    dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> Tensor:
    """A floating tensor from a tensor or an array-like (NumPy array, list of numbers).

    ``dtype``: the target; None keeps float32 and float64, upcasts half precision to
    float32 and turns integer and bool data into the default float dtype. ``device``:
    the target; None keeps a tensor's device (array-likes land on the CPU). An
    array-like is always copied; a tensor is copied only when cast or moved.
    Complex, string and object data raise ``TypeError``.
    """
    if isinstance(X, Tensor):
        t = X
    else:
        if X is None or isinstance(X, (str, bytes, dict, set)):
            raise TypeError(f"{name}: expected {what} as a tensor or an array-like of numbers, "
                            f"got {type(X).__name__}")
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as err:  # ragged lists and the like
            raise TypeError(f"{name}: expected {what} as a tensor or an array-like of numbers, "
                            f"got {type(X).__name__} that NumPy cannot read ({err})") from None
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected {what} of a real numeric dtype, "
                            f"got NumPy dtype {arr.dtype}")
        if arr.dtype.kind == "u" and arr.dtype.itemsize > 1:
            arr = arr.astype(np.int64)  # torch has no uint16+ arithmetic
        t = torch.tensor(arr)
    if t.is_complex():
        raise TypeError(f"{name}: expected real {what}, got complex dtype {t.dtype}")
    target = dtype if dtype is not None else float_dtype_for(t.dtype)
    return t.to(device=t.device if device is None else device, dtype=target)


def check_data(name: str, X: Tensor, *, what: str = "X", ndim: int = 2,
               min_samples: int = 1) -> Tensor:
    """``X`` ``(n_samples, n_features)`` (or 1-D with ``ndim=1``), non-empty and finite."""
    if X.dim() != ndim:
        shape = "(n_samples, n_features)" if ndim == 2 else "(n_samples,)"
        raise ValueError(f"{name}: expected {'data' if what == 'X' else what} of shape "
                         f"{shape}, got shape {tuple(X.shape)}")
    if X.shape[0] < min_samples:
        raise ValueError(f"{name}: expected at least {min_samples} sample"
                         f"{'s' if min_samples > 1 else ''} (rows) in {what}, got {X.shape[0]}")
    if ndim == 2 and X.shape[1] == 0:
        raise ValueError(f"{name}: expected at least 1 feature (column) in {what}, "
                         f"got shape {tuple(X.shape)}")
    check_finite(name, X, what)
    return X


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------
def _is_real(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_positive_int(name: str, arg: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1, else raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected {arg} to be a positive int, got {value!r}")
    return value


def check_nonnegative_int(name: str, arg: str, value: object) -> int:
    """Return ``value`` if it is an int >= 0, else raise naming the argument."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: expected {arg} to be an int >= 0, got {value!r}")
    return value


def check_rank_k(name: str, k: object, limit: int, limit_text: str, arg: str = "k") -> int:
    """Return ``k`` if it is an int with ``1 <= k <= limit``, else raise naming the limit."""
    check_positive_int(name, arg, k)
    if k > limit:  # type: ignore[operator]
        raise ValueError(f"{name}: expected {arg} <= {limit_text} = {limit}, got {k}")
    return k  # type: ignore[return-value]


def check_positive(name: str, arg: str, value: object) -> float:
    """``value`` must be a finite real number > 0 (a tensor of them is checked entrywise)."""
    if isinstance(value, Tensor):
        if value.is_complex() or not bool(((value > 0) & torch.isfinite(value)).all()):
            raise ValueError(f"{name}: expected {arg} > 0, got {value}")
        return value  # type: ignore[return-value]
    if not _is_real(value) or not 0 < value < math.inf:  # type: ignore[operator]
        raise ValueError(f"{name}: expected {arg} > 0, got {value!r}")
    return value  # type: ignore[return-value]


def check_nonnegative(name: str, arg: str, value: object, *, kind: str = "a float") -> float:
    """``value`` must be a finite real number >= 0."""
    if not _is_real(value) or not 0 <= value < math.inf:  # type: ignore[operator]
        raise ValueError(f"{name}: expected {arg} to be {kind} >= 0, got {value!r}")
    return value  # type: ignore[return-value]


def check_open_unit(name: str, arg: str, value: object) -> float:
    """``value`` must be a real number in the open interval (0, 1)."""
    if not _is_real(value) or not 0 < value < 1:  # type: ignore[operator]
        raise ValueError(f"{name}: expected {arg} in (0, 1), got {value!r}")
    return value  # type: ignore[return-value]


def check_half_open_unit(name: str, arg: str, value: object) -> float:
    """``value`` must be a real number in the half-open interval (0, 1]."""
    if not _is_real(value) or not 0 < value <= 1:  # type: ignore[operator]
        raise ValueError(f"{name}: expected {arg} in (0, 1], got {value!r}")
    return value  # type: ignore[return-value]


def check_stream_batch(name: str, X: Tensor, reference: Tensor, *, what: str = "X") -> None:
    """A later batch of a streamed fit (``partial_fit``) has the width (last dimension) and
    dtype of ``reference``, the state fitted from the earlier batches."""
    if X.dtype != reference.dtype:
        raise TypeError(f"{name}: expected {what} of the streamed dtype {reference.dtype}, "
                        f"got {X.dtype}")
    if X.shape[-1] != reference.shape[-1]:
        raise ValueError(f"{name}: expected {what} with {reference.shape[-1]} features (as the "
                         f"earlier batches), got {X.shape[-1]}")


def check_streamable(name: str, *, fresh: bool, fitted: bool, by: str = "fit") -> None:
    """``partial_fit`` continues a stream or starts one; it cannot continue a model fitted
    in memory (by ``by``), which keeps no streaming statistics."""
    if fresh and fitted:
        raise RuntimeError(f"{name}: expected a fresh module or one fitted by partial_fit, "
                           f"got a model fitted by {by} (it keeps no streaming statistics); "
                           f"stream from a new module")


def check_stream_target(name: str, y: Tensor, k: int, vector: bool) -> None:
    """A later batch's target of a streamed fit has the earlier batches' form: ``(n_batch,)``
    when they were 1-D (``vector``), else ``(n_batch, k)``."""
    if (y.dim() == 1) != vector or (not vector and y.shape[-1] != k):
        want = "(n_batch,)" if vector else f"(n_batch, {k})"
        raise ValueError(f"{name}: expected y of shape {want} (as the earlier batches), "
                         f"got {tuple(y.shape)}")


def check_eps(name: str, eps: object) -> float | None:
    """``None`` or a float >= 0."""
    if eps is None:
        return None
    if not _is_real(eps) or not eps >= 0:  # type: ignore[operator]
        raise ValueError(f"{name}: expected eps to be a float >= 0 or None, got {eps!r}")
    return float(eps)  # type: ignore[arg-type]


def check_choice(name: str, arg: str, value: object, choices: Iterable[object]) -> None:
    """``value`` must be one of ``choices``; the message lists them."""
    choices = tuple(choices)
    if not isinstance(value, (str, int, float, type(None))) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected {arg} to be one of {valid}, got {value!r}")


def check_float_dtype(name: str, dtype: object) -> torch.dtype | None:
    """``None`` or a floating torch dtype (the ``dtype=`` argument of a module)."""
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"{name}: expected dtype to be a floating torch.dtype or None, "
                        f"got {dtype!r}")
    return dtype  # type: ignore[return-value]
