r"""Tensor decompositions: CP (canonical polyadic) by alternating least squares, Tucker by
HOSVD and HOOI, on N-way tensors (3-way in the examples), differentiable.

Notation (Kolda & Bader, "Tensor decompositions and applications", SIAM Review 2009): a
tensor :math:`\mathcal{T} \in \mathbb{R}^{I_1 \times \dots \times I_N}`; its mode-:math:`n`
unfolding :math:`T_{(n)} \in \mathbb{R}^{I_n \times \prod_{m \ne n} I_m}` (mode :math:`n`
to the rows, the other modes in order, the last fastest); the mode-:math:`n` product
:math:`\mathcal{T} \times_n M` multiplies every mode-:math:`n` fibre by :math:`M`,
:math:`(\mathcal{T} \times_n M)_{(n)} = M T_{(n)}`.

**CP** (rank :math:`R`):

.. math::
    \mathcal{T} \approx \sum_{r=1}^R \lambda_r\, a^{(1)}_r \circ a^{(2)}_r \circ \dots \circ
    a^{(N)}_r, \qquad \|a^{(n)}_r\| = 1.

ALS fixes every factor but one and solves a linear least-squares problem for it:

.. math::
    A^{(n)} \leftarrow T_{(n)} \big(\textstyle\bigodot_{m \ne n} A^{(m)}\big)
    \big(\textstyle\mathop{\ast}_{m \ne n} A^{(m)T} A^{(m)}\big)^{+},

:math:`\odot` the Khatri-Rao (column-wise Kronecker) product, :math:`\ast` the Hadamard
product; the product :math:`T_{(n)} (\odot A^{(m)})` (MTTKRP) is one ``einsum``. Each step
cannot increase :math:`\|\mathcal{T} - \hat{\mathcal{T}}\|_F`. CP of rank :math:`R > 1` has no
closed form and ALS finds a local optimum: an exactly rank-:math:`R` tensor with generic
factors is recovered (Kruskal's uniqueness) from the SVD start, while a random start can stall
at a stationary point with a large error (Note [CP start]).

Note [CP start]: ``init="svd"`` starts each factor from the leading left singular vectors of
its unfolding (as Kolda & Bader, Sec. 3.4, and tensorly's default do); it is deterministic
and, in our tests, reaches the exact decomposition of generic low-rank tensors where random
starts sometimes stop in a swamp (an orthogonally decomposable 6x7x8 rank-3 tensor: relative
error 0.249 for good from one random start).

**Tucker** (multilinear rank :math:`(r_1, \dots, r_N)`):

.. math::
    \mathcal{T} \approx \mathcal{G} \times_1 U_1 \times_2 U_2 \dots \times_N U_N, \qquad
    U_n^T U_n = I, \qquad \mathcal{G} = \mathcal{T} \times_1 U_1^T \dots \times_N U_N^T.

- HOSVD (De Lathauwer, De Moor & Vandewalle 2000): :math:`U_n` = the :math:`r_n` leading
  left singular vectors of :math:`T_{(n)}`. Quasi-optimal:
  :math:`\|\mathcal{T} - \hat{\mathcal{T}}\|_F^2 \le \sum_n \sum_{i > r_n} \sigma_i(T_{(n)})^2`,
  with equality when a single mode is truncated.
- HOOI (higher-order orthogonal iteration): from the HOSVD, repeatedly
  :math:`U_n \leftarrow` leading left singular vectors of
  :math:`(\mathcal{T} \times_{m \ne n} U_m^T)_{(n)}`; each sweep cannot decrease
  :math:`\|\mathcal{G}\|_F`.

With orthonormal factors the error has a closed form,
:math:`\|\mathcal{T} - \hat{\mathcal{T}}\|_F^2 = \|\mathcal{T}\|_F^2 - \|\mathcal{G}\|_F^2`.

Gradients: every step is a differentiable op (``einsum``, ``pinv`` of the small
:math:`R \times R` Gram product, :func:`lamods.svd` with its stable backward), so
``hosvd`` is differentiable in :math:`\mathcal{T}`, and ``cp_als`` / ``hooi`` differentiate
through their unrolled iterations (memory grows with ``n_iter``; ``torch.no_grad()`` when no
gradient is needed).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from lamods._precision import pow2_scale
from lamods._random import generator_device, make_generator
from lamods._validation import (
    check_finite,
    check_nonnegative,
    check_nonnegative_int,
    check_positive_int,
)
from lamods.decomp._common import column_signs
from lamods.decomp.svd import svd

__all__ = [
    "CPResult",
    "TuckerResult",
    "cp_als",
    "cp_reconstruct",
    "fold",
    "hooi",
    "hosvd",
    "mode_product",
    "tucker_reconstruct",
    "unfold",
]


class CPResult(NamedTuple):
    """``weights`` ``(R,)`` (descending), ``factors`` ``[(I_n, R)]`` with unit columns,
    ``n_iter`` sweeps run, ``rel_error`` :math:`\\|T - \\hat T\\|_F / \\|T\\|_F` (a float)."""

    weights: Tensor
    factors: list[Tensor]
    n_iter: int
    rel_error: float


class TuckerResult(NamedTuple):
    """``core`` ``(r_1, ..., r_N)``, ``factors`` ``[(I_n, r_n)]`` with orthonormal columns,
    ``rel_error`` :math:`\\|T - \\hat T\\|_F / \\|T\\|_F` (a float)."""

    core: Tensor
    factors: list[Tensor]
    rel_error: float


# ---------------------------------------------------------------------------
# Unfolding, folding, mode products
# ---------------------------------------------------------------------------
def _check_tensor(name: str, T: object, min_dims: int = 2) -> Tensor:
    if not isinstance(T, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(T).__name__}")
    if not T.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {T.dtype}")
    if T.dim() < min_dims or T.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor with at least {min_dims} modes, "
                         f"got shape {tuple(T.shape)}")
    return T


def _check_mode(name: str, mode: object, ndim: int) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int) or not -ndim <= mode < ndim:
        raise ValueError(f"{name}: expected mode an int in [0, {ndim}), got {mode!r}")
    return mode % ndim


def unfold(T: Tensor, mode: int) -> Tensor:
    r"""Mode-``n`` unfolding :math:`T_{(n)}`: ``(I_n, prod of the other sizes)``.

    Examples::

        >>> T = torch.arange(24.0).reshape(2, 3, 4)
        >>> unfold(T, 1).shape
        torch.Size([3, 8])
        >>> torch.equal(fold(unfold(T, 1), 1, T.shape), T)
        True
    """
    _check_tensor("unfold", T, 1)
    mode = _check_mode("unfold", mode, T.dim())
    # T_(n): mode n to the rows, the other modes in order (the last fastest)
    return T.movedim(mode, 0).reshape(T.shape[mode], -1)


def fold(M: Tensor, mode: int, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`unfold`: the tensor of ``shape`` whose mode-``mode`` unfolding is ``M``."""
    shape = list(shape)
    mode = _check_mode("fold", mode, len(shape))
    moved = [shape[mode], *shape[:mode], *shape[mode + 1:]]
    if list(M.shape) != [moved[0], int(torch.Size(moved[1:]).numel())]:
        raise ValueError(f"fold: expected M of shape ({moved[0]}, "
                         f"{torch.Size(moved[1:]).numel()}) for mode {mode} of {tuple(shape)}, "
                         f"got {tuple(M.shape)}")
    return M.reshape(moved).movedim(0, mode)


def mode_product(T: Tensor, M: Tensor, mode: int) -> Tensor:
    r""":math:`\mathcal{T} \times_n M`: every mode-``n`` fibre multiplied by ``M`` ``(J, I_n)``.

    :math:`(\mathcal{T} \times_n M)_{(n)} = M T_{(n)}`; mode ``n`` of the result has size ``J``.

    Examples::

        >>> T, M = torch.randn(2, 3, 4), torch.randn(5, 3)
        >>> Y = mode_product(T, M, 1)
        >>> Y.shape, torch.allclose(unfold(Y, 1), M @ unfold(T, 1), atol=1e-6)
        (torch.Size([2, 5, 4]), True)
    """
    _check_tensor("mode_product", T, 1)
    mode = _check_mode("mode_product", mode, T.dim())
    if M.dim() != 2 or M.shape[1] != T.shape[mode]:
        raise ValueError(f"mode_product: expected M of shape (J, {T.shape[mode]}) for mode "
                         f"{mode} of a tensor of shape {tuple(T.shape)}, got {tuple(M.shape)}")
    # (T x_n M)_(n) = M T_(n): contract M's columns with mode n, put the new mode back at n
    return torch.tensordot(M, T, dims=([1], [mode])).movedim(0, mode)


def cp_reconstruct(weights: Tensor, factors: Sequence[Tensor]) -> Tensor:
    r""":math:`\sum_r \lambda_r\, a^{(1)}_r \circ \dots \circ a^{(N)}_r` as a dense tensor.

    Examples::

        >>> a, b, c = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.0], [0.0], [1.0]]), \
        ...     torch.tensor([[3.0]])
        >>> cp_reconstruct(torch.tensor([2.0]), [a, b, c]).squeeze(-1)
        tensor([[ 6.,  0.,  6.],
                [12.,  0., 12.]])
    """
    letters = string.ascii_lowercase[: len(factors)]
    # T_hat[i, j, k] = sum_r lambda_r A[i, r] B[j, r] C[k, r]
    spec = "z," + ",".join(f"{c}z" for c in letters) + "->" + letters
    return torch.einsum(spec, weights, *factors)


def tucker_reconstruct(core: Tensor, factors: Sequence[Tensor]) -> Tensor:
    r""":math:`\mathcal{G} \times_1 U_1 \times_2 U_2 \dots \times_N U_N` as a dense tensor."""
    out = core
    for n, U in enumerate(factors):
        out = mode_product(out, U, n)
    return out


# ---------------------------------------------------------------------------
# CP by alternating least squares
# ---------------------------------------------------------------------------
def _mttkrp(T: Tensor, factors: Sequence[Tensor], mode: int) -> Tensor:
    r"""MTTKRP :math:`T_{(n)} (\odot_{m \ne n} A^{(m)})` ``(I_n, R)``, as one einsum."""
    letters = string.ascii_lowercase[: T.dim()]
    others = [f"{c}z" for m, c in enumerate(letters) if m != mode]
    spec = letters + "," + ",".join(others) + "->" + letters[mode] + "z"
    return torch.einsum(spec, T, *(A for m, A in enumerate(factors) if m != mode))


def _rel_error(T: Tensor, approx: Tensor, norm: Tensor) -> float:
    return float((T - approx).detach().norm() / norm) if float(norm) > 0 else 0.0


def cp_als(T: Tensor, rank: int, *, n_iter: int = 200, tol: float = 1e-10,
           init: str = "svd", seed: int | None = None,
           generator: torch.Generator | None = None) -> CPResult:
    r"""Rank-``rank`` CP decomposition of ``T`` by alternating least squares.

    :math:`A^{(n)} \leftarrow T_{(n)} (\odot_{m \ne n} A^{(m)})
    (\ast_{m \ne n} A^{(m)T} A^{(m)})^{+}` for each mode in turn (module docstring),
    columns normalised into :math:`\lambda` after every sweep, until the relative error
    changes by less than ``tol`` or after ``n_iter`` sweeps. Differentiable through the
    unrolled sweeps.

    Args:
        T: ``(I_1, ..., I_N)``, ``N >= 2``, finite.
        rank: number of components ``R >= 1``.
        n_iter: most sweeps (``>= 1``).
        tol: stop when the relative error changes by less than this between sweeps.
        init: ``"svd"`` (leading left singular vectors of each unfolding, random columns
            where ``R > I_n``) or ``"random"`` (standard normal).
        seed, generator: source of the random columns.

    Returns:
        :class:`CPResult` (components ordered by descending weight).

    Examples::

        >>> g = torch.Generator().manual_seed(0)
        >>> A, B, C = (torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (5, 6, 7))
        >>> T = cp_reconstruct(torch.ones(3, dtype=torch.float64), [A, B, C])
        >>> res = cp_als(T, 3, seed=0)
        >>> res.rel_error < 1e-8
        True
    """
    name = "cp_als"
    _check_tensor(name, T)
    rank = check_positive_int(name, "rank", rank)
    n_iter = check_positive_int(name, "n_iter", n_iter)
    tol = check_nonnegative(name, "tol", tol)
    if init not in ("svd", "random"):
        raise ValueError(f"{name}: expected init to be one of 'svd', 'random', got {init!r}")
    check_finite(name, T)
    # Note [power-of-two scaling] (lamods._precision): CP is scale-equivariant (weights
    # scale with T), and the ALS Gram products square the entries: run on T / s, exact,
    # so float32 tensors at 1e30 or 1e-30 neither overflow nor underflow inside
    scale = pow2_scale(T)
    T = T / scale
    gen = make_generator(name, seed, generator)
    factors: list[Tensor] = []
    for n in range(T.dim()):
        cols = torch.randn(T.shape[n], rank, generator=gen, device=generator_device(gen),
                           dtype=torch.float64).to(T)
        if init == "svd":
            U = svd(unfold(T.detach(), n), validate=False).U
            k = min(rank, U.shape[1])
            cols = torch.cat([U[:, :k], cols[:, k:]], dim=1)
        factors.append(cols)
    norm = T.detach().norm()
    weights = torch.ones(rank, dtype=T.dtype, device=T.device)
    previous, error, sweeps = float("inf"), float("inf"), 0
    for sweeps in range(1, n_iter + 1):  # noqa: B007 (sweeps is returned)
        for n in range(T.dim()):
            # V = Hadamard product of the other factors' Gram matrices (R x R)
            V = torch.ones(rank, rank, dtype=T.dtype, device=T.device)
            for m, A in enumerate(factors):
                if m != n:
                    V = V * (A.mT @ A)
            # A^(n) = T_(n) (Khatri-Rao of the others) V^+
            factors[n] = _mttkrp(T, factors, n) @ torch.linalg.pinv(V, hermitian=True)
            if n < T.dim() - 1:
                norms = factors[n].norm(dim=0).clamp_min(torch.finfo(T.dtype).tiny)
                factors[n] = factors[n] / norms
        # the last factor's column norms are the weights
        weights = factors[-1].norm(dim=0)
        factors[-1] = factors[-1] / weights.clamp_min(torch.finfo(T.dtype).tiny)
        error = _rel_error(T, cp_reconstruct(weights, factors), norm)
        if abs(previous - error) < tol:
            break
        previous = error
    order = torch.argsort(weights.detach(), descending=True)
    weights = weights[order] * scale
    factors = [A[:, order] for A in factors]
    return CPResult(weights, factors, sweeps, error)


# ---------------------------------------------------------------------------
# Tucker: HOSVD and HOOI
# ---------------------------------------------------------------------------
def _check_ranks(name: str, T: Tensor, ranks: object) -> list[int]:
    if isinstance(ranks, int) and not isinstance(ranks, bool):
        ranks = [ranks] * T.dim()
    if not isinstance(ranks, (list, tuple)) or len(ranks) != T.dim():
        raise ValueError(f"{name}: expected ranks, one per mode of the {T.dim()}-way tensor "
                         f"(or one int), got {ranks!r}")
    out = []
    for n, r in enumerate(ranks):
        check_positive_int(name, f"ranks[{n}]", r)
        if r > T.shape[n]:
            raise ValueError(f"{name}: expected ranks[{n}] <= I_{n} = {T.shape[n]}, got {r}")
        out.append(int(r))
    return out


def _leading_left(M: Tensor, r: int) -> Tensor:
    """The ``r`` leading left singular vectors of ``M`` (stable backward), sign-fixed."""
    U = svd(M, validate=False).U
    if U.shape[1] < r:  # a mode wider than the product of the others: complete the basis
        Q = torch.linalg.qr(torch.cat([U, torch.eye(M.shape[0], dtype=M.dtype,
                                                     device=M.device)], dim=1)).Q
        U = torch.cat([U, Q[:, U.shape[1]:]], dim=1)
    U = U[:, :r]
    return U * column_signs(U)


def _core(T: Tensor, factors: Sequence[Tensor]) -> Tensor:
    out = T
    for n, U in enumerate(factors):
        out = mode_product(out, U.mT, n)
    return out


def _tucker_error(T: Tensor, core: Tensor, factors: Sequence[Tensor]) -> float:
    norm = T.detach().norm()
    return _rel_error(T, tucker_reconstruct(core.detach(), [U.detach() for U in factors]),
                      norm)


def hosvd(T: Tensor, ranks: int | Sequence[int]) -> TuckerResult:
    r"""Truncated higher-order SVD: :math:`U_n` = leading left singular vectors of
    :math:`T_{(n)}`, :math:`\mathcal{G} = \mathcal{T} \times_1 U_1^T \dots \times_N U_N^T`.

    Differentiable in ``T`` (through :func:`lamods.svd`'s stable backward).

    Args:
        T: ``(I_1, ..., I_N)``, ``N >= 2``, finite.
        ranks: ``(r_1, ..., r_N)`` with ``1 <= r_n <= I_n``, or one int for every mode.

    Returns:
        :class:`TuckerResult` ``(core (r_1, ..., r_N), factors [(I_n, r_n)], rel_error)``.

    Examples::

        >>> g = torch.Generator().manual_seed(0)
        >>> G = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
        >>> Us = [torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64)).Q
        ...       for n, r in ((6, 2), (5, 3), (4, 2))]
        >>> T = tucker_reconstruct(G, Us)              # multilinear rank (2, 3, 2)
        >>> hosvd(T, (2, 3, 2)).rel_error < 1e-12
        True
    """
    name = "hosvd"
    _check_tensor(name, T)
    ranks = _check_ranks(name, T, ranks)
    check_finite(name, T)
    factors = [_leading_left(unfold(T, n), r) for n, r in enumerate(ranks)]
    core = _core(T, factors)
    return TuckerResult(core, factors, _tucker_error(T, core, factors))


def hooi(T: Tensor, ranks: int | Sequence[int], *, n_iter: int = 50,
         tol: float = 1e-12) -> TuckerResult:
    r"""Tucker decomposition by higher-order orthogonal iteration, started from :func:`hosvd`.

    Each sweep sets :math:`U_n` to the leading left singular vectors of
    :math:`(\mathcal{T} \times_{m \ne n} U_m^T)_{(n)}`; stops when :math:`\|\mathcal{G}\|_F`
    grows by less than ``tol`` relative to :math:`\|\mathcal{T}\|_F`, or after ``n_iter``
    sweeps. Never worse than the HOSVD. Differentiable through the unrolled sweeps.

    Args:
        T: ``(I_1, ..., I_N)``, ``N >= 2``, finite.
        ranks: as :func:`hosvd`.
        n_iter: most sweeps (``>= 0``; 0 returns the HOSVD).
        tol: relative growth of :math:`\|\mathcal{G}\|_F` below which the sweeps stop.

    Examples::

        >>> T = torch.randn(6, 5, 4, dtype=torch.float64)
        >>> hooi(T, 2).rel_error <= hosvd(T, 2).rel_error + 1e-12
        True
    """
    name = "hooi"
    _check_tensor(name, T)
    ranks = _check_ranks(name, T, ranks)
    n_iter = check_nonnegative_int(name, "n_iter", n_iter)
    tol = check_nonnegative(name, "tol", tol)
    check_finite(name, T)
    factors = [_leading_left(unfold(T, n), r) for n, r in enumerate(ranks)]
    norm = float(T.detach().norm()) or 1.0
    core_norm = float(_core(T.detach(), [U.detach() for U in factors]).norm())
    for _ in range(n_iter):
        for n in range(T.dim()):
            # Y = T x_{m != n} U_m^T, then U_n = leading left singular vectors of Y_(n)
            Y = T
            for m, U in enumerate(factors):
                if m != n:
                    Y = mode_product(Y, U.mT, m)
            factors[n] = _leading_left(unfold(Y, n), ranks[n])
        new_norm = float(_core(T.detach(), [U.detach() for U in factors]).norm())
        grown, core_norm = new_norm - core_norm, new_norm
        if grown < tol * norm:
            break
    core = _core(T, factors)
    return TuckerResult(core, factors, _tucker_error(T, core, factors))
