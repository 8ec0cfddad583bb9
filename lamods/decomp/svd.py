r"""Thin SVD whose backward stays finite on repeated and zero singular values.

Forward: :math:`A = U \operatorname{diag}(S) V^H`, ``A`` of shape ``(*, m, n)``,
``k = min(m, n)``, ``S`` descending, signs by Note [sign convention] of
:mod:`lamods.decomp._common` applied to the columns of ``U`` (``Vh`` follows).

Backward (real case of PyTorch's ``svd_backward``; Townsend, "Differentiating
the singular value decomposition", 2016): with :math:`\mathrm{skew}(X) = X - X^T`,
:math:`E_{jk} = s_k^2 - s_j^2`,

.. math::
    R = \operatorname{diag}(g_S)
      + \frac{\mathrm{skew}(U^T g_U)_{jk}\, s_k + s_j\, \mathrm{skew}(V^T g_V)_{jk}}{E_{jk}},

.. math::
    \frac{\partial L}{\partial A} = U R V^T
      + (I_m - U U^T)\, g_U\, S^{-1} V^T
      + U S^{-1} g_V^T (I_n - V V^T)

(the last two terms only for ``m > k`` resp. ``n > k``).

In partial fractions, with :math:`a = \mathrm{skew}(U^T g_U)`, :math:`b = \mathrm{skew}(V^T g_V)`,

.. math::
    R_{jk} = \frac{(a + b)_{jk}}{2 (s_k - s_j)} + \frac{(a - b)_{jk}}{2 (s_k + s_j)},
    \quad j \ne k.

Each of :math:`1/(s_k - s_j)`, :math:`1/(s_k + s_j)` and :math:`1/s` is
broadened (Note [Lorentzian broadening]) to :math:`x/(x^2 + \delta^2)`,
:math:`\delta = \varepsilon s_{\max}`. Splitting first matters: inside a
group of repeated singular values the gauge (rotating ``U`` and ``V`` of the
group together) makes :math:`(a + b)_{jk} = 0` for a well-defined loss, but
:math:`(a - b)_{jk}/(s_k + s_j)` is a genuine, finite term that broadening
:math:`1/(s_k^2 - s_j^2)` as a whole would wrongly drop. For a loss
that uses only the top-r singular triplets of a rank-r matrix (the rank-3
15x15 case of pytorch #49886) or only functions of singular values, every term
that divides by a vanishing gap or singular value is multiplied by an exact (or
rounding-level) zero: the gradient is finite and exact to about :math:`\sqrt{u}`.
Inside a group of repeated singular values (with a gap to the rest), losses
through the projectors :math:`U_G U_G^T`, :math:`V_G V_G^T`, the polar factor
:math:`U_G V_G^T` or symmetric functions of the group's singular values are
exact too. Not exact at an exact repeat: the reconstruction
:math:`U_k S_k V_k^T` with the repeat inside the top-k (its
:math:`(a + b)/(s_k - s_j)` term has a nonzero 0/0 limit that ``(gU, gS, gVh)``
no longer carry; write it as :math:`U_k U_k^T A`, which is exact). Losses on
individual singular vectors inside a group get a finite, bounded gradient
(they have no true one).

Note [double backward]: the backward is written in differentiable ops of the
saved outputs, so ``gradgradcheck`` passes on distinct, nonzero singular values.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from lamods._precision import cast_back, run_upcast
from lamods._validation import check_eps, check_matrix, check_symmetric_finite
from lamods.decomp._common import broadened_inverse, column_signs, default_eps

__all__ = ["SVDResult", "svd", "svd_backward"]


class SVDResult(NamedTuple):
    """``U`` ``(*, m, k)``, ``S`` ``(*, k)`` descending, ``Vh`` ``(*, k, n)``."""

    U: Tensor
    S: Tensor
    Vh: Tensor


def svd_backward(U: Tensor, S: Tensor, Vh: Tensor, gU: Tensor | None, gS: Tensor | None,
                 gVh: Tensor | None, eps: float) -> Tensor:
    """``dL/dA`` of the thin SVD (module docstring), in differentiable ops."""
    m, n, k = U.shape[-2], Vh.shape[-1], S.shape[-1]
    if gU is None and gVh is None:
        if gS is None:
            return torch.zeros(*U.shape[:-1], n, dtype=U.dtype, device=U.device)
        # dL/dA = U diag(g_S) V^T
        return U @ (gS.unsqueeze(-1) * Vh)
    V = Vh.mT
    gV = None if gVh is None else gVh.mT
    smax = S.detach().amax(-1, keepdim=True)
    delta = (eps * smax).unsqueeze(-1)
    # a = skew(U^T g_U), b = skew(V^T g_V);
    # R_jk = (a_jk s_k + s_j b_jk)/(s_k^2 - s_j^2)
    #      = (a + b)_jk / (2 (s_k - s_j)) + (a - b)_jk / (2 (s_k + s_j)), each broadened
    a = b = None
    if gU is not None:
        UtgU = U.mT @ gU
        a = UtgU - UtgU.mT
    if gV is not None:
        VtgV = V.mT @ gV
        b = VtgV - VtgV.mT
    plus = a if b is None else (b if a is None else a + b)
    minus = a if b is None else (-b if a is None else a - b)
    diff = S.unsqueeze(-2) - S.unsqueeze(-1)
    total = S.unsqueeze(-2) + S.unsqueeze(-1)
    R = (plus * broadened_inverse(diff, delta) + minus * broadened_inverse(total, delta)) / 2
    if gS is not None:
        R = R + torch.diag_embed(gS)
    # 1/s broadened: s / (s^2 + (eps * s_max)^2)
    s_inv = broadened_inverse(S, eps * smax)
    if m > k and gU is not None:
        # dL/dA = [U R + (I - U U^T) g_U S^-1] V^T
        gUSinv = gU * s_inv.unsqueeze(-2)
        gA = U @ R + gUSinv - U @ (U.mT @ gUSinv)
        return gA @ Vh
    if n > k and gV is not None:
        # dL/dA = U [R V^T + S^-1 g_V^T (I - V V^T)]
        gVSinv = gV * s_inv.unsqueeze(-2)
        gA = R @ Vh + gVSinv.mT - (gVSinv.mT @ V) @ Vh
        return U @ gA
    return U @ R @ Vh


class _SVDFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        # A: (*, m, n) -> U (*, m, k), S (*, k), Vh (*, k, n)
        U, S, Vh = torch.linalg.svd(A, full_matrices=False)
        signs = column_signs(U)
        return U * signs, S, Vh * signs.mT

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, outputs: tuple) -> None:
        ctx.save_for_backward(*outputs)
        ctx.eps = inputs[1]
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, gU: Tensor | None, gS: Tensor | None,
                 gVh: Tensor | None) -> tuple[Tensor | None, None]:
        if not ctx.needs_input_grad[0] or (gU is None and gS is None and gVh is None):
            return None, None
        U, S, Vh = ctx.saved_tensors
        return svd_backward(U, S, Vh, gU, gS, gVh, ctx.eps), None


def svd(A: Tensor, *, eps: float | None = None, validate: bool = True) -> SVDResult:
    r"""Thin SVD ``A = U diag(S) Vh`` with a backward that stays finite (module docstring).

    Like ``torch.linalg.svd(A, full_matrices=False)``; signs follow the
    largest-|entry|-positive rule on the columns of ``U``. Half-precision inputs
    are decomposed in float32 and cast back; autocast is turned off inside.

    Args:
        A: ``(*, m, n)``.
        eps: relative broadening :math:`\varepsilon`; None picks sqrt(machine
            epsilon) of the compute dtype; 0 is the exact formula.
        validate: check that ``A`` is finite (one device synchronisation).

    Returns:
        :class:`SVDResult` ``(U (*, m, k), S (*, k), Vh (*, k, n))``, ``k = min(m, n)``.

    Examples::

        >>> A = torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
        >>> U, S, Vh = svd(A)
        >>> S
        tensor([4., 3.], dtype=torch.float64)
        >>> torch.allclose(U @ torch.diag(S) @ Vh, A)
        True
    """
    check_matrix("svd", A)
    eps = check_eps("svd", eps)
    if validate:
        check_symmetric_finite("svd", A, symmetric=False)
    eps = default_eps(A.dtype) if eps is None else eps
    U, S, Vh = run_upcast(_SVDFn.apply, A, eps)
    return SVDResult(*cast_back(A.dtype, U, S, Vh))
