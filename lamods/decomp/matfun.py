r"""Inverse square root of a symmetric PSD matrix, with an exact backward for any spectrum.

.. math:: W = (A + \epsilon I)^{-1/2} = U \operatorname{diag}(s)^{-1} U^T, \qquad
          s_i = \sqrt{\lambda_i + \epsilon}

(the ZCA whitening matrix of a covariance ``A``). Eigenvalues below zero, which
only rounding produces in a PSD input, are clamped to zero.

Note [singular and indefinite input]: with :math:`\epsilon = 0` a singular
``A`` has no inverse square root (:math:`0^{-1/2} = \infty`, and the product
with ``U`` gives NaN): ``inv_sqrtm`` raises :class:`~lamods.NotPSDError` when
:math:`\lambda_{\min} \le n u \max_i |\lambda_i|` (singular to working
precision, :math:`u` the machine epsilon), always, since the result would
be inf/NaN. With ``validate`` it also raises on a clearly indefinite ``A``
(:math:`\lambda_{\min} < -n u \max_i |\lambda_i|`), whose negative
eigenvalues clamping would silently replace by zero. Pass
:math:`\epsilon > 0` to regularise a singular covariance.

Backward (Daleckii-Krein): for a spectral function :math:`W = U f(\Lambda) U^T`,

.. math::
    \frac{\partial L}{\partial A} = U \big(D \circ (U^T G U)\big) U^T, \qquad
    D_{ij} = \frac{f(\lambda_i) - f(\lambda_j)}{\lambda_i - \lambda_j}, \;
    D_{ii} = f'(\lambda_i),

with :math:`G = \mathrm{sym}(\partial L/\partial W)`. For :math:`f = (\lambda +
\epsilon)^{-1/2}` the divided difference has the closed form

.. math:: D_{ij} = -\frac{1}{s_i s_j (s_i + s_j)},

which holds for :math:`i = j` too and involves no subtraction: the backward is
exact, with no broadening, for repeated and close eigenvalues alike. (Building
``W`` from :func:`~lamods.decomp.eigh` and autograd would also be finite, but
near-repeated eigenvalues would be broadened; this form is exact.)

Note [double backward]: the first backward uses the eigendecomposition saved by
the forward; when a graph is asked for (``create_graph=True``) the backward
recomputes it with the differentiable :func:`~lamods.decomp.eigh`, so
``gradgradcheck`` passes on distinct spectra.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lamods._precision import cast_back, run_upcast
from lamods._validation import check_matrix, check_square, check_symmetric_finite
from lamods.decomp.eigh import eigh
from lamods.exceptions import NotPSDError

__all__ = ["inv_sqrtm"]


def _inv_sqrtm_backward(L: Tensor, U: Tensor, g: Tensor, eps: float) -> Tensor:
    s = (L.clamp_min(0) + eps).sqrt()
    # D_ij = -1 / (s_i s_j (s_i + s_j))
    si, sj = s.unsqueeze(-1), s.unsqueeze(-2)
    D = -1 / (si * sj * (si + sj))
    G = (g + g.mT) / 2
    # dL/dA = U (D o (U^T G U)) U^T
    return U @ (D * (U.mT @ G @ U)) @ U.mT


def _check_spectrum(L: Tensor, eps: float, validate: bool) -> None:
    """Note [singular and indefinite input]: one synchronisation."""
    n = L.shape[-1]
    top = L.abs().amax(-1)
    tol = n * torch.finfo(L.dtype).eps * top
    low = L[..., 0]
    indefinite = (low < -tol).any() if validate else torch.zeros((), dtype=torch.bool)
    singular = (low <= tol).any() if eps == 0 else torch.zeros((), dtype=torch.bool)
    flags = torch.stack([indefinite.to(L.device), singular.to(L.device)]).tolist()
    if not (flags[0] or flags[1]):
        return
    i = int(low.reshape(-1).argmin())
    lo, hi = float(low.reshape(-1)[i]), float(top.reshape(-1)[i])
    if flags[0]:
        raise NotPSDError(f"inv_sqrtm: expected a positive semi-definite matrix, got smallest "
                          f"eigenvalue {lo:.4g} (largest magnitude {hi:.4g})")
    raise NotPSDError(f"inv_sqrtm: expected a positive definite matrix with eps=0, got a "
                      f"singular one (smallest eigenvalue {lo:.4g} <= n u max |lambda| = "
                      f"{float(tol.reshape(-1)[i]):.4g}); pass eps > 0 to regularise")


class _InvSqrtmFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(A: Tensor, eps: float, validate: bool) -> tuple[Tensor, Tensor, Tensor]:
        # A: (*, n, n) -> W (*, n, n), and the decomposition kept for backward
        L, U = torch.linalg.eigh((A + A.mT) / 2)
        if eps == 0 or validate:
            _check_spectrum(L, eps, validate)
        s = (L.clamp_min(0) + eps).sqrt()
        # W = U diag(1/s) U^T
        W = (U / s.unsqueeze(-2)) @ U.mT
        return W, L, U

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, outputs: tuple) -> None:
        A, eps, _ = inputs
        _, L, U = outputs
        ctx.mark_non_differentiable(L, U)
        ctx.save_for_backward(A, L, U)
        ctx.eps = eps
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, g: Tensor | None, *_unused: Any) -> tuple[Tensor | None, None, None]:
        if g is None or not ctx.needs_input_grad[0]:
            return None, None, None
        A, L, U = ctx.saved_tensors
        if torch.is_grad_enabled():
            # Note [double backward]: a decomposition autograd can differentiate
            L, U = eigh(A, validate=False)
        return _inv_sqrtm_backward(L, U, g, ctx.eps), None, None


def inv_sqrtm(A: Tensor, eps: float = 0.0, *, validate: bool = True) -> Tensor:
    r""":math:`(A + \epsilon I)^{-1/2}` of symmetric PSD ``A`` ``(*, n, n)``, exact backward.

    Args:
        A: symmetric positive semi-definite matrices ``(*, n, n)``.
        eps: ridge :math:`\epsilon \ge 0` added to every eigenvalue (needed for singular ``A``:
            with ``eps=0`` a singular ``A`` raises, Note [singular and indefinite input]; the
            test costs one device synchronisation).
        validate: check that ``A`` is finite, symmetric and not indefinite (one device
            synchronisation).

    Raises:
        NotPSDError: ``eps=0`` and ``A`` singular to working precision; or, with
            ``validate``, ``A`` indefinite beyond rounding.

    Examples::

        >>> A = torch.tensor([[4.0, 0.0], [0.0, 9.0]], dtype=torch.float64)
        >>> inv_sqrtm(A)
        tensor([[0.5000, 0.0000],
                [0.0000, 0.3333]], dtype=torch.float64)
    """
    check_matrix("inv_sqrtm", A)
    check_square("inv_sqrtm", A)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"inv_sqrtm: expected eps to be a float >= 0, got {eps!r}")
    if validate:
        check_symmetric_finite("inv_sqrtm", A)
    W, _, _ = run_upcast(_InvSqrtmFn.apply, A, float(eps), validate)
    return cast_back(A.dtype, W)[0]
