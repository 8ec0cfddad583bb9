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
- ``"qr"``: the triangular factor :math:`R` of :math:`[X \; y] = Q R` (Note
  [blocked QR reduction]; ``Q`` is never formed), :math:`b = R_X^{-1} Q^T y`;
  ridge through the augmented system :math:`\begin{bmatrix} X \\ \sqrt\alpha I
  \end{bmatrix} b \approx \begin{bmatrix} y \\ 0 \end{bmatrix}`. Never squares
  the condition number; needs ``m >= n`` (or ``alpha > 0``) and full column
  rank (Note [rank cutoff]).
- ``"svd"``: :math:`X = U S V^T` (of the reduced :math:`R_X` for tall ``X``),
  :math:`b = V \operatorname{diag}\big(s_i / (s_i^2 + \alpha)\big) U^T y`; with
  ``alpha = 0``, :math:`1/s_i` for :math:`s_i > \text{rcond} \cdot s_1` and 0
  below (the pseudo-inverse with a rank cutoff: the minimum-norm solution of
  a rank-deficient or under-determined system, what ``scipy.linalg.lstsq``,
  ``numpy.linalg.lstsq`` and scikit-learn's ``LinearRegression`` return).

Note [rank cutoff]: a singular value :math:`s_i \le \text{rcond} \cdot s_1` is
treated as zero, relative to the largest one and *never scaled by the number of
rows*. ``rcond=None`` means :math:`u \cdot \max(10, \min(m, n))`, ``u`` the
machine epsilon of the compute dtype (1.2e-7 in float32, 2.2e-16 in float64).
For reference: scipy's ``lstsq`` (LAPACK ``gelsd``) uses :math:`u` alone,
scikit-learn's ``LinearRegression`` ``1e-6`` whatever the dtype, and
``numpy.linalg.lstsq`` / ``torch.linalg.lstsq`` :math:`u \max(m, n)`; numpy
always computes in float64 so that is harmless there, but in float32 with
100,000 rows it is 0.012 and drops genuine directions (a feature at 1/200 of the
scale of another). Why not :math:`u` alone: exactly collinear float32 columns
leave a rounding-level singular value of up to :math:`2u s_1` after the
reduction (measured at 100 to 1,000,000 rows, 3 to 500 columns; up to
:math:`7u` in float64 at 200 columns), and keeping it turns the minimum-norm
solution into coefficients of size :math:`1/u` (scipy's default does that on
1,000 collinear float32 rows). The factor :math:`\max(10, \min(m, n))` sits
above that noise and, for a tall ``X``, depends on the number of features only.
The QR method applies the same cutoff to :math:`|r_{jj}|` (and raises).

Note [blocked QR reduction]: a tall matrix :math:`[X \; y]` is reduced to its
``(n + k) x (n + k)`` triangular factor in blocks of at most
``max(4096, 4 (n + k))`` rows (tall-skinny QR, Demmel et al., SIAM J. Sci.
Comput. 2012): the QR of every block, then of the stacked triangles, until one
block is left. A single Householder QR of a float32 ``X`` accumulates inner
products over all ``m`` rows, and its rounding grows with ``m`` (a rank-2 float32
matrix with 1,000,000 rows and 30 columns got a third singular value of
:math:`86 u s_1` from ``torch.linalg.svd``); in blocks it stays below :math:`2u s_1`
at every ``m``, so the rank cutoff can ignore ``m``. Same flops as one QR, and
``Q`` is never formed: :math:`Q^T y` is the last ``k`` columns of the factor.

Note [least-squares gradient]: at full column rank (or ``alpha > 0``) the
solution :math:`b = G^{-1} X^T y`, :math:`G = X^T X + \alpha I`, is a smooth
function of ``X`` whatever the spacing of its singular values, and every
method has one gradient, that of the normal equations. With
:math:`Z = G^{-1} \bar b` (:math:`\bar b = \partial L/\partial b`) and the
residual :math:`r = y - X b`,

.. math::
    \bar X = r Z^T - X Z b^T, \qquad \bar y = X Z, \qquad \bar\alpha = -\langle Z, b\rangle ,

with :math:`G^{-1}` applied through the forward's factorization (:math:`L`,
:math:`R`, or :math:`V \operatorname{diag}(1/(s_i^2 + \alpha)) V^T`): no
:math:`1/(s_i - s_j)` anywhere, so repeated and clustered singular values are
exact. :math:`Z = G^{-1} C` is itself a custom function whose backward,
:math:`\bar X = -X (Z W^T + W Z^T)`, :math:`\bar\alpha = -\langle W, Z\rangle`,
:math:`\bar C = W = G^{-1} \bar Z`, calls it again, so every order of
derivative is exact (``gradgradcheck`` in the tests). With ``method="svd"``,
``alpha = 0`` and rank :math:`r < n` (after the cutoff), :math:`G^{-1}` becomes
:math:`G^+ = V_r \operatorname{diag}(1/s_i^2) V_r^T` and the gradient gains the
null-space term of the pseudo-inverse's derivative (Golub & Pereyra, SIAM J.
Numer. Anal. 1973), :math:`\bar X \mathrel{+}= X G^+ b \,\big((I - V_r V_r^T)\bar b\big)^T`:
the gradient of :math:`X_r^+ y` with the rank held at ``r``, equal to autograd
through ``torch.linalg.pinv`` (tests). That first derivative is exact; higher
ones are not, at a rank change.

Note [blocked Gram]: BLAS has a symmetric rank-k update (``syrk``) that
forms :math:`X^T X` with half the multiplications, and numpy uses it for
``X.T @ X``; torch has no such call. On CPU, for ``n >= 512`` columns, we split
:math:`X = [A\; B]` and form :math:`B^T A` by one product and :math:`A^T A`,
:math:`B^T B` the same way, recursively down to blocks of 256 to 511 columns: at
2,048 columns 9/16 of the multiplications (3/4 with one split), the same sums.

Note [singular normal equations]: Cholesky of a singular positive
semi-definite matrix either fails (a non-positive pivot) or, in floating
point, succeeds with a pivot at rounding level, whose solve returns garbage of
size :math:`1/u`. With ``alpha = 0`` we reject both: the smallest pivot
:math:`l_{jj}^2` must exceed :math:`n u \max_i G_{ii}` (:math:`u` the machine
epsilon), a cheap lower bound on "numerically singular". With ``alpha > 0``
:math:`G` is positive definite in exact arithmetic and only a hard failure raises.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lamods._matmul import at_b
from lamods._precision import compute_dtype
from lamods._validation import check_matrix, check_nonnegative, check_symmetric_finite
from lamods.exceptions import SingularSystemError

__all__ = ["METHODS", "default_rcond", "lstsq"]

#: The accepted ``method`` values.
METHODS = ("cholesky", "qr", "svd")

#: Rows per block of the QR reduction (Note [blocked QR reduction]).
_BLOCK_ROWS = 4096


def default_rcond(m: int, n: int, dtype: torch.dtype) -> float:
    r"""Note [rank cutoff]: :math:`u \cdot \max(10, \min(m, n))` for ``X`` ``(m, n)`` of ``dtype``.

    Examples::

        >>> default_rcond(100_000, 2, torch.float32)
        1.1920928955078125e-06
    """
    return torch.finfo(compute_dtype(dtype)).eps * max(10, min(m, n))


def _check_alpha(alpha: object) -> float:
    """The value of ``alpha``: a real number or a real 0-dim tensor, finite and >= 0."""
    if isinstance(alpha, Tensor):
        if alpha.dim() != 0:
            raise ValueError(f"lstsq: expected a scalar alpha, got shape {tuple(alpha.shape)}")
        if alpha.is_complex() or alpha.dtype == torch.bool:
            raise TypeError(f"lstsq: expected a real alpha, got dtype {alpha.dtype}")
        value = float(alpha.detach())
        if not 0 <= value < math.inf:
            raise ValueError(f"lstsq: expected alpha to be a float >= 0, got {alpha!r}")
        return value
    return float(check_nonnegative("lstsq", "alpha", alpha))


def _check_inputs(X: object, y: object, method: str, validate: bool) -> tuple[Tensor, bool]:
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
    if validate:
        check_symmetric_finite("lstsq", X, symmetric=False)
        if not bool(torch.isfinite(y).all()):
            n_bad = int((~torch.isfinite(y)).sum())
            raise ValueError(f"lstsq: expected a finite y, got {n_bad} NaN or infinite entries")
    return (y.unsqueeze(-1) if vector else y), vector


# ---------------------------------------------------------------------------
# Factorizations of G = X^T X + alpha I, kept by the forward for the backward
# ---------------------------------------------------------------------------
class _CholeskyInverse:
    """:math:`G^{-1} C` from :math:`G = L L^T`."""

    full_rank = True

    def __init__(self, L: Tensor) -> None:
        self.L = L

    def __call__(self, C: Tensor) -> Tensor:
        return torch.cholesky_solve(C, self.L)


class _TriangularInverse:
    """:math:`G^{-1} C = R^{-1} R^{-T} C` from :math:`G = R^T R`."""

    full_rank = True

    def __init__(self, R: Tensor) -> None:
        self.R = R

    def __call__(self, C: Tensor) -> Tensor:
        T = torch.linalg.solve_triangular(self.R.mT, C, upper=False)
        return torch.linalg.solve_triangular(self.R, T, upper=True)


class _SpectralInverse:
    r""":math:`G^{-1} C = V \operatorname{diag}(w) V^T C`, :math:`w_i = 1/(s_i^2 + \alpha)` kept,
    0 below the rank cutoff (then the pseudo-inverse :math:`G^+`); a thin ``V`` (``m < n``)
    with :math:`\alpha > 0` adds :math:`(I - V V^T) C / \alpha`."""

    def __init__(self, V: Tensor, w: Tensor, keep: Tensor, alpha: float) -> None:
        self.V, self.w, self.keep, self.alpha = V, w, keep, alpha
        n, r = V.shape[-2:]
        self.complement = r < n and alpha > 0
        self.full_rank = alpha > 0 or (r == n and bool(keep.all()))

    def __call__(self, C: Tensor) -> Tensor:
        VtC = self.V.mT @ C
        out = self.V @ (self.w.unsqueeze(-1) * VtC)
        if self.complement:
            out = out + (C - self.V @ VtC) / self.alpha
        return out

    def null_space(self, C: Tensor) -> Tensor:
        """:math:`(I - V_r V_r^T) C`: the part of ``C`` in the null space of ``X``."""
        return C - self.V @ (self.keep.unsqueeze(-1) * (self.V.mT @ C))


_Inverse = _CholeskyInverse | _TriangularInverse | _SpectralInverse


# ---------------------------------------------------------------------------
# Forward solvers (no graph: the gradient is Note [least-squares gradient])
# ---------------------------------------------------------------------------
def _gram(X: Tensor, leaf: int = 256) -> Tensor:
    """:math:`X^T X` (Note [blocked Gram]): recursively, the two diagonal blocks by
    :func:`_gram` and one off-diagonal product, for wide X on CPU."""
    n = X.shape[-1]
    if n < 2 * leaf or X.device.type != "cpu":
        return X.mT @ X
    G = X.new_empty(*X.shape[:-2], n, n)
    _gram_into(X, G, leaf)
    return G


def _gram_into(X: Tensor, G: Tensor, leaf: int) -> None:
    """``G[:] = X^T X`` by blocks: ``[[A^T A, (B^T A)^T], [B^T A, B^T B]]`` for ``X = [A B]``."""
    n = X.shape[-1]
    if n < 2 * leaf:
        G.copy_(X.mT @ X)
        return
    h = n // 2
    A, B = X[..., :h], X[..., h:]
    _gram_into(A, G[..., :h, :h], leaf)
    _gram_into(B, G[..., h:, h:], leaf)
    BtA = B.mT @ A
    G[..., h:, :h] = BtA
    G[..., :h, h:] = BtA.mT


def _reduce(A: Tensor) -> Tensor:
    """The triangular factor ``(*, min(m, c), c)`` of ``A = Q R`` ``(*, m, c)`` in blocks of rows
    (Note [blocked QR reduction]); ``Q`` is never formed."""
    c = A.shape[-1]
    rows = max(_BLOCK_ROWS, 4 * c)
    while A.shape[-2] > rows:
        batch, m = A.shape[:-2], A.shape[-2]
        nb = m // rows
        head = A[..., :nb * rows, :].reshape(*batch, nb, rows, c)
        # R of every block, stacked: (*, nb c, c), then the rows left over
        R = torch.linalg.qr(head, mode="r").R.reshape(*batch, nb * c, c)
        A = torch.cat([R, A[..., nb * rows:, :]], dim=-2)
    return torch.linalg.qr(A, mode="r").R


def _solve_cholesky(X: Tensor, Y: Tensor, alpha: float) -> tuple[Tensor, _Inverse]:
    n = X.shape[-1]
    eye = torch.eye(n, dtype=X.dtype, device=X.device)
    # G = X^T X + alpha I
    G = _gram(X) + alpha * eye
    L, info = torch.linalg.cholesky_ex(G)
    pivots = L.diagonal(dim1=-2, dim2=-1).square()
    bad = (info > 0).any()
    if alpha == 0:
        # Note [singular normal equations]: l_jj^2 <= n u max_i G_ii is numerically singular
        scale = G.diagonal(dim1=-2, dim2=-1).amax(-1, keepdim=True)
        tiny = n * torch.finfo(X.dtype).eps * scale
        bad = bad | (pivots <= tiny).any()
    if bool(bad):
        if alpha == 0:
            raise SingularSystemError(
                "lstsq: expected X^T X to be positive definite (X of full column rank) with "
                "method='cholesky' and alpha=0, got a singular matrix; use alpha > 0 (ridge) "
                "or method='svd' (minimum-norm solution)")
        raise SingularSystemError(
            "lstsq: expected X^T X + alpha I to be positive definite, got a Cholesky failure "
            "(alpha too small for the dtype?); use a larger alpha or method='svd'")
    # L L^T b = X^T y
    return torch.cholesky_solve(at_b(X, Y), L), _CholeskyInverse(L)


def _solve_qr(X: Tensor, Y: Tensor, alpha: float, rcond: float) -> tuple[Tensor, _Inverse]:
    m, n = X.shape[-2:]
    if alpha == 0 and m < n:
        raise SingularSystemError(
            f"lstsq: expected at least as many rows as columns with method='qr' and alpha=0, "
            f"got X of shape {tuple(X.shape)}; use alpha > 0 or method='svd'")
    A = torch.cat([X, Y], dim=-1)
    if alpha > 0:
        # [X y; sqrt(alpha) I 0]: the ridge rows
        k = Y.shape[-1]
        ridge = torch.cat([math.sqrt(alpha) * torch.eye(n, dtype=X.dtype, device=X.device),
                           X.new_zeros(n, k)], dim=-1)
        A = torch.cat([A, ridge.expand(*X.shape[:-2], n, n + k)], dim=-2)
    # [X y] = Q [R_X  Q^T y; 0  rho]
    R = _reduce(A)
    R_X, QtY = R[..., :n, :n], R[..., :n, n:]
    if alpha == 0:
        # Note [rank cutoff] on |r_jj|
        d = R_X.diagonal(dim1=-2, dim2=-1).abs()
        if bool((d <= rcond * d.amax(-1, keepdim=True)).any()):
            raise SingularSystemError(
                "lstsq: expected X of full column rank with method='qr' and alpha=0, got a "
                "rank-deficient X; use alpha > 0 or method='svd'")
    # b = R_X^{-1} Q^T y
    return torch.linalg.solve_triangular(R_X, QtY, upper=True), _TriangularInverse(R_X)


def _solve_svd(X: Tensor, Y: Tensor, alpha: float, rcond: float) -> tuple[Tensor, _Inverse]:
    m, n = X.shape[-2:]
    if m > n:
        # Note [blocked QR reduction]: the SVD of R_X, with Q^T y in place of y
        R = _reduce(torch.cat([X, Y], dim=-1))
        X, Y = R[..., :, :n], R[..., :, n:]
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    if alpha == 0:
        # Note [rank cutoff]: s_i > rcond s_1 kept
        keep = S > rcond * S[..., :1]
        f = torch.where(keep, 1 / torch.where(keep, S, 1.0), 0.0)
    else:
        keep = torch.ones_like(S, dtype=torch.bool)
        # ridge filter factors s / (s^2 + alpha)
        f = S / (S.square() + alpha)
    # 1/(s^2 + alpha) for G^{-1} (0 below the cutoff: G^+)
    w = torch.where(keep, 1 / torch.where(keep, S.square() + alpha, 1.0), 0.0)
    V = Vh.mT
    # b = V diag(f(s)) U^T y
    B = V @ (f.unsqueeze(-1) * at_b(U, Y))
    return B, _SpectralInverse(V, w, keep, alpha)


class _Solver:
    """One call's method and options; the forward leaves the factorization in ``inverse``."""

    def __init__(self, method: str, alpha: float, rcond: float) -> None:
        self.method, self.alpha, self.rcond = method, alpha, rcond
        self.inverse: _Inverse | None = None

    def __call__(self, X: Tensor, Y: Tensor) -> Tensor:
        if self.method == "cholesky":
            B, self.inverse = _solve_cholesky(X, Y, self.alpha)
        elif self.method == "qr":
            B, self.inverse = _solve_qr(X, Y, self.alpha, self.rcond)
        else:
            B, self.inverse = _solve_svd(X, Y, self.alpha, self.rcond)
        return B


# ---------------------------------------------------------------------------
# Autograd (Note [least-squares gradient])
# ---------------------------------------------------------------------------
def _saved_alpha(ctx: Any, rest: list[Tensor]) -> Tensor | None:
    return rest[0] if ctx.alpha_is_tensor else None


class _GramSolve(torch.autograd.Function):
    r""":math:`Z = (X^T X + \alpha I)^{-1} C` through a kept factorization; differentiable in
    ``X``, ``alpha`` and ``C`` to any order (its backward calls it again)."""

    @staticmethod
    def forward(X: Tensor, alpha: Tensor | None, C: Tensor, inverse: _Inverse) -> Tensor:
        # X (*, m, n), C (*, n, k) -> Z (*, n, k)
        return inverse(C)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        X, alpha, _, inverse = inputs
        ctx.inverse = inverse
        ctx.alpha_is_tensor = isinstance(alpha, Tensor)
        ctx.save_for_backward(X, output, *([alpha] if ctx.alpha_is_tensor else []))

    @staticmethod
    def backward(ctx: Any, gZ: Tensor) -> tuple[Tensor | None, ...]:
        X, Z, *rest = ctx.saved_tensors
        alpha = _saved_alpha(ctx, rest)
        # W = G^{-1} gZ; dZ = G^{-1} (dC - (dX^T X + X^T dX + dalpha I) Z)
        W = _GramSolve.apply(X, alpha, gZ, ctx.inverse)
        gX = -X @ (Z @ W.mT + W @ Z.mT) if ctx.needs_input_grad[0] else None
        galpha = -(W * Z).sum() if ctx.needs_input_grad[1] else None
        return gX, galpha, W, None


class _LstsqFn(torch.autograd.Function):
    """``b`` by the chosen method; the normal-equations gradient (Note [least-squares gradient])."""

    @staticmethod
    def forward(X: Tensor, Y: Tensor, alpha: Tensor | float, solver: _Solver) -> Tensor:
        # X (*, m, n), Y (*, m, k) -> B (*, n, k)
        return solver(X, Y)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        X, Y, alpha, solver = inputs
        ctx.inverse = solver.inverse
        ctx.alpha_is_tensor = isinstance(alpha, Tensor)
        ctx.save_for_backward(X, Y, output, *([alpha] if ctx.alpha_is_tensor else []))

    @staticmethod
    def backward(ctx: Any, gB: Tensor) -> tuple[Tensor | None, ...]:
        X, Y, B, *rest = ctx.saved_tensors
        alpha = _saved_alpha(ctx, rest)
        inverse = ctx.inverse
        # Z = G^{-1} gB (G^+ below the rank cutoff)
        Z = _GramSolve.apply(X, alpha, gB, inverse)
        gX = gY = galpha = None
        if ctx.needs_input_grad[0]:
            # gX = r Z^T - X Z b^T, r = y - X b
            gX = (Y - X @ B) @ Z.mT - X @ (Z @ B.mT)
            if not inverse.full_rank:
                # Golub-Pereyra null-space term: X G^+ b ((I - V_r V_r^T) gB)^T
                gX = gX + (X @ inverse(B)) @ inverse.null_space(gB).mT
        if ctx.needs_input_grad[1]:
            # gy = X Z
            gY = X @ Z
        if ctx.needs_input_grad[2]:
            # galpha = -<Z, b>
            galpha = -(Z * B).sum()
        return gX, gY, galpha, None


def lstsq(X: Tensor, y: Tensor, alpha: float | Tensor = 0.0, *, method: str = "cholesky",
          rcond: float | None = None, validate: bool = True) -> Tensor:
    r"""Least squares / ridge :math:`(X^T X + \alpha I)^{-1} X^T y`, batched, differentiable.

    See the module docstring for the three methods and their numerics. No
    intercept is fitted (center ``X`` and ``y`` first, or use
    :class:`~lamods.classic.RidgeRegression`).

    Args:
        X: design matrices ``(*, m, n)``.
        y: targets ``(*, m)`` or ``(*, m, k)`` (same leading shape as ``X``).
        alpha: ridge penalty :math:`\alpha \ge 0` (a float, or a 0-dim tensor to learn it;
            a tensor costs one device synchronisation to read its value).
        method: ``"cholesky"`` (normal equations), ``"qr"`` or ``"svd"``.
        rcond: rank cutoff with ``alpha = 0``: ``"svd"`` drops singular values
            :math:`s_i \le` ``rcond`` :math:`\cdot s_1`, ``"qr"`` raises on
            :math:`|r_{jj}| \le` ``rcond`` :math:`\cdot \max |r_{jj}|`. None:
            :func:`default_rcond`, :math:`u \max(10, \min(m, n))`, independent of the
            number of rows of a tall ``X`` (Note [rank cutoff]).
        validate: check that ``X`` and ``y`` are finite (one device synchronisation).

    Returns:
        ``(*, n)`` for vector ``y``, ``(*, n, k)`` for matrix ``y``; in ``X``'s
        dtype (half precision is solved in float32).

    Gradients (to ``X``, ``y`` and a tensor ``alpha``): at full column rank or
    ``alpha > 0``, the one gradient of :math:`(X^T X + \alpha I)^{-1} X^T y`
    whatever the method, exact for repeated or clustered singular values, to
    every order (Note [least-squares gradient]). For a rank-deficient ``X``
    with ``method="svd"`` and ``alpha = 0``: the first derivative of the
    minimum-norm solution :math:`X_r^+ y` with the rank ``r`` held fixed (the
    Golub-Pereyra derivative of the pseudo-inverse, as autograd through
    ``torch.linalg.pinv``); directions below the cutoff get none.

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
    Y, vector = _check_inputs(X, y, method, validate)
    a = _check_alpha(alpha)
    dtype = X.dtype
    work = compute_dtype(dtype)
    m, n = X.shape[-2:]
    if rcond is None:
        rcond = default_rcond(m, n, work)
    else:
        rcond = float(check_nonnegative("lstsq", "rcond", rcond))
    Xw, Yw = X.to(work), Y.to(work)
    alpha_w = alpha.to(work) if isinstance(alpha, Tensor) else a
    with torch.autocast(X.device.type, enabled=False):
        B = _LstsqFn.apply(Xw, Yw, alpha_w, _Solver(method, a, rcond))
    B = B.to(dtype)
    return B.squeeze(-1) if vector else B
