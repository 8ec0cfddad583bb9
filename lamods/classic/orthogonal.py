r"""Gram-Schmidt orthogonalization and orthogonal projection onto a subspace.

Modified Gram-Schmidt on the columns :math:`a_1, \dots, a_n` of ``A`` (``m >= n``):
for :math:`j = 1..n`,

.. math::
    r_{jj} = \|v_j\|, \qquad q_j = v_j / r_{jj}, \qquad
    r_{jl} = q_j^T v_l, \quad v_l \leftarrow v_l - r_{jl} q_j \quad (l > j),

starting from :math:`v = a`. Then :math:`A = Q R`, :math:`Q^T Q = I`, ``R``
upper triangular with a positive diagonal: the thin QR factorization (equal to
``torch.linalg.qr`` up to the signs of the columns of ``Q`` / rows of ``R``).
*Modified* GS subtracts each :math:`q_j` from the already-updated :math:`v_l`
instead of from the original :math:`a_l` (classical GS); the two agree in exact
arithmetic, but MGS loses orthogonality only like :math:`u \kappa(A)` instead
of :math:`u \kappa(A)^2` (Bjorck, 1967). ``reorthogonalize=True`` projects each
:math:`v_j` once more against :math:`q_1..q_{j-1}` before normalizing ("twice
is enough", Giraud et al. 2005) for orthogonality to rounding level; ``R`` is
then :math:`\operatorname{triu}(Q^T A)`.

Orthogonal projection onto the column space of ``A``:

.. math::
    P = A A^+ = Q Q^T, \qquad \operatorname{proj}_A(x) = Q (Q^T x),

``P`` symmetric and idempotent (:math:`P^2 = P`); :math:`x - Px` is orthogonal
to every column of ``A``. At full column rank :math:`P = A (A^T A)^{-1} A^T`
and ``Q`` is the QR factor.

Note [rank-deficient basis]: the ``Q`` of a QR factorization spans the column
space of ``A`` only when the columns are independent: for a dependent column
:math:`r_{jj}` is at rounding level and :math:`q_j` an arbitrary direction, and
every later :math:`q_l` is orthogonalized against it (a zero basis gives an
arbitrary ``Q``). ``project`` and ``projection_matrix`` test the diagonal of
``R`` (:math:`|r_{jj}| \le n u \max_j \|a_j\|`, the test of :func:`gram_schmidt`)
and, when it fails, take ``Q = U_r`` from the SVD, the left singular vectors of
singular values above :func:`~lamods.classic.lstsq.default_rcond` times
:math:`s_1` (none for a zero basis: the projection is 0). ``orthonormalize``
promises ``n`` orthonormal columns spanning the column space, which a
rank-deficient ``A`` does not have: it raises.

Everything is written in differentiable torch ops, so autograd gives exact
first and second derivatives (``gradcheck``/``gradgradcheck`` in the tests)
while the columns stay linearly independent.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamods._precision import compute_dtype
from lamods._validation import check_finite, check_matrix, check_symmetric_finite
from lamods.classic.lstsq import default_rcond
from lamods.decomp.svd import svd

__all__ = ["gram_schmidt", "orthonormalize", "project", "projection_matrix"]


def _check_tall(name: str, A: object) -> Tensor:
    check_matrix(name, A)
    m, n = A.shape[-2:]
    if n > m:
        raise ValueError(f"{name}: expected at most as many columns as rows (*, m, n) with "
                         f"n <= m, got shape {tuple(A.shape)}")
    return A


def _dependent_columns(A: Tensor, R: Tensor) -> Tensor:
    r"""Columns (a bool mask over the batch, ``(*, n)``) with :math:`|r_{jj}| \le n u \max_j
    \|a_j\|`: numerically in the span of the columns before them (Note [rank-deficient basis])."""
    diag = R.detach().diagonal(dim1=-2, dim2=-1).abs()
    scale = torch.linalg.vector_norm(A.detach(), dim=-2).amax(-1, keepdim=True)
    tiny = A.shape[-1] * torch.finfo(A.dtype).eps * scale
    return ~(diag > tiny)


def _raise_dependent(name: str, bad: Tensor) -> None:
    if bool(bad.any()):
        j = int(bad.reshape(-1, bad.shape[-1]).any(0).nonzero()[0])
        raise ValueError(
            f"{name}: expected linearly independent columns, got column {j} "
            "(0-based) in the span of the columns before it")


def _range_basis(A: Tensor) -> Tensor:
    """Orthonormal columns spanning the column space of ``A`` (Note [rank-deficient basis]);
    a rank-deficient ``A`` gets zero columns for the missing directions."""
    Q, R = torch.linalg.qr(A)
    if not bool(_dependent_columns(A, R).any()):
        return Q
    U, S, _ = svd(A, validate=False)
    # U_r: s_i > rcond s_1 (none for a zero basis)
    rcond = default_rcond(A.shape[-2], A.shape[-1], A.dtype)
    keep = S.detach() > rcond * S.detach()[..., :1]
    return U * keep.unsqueeze(-2).to(U.dtype)


def _gram_schmidt(A: Tensor, reorthogonalize: bool) -> tuple[Tensor, Tensor]:
    n = A.shape[-1]
    qs: list[Tensor] = []
    rows: list[Tensor] = []
    V = A  # remaining columns v_j .. v_n, updated out of place (autograd sees every step)
    for j in range(n):
        v = V[..., :, 0]
        if reorthogonalize and j > 0:
            # second pass: v_j <- v_j - Q_{<j} (Q_{<j}^T v_j)
            Qp = torch.stack(qs, dim=-1)
            v = v - (Qp @ (Qp.mT @ v.unsqueeze(-1))).squeeze(-1)
        # r_jj = ||v_j||, q_j = v_j / r_jj
        r_jj = torch.linalg.vector_norm(v, dim=-1)
        q = v / r_jj.unsqueeze(-1)
        rest = V[..., :, 1:]
        # r_jl = q_j^T v_l; v_l <- v_l - r_jl q_j   (l > j)
        r = (q.unsqueeze(-2) @ rest).squeeze(-2)
        rest = rest - q.unsqueeze(-1) * r.unsqueeze(-2)
        qs.append(q)
        # row j of R: zeros left of the diagonal, r_jj, then r_jl
        zeros = r_jj.new_zeros(*r_jj.shape, j)
        rows.append(torch.cat([zeros, r_jj.unsqueeze(-1), r], dim=-1))
        V = rest
    Q = torch.stack(qs, dim=-1)
    if reorthogonalize:
        # the second pass moved the columns: R = triu(Q^T A) (A = Q R, Q^T Q = I)
        return Q, torch.triu(Q.mT @ A)
    return Q, torch.stack(rows, dim=-2)


def gram_schmidt(A: Tensor, *, reorthogonalize: bool = False,
                 validate: bool = True) -> tuple[Tensor, Tensor]:
    r"""Thin QR of ``A`` by modified Gram-Schmidt: ``A = Q R``, differentiable.

    Args:
        A: ``(*, m, n)`` with ``n <= m`` and linearly independent columns.
        reorthogonalize: orthogonalize every column twice (module docstring).
        validate: check that ``A`` is finite and its columns independent
            (:math:`\min_j r_{jj} > n u \max_j \|a_j\|`; one device synchronisation).

    Returns:
        ``(Q (*, m, n), R (*, n, n))``: orthonormal columns, upper-triangular
        ``R`` with a positive diagonal.

    Examples::

        >>> A = torch.tensor([[3.0, 1.0], [4.0, 2.0]], dtype=torch.float64)
        >>> Q, R = gram_schmidt(A)
        >>> R
        tensor([[5.0000, 2.2000],
                [0.0000, 0.4000]], dtype=torch.float64)
        >>> torch.allclose(Q @ R, A), torch.allclose(Q.T @ Q, torch.eye(2, dtype=torch.float64))
        (True, True)
    """
    _check_tall("gram_schmidt", A)
    if validate:
        check_symmetric_finite("gram_schmidt", A, symmetric=False)
    Q, R = _gram_schmidt(A, reorthogonalize)
    if validate:
        _raise_dependent("gram_schmidt", _dependent_columns(A, R))
    return Q, R


def orthonormalize(A: Tensor, *, method: str = "gram_schmidt") -> Tensor:
    r"""An orthonormal basis ``Q`` ``(*, m, n)`` of the column space of ``A`` ``(*, m, n)``.

    Column ``j`` of ``Q`` spans the same flag as :math:`a_1..a_j` (the ``Q`` of
    a QR factorization, signs chosen so that :math:`r_{jj} > 0`). Differentiable.

    Args:
        A: ``(*, m, n)``, ``n <= m``, linearly independent columns (a dependent or
            zero column raises ``ValueError``: Note [rank-deficient basis]; one device
            synchronisation).
        method: ``"gram_schmidt"`` (modified GS, reorthogonalized: to
            rounding level) or ``"qr"`` (Householder ``torch.linalg.qr``, faster
            for large ``n``, signs flipped to match).

    Examples::

        >>> A = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
        >>> orthonormalize(A)
        tensor([[1., 0.],
                [0., 1.],
                [0., 0.]])
    """
    if method not in ("gram_schmidt", "qr"):
        raise ValueError(f"orthonormalize: expected method in ('gram_schmidt', 'qr'), "
                         f"got {method!r}")
    if method == "gram_schmidt":
        return gram_schmidt(A, reorthogonalize=True)[0]
    _check_tall("orthonormalize", A)
    check_symmetric_finite("orthonormalize", A, symmetric=False)
    dtype = A.dtype
    A = A.to(compute_dtype(dtype))  # Householder QR runs in at least float32
    Q, R = torch.linalg.qr(A)
    _raise_dependent("orthonormalize", _dependent_columns(A, R))
    # make r_jj > 0: flip the signs of the matching columns of Q
    signs = torch.where(R.diagonal(dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(Q.dtype)
    return (Q * signs.unsqueeze(-2)).to(dtype)


def _check_basis(name: str, x: object, A: object) -> Tensor:
    _check_tall(name, A)
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() == 0:
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, Tensor) else \
            type(x).__name__
        raise ValueError(f"{name}: expected a floating-point x of shape (*, m), got {got}")
    if x.dtype != A.dtype or x.device != A.device:
        raise TypeError(f"{name}: expected x and A on one device with one dtype, got "
                        f"{x.device}/{x.dtype} and {A.device}/{A.dtype}")
    check_symmetric_finite(name, A, symmetric=False)
    check_finite(name, x, "x")
    m = A.shape[-2]
    if x.shape[-1] != m:
        raise ValueError(f"{name}: expected x with last dimension {m} (A's rows), got "
                         f"{x.shape[-1]} (x shape {tuple(x.shape)})")
    if A.dim() > 2 and (x.dim() != A.dim() or x.shape[:-2] != A.shape[:-2]):
        raise ValueError(f"{name}: expected x of shape {tuple(A.shape[:-2])} + (p, {m}) for a "
                         f"batch of bases A {tuple(A.shape)}, got {tuple(x.shape)}")
    return A


def projection_matrix(A: Tensor, *, orthonormal: bool = False) -> Tensor:
    r"""The orthogonal projector :math:`P = A A^+ = Q Q^T` onto the column space of ``A``.

    ``(*, m, m)``; :math:`A (A^T A)^{-1} A^T` at full column rank. A rank-deficient
    (or zero) ``A`` projects onto its true column space (Note [rank-deficient basis]).

    Args:
        A: basis ``(*, m, n)`` (columns), ``n <= m``.
        orthonormal: ``A`` already has orthonormal columns (skip the QR and the rank test).

    Examples::

        >>> P = projection_matrix(torch.tensor([[1.0], [1.0]]))
        >>> P
        tensor([[0.5000, 0.5000],
                [0.5000, 0.5000]])
        >>> torch.allclose(P @ P, P)
        True
    """
    _check_tall("projection_matrix", A)
    Q = A if orthonormal else _range_basis(A)
    # P = Q Q^T
    return Q @ Q.mT


def project(x: Tensor, A: Tensor, *, orthonormal: bool = False) -> Tensor:
    r"""Orthogonal projection :math:`Q (Q^T x)` of vectors ``x`` onto the column space of ``A``.

    Never forms the ``m x m`` projector. Differentiable with respect to ``x`` and ``A``
    (for a rank-deficient ``A``: with its rank held fixed). A rank-deficient or zero
    ``A`` projects onto its true column space (Note [rank-deficient basis]; the rank
    test costs one device synchronisation).

    Args:
        x: vectors ``(*, m)`` (rows).
        A: basis ``(m, n)`` (columns), or a batch ``(*B, m, n)`` with ``x`` ``(*B, p, m)``.
        orthonormal: ``A`` already has orthonormal columns (skip the QR and the rank test).

    Returns:
        ``(*, m)``: the point of span(A) closest to each ``x``.

    Examples::

        >>> A = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> project(torch.tensor([3.0, 4.0, 5.0]), A)
        tensor([3., 4., 0.])
    """
    _check_basis("project", x, A)
    dtype = A.dtype
    work = compute_dtype(dtype)  # decompositions run in at least float32
    x, A = x.to(work), A.to(work)
    Q = A if orthonormal else _range_basis(A)
    # proj(x) = Q (Q^T x), with x as rows: (x Q) Q^T
    return ((x @ Q) @ Q.mT).to(dtype)
