r"""Helpers every decomposition shares: sign convention, broadening, precision.

Note [sign convention]: a singular or eigenvector is defined up to sign. We
flip each vector so that its entry of largest absolute value is positive (the
rule of scikit-learn's ``svd_flip``), so results are comparable run to run and
with scikit-learn. Inside a group of repeated eigenvalues the basis itself is
arbitrary; no sign rule fixes that, and only quantities invariant to the basis
(projectors, eigenvalue functions) are well defined there.

Note [Lorentzian broadening]: the backward passes of ``eigh`` and ``svd``
divide by eigenvalue gaps :math:`x = \lambda_j - \lambda_i`. We replace
:math:`1/x` by

.. math:: \frac{x}{x^2 + \delta^2}, \qquad \delta = \varepsilon \cdot \max_i |\lambda_i|,

which is :math:`1/x \cdot (1 - \delta^2/x^2 + \dots)` for :math:`|x| \gg \delta`
(so equal to the exact term to rounding once gaps exceed
:math:`\delta / \sqrt{u}`), is bounded by :math:`1/(2\delta)` for every
:math:`x`, and is exactly 0 at :math:`x = 0` (Lorentzian broadening as used for
degenerate perturbation theory, e.g. Liao et al., "Differentiable programming
tensor networks", PRX 2019). The default :math:`\varepsilon = \sqrt{u}` (``u``
the machine epsilon of the compute dtype: 1.5e-8 in float64, 3.5e-4 in
float32) balances the two errors: the bias on separated gaps, relative
:math:`(\delta/x)^2`, and the rounding noise ``u`` that a degenerate block
multiplies by at most :math:`1/(2\delta)`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lamods._precision import compute_dtype


def default_eps(dtype: torch.dtype) -> float:
    """The default relative broadening: sqrt(machine epsilon) of the compute dtype."""
    return math.sqrt(torch.finfo(compute_dtype(dtype)).eps)


def broadened_inverse(x: Tensor, delta: Tensor) -> Tensor:
    """Note [Lorentzian broadening]: ``x / (x^2 + delta^2)``, exactly 0 where ``x == 0``.

    The denominator is clamped at the smallest normal number, so the result and
    its derivative stay finite even when ``delta`` is 0 (then ``x == 0`` gives 0/tiny = 0).
    """
    den = (x.square() + delta.square()).clamp_min(torch.finfo(x.dtype).tiny)
    return x / den


def column_signs(U: Tensor) -> Tensor:
    """Note [sign convention]: +-1 per column making each column's largest-|entry| positive.

    ``U``: ``(*, m, k)`` -> signs ``(*, 1, k)``.
    """
    idx = U.abs().argmax(dim=-2, keepdim=True)
    top = U.gather(-2, idx)
    return torch.where(top < 0, -torch.ones_like(top), torch.ones_like(top))
