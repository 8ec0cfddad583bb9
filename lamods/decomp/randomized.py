r"""Randomized SVD and top-k symmetric eigenpairs, differentiable through the final small problem.

Randomized SVD (Halko, Martinsson & Tropp, "Finding structure with
randomness", SIAM Review 2011, Algorithms 4.4 and 5.1): draw
:math:`\Omega \in \mathbb{R}^{n \times l}`, :math:`l = k + p` (``p`` oversamples),
and orthonormalize

.. math:: Q = \operatorname{qr}\big((A A^T)^q A \Omega\big),

re-orthonormalizing with QR after every product (power iterations, ``q =
n_iter``). Then :math:`B = Q^T A = \tilde U S V^T` (small SVD) and
:math:`A \approx (Q \tilde U_k) S_k V_k^T`.

Top-k eigenpairs of symmetric ``A`` (``topk_eigh``):

- ``"full"``: :func:`~lamods.decomp.eigh` and keep k (exact, stable backward).
- ``"power"``: subspace iteration :math:`Q \leftarrow \operatorname{qr}(A Q)` on
  ``l = k + p`` columns, then Rayleigh-Ritz: :math:`T = Q^T A Q = W \Lambda W^T`,
  :math:`U = Q W_k`. Converges to the eigenvalues of largest *magnitude*: use
  it for positive semi-definite matrices (covariance, Gram, kernel matrices).
  Note [power on indefinite matrices]: once ``range(Q)`` holds the ``l``
  eigenvalues of largest magnitude, every eigenvalue left out has
  :math:`|\lambda| \le \mu = \min_j |\theta_j|` over the Ritz values
  :math:`\theta`; so the ``k`` largest Ritz values are the ``k`` largest
  eigenvalues whenever :math:`\theta_k \ge 0` (then :math:`\theta_k \ge \mu`).
  With :math:`\theta_k < 0` negative eigenvalues crowd the subspace and an
  eigenvalue in :math:`(\theta_k, \mu)` may be missing: ``topk_eigh`` raises
  :class:`~lamods.NotPSDError` (use ``"lanczos"`` or ``"full"``) instead of
  returning the wrong "largest" eigenvalues. An indefinite ``A`` whose
  negative eigenvalues are small in magnitude passes, correctly, and so does
  any ``A`` with ``l = n`` (the basis is the whole space).
- ``"lanczos"``: block Lanczos (randomized block Krylov, Musco & Musco, NeurIPS
  2015): the basis of :math:`[\Omega, A\Omega, \dots, A^q \Omega]`, blocks of
  ``l`` columns, fully re-orthogonalized (classical Gram-Schmidt twice, then one
  QR of the whole basis), then Rayleigh-Ritz. Finds both ends of the spectrum,
  handles repeated eigenvalues up to multiplicity ``l``, and works for indefinite ``A``.

Note [sparse input]: ``randomized_svd`` also takes a 2-D sparse ``A`` (CSR, CSC or COO, e.g.
a TF-IDF document-term matrix) without ever making it dense: the range finder and the small
problem only use the products :math:`A \Omega`, :math:`A^T Q` and :math:`Q^T A`, which torch
computes sparse x dense (COO is converted to CSR once). No gradient flows to a sparse ``A``
(it would be a dense ``m x n`` tensor): one that requires grad is refused.

Note [randomized backward]: the range basis ``Q`` is computed without a graph
and treated as a constant; gradients flow only through the final small
problem, :math:`B = Q^T A` (SVD) or :math:`T = Q^T A Q` (eigh), both with the
stable backward. This is the gradient of :math:`Q \tilde U_k S_k V_k^T` with
``Q`` fixed. It is exact for functions of the top-k singular values /
eigenvalues once ``range(Q)`` holds the top-k singular / eigen subspace
(:math:`\partial s_i/\partial A = u_i v_i^T` lies in it). For singular /
eigenvectors it omits the coupling :math:`u_j^T dA\, u_i/(\lambda_i - \lambda_j)`
to directions :math:`u_j` outside ``range(Q)``, an error of the relative size
of the spectrum left outside ``Q``; use :func:`~lamods.decomp.svd` or
``method="full"`` when those gradients must be exact. Iterating inside autograd
(as ``torch.svd_lowrank`` does) costs memory per iteration and still gives no
better gradient than the converged subspace.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lamods._matmul import at_b
from lamods._precision import cast_back, compute_dtype
from lamods._validation import (
    check_finite,
    check_matrix,
    check_nonnegative_int,
    check_rank_k,
    check_square,
    check_symmetric_finite,
)
from lamods.decomp._common import column_signs
from lamods.decomp.eigh import EighResult, eigh
from lamods.decomp.svd import SVDResult, svd
from lamods.exceptions import NotPSDError

__all__ = ["randomized_range_finder", "randomized_svd", "topk_eigh"]

_METHODS = ("lanczos", "power", "full")


def _gaussian(A: Tensor, cols: int, generator: torch.Generator | None) -> Tensor:
    """A standard normal test matrix ``(*, n, cols)`` for ``A`` ``(*, m, n)``.

    Drawn in float64 on the generator's device (``A``'s for torch's global generator),
    then cast: the same seed gives the same matrix in float32 and float64.
    """
    device = A.device if generator is None else generator.device
    return torch.randn(*A.shape[:-2], A.shape[-1], cols, generator=generator,
                       device=device, dtype=torch.float64).to(device=A.device, dtype=A.dtype)


@torch.no_grad()
def randomized_range_finder(A: Tensor, size: int, n_iter: int,
                            generator: torch.Generator | None = None) -> Tensor:
    r"""Orthonormal ``Q`` ``(*, m, size)`` whose range approximates the top range of ``A``.

    :math:`Q = \operatorname{qr}((A A^T)^q A \Omega)`, QR after every product
    (HMT Algorithm 4.4). No graph is recorded.
    """
    Q = torch.linalg.qr(A @ _gaussian(A, size, generator)).Q
    for _ in range(n_iter):
        Q = torch.linalg.qr(at_b(A, Q)).Q
        Q = torch.linalg.qr(A @ Q).Q
    return Q


def randomized_svd(A: Tensor, k: int, oversamples: int = 10, n_iter: int = 4,
                   generator: torch.Generator | None = None, *,
                   eps: float | None = None) -> SVDResult:
    r"""Rank-``k`` randomized SVD :math:`A \approx U_k \operatorname{diag}(S_k) V_k^H`.

    Halko-Martinsson-Tropp range finder with ``n_iter`` power iterations and QR
    re-orthonormalization, then the small SVD of :math:`Q^T A` (module
    docstring). Wide inputs (``m < n``) are handled through :math:`A^T`.
    Gradients flow through the small SVD only, with ``Q`` held fixed (Note
    [randomized backward]). Signs follow the largest-|entry|-positive rule on ``U``.

    Args:
        A: ``(*, m, n)``, or a 2-D sparse ``(m, n)`` tensor (CSR, CSC or COO), never
            densified (Note [sparse input]).
        k: number of singular triplets, ``1 <= k <= min(m, n)``.
        oversamples: extra columns ``p`` of the test matrix (``l = min(k + p, min(m, n))``).
        n_iter: power iterations ``q``.
        generator: source of the Gaussian test matrix (on ``A``'s device).
        eps: broadening of the small SVD's backward (see :func:`~lamods.decomp.svd`).

    Returns:
        :class:`~lamods.decomp.SVDResult` ``(U (*, m, k), S (*, k), Vh (*, k, n))``.

    Examples::

        >>> g = torch.Generator().manual_seed(0)
        >>> A = torch.randn(100, 8, dtype=torch.float64, generator=g) @ torch.randn(
        ...     8, 50, dtype=torch.float64, generator=g)
        >>> U, S, Vh = randomized_svd(A, 5, generator=g)
        >>> torch.allclose(S, torch.linalg.svdvals(A)[:5])
        True
    """
    check_matrix("randomized_svd", A)
    m, n = A.shape[-2], A.shape[-1]
    check_rank_k("randomized_svd", k, min(m, n), "min(m, n)")
    oversamples = check_nonnegative_int("randomized_svd", "oversamples", oversamples)
    n_iter = check_nonnegative_int("randomized_svd", "n_iter", n_iter)
    if A.layout != torch.strided:
        A = _check_sparse(A)
    else:
        check_symmetric_finite("randomized_svd", A, symmetric=False)
    dtype = A.dtype
    work = A.to(compute_dtype(dtype))
    with torch.autocast(A.device.type, enabled=False):
        if m < n:
            V, S, Uh = _randomized_svd_tall(work.mT, k, oversamples, n_iter, generator, eps)
            U, Vh = Uh.mT, V.mT
            signs = column_signs(U)
            U, Vh = U * signs, Vh * signs.mT
        else:
            U, S, Vh = _randomized_svd_tall(work, k, oversamples, n_iter, generator, eps)
    return SVDResult(*cast_back(dtype, U, S, Vh))


_SPARSE_LAYOUTS = (torch.sparse_csr, torch.sparse_csc, torch.sparse_coo)


def _check_sparse(A: Tensor) -> Tensor:
    """Note [sparse input]: a 2-D CSR / CSC / COO matrix with finite values and no
    gradient; COO comes back as CSR."""
    name = "randomized_svd"
    if A.layout not in _SPARSE_LAYOUTS:
        raise TypeError(f"{name}: expected a strided tensor or a sparse CSR, CSC or COO matrix, "
                        f"got layout {A.layout}")
    if A.dim() != 2 or A.dense_dim() != 0:
        raise ValueError(f"{name}: expected a sparse A of shape (m, n) (no batch or dense "
                         f"dimensions), got shape {tuple(A.shape)} with {A.dense_dim()} dense "
                         "dimensions")
    if A.requires_grad:
        raise ValueError(f"{name}: expected a sparse A that does not require grad (its gradient "
                         "would be a dense m x n tensor), got requires_grad=True; pass "
                         "A.detach(), or a dense A for gradients")
    if A.layout == torch.sparse_coo:
        A = A.coalesce().to_sparse_csr()
    check_finite(name, A.values(), "sparse A's values")
    return A


def _randomized_svd_tall(A: Tensor, k: int, oversamples: int, n_iter: int,
                         generator: torch.Generator | None,
                         eps: float | None) -> tuple[Tensor, Tensor, Tensor]:
    size = min(k + oversamples, A.shape[-1])
    Q = randomized_range_finder(A.detach(), size, n_iter, generator)
    # B = Q^T A: (*, l, n), differentiable in A with Q fixed
    Ub, S, Vh = svd(Q.mT @ A, eps=eps, validate=False)
    U = Q @ Ub[..., :k]
    S, Vh = S[..., :k], Vh[..., :k, :]
    signs = column_signs(U)
    return U * signs, S, Vh * signs.mT


@torch.no_grad()
def _subspace_iteration(A: Tensor, size: int, n_iter: int,
                        generator: torch.Generator | None) -> Tensor:
    Q = torch.linalg.qr(A @ _gaussian(A, size, generator)).Q
    for _ in range(n_iter):
        Q = torch.linalg.qr(A @ Q).Q
    return Q


@torch.no_grad()
def _block_krylov(A: Tensor, size: int, n_iter: int,
                  generator: torch.Generator | None) -> Tensor:
    """Orthonormal basis of [Omega, A Omega, ..., A^q Omega] (block Lanczos, full reorth)."""
    n = A.shape[-1]
    blocks = [torch.linalg.qr(_gaussian(A, size, generator)).Q]
    depth = min(n_iter, -(-n // size) - 1)
    for _ in range(depth):
        K = torch.cat(blocks, dim=-1)
        W = A @ blocks[-1]
        for _ in range(2):  # classical Gram-Schmidt, twice
            W = W - K @ at_b(K, W)
        blocks.append(torch.linalg.qr(W).Q)
    K = torch.cat(blocks, dim=-1)
    if K.shape[-1] > n:
        K = K[..., :n]
    # one QR of the whole basis: orthonormal even where a block broke down (low rank)
    return torch.linalg.qr(K).Q


def _check_power_ritz(theta: Tensor, k: int, n: int) -> None:
    """Note [power on indefinite matrices]: the k-th largest Ritz value must be >= 0
    (up to rounding, ``l u max |theta|``) unless the basis spans everything (``l = n``)."""
    size = theta.shape[-1]
    if size >= n:
        return  # Rayleigh-Ritz on the whole space: the eigenvalues themselves
    theta_k = theta[..., size - k]  # ascending: the k-th largest
    tol = size * torch.finfo(theta.dtype).eps * theta.abs().amax(-1)
    bad = theta_k < -tol
    if bool(bad.any()):
        worst = float(theta_k[bad].amin())
        raise NotPSDError(
            f"topk_eigh: expected a positive semi-definite A with method='power' (it finds the "
            f"eigenvalues of largest magnitude), got negative eigenvalues among them (k-th "
            f"largest Ritz value {worst:.4g}), so the {k} largest cannot be trusted; use "
            f"method='lanczos' or 'full' for an indefinite A")


def topk_eigh(A: Tensor, k: int, *, method: str = "lanczos", largest: bool = True,
              n_iter: int | None = None, oversamples: int = 10,
              generator: torch.Generator | None = None,
              eps: float | None = None) -> EighResult:
    r"""The ``k`` largest (or smallest) eigenpairs of symmetric ``A``.

    Args:
        A: symmetric ``(*, n, n)``.
        k: number of eigenpairs, ``1 <= k <= n``.
        method: ``"lanczos"`` (block Krylov, default), ``"power"`` (subspace
            iteration; largest magnitude, so for positive semi-definite ``A``
            and ``largest=True`` only; raises :class:`~lamods.NotPSDError` when
            negative eigenvalues make the result unreliable, Note [power on
            indefinite matrices]) or ``"full"`` (dense :func:`eigh`).
        largest: the k largest eigenvalues in descending order, else the k
            smallest in ascending order.
        n_iter: power iterations / Krylov depth; None picks 4 for lanczos and 8 for power.
        oversamples: extra columns per block, ``l = min(k + oversamples, n)``.
        generator: source of the random start block.
        eps: broadening of the small eigh's backward (see :func:`eigh`).

    Gradients: ``"full"`` is exact (stable eigh backward); the others
    differentiate the Rayleigh-Ritz step with the basis fixed (Note
    [randomized backward]): exact for eigenvalue functions once converged.

    Returns:
        :class:`~lamods.decomp.EighResult` ``(eigenvalues (*, k), eigenvectors (*, n, k))``.

    Examples::

        >>> A = torch.diag(torch.arange(1.0, 31.0, dtype=torch.float64))
        >>> topk_eigh(A, 3).eigenvalues
        tensor([30.0000, 29.0000, 28.0000], dtype=torch.float64)
        >>> topk_eigh(A, 2, largest=False, method="full").eigenvalues
        tensor([1., 2.], dtype=torch.float64)
    """
    check_matrix("topk_eigh", A)
    check_square("topk_eigh", A)
    n = A.shape[-1]
    check_rank_k("topk_eigh", k, n, "n")
    if method not in _METHODS:
        raise ValueError(f"topk_eigh: expected method in {_METHODS}, got {method!r}")
    if method == "power" and not largest:
        raise ValueError("topk_eigh: expected largest=True with method='power' (it converges to "
                         "the largest magnitudes), got largest=False; use 'lanczos' or 'full'")
    oversamples = check_nonnegative_int("topk_eigh", "oversamples", oversamples)
    if n_iter is not None:
        n_iter = check_nonnegative_int("topk_eigh", "n_iter", n_iter)
    check_symmetric_finite("topk_eigh", A)
    dtype = A.dtype
    work = A.to(compute_dtype(dtype))
    with torch.autocast(A.device.type, enabled=False):
        if method == "full":
            L, U = eigh(work, eps=eps, validate=False)
        else:
            size = min(k + oversamples, n)
            if method == "power":
                Q = _subspace_iteration(work.detach(), size, 8 if n_iter is None else n_iter,
                                        generator)
            else:
                Q = _block_krylov(work.detach(), size, 4 if n_iter is None else n_iter,
                                  generator)
            # Rayleigh-Ritz: T = Q^T A Q = W diag(lambda) W^T, U = Q W (Q fixed)
            T = Q.mT @ work @ Q
            L, W = eigh(T, eps=eps, validate=False)
            U = Q @ W
            if method == "power":
                _check_power_ritz(L.detach(), k, n)
        if largest:
            L, U = L[..., -k:].flip(-1), U[..., -k:].flip(-1)
        else:
            L, U = L[..., :k], U[..., :k]
        U = U * column_signs(U)
    return EighResult(*cast_back(dtype, L, U))
