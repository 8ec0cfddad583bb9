r"""Preconditioned conjugate gradient for symmetric positive-definite systems.

:func:`cg` solves :math:`A X = B` for an SPD operator :math:`A` ``(n, n)`` given as a
dense matrix, a sparse tensor or a callable ``v -> A v``, with one or many right-hand
sides (the columns of ``B``, each iterated with its own step sizes). With a
preconditioner :math:`M \approx A^{-1}` (SPD), each column runs (Hestenes and
Stiefel, 1952; Saad, *Iterative Methods for Sparse Linear Systems*, Alg. 9.1):

.. math::
    r_0 = b - A x_0,\quad z_0 = M r_0,\quad p_0 = z_0; \qquad
    \alpha_t = \frac{r_t^T z_t}{p_t^T A p_t},\quad
    x_{t+1} = x_t + \alpha_t p_t,\quad r_{t+1} = r_t - \alpha_t A p_t,

.. math::
    z_{t+1} = M r_{t+1},\quad \beta_t = \frac{r_{t+1}^T z_{t+1}}{r_t^T z_t},\quad
    p_{t+1} = z_{t+1} + \beta_t p_t,

until :math:`\|r_t\| \le \max(\text{rtol}\,\|b\|, \text{atol})`. The error in the
:math:`A`-norm shrinks at least by :math:`2\big((\sqrt\kappa - 1)/(\sqrt\kappa + 1)\big)^t`,
:math:`\kappa` the condition number of :math:`M A`: the preconditioner is what makes
CG fast. A column that has converged is frozen (its step is 0), so the others do not
move it.

Note [non-positive curvature]: for an SPD :math:`A`, :math:`p^T A p > 0` for every
search direction :math:`p \ne 0`. A value :math:`\le 0` proves :math:`A` is not
positive definite (indefinite, or singular along :math:`p`); CG would then divide by
zero or step uphill, so it stops with :class:`~lamods.exceptions.NotPSDError`. In the
same way :math:`r^T M r \le 0` for :math:`r \ne 0` proves the preconditioner is not
positive definite. Only the directions CG visits are tested: an indefinite :math:`A`
whose negative part ``B`` never excites may go unnoticed, as in every CG.

Note [adjoint gradient]: :math:`x = A^{-1} b` has
:math:`\partial L/\partial b = A^{-1} g` and :math:`\partial L/\partial A = -(A^{-1} g) x^T`
for :math:`g = \partial L / \partial x` (:math:`A` symmetric: the adjoint solve is one more
CG with the same operator and preconditioner). The solve runs without autograd; the
output is :math:`x_*` itself, passed through an ``autograd.Function`` that also takes
the residual :math:`r = b - A(x_*)` (built with autograd, about zero in value) and
sends the output's gradient :math:`g` to it as :math:`A^{-1} g`. Autograd then
differentiates :math:`b - A(x_*)`, so gradients reach ``B``, a dense or sparse ``A``
and any tensor a callable ``A`` uses (its parameters, a kernel's lengthscale):
:math:`dx = A^{-1}(db - dA\, x_*)`, exact at the solution and accurate to the solve's
tolerance. The backward is once differentiable (a second derivative raises).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lamods._validation import check_finite, check_symmetric_finite
from lamods.exceptions import ConvergenceError, NotPSDError

__all__ = ["cg"]

Operator = Tensor | Callable[[Tensor], Tensor]


def _as_operator(name: str, A: Operator, n: int, dtype: torch.dtype,
                 device: torch.device) -> Callable[[Tensor], Tensor]:
    """``A`` as a function ``(n, k) -> (n, k)``, after checking it."""
    if isinstance(A, Tensor):
        if A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"{name}: expected A as a square matrix (n, n), got shape "
                             f"{tuple(A.shape)}")
        if A.shape[0] != n:
            raise ValueError(f"{name}: expected A of shape ({n}, {n}) (B has {n} rows), got "
                             f"{tuple(A.shape)}")
        if A.dtype != dtype:
            raise TypeError(f"{name}: expected A of B's dtype {dtype}, got {A.dtype}")
        if A.device != device:
            raise RuntimeError(f"{name}: expected A on B's device {device}, got {A.device}")
        if A.layout == torch.strided:
            check_symmetric_finite(name, A.detach())
            return lambda v: A @ v
        if A.layout not in (torch.sparse_coo, torch.sparse_csr):
            raise TypeError(f"{name}: expected A dense, sparse COO or sparse CSR, got layout "
                            f"{A.layout}")
        vals = A.detach().coalesce().values() if A.layout == torch.sparse_coo else \
            A.detach().values()
        check_finite(name, vals, "A")
        return lambda v: A @ v
    if not callable(A):
        raise TypeError(f"{name}: expected A as a tensor or a callable v -> A v, got "
                        f"{type(A).__name__}")

    def op(v: Tensor) -> Tensor:
        out = A(v)
        if not isinstance(out, Tensor) or out.shape != v.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"{name}: expected the callable A to map (n, k) = "
                             f"{tuple(v.shape)} to the same shape, got {got}")
        return out
    return op


def _as_preconditioner(name: str, M: Operator | None, n: int, dtype: torch.dtype,
                       device: torch.device) -> Callable[[Tensor], Tensor] | None:
    if M is None:
        return None
    if isinstance(M, Tensor):
        if M.shape != (n, n):
            raise ValueError(f"{name}: expected M as a ({n}, {n}) matrix, got shape "
                             f"{tuple(M.shape)}")
        if M.dtype != dtype or M.device != device:
            raise TypeError(f"{name}: expected M of B's dtype {dtype} on {device}, got "
                            f"{M.dtype} on {M.device}")
        check_finite(name, M.detach() if M.layout == torch.strided else
                     M.detach().to_dense(), "M")
        return lambda v: M @ v
    if not callable(M):
        raise TypeError(f"{name}: expected M as a tensor, a callable r -> M r or None, got "
                        f"{type(M).__name__}")
    return lambda v: M(v)


def _check_rhs(name: str, B: object, what: str = "B") -> Tensor:
    if not isinstance(B, Tensor):
        raise TypeError(f"{name}: expected {what} as a torch.Tensor, got {type(B).__name__}")
    if B.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name}: expected {what} of dtype float32 or float64, got {B.dtype}")
    if B.dim() not in (1, 2) or B.shape[0] == 0:
        raise ValueError(f"{name}: expected {what} of shape (n,) or (n, k) with n >= 1, got "
                         f"shape {tuple(B.shape)}")
    check_finite(name, B.detach(), what)
    return B


def cg_core(op: Callable[[Tensor], Tensor], B: Tensor, *,
            M: Callable[[Tensor], Tensor] | None = None, X0: Tensor | None = None,
            rtol: float = 1e-6, atol: float = 0.0, maxiter: int = 1000,
            name: str = "cg") -> tuple[Tensor, int, bool, float]:
    """The CG iterations on ``B`` ``(n, k)`` without autograd (module docstring).

    Returns ``(X, iterations, converged, worst relative residual)``. Raises
    :class:`NotPSDError` (Note [non-positive curvature]) and ``ValueError`` when the
    operator or the preconditioner gives non-finite values.
    """
    X = B.new_zeros(B.shape) if X0 is None else X0.clone()
    R = B - op(X) if X0 is not None else B.clone()
    Z = R if M is None else M(R)
    P = Z.clone()
    rz = (R * Z).sum(0)
    bnorm = torch.linalg.vector_norm(B, dim=0)
    # ||r|| <= max(rtol ||b||, atol), per column
    thresh = torch.clamp_min(rtol * bnorm, atol)
    active = torch.linalg.vector_norm(R, dim=0) > thresh
    it = 0
    while bool(active.any()) and it < maxiter:
        AP = op(P)
        pap = (P * AP).sum(0)
        # Note [non-positive curvature]: p^T A p <= 0 proves A is not positive definite
        alpha = torch.where(active, rz / torch.where(active, pap, 1), 0)
        X = X + alpha * P
        R = R - alpha * AP
        Z = R if M is None else M(R)
        rz_new = (R * Z).sum(0)
        rnorm = torch.linalg.vector_norm(R, dim=0)
        bad_a = (active & ~(pap > 0)).any()
        fin = torch.isfinite(AP).all() & torch.isfinite(Z).all()
        bad_m = (active & (rnorm > 0) & ~(rz_new > 0)).any()
        bad_a_v, fin_v, bad_m_v = torch.stack([bad_a, fin, bad_m]).tolist()
        it += 1
        if not fin_v:
            raise ValueError(f"{name}: expected the operator A and the preconditioner M to "
                             f"give finite values, got NaN or infinity at iteration {it}")
        if bad_a_v:
            worst = float(torch.where(active, pap, torch.inf).min())
            raise NotPSDError(f"{name}: expected a symmetric positive-definite A, got a "
                              f"non-positive curvature p^T A p = {worst:.3g} at iteration {it} "
                              f"(A is indefinite or singular)")
        if bad_m_v:
            raise NotPSDError(f"{name}: expected a symmetric positive-definite preconditioner "
                              f"M, got r^T M r <= 0 at iteration {it}")
        # beta = r_{t+1}^T z_{t+1} / r_t^T z_t; converged columns are frozen
        beta = torch.where(active, rz_new / torch.where(active, rz, 1), 0)
        P = Z + beta * P
        rz = torch.where(active, rz_new, rz)
        active = active & (rnorm > thresh)
    rnorm = torch.linalg.vector_norm(R, dim=0)
    rel = float((rnorm / bnorm.clamp_min(torch.finfo(B.dtype).tiny)).max()) if rnorm.numel() \
        else 0.0
    return X, it, not bool(active.any()), rel


class _AdjointSolve(torch.autograd.Function):
    """Returns the solution ``X`` unchanged; routes its gradient to the residual ``R`` as the
    adjoint solve :math:`A^{-1} g` (Note [adjoint gradient])."""

    @staticmethod
    def forward(X: Tensor, R: Tensor, op: Callable[[Tensor], Tensor],
                M: Callable[[Tensor], Tensor] | None, rtol: float, maxiter: int,
                name: str) -> Tensor:
        return X.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        _, _, ctx.op, ctx.M, ctx.rtol, ctx.maxiter, ctx.name = inputs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:
        # dL/dr = A^{-1} g (A symmetric), to the forward's relative tolerance
        with torch.no_grad():
            Y, _, ok, rel = cg_core(ctx.op, G, M=ctx.M, rtol=ctx.rtol, maxiter=ctx.maxiter,
                                    name=ctx.name)
        if not ok:
            raise ConvergenceError(f"{ctx.name}: expected the adjoint solve of the backward to "
                                   f"converge within maxiter={ctx.maxiter} iterations, got a "
                                   f"relative residual {rel:.3g}")
        return None, Y, None, None, None, None, None


def cg(A: Operator, B: Tensor, *, M: Operator | None = None, x0: Tensor | None = None,
       rtol: float = 1e-6, atol: float = 0.0, maxiter: int | None = None,
       strict: bool = True) -> Tensor:
    r"""Solve :math:`A X = B` by preconditioned conjugate gradient (module docstring).

    Args:
        A: the SPD operator ``(n, n)``: a dense tensor (checked finite and symmetric), a
            sparse COO/CSR tensor (checked finite), or a callable ``V -> A V`` on
            ``(n, k)`` tensors (trusted to be symmetric; its output is checked finite).
        B: right-hand sides ``(n,)`` or ``(n, k)``, float32 or float64, finite.
        M: preconditioner :math:`M \approx A^{-1}`, SPD: a ``(n, n)`` tensor applied as
            ``M @ R`` or a callable ``R -> M R``. None: no preconditioning.
        x0: starting point, ``B``'s shape (None: zeros).
        rtol, atol: stop a column once :math:`\|r\| \le \max(\text{rtol}\|b\|, \text{atol})`.
        maxiter: most iterations (None: :math:`10 n`, as scipy).
        strict: raise :class:`~lamods.exceptions.ConvergenceError` when a column has not
            met the tolerance after ``maxiter`` iterations; with ``False`` return the
            iterate reached (a fixed number of iterations, as FALKON runs).

    Returns:
        :math:`X` with ``B``'s shape, differentiable with respect to ``B``, a tensor ``A``
        and the tensors a callable ``A`` uses (Note [adjoint gradient]).

    Raises:
        NotPSDError: a non-positive curvature :math:`p^T A p \le 0` (or :math:`r^T M r \le 0`)
            was met: ``A`` (or ``M``) is not positive definite (Note [non-positive curvature]).
        ConvergenceError: with ``strict``, no convergence within ``maxiter``.
        ValueError, TypeError: bad shapes, dtypes, parameters, or non-finite input.

    Examples::

        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> b = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> x = cg(A, b, rtol=1e-12)
        >>> torch.allclose(x, torch.linalg.solve(A, b))
        True
    """
    name = "cg"
    B = _check_rhs(name, B)
    vector = B.dim() == 1
    B2 = B.unsqueeze(-1) if vector else B
    n = B2.shape[0]
    for arg, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < float("inf"):
            raise ValueError(f"{name}: expected {arg} to be a float >= 0, got {v!r}")
    if rtol == 0 and atol == 0:
        raise ValueError(f"{name}: expected rtol > 0 or atol > 0 (a tolerance CG can meet), "
                         f"got both 0")
    if maxiter is None:
        maxiter = 10 * n
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"{name}: expected maxiter to be a positive int or None, got "
                         f"{maxiter!r}")
    op = _as_operator(name, A, n, B.dtype, B.device)
    prec = _as_preconditioner(name, M, n, B.dtype, B.device)
    X0 = None
    if x0 is not None:
        x0 = _check_rhs(name, x0, "x0")
        if x0.shape != B.shape or x0.dtype != B.dtype:
            raise ValueError(f"{name}: expected x0 of B's shape {tuple(B.shape)} and dtype "
                             f"{B.dtype}, got {tuple(x0.shape)} and {x0.dtype}")
        X0 = (x0.unsqueeze(-1) if vector else x0).detach()
    with torch.no_grad():
        X, it, ok, rel = cg_core(op, B2.detach(), M=prec, X0=X0, rtol=rtol, atol=atol,
                                 maxiter=maxiter, name=name)
    if strict and not ok:
        raise ConvergenceError(f"{name}: expected convergence to rtol={rtol:g}, atol={atol:g} "
                               f"within maxiter={maxiter} iterations, got a relative residual "
                               f"{rel:.3g} (precondition A, raise maxiter, or pass "
                               f"strict=False)")
    if torch.is_grad_enabled():
        # Note [adjoint gradient]: the value is x*; the gradient flows through b - A(x*)
        R = B2 - op(X)
        if R.requires_grad:
            X = _AdjointSolve.apply(X, R, op, prec, rtol if rtol > 0 else 1e-8, maxiter, name)
    return X.squeeze(-1) if vector else X
