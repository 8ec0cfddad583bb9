r"""Squared Euclidean distances: the one routine kernels, k-means, spectral clustering and
the projections' distortion checks share.

.. math:: \|x - y\|^2 = \|x\|^2 + \|y\|^2 - 2\langle x, y \rangle

is one matrix product, but it cancels badly for points far from the origin
relative to their spread. Note [centring trick]: distances are translation
invariant, so both sets are first centred on the mean of ``X``; the result is
clamped at 0 (rounding can make it slightly negative) and, for the distances of
a set to itself, the diagonal is exactly 0. :func:`pairwise_sq_distances` and
:func:`paired_sq_distances` take exact differences instead (no cancellation at
all), for checks where every digit counts.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "paired_sq_distances",
    "pairwise_sq_distances",
    "partial_sq_distances",
    "sq_distances",
]


def _diag_mask(n: int, m: int, offset: int, device: torch.device) -> Tensor:
    """Boolean ``(n, m)`` mask of the entries ``(i, offset + i)``."""
    r = torch.arange(n, device=device)
    c = torch.arange(m, device=device)
    return c[None, :] == (r[:, None] + offset)


def sq_distances(X: Tensor, Y: Tensor | None = None, *, center: bool = True,
                 diag_offset: int | None = None) -> Tensor:
    r"""Squared distances :math:`\|x_i - y_j\|^2` of rows ``X`` ``(*, n, d)`` and ``Y``
    ``(*, m, d)``: ``(*, n, m)``, differentiable, clamped at 0.

    Args:
        X, Y: the two sets of rows (``Y`` omitted: ``X`` against itself, exact 0 diagonal).
        center: centre both on the mean of ``X`` first (Note [centring trick]); pass
            False when the caller has centred already (e.g. per block of rows).
        diag_offset: treat ``X`` as rows ``diag_offset..`` of ``Y``: the entries
            ``(i, diag_offset + i)`` are exactly 0 (a row block of a self-distance matrix).

    Examples::

        >>> X = torch.tensor([[1e4, 0.0], [1e4 + 1, 0.0]])
        >>> sq_distances(X)
        tensor([[0., 1.],
                [1., 0.]])
    """
    same = Y is None or Y is X
    if same and diag_offset is None:
        diag_offset = 0
    Y = X if Y is None else Y
    if center:
        c = X.detach().mean(dim=-2, keepdim=True)
        X = X - c
        Y = X if same else Y - c
    if not (torch.is_grad_enabled() and (X.requires_grad or Y.requires_grad)):
        # the same formula without autograd: in place, one (n, m) buffer
        D = X @ Y.mT
        D.mul_(-2).add_(X.square().sum(-1, keepdim=True)).add_(
            Y.square().sum(-1).unsqueeze(-2)).clamp_min_(0)
        if diag_offset is not None:
            D.diagonal(diag_offset, dim1=-2, dim2=-1).zero_()
        return D
    # ||x - y||^2 = ||x||^2 + ||y||^2 - 2 <x, y>, clamped at 0
    D = (X.square().sum(-1, keepdim=True) + Y.square().sum(-1).unsqueeze(-2)
         - 2 * X @ Y.mT).clamp_min(0)
    if diag_offset is not None:
        D = D.masked_fill(_diag_mask(X.shape[-2], Y.shape[-2], diag_offset, X.device), 0.0)
    return D


def partial_sq_distances(X: Tensor, C: Tensor, c_sq: Tensor | None = None) -> Tensor:
    r""":math:`\|x_i - c_j\|^2 - \|x_i\|^2 = \|c_j\|^2 - 2\langle x_i, c_j\rangle`: ``(n, k)``.

    The part of the squared distance that depends on the center: its ``argmin`` over
    ``j`` is the nearest center (k-means' assign step, one ``addmm``); add
    :math:`\|x_i\|^2` for the distance itself. ``c_sq``: precomputed :math:`\|c_j\|^2`
    ``(1, k)``. Centre the data first for accuracy (Note [centring trick]).

    Examples::

        >>> X, C = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[3.0, 4.0]])
        >>> partial_sq_distances(X, C) + X.square().sum(1, keepdim=True)
        tensor([[25.],
                [ 0.]])
    """
    if c_sq is None:
        c_sq = C.square().sum(1).unsqueeze(0)
    return torch.addmm(c_sq, X, C.mT, alpha=-2.0)


def pairwise_sq_distances(X: Tensor) -> Tensor:
    r""":math:`\lVert x_i - x_j \rVert^2` for every pair :math:`i < j` of rows, in float64.

    In the order of ``torch.triu_indices(n, n, 1)``. Computed by ``torch.cdist``
    with exact differences (no :math:`|x|^2 + |y|^2 - 2\langle x, y\rangle`
    cancellation), without gathering a row pair per distance.

    Examples::

        >>> pairwise_sq_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]]))
        tensor([ 25., 100.,  25.], dtype=torch.float64)
    """
    X = X.detach().double()
    i, j = torch.triu_indices(len(X), len(X), 1, device=X.device)
    return torch.cdist(X, X, compute_mode="donot_use_mm_for_euclid_dist")[i, j].square()


def paired_sq_distances(X: Tensor, i: Tensor, j: Tensor, *,
                        block_elements: int = 1 << 24) -> Tensor:
    r""":math:`\|x_{i_p} - x_{j_p}\|^2` for index pairs ``(i_p, j_p)``, by exact differences.

    Works in blocks of pairs so no intermediate holds more than about
    ``block_elements`` entries.

    Examples::

        >>> X = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> paired_sq_distances(X, torch.tensor([0, 1]), torch.tensor([1, 1]))
        tensor([25.,  0.])
    """
    step = max(1, block_elements // max(X.shape[1], 1))
    out = [(X[i[s:s + step]] - X[j[s:s + step]]).square().sum(-1)
           for s in range(0, i.numel(), step)]
    return torch.cat(out) if out else X.new_zeros(0)
