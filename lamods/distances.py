r"""Squared Euclidean distances: the one routine kernels, k-means, spectral clustering and
the projections' distortion checks share.

.. math:: \|x - y\|^2 = \|x\|^2 + \|y\|^2 - 2\langle x, y \rangle

is one matrix product, but it cancels badly for points far from the origin
relative to their spread. Note [centring trick]: distances are translation
invariant, so both sets are first centred on the mean of ``X``'s finite rows
(:func:`finite_center`: a NaN or infinite row must not reach the centre, or it would
spread into every distance); the result is clamped at 0 (rounding can make it
slightly negative) and, for the distances of a set to itself, the diagonal is exactly 0.
Note [power-of-two scaling] (:mod:`lamods._precision`): the centred sets are divided
by a power of two near their largest finite entry before squaring and the result
multiplied back, so data at ``1e30`` or ``1e-30`` in float32 neither overflows to NaN
nor underflows to 0 in the squares (distances whose true value overflows are ``inf``).
:func:`pairwise_sq_distances` and :func:`paired_sq_distances` take exact differences
instead (no cancellation at all), for checks where every digit counts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lamods._precision import pow2_at_least

__all__ = [
    "ScaledFrame",
    "finite_center",
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


def _row_peaks(X: Tensor) -> Tensor:
    """``max_k |x_ik|`` per row ``(*, n, 1)``; NaN for a NaN row, inf for a row holding inf.

    As ``max(max_k x_ik, -min_k x_ik)``: two plain reductions, about 5x faster on CPU
    than ``vector_norm(ord=inf)`` or ``abs().amax()``.
    """
    X = X.detach()
    if X.shape[-1] == 0:  # no features: every row is the origin
        return X.new_zeros(*X.shape[:-1], 1)
    return torch.maximum(X.amax(-1, keepdim=True), X.amin(-1, keepdim=True).neg())


def _finite_center(X: Tensor, peaks: Tensor) -> Tensor:
    ok = torch.isfinite(peaks)  # (*, n, 1): the finite rows
    total = torch.where(ok, X.detach(), 0).sum(-2, keepdim=True)
    return total / ok.sum(-2, keepdim=True).clamp_min(1).to(X.dtype)


def _all_finite_frame(X: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(mean (*, 1, d), max |x| (*, 1, 1))`` of ``X`` ``(*, n, d)`` when every entry is
    finite, else None; on CPU only (None elsewhere).

    Full reductions instead of the per-row ones of :func:`_row_peaks`, which are not
    vectorised over a short last dimension and stall when another process holds a core
    (measured 8 ms quiet, 40 ms under load, for 100,000 x 64 on the 2-core VM, against
    8 ms for a full one). The column sums double as the finiteness test: a NaN or an
    infinity makes its column's sum non-finite (as does an overflow of finite entries,
    which then takes the general path).
    """
    if X.device.type != "cpu" or X.shape[-2] == 0 or X.shape[-1] == 0:
        return None
    X = X.detach()
    total = X.sum(-2, keepdim=True)
    if not bool(torch.isfinite(total).all()):
        return None
    dims = (-2, -1)
    peak = torch.maximum(X.amax(dims, keepdim=True), X.amin(dims, keepdim=True).neg())
    return total / X.shape[-2], peak


def row_sq_norms(X: Tensor) -> Tensor:
    """``||x_i||^2`` for every row of ``X`` ``(*, n, d)``: ``(*, n)``.

    As a batched dot product (``einsum``), without the ``(n, d)`` temporary of
    ``X.square().sum(-1)`` (4x faster on CPU for 100,000 x 64).
    """
    return torch.einsum("...i,...i->...", X, X)


def finite_center(X: Tensor) -> Tensor:
    r"""Mean ``(*, 1, d)`` of the finite rows of ``X`` ``(*, n, d)``, detached (0 if none).

    The reference point of Note [centring trick]: a NaN or infinite row of ``X`` is left
    out, so it cannot reach the distances of the other rows.

    Examples::

        >>> finite_center(torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3.0, 4.0]]))
        tensor([[2., 3.]])
    """
    return _finite_center(X, _row_peaks(X))


class ScaledFrame(NamedTuple):
    r"""Centred, power-of-two-scaled coordinates :math:`x' = (x - c) / s`, detached.

    Note [centring trick] and Note [power-of-two scaling] together, for the methods
    that only need distances (k-means, the RBF kernel, kNN graphs): :math:`c` is the mean
    of the finite rows of the reference set ``X`` and :math:`s` a power of two with
    :math:`\max |x - c| \le \max |x| + \max |c| < 2 s` over ``X`` and the other sets
    (their finite rows). :meth:`apply` and :meth:`back` are then exact on data of
    ordinary size (the same digits as without scaling), data at ``1e30`` or ``1e-30``
    in float32 neither overflow nor underflow in the squares, and distances are
    :math:`\|x - y\| = s \|x' - y'\|` (:meth:`back_length`, :meth:`back_sq`). Cost: one
    reduction pass over each set and two more over ``X`` for the centre. The centre's
    sum itself overflows only for data near the dtype's largest value times ``1/n``.
    Shapes: ``c`` ``(*, 1, d)`` and ``s`` ``(*, 1, 1)``, broadcasting against
    ``(*, n, d)`` data (and against 2-D data).
    """

    c: Tensor
    s: Tensor

    @classmethod
    def of(cls, X: Tensor, *others: Tensor) -> ScaledFrame:
        """The frame of ``X`` ``(*, n, d)`` (centred on its finite rows), scaled for ``X``
        and ``others`` (same width)."""
        fast = _all_finite_frame(X)
        if fast is None:
            peaks = [_row_peaks(X)]
            c = _finite_center(X, peaks[0])
            peak = torch.zeros_like(c[..., :1])  # (*, 1, 1); sets without rows add nothing
        else:
            peaks = []
            c, peak = fast
        for p in (*peaks, *(_row_peaks(t) for t in others)):
            if p.shape[-2]:
                p = torch.where(torch.isfinite(p), p, 0).amax(-2, keepdim=True)
                peak = torch.maximum(peak, p)
        # max |x - c| <= max |x| + max |c| (a bound: a larger power of two is as exact)
        if c.shape[-1]:
            peak = peak + c.abs().amax(-1, keepdim=True)
        return cls(c, pow2_at_least(peak))

    def apply(self, X: Tensor) -> Tensor:
        """:math:`x' = (x - c) / s`, in one pass (differentiable in ``X``)."""
        inv = 1 / self.s  # a power of two: x / s = x * inv exactly
        return torch.addcmul(-self.c * inv, X, inv)

    def back(self, Xp: Tensor) -> Tensor:
        """:math:`x = x' s + c`."""
        return torch.addcmul(self.c, Xp, self.s)

    def back_length(self, d: Tensor) -> Tensor:
        """A distance in the original units: :math:`s d'`."""
        return d * self.s

    def back_sq(self, d2: Tensor) -> Tensor:
        """A squared distance in the original units: :math:`s^2 d'^2` (``s^2`` itself may
        overflow or underflow, so in two steps)."""
        return d2 * self.s * self.s


def sq_distances(X: Tensor, Y: Tensor | None = None, *, center: bool = True,
                 diag_offset: int | None = None) -> Tensor:
    r"""Squared distances :math:`\|x_i - y_j\|^2` of rows ``X`` ``(*, n, d)`` and ``Y``
    ``(*, m, d)``: ``(*, n, m)``, differentiable, clamped at 0.

    Args:
        X, Y: the two sets of rows (``Y`` omitted: ``X`` against itself, exact 0 diagonal).
        center: centre both on the mean of ``X``'s finite rows and scale them by a power
            of two first (Note [centring trick], Note [power-of-two scaling]); pass False
            when the caller has done so already (e.g. per block of rows).
        diag_offset: treat ``X`` as rows ``diag_offset..`` of ``Y``: the entries
            ``(i, diag_offset + i)`` are exactly 0 (a row block of a self-distance matrix).

    Examples::

        >>> X = torch.tensor([[1e4, 0.0], [1e4 + 1, 0.0]])
        >>> sq_distances(X)
        tensor([[0., 1.],
                [1., 0.]])
    """
    name = "sq_distances"
    for what, t in (("X", X), ("Y", Y)):
        if t is None and what == "Y":
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected {what} as a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point {what}, got dtype {t.dtype}")
        if t.dim() < 2:
            raise ValueError(f"{name}: expected {what} of shape (*, n, d), got shape "
                             f"{tuple(t.shape)}")
    if Y is not None and (Y.shape[-1] != X.shape[-1] or Y.dtype != X.dtype
                          or Y.device != X.device):
        raise ValueError(f"{name}: expected X and Y with the same width, dtype and device, got "
                         f"{tuple(X.shape)} {X.dtype} {X.device} and {tuple(Y.shape)} "
                         f"{Y.dtype} {Y.device}")
    same = Y is None or Y is X
    if same and diag_offset is None:
        diag_offset = 0
    Y = X if Y is None else Y
    if X.shape[-2] == 0 or Y.shape[-2] == 0 or X.shape[-1] == 0:
        # no pairs, or no features (every point is the origin): nothing to cancel
        batch = torch.broadcast_shapes(X.shape[:-2], Y.shape[:-2])
        return X.new_zeros(*batch, X.shape[-2], Y.shape[-2]) + 0 * X.sum() + 0 * Y.sum()
    frame = None
    if center:
        # Note [centring trick], Note [power-of-two scaling]: exact scaling, so the digits
        # are those of the unscaled data
        frame = ScaledFrame.of(X, *(() if same else (Y,)))
        X = frame.apply(X)
        Y = X if same else frame.apply(Y)
    if not (torch.is_grad_enabled() and (X.requires_grad or Y.requires_grad)):
        # the same formula without autograd: in place, one (n, m) buffer
        D = X @ Y.mT
        D.mul_(-2).add_(X.square().sum(-1, keepdim=True)).add_(
            Y.square().sum(-1).unsqueeze(-2)).clamp_min_(0)
        if diag_offset is not None:
            D.diagonal(diag_offset, dim1=-2, dim2=-1).zero_()
        if frame is not None:
            D.mul_(frame.s).mul_(frame.s)  # back_sq, in place
        return D
    # ||x - y||^2 = ||x||^2 + ||y||^2 - 2 <x, y>, clamped at 0
    D = (X.square().sum(-1, keepdim=True) + Y.square().sum(-1).unsqueeze(-2)
         - 2 * X @ Y.mT).clamp_min(0)
    if diag_offset is not None:
        D = D.masked_fill(_diag_mask(X.shape[-2], Y.shape[-2], diag_offset, X.device), 0.0)
    return D if frame is None else frame.back_sq(D)


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
