r"""Least squares and ridge regression as one differentiable, batched function.

For ``X`` of shape ``(*, m, n)`` and ``y`` of shape ``(*, m)`` or ``(*, m, k)``,

.. math::
    \hat b = \arg\min_b \; \|X b - y\|^2 + \alpha \|b\|^2
           = (X^T X + \alpha I)^{-1} X^T y .

Three ways to get there (``method``):

- ``"cholesky"``: the normal equations. :math:`G = X^T X + \alpha I = L L^T`
  (Cholesky), then two triangular solves for :math:`L L^T b = X^T y`.
  :math:`O(m n^2 + n^3)` with the :math:`m n^2` part one matrix product: the
  fastest for tall ``X``. It squares the condition number
  (:math:`\kappa(G) = \kappa(X)^2`), and with ``alpha = 0`` a rank-deficient
  ``X`` makes :math:`G` singular: that raises :class:`SingularSystemError`
  (Note [singular normal equations]).
- ``"qr"``: :math:`X = Q R`, :math:`b = R^{-1} Q^T y`; ridge through the
  augmented system :math:`\begin{bmatrix} X \\ \sqrt\alpha I \end{bmatrix} b
  \approx \begin{bmatrix} y \\ 0 \end{bmatrix}`. Never squares the condition
  number; needs ``m >= n`` (or ``alpha > 0``) and full column rank.
- ``"svd"``: :math:`X = U S V^T`,
  :math:`b = V \operatorname{diag}\big(s_i / (s_i^2 + \alpha)\big) U^T y`; with
  ``alpha = 0``, :math:`1/s_i` for :math:`s_i > \text{rcond} \cdot s_1` and 0
  below (the pseudo-inverse with a rank cutoff: the minimum-norm solution of
  a rank-deficient or under-determined system, what ``numpy.linalg.lstsq``
  and scikit-learn's ``LinearRegression`` return). Uses lamods' stable
  :func:`~lamods.decomp.svd`, so gradients stay finite on repeated singular values.

Gradients flow to ``X``, ``y`` (and a tensor ``alpha``) through autograd of
``torch.linalg.cholesky``/``cholesky_solve``, ``qr``/``solve_triangular`` and
lamods' ``svd``; all are twice differentiable (``gradgradcheck`` in the tests),
so ``lstsq`` can sit inside a network as a closed-form layer (e.g. the ridge
head of a meta-learner).

Note [blocked Gram]: BLAS has a symmetric rank-k update (``syrk``) that
forms :math:`X^T X` with half the multiplications, and numpy uses it for
``X.T @ X``; torch has no such call. On CPU, for ``n >= 256`` columns, we split
:math:`X = [A\; B]` and form :math:`A^T A`, :math:`A^T B`, :math:`B^T B`:
3/4 of the multiplications, the same sums.

Note [implicit Q]: without gradients, the QR method keeps ``Q`` as Householder
reflectors (``torch.geqrf``) and applies them to ``y`` (``torch.ormqr``),
about half the work of forming ``Q``; with gradients it uses
``torch.linalg.qr``, whose backward autograd knows.

Note [singular normal equations]: Cholesky of a singular positive
semi-definite matrix either fails (a non-positive pivot) or, in floating
point, succeeds with a pivot at rounding level, whose solve returns garbage of
size :math:`1/u`. With ``alpha = 0`` we reject both: the smallest pivot
:math:`l_{jj}^2` must exceed :math:`n u \max_i G_{ii}` (:math:`u` the machine
epsilon), a cheap lower bound on "numerically singular". With ``alpha > 0``
:math:`G` is positive definite in exact arithmetic and only a hard failure raises.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamods._precision import compute_dtype
from lamods._validation import check_matrix, check_symmetric_finite
from lamods.decomp.svd import svd
from lamods.exceptions import SingularSystemError

__all__ = ["METHODS", "lstsq"]

#: The accepted ``method`` values.
METHODS = ("cholesky", "qr", "svd")


def _check_inputs(X: object, y: object, alpha: object, method: str,
                  validate: bool) -> tuple[Tensor, bool]:
    check_matrix("lstsq", X, what="X")
    if not isinstance(y, Tensor):
        raise TypeError(f"lstsq: expected a torch.Tensor y, got {type(y).__name__}")
    if not y.is_floating_point():
        raise TypeError(f"lstsq: expected a floating-point y, got dtype {y.dtype}")
    if method not in METHODS:
        raise ValueError(f"lstsq: expected method in {METHODS}, got {method!r}")
    vector = y.dim() == X.dim() - 1
    if not (vector or y.dim() == X.dim()):
        raise ValueError(f"lstsq: expected y of shape (*, m) or (*, m, k) for X of shape "
                         f"{tuple(X.shape)}, got {tuple(y.shape)}")
    expected = X.shape[:-1]
    got = y.shape if vector else y.shape[:-1]
    if got != expected:
        want = f"{tuple(expected)}" + ("" if vector else " + (k,)")
        raise ValueError(f"lstsq: expected y with leading shape {want} (X's batch and rows), "
                         f"got shape {tuple(y.shape)}")
    if X.device != y.device or X.dtype != y.dtype:
        raise TypeError(f"lstsq: expected X and y on one device with one dtype, got "
                        f"{X.device}/{X.dtype} and {y.device}/{y.dtype}")
    if isinstance(alpha, Tensor):
        if alpha.dim() != 0:
            raise ValueError(f"lstsq: expected a scalar alpha, got shape {tuple(alpha.shape)}")
    elif isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"lstsq: expected alpha to be a float >= 0, got {alpha!r}")
    if validate:
        check_symmetric_finite("lstsq", X, symmetric=False)
        if not bool(torch.isfinite(y).all()):
            n_bad = int((~torch.isfinite(y)).sum())
            raise ValueError(f"lstsq: expected a finite y, got {n_bad} NaN or infinite entries")
    return (y.unsqueeze(-1) if vector else y), vector


def _gram(X: Tensor) -> Tensor:
    """:math:`X^T X` (Note [blocked Gram]): 3 products of half width instead of one for wide X."""
    n = X.shape[-1]
    if n < 256 or X.device.type != "cpu":
        return X.mT @ X
    h = n // 2
    A, B = X[..., :h], X[..., h:]
    AtB = A.mT @ B
    top = torch.cat([A.mT @ A, AtB], dim=-1)
    bottom = torch.cat([AtB.mT, B.mT @ B], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def _needs_grad(*tensors: object) -> bool:
    return torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in tensors)


def _cholesky(X: Tensor, Y: Tensor, alpha: float | Tensor, zero_alpha: bool) -> Tensor:
    n = X.shape[-1]
    eye = torch.eye(n, dtype=X.dtype, device=X.device)
    # G = X^T X + alpha I
    G = _gram(X) + alpha * eye
    L, info = torch.linalg.cholesky_ex(G)
    pivots = L.diagonal(dim1=-2, dim2=-1).detach().square()
    bad = (info > 0).any()
    if zero_alpha:
        # Note [singular normal equations]: l_jj^2 <= n u max_i G_ii is numerically singular
        scale = G.detach().diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True)
        tiny = n * torch.finfo(X.dtype).eps * scale
        bad = bad | (pivots <= tiny).any()
    if bool(bad):
        if zero_alpha:
            raise SingularSystemError(
                "lstsq: expected X^T X to be positive definite (X of full column rank) with "
                "method='cholesky' and alpha=0, got a singular matrix; use alpha > 0 (ridge) "
                "or method='svd' (minimum-norm solution)")
        raise SingularSystemError(
            "lstsq: expected X^T X + alpha I to be positive definite, got a Cholesky failure "
            "(alpha too small for the dtype?); use a larger alpha or method='svd'")
    # L L^T b = X^T y
    return torch.cholesky_solve(X.mT @ Y, L)


def _qr(X: Tensor, Y: Tensor, alpha: float | Tensor, zero_alpha: bool) -> Tensor:
    m, n = X.shape[-2:]
    if not zero_alpha:
        # [X; sqrt(alpha) I] b ~ [y; 0]
        root = alpha.sqrt() if isinstance(alpha, Tensor) else alpha ** 0.5
        eye = torch.eye(n, dtype=X.dtype, device=X.device).expand(*X.shape[:-2], n, n)
        X = torch.cat([X, root * eye], dim=-2)
        Y = torch.cat([Y, Y.new_zeros(*Y.shape[:-2], n, Y.shape[-1])], dim=-2)
    elif m < n:
        raise SingularSystemError(
            f"lstsq: expected at least as many rows as columns with method='qr' and alpha=0, "
            f"got X of shape {tuple(X.shape)}; use alpha > 0 or method='svd'")
    if _needs_grad(X, Y, alpha):
        Q, R = torch.linalg.qr(X)
        QtY = Q.mT @ Y
    else:
        # Note [implicit Q]: Householder reflectors applied to y, Q never formed
        reflectors, tau = torch.geqrf(X)
        QtY = torch.ormqr(reflectors, tau, Y, left=True, transpose=True)[..., :n, :]
        R = reflectors[..., :n, :].triu()
    if zero_alpha:
        d = R.detach().diagonal(dim1=-2, dim2=-1).abs()
        tol = max(m, n) * torch.finfo(X.dtype).eps * d.amax(-1, keepdim=True)
        if bool((d <= tol).any()):
            raise SingularSystemError(
                "lstsq: expected X of full column rank with method='qr' and alpha=0, got a "
                "rank-deficient X; use alpha > 0 or method='svd'")
    # b = R^{-1} Q^T y
    return torch.linalg.solve_triangular(R, QtY, upper=True)


def _svd(X: Tensor, Y: Tensor, alpha: float | Tensor, zero_alpha: bool,
         rcond: float | None) -> Tensor:
    U, S, Vh = svd(X, validate=False)
    if zero_alpha:
        if rcond is None:
            rcond = max(X.shape[-2:]) * torch.finfo(X.dtype).eps
        keep = S > rcond * S[..., :1].detach()
        # pseudo-inverse: 1/s above the cutoff, 0 below
        inv = torch.where(keep, 1 / torch.where(keep, S, torch.ones_like(S)),
                          torch.zeros_like(S))
    else:
        # ridge filter factors s / (s^2 + alpha)
        inv = S / (S.square() + alpha)
    # b = V diag(f(s)) U^T y
    return Vh.mT @ (inv.unsqueeze(-1) * (U.mT @ Y))


def lstsq(X: Tensor, y: Tensor, alpha: float | Tensor = 0.0, *, method: str = "cholesky",
          rcond: float | None = None, validate: bool = True) -> Tensor:
    r"""Least squares / ridge :math:`(X^T X + \alpha I)^{-1} X^T y`, batched, differentiable.

    See the module docstring for the three methods and their numerics. No
    intercept is fitted (center ``X`` and ``y`` first, or use
    :class:`~lamods.classic.RidgeRegression`).

    Args:
        X: design matrices ``(*, m, n)``.
        y: targets ``(*, m)`` or ``(*, m, k)`` (same leading shape as ``X``).
        alpha: ridge penalty :math:`\alpha \ge 0` (a float, or a 0-dim tensor to learn it).
        method: ``"cholesky"`` (normal equations), ``"qr"`` or ``"svd"``.
        rcond: ``"svd"`` with ``alpha = 0`` only: singular values at most
            ``rcond * s_max`` are dropped (None: ``max(m, n) * eps``).
        validate: check that ``X`` and ``y`` are finite (one device synchronisation).

    Returns:
        ``(*, n)`` for vector ``y``, ``(*, n, k)`` for matrix ``y``; in ``X``'s
        dtype (half precision is solved in float32).

    Raises:
        SingularSystemError: ``alpha = 0`` and ``X`` (numerically) rank-deficient
            with method ``"cholesky"`` or ``"qr"`` (Note [singular normal equations]).

    Examples::

        >>> X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
        >>> y = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        >>> lstsq(X, y)
        tensor([1.0000, 2.0000], dtype=torch.float64)
        >>> torch.allclose(lstsq(X, y, method="qr"), lstsq(X, y, method="svd"))
        True
        >>> lstsq(X, y, alpha=1.0)
        tensor([0.8750, 1.3750], dtype=torch.float64)
        >>> lstsq(torch.ones(3, 2, dtype=torch.float64), y)
        Traceback (most recent call last):
        ...
        lamods.SingularSystemError: lstsq: expected X^T X to be positive definite...
    """
    Y, vector = _check_inputs(X, y, alpha, method, validate)
    zero_alpha = not isinstance(alpha, Tensor) and alpha == 0
    dtype = X.dtype
    work = compute_dtype(dtype)
    Xw, Yw = X.to(work), Y.to(work)
    a = alpha.to(work) if isinstance(alpha, Tensor) else float(alpha)
    with torch.autocast(X.device.type, enabled=False):
        if method == "cholesky":
            B = _cholesky(Xw, Yw, a, zero_alpha)
        elif method == "qr":
            B = _qr(Xw, Yw, a, zero_alpha)
        else:
            B = _svd(Xw, Yw, a, zero_alpha, rcond)
    B = B.to(dtype)
    return B.squeeze(-1) if vector else B
