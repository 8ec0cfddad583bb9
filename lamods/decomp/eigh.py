r"""Symmetric eigendecomposition whose backward stays finite on repeated eigenvalues.

Forward: :math:`\mathrm{sym}(A) = (A + A^T)/2 = U \operatorname{diag}(\lambda) U^T`,
eigenvalues ascending (as ``torch.linalg.eigh``), eigenvectors signed by
Note [sign convention] of :mod:`lamods.decomp._common`.

Backward (Giles, "An extended collection of matrix derivative results", 2008):
with upstream gradients :math:`g_\lambda` and :math:`g_U`,

.. math::
    K = \tfrac12 (U^T g_U - g_U^T U), \qquad
    F_{ij} = \frac{1}{\lambda_j - \lambda_i} \; (i \ne j), \quad F_{ii} = 0,

.. math::
    \frac{\partial L}{\partial A} = U \big(\operatorname{diag}(g_\lambda) + F \circ K\big) U^T .

:math:`F_{ij}` is replaced by its Lorentzian-broadened form
:math:`x/(x^2 + \delta^2)`, :math:`x = \lambda_j - \lambda_i` (Note [Lorentzian
broadening]); ``eps`` sets :math:`\delta = \varepsilon \max|\lambda|`.

Note [degenerate eigenvalues]: let eigenvalues ``i`` and ``j`` belong to one
group of (nearly) repeated eigenvalues. A loss that depends on that group only
through its span (the projector :math:`U_G U_G^T`, e.g. the top-k projector
when :math:`\lambda_k > \lambda_{k+1}`) or only through eigenvalues has, in
exact arithmetic, :math:`K_{ij} = 0` for such pairs: rotating the basis inside
the group changes nothing, and :math:`K` restricted to the group is the
derivative of the loss along those rotations. The exact formula then computes
:math:`0/0` (NaN in torch) or rounding noise over a tiny gap (huge, wrong
values). With broadening the pair contributes :math:`K_{ij} x/(x^2+\delta^2)`,
at most :math:`|K_{ij}|/(2\delta)`, i.e. rounding noise times :math:`u/\varepsilon`
relative to the gradient (about 1e-8 in float64), and every pair across
groups, whose gap is large, keeps its exact value. So those losses get their
exact gradient to about :math:`\sqrt{u}` relative. Losses that depend on
individual eigenvectors inside a group have no gradient to get right (the
eigenvectors are not differentiable there); they get a finite, bounded one.

One well-defined family is *not* exact inside an exactly repeated group:
spectral functions :math:`U f(\Lambda) U^T` (and the truncated reconstruction
:math:`U_k \Lambda_k U_k^T`). There :math:`K_{ij} \propto \lambda_j - \lambda_i`,
the true term is the divided difference
:math:`(f(\lambda_i) - f(\lambda_j))/(\lambda_i - \lambda_j) \to f'(\lambda)`,
and at a gap of zero (or below :math:`\delta`) ``(gL, gU)`` no longer carry
it: broadening drops it (torch gives NaN). For those use a matrix function with
its own backward, e.g. :func:`~lamods.decomp.inv_sqrtm`, or write the loss
through projectors (:math:`U_k U_k^T A` instead of :math:`U_k \Lambda_k U_k^T`).

Note [symmetric input]: the forward reads :math:`\mathrm{sym}(A)`, so the
symmetric matrix returned by the backward is the exact gradient with respect
to every entry of ``A`` (``gradcheck`` needs no symmetrising wrapper).

Note [double backward]: the backward is written in differentiable ops of the
saved outputs :math:`\lambda, U`, so autograd differentiates it again
(``gradgradcheck`` passes on distinct spectra). The broadening width is
treated as a constant.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from lamods._precision import cast_back, run_upcast
from lamods._validation import check_eps, check_matrix, check_square, check_symmetric_finite
from lamods.decomp._common import broadened_inverse, column_signs, default_eps

__all__ = ["EighResult", "eigh", "eigh_backward"]


class EighResult(NamedTuple):
    """``eigenvalues`` ``(*, n)`` and ``eigenvectors`` ``(*, n, n)`` (columns)."""

    eigenvalues: Tensor
    eigenvectors: Tensor


def eigh_backward(L: Tensor, U: Tensor, gL: Tensor | None, gU: Tensor | None,
                  eps: float) -> Tensor:
    """``dL/dA`` from ``dL/dlambda`` and ``dL/dU`` (module docstring), in differentiable ops.

    ``L``: ``(*, n)``, ``U``: ``(*, n, n)``; either gradient may be None.
    """
    inner: Tensor | None = None
    if gU is not None:
        M = U.mT @ gU
        # K = (U^T gU - gU^T U) / 2
        K = (M - M.mT) / 2
        # x_ij = lambda_j - lambda_i; F = x / (x^2 + delta^2)
        x = L.unsqueeze(-2) - L.unsqueeze(-1)
        delta = (eps * L.detach().abs().amax(-1, keepdim=True)).unsqueeze(-1)
        inner = broadened_inverse(x, delta) * K
    if gL is not None:
        D = torch.diag_embed(gL)
        inner = D if inner is None else inner + D
    if inner is None:
        return torch.zeros_like(U)
    # dL/dA = U (diag(g_lambda) + F o K) U^T
    return U @ inner @ U.mT


class _EighFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        # A: (*, n, n) -> lambda: (*, n), U: (*, n, n)
        L, U = torch.linalg.eigh((A + A.mT) / 2)
        return L, U * column_signs(U)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, outputs: tuple) -> None:
        _, eps = inputs
        L, U = outputs
        ctx.save_for_backward(L, U)
        ctx.eps = eps
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, gL: Tensor | None, gU: Tensor | None) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0] or (gL is None and gU is None):
            return None, None
        L, U = ctx.saved_tensors
        return eigh_backward(L, U, gL, gU, ctx.eps), None


def eigh(A: Tensor, *, eps: float | None = None, validate: bool = True) -> EighResult:
    r"""Eigenvalues (ascending) and eigenvectors of symmetric ``A`` with a stable backward.

    Like ``torch.linalg.eigh``, but the backward uses Lorentzian-broadened gaps
    (module docstring), so it stays finite for repeated and close eigenvalues
    and is exact for losses that depend on degenerate groups only through their
    span or eigenvalues. Eigenvectors follow the largest-|entry|-positive sign
    rule. Half-precision inputs are decomposed in float32 and cast back;
    autocast is turned off inside.

    Args:
        A: symmetric matrices ``(*, n, n)``.
        eps: relative broadening :math:`\varepsilon` (``delta = eps * max|lambda|``);
            None picks sqrt(machine epsilon) of the compute dtype; 0 is the exact formula.
        validate: check that ``A`` is finite and symmetric within
            :data:`~lamods.decomp._checks.SYMMETRY_RTOL` (one device synchronisation).

    Returns:
        :class:`EighResult` ``(eigenvalues (*, n), eigenvectors (*, n, n))``.

    Examples::

        >>> A = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
        >>> L, U = eigh(A)
        >>> L
        tensor([1., 3.], dtype=torch.float64)
        >>> torch.allclose(U @ torch.diag(L) @ U.T, A)
        True
    """
    check_matrix("eigh", A)
    check_square("eigh", A)
    eps = check_eps("eigh", eps)
    if validate:
        check_symmetric_finite("eigh", A)
    eps = default_eps(A.dtype) if eps is None else eps
    L, U = run_upcast(_EighFn.apply, A, eps)
    return EighResult(*cast_back(A.dtype, L, U))
